"""Writers of the official on-disk layouts: RGBT-PEDES, CUHK-PEDES, RegDB, LLCM and SYSU-MM01.

Images stream to disk one by one (see ``shared/DATASETS.md`` for the layouts);
``tools/make_synthetic.py`` is their command line. The visible-infrared writers also write
``captions_synthetic.json`` (image path relative to the dataset folder -> caption; colour-free
for infrared images) unless ``captions_json=False``: the captions the VI-ReID datasets lack and
RSBA trains with (``DATASETS.VI_CAPTIONS``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

from .captions import tokenize
from .files import DatasetFolder
from .identities import CHALLENGES, assign_splits, each_identity, image_count, seeded_rng
from .records import CameraImage, camera_images, generate

#: An image count: fixed, or a (min, max) range drawn per identity.
Count = int | tuple[int, int]

#: Keyword options every writer takes, with their defaults; each writer adds its own.
_COMMON_OPTIONS = {
    "height": 128,
    "width": 64,
    "challenge_weights": None,
    "overwrite": False,
    "progress": None,
}


def _options(options: Mapping[str, object], **writer_defaults) -> SimpleNamespace:
    """A writer's keyword ``options`` over the common and the writer's own defaults.

    ``height``/``width`` (render size), ``challenge_weights`` (challenge -> weight, None for the
    format's default), ``overwrite`` (replace a non-empty folder) and ``progress`` (``(done,
    total)`` callback) are common to all writers; an unknown name raises TypeError.
    """
    defaults = {**_COMMON_OPTIONS, **writer_defaults}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"unexpected writer option(s): {', '.join(unknown)}")
    return SimpleNamespace(**{**defaults, **options})


def _records(
    o: SimpleNamespace,
    num_ids,
    images_per_id,
    seed,
    split_ratios,
    weights,
    modalities=("rgb", "thermal"),
):
    """``generate``'s records at the options' size, captions per image and progress callback."""
    return generate(
        num_ids,
        images_per_id,
        seed,
        o.height,
        o.width,
        split_ratios=split_ratios,
        challenge_weights=weights,
        captions_per_image=o.captions_per_image,
        modalities=modalities,
        progress=o.progress,
    )


def write_rgbtpedes(
    out_dir: str | Path, num_ids: int, seed: int = 0, images_per_id: Count = (2, 4), **options
) -> dict:
    """RGBT-PEDES layout under ``<out_dir>/RGBT-PEDES``.

    ``RGB/<pid %04d>_<idx %02d>.jpg`` and ``T/<same>.jpg`` (single-channel) are one pair;
    ``caption_2_no_color.json`` lists ``{"split", "captions", "no_color_caption", "file_path":
    "RGB/<name>.jpg", "id"}``; ``challenge_json/<challenge>.json`` lists the *test* image
    basenames of each non-normal challenge. ``empty_caption_prob`` blanks captions at random
    (the release has some empty ones).
    """
    o = _options(
        options, split_ratio=0.7, captions_per_image=(1, 2), empty_caption_prob=0.0, jpeg_quality=92
    )
    folder = DatasetFolder(out_dir, "RGBT-PEDES", "rgbtpedes", o.overwrite, o.jpeg_quality)
    entries = []
    lists: dict[str, list[str]] = {c: [] for c in CHALLENGES if c != "normal"}
    split_ratios = {"train": o.split_ratio, "test": 1.0 - o.split_ratio}
    for rec in _records(o, num_ids, images_per_id, seed, split_ratios, o.challenge_weights):
        fname = f"{rec.name}.jpg"
        folder.write_image(rec.rgb, f"RGB/{fname}")
        folder.write_image(rec.thermal, f"T/{fname}")
        caps, plain = list(rec.captions), list(rec.no_color_captions)
        if o.empty_caption_prob > 0:
            erng = seeded_rng(seed, rec.pid, rec.index, 5)
            for i in range(len(caps)):
                if erng.random() < o.empty_caption_prob:
                    caps[i] = plain[i] = ""
        entries.append(
            {
                "split": rec.split,
                "captions": caps,
                "no_color_caption": plain,
                "file_path": f"RGB/{fname}",
                "id": rec.pid,
            }
        )
        if rec.split == "test" and rec.challenge in lists:
            lists[rec.challenge].append(fname)
        folder.summary.add(rec.split, rec.pid, 1, sum(1 for c in caps if c), rec.challenge)
    folder.write_json(entries, "caption_2_no_color.json")
    for challenge, names in lists.items():
        folder.write_json(sorted(names), f"challenge_json/{challenge}.json")
    folder.summary.extra["test_challenges"] = {c: len(v) for c, v in lists.items()}
    return folder.finish()


def write_cuhkpedes(
    out_dir: str | Path, num_ids: int, seed: int = 0, images_per_id: Count = (2, 4), **options
) -> dict:
    """CUHK-PEDES layout under ``<out_dir>/CUHK-PEDES``: ``reid_raw.json`` and
    ``imgs/synth/<pid %04d>_<idx %02d>.jpg`` (RGB only); splits train/val/test by identity
    (default 80/10/10)."""
    o = _options(options, split_ratios=None, captions_per_image=(2, 2), jpeg_quality=92)
    folder = DatasetFolder(out_dir, "CUHK-PEDES", "cuhkpedes", o.overwrite, o.jpeg_quality)
    entries = []
    weights = o.challenge_weights or {"normal": 0.85, "occlusion": 0.1, "strong_light": 0.05}
    split_ratios = o.split_ratios or {"train": 0.8, "val": 0.1, "test": 0.1}
    for rec in _records(o, num_ids, images_per_id, seed, split_ratios, weights, ("rgb",)):
        rel = f"synth/{rec.name}.jpg"
        folder.write_image(rec.rgb, f"imgs/{rel}")
        entries.append(
            {
                "split": rec.split,
                "captions": rec.captions,
                "file_path": rel,
                "processed_tokens": [tokenize(c) for c in rec.captions],
                "id": rec.pid,
            }
        )
        folder.summary.add(rec.split, rec.pid, 1, len(rec.captions), rec.challenge)
    folder.write_json(entries, "reid_raw.json")
    return folder.finish()


# ----------------------------------------------------------------------------------------------
# Visible-infrared layouts: camera images of one modality each
# ----------------------------------------------------------------------------------------------

_VI_VIS_WEIGHTS = {
    "normal": 0.8,
    "occlusion": 0.1,
    "strong_light": 0.05,
    "abnormal_illumination": 0.05,
}
_VI_IR_WEIGHTS = {"normal": 0.9, "occlusion": 0.1}
_LLCM_VIS_WEIGHTS = {
    "normal": 0.35,
    "low_light": 0.35,
    "darkness": 0.1,
    "abnormal_illumination": 0.1,
    "strong_light": 0.05,
    "occlusion": 0.05,
}


def _stream_weights(challenge_weights, visible_default) -> tuple[Mapping, Mapping]:
    """Challenge weights of the visible and the infrared stream (``challenge_weights`` for both)."""
    return (challenge_weights or visible_default, challenge_weights or _VI_IR_WEIGHTS)


def _image_counts(pid: int, seed: int, images_per_id: int | tuple[int, int], per_camera: bool):
    """``count(stream, camera)`` of ``camera_images``: each camera's image count drawn on its own
    seed, or one count for every camera of the identity."""
    if per_camera:
        return lambda stream, cam: image_count(pid, seed, images_per_id, stream=100 * stream + cam)
    n = image_count(pid, seed, images_per_id)
    return lambda stream, cam: n


def _save_camera_image(
    folder: DatasetFolder, rel: str, shot: CameraImage, seed: int, group=None
) -> None:
    """Save a camera image, count it (under summary split ``group`` when given) and caption it."""
    folder.write_image(shot.image, rel)
    if group is None:
        folder.summary.challenges[shot.spec.challenge] += 1
    else:
        folder.summary.add(group, shot.identity.pid, 1, 0, shot.spec.challenge)
    folder.caption(rel, lambda: shot.caption(seed))


def _pick_cams(rng, cams: Sequence[int], lo: int, hi: int) -> list[int]:
    n = int(rng.integers(lo, min(hi, len(cams)) + 1))
    return sorted(int(c) for c in rng.choice(cams, size=n, replace=False))


def _ids_in(splits: Mapping[int, str], split: str) -> list[int]:
    return sorted(p for p, s in splits.items() if s == split)


def write_regdb(
    out_dir: str | Path, num_ids: int, seed: int = 0, images_per_id: Count = 10, **options
) -> dict:
    """RegDB layout under ``<out_dir>/RegDB``.

    ``Visible/<pid>/<male|female>_<front|back>_v_<serial %05d>_<k>.bmp`` and
    ``Thermal/<pid>/..._t_...bmp`` (``images_per_id`` of each per identity, default 10; the
    thermal images are other views than the visible ones); ``idx/{train,test}_{visible,thermal}_
    {t}.txt`` for t = 1..trials: trial t splits the ids with ``default_rng([seed, t])``'s
    permutation, first half train (labels 0..N-1 in pid order), rest test (label = pid - 1).
    ``captions_synthetic.json`` captions every image (``captions_json=False``: not written).
    """
    o = _options(options, trials=10, captions_json=True)
    folder = DatasetFolder(out_dir, "RegDB", "regdb", o.overwrite, captions_json=o.captions_json)
    weights = _stream_weights(o.challenge_weights, _VI_VIS_WEIGHTS)
    views = {"front": 0.5, "back": 0.5}
    files: dict[int, dict[str, list[str]]] = {}
    serial = [0, 0]
    for ident in each_identity(num_ids, seed, o.progress):
        pid = ident.pid
        gender = "male" if ident.gender == "man" else "female"
        files[pid] = {"visible": [], "thermal": []}
        count = _image_counts(pid, seed, images_per_id, per_camera=False)
        # one camera per modality, with the same number of images
        for shot in camera_images(
            ident, seed, o.height, o.width, ([0], [0]), count, weights, views
        ):
            folder_name, tag = (("Visible", "v"), ("Thermal", "t"))[shot.stream]
            serial[shot.stream] += 1
            name = f"{gender}_{shot.spec.view}_{tag}_{serial[shot.stream]:05d}_{shot.k}.bmp"
            rel = f"{folder_name}/{pid}/{name}"
            _save_camera_image(folder, rel, shot, seed)
            files[pid][folder_name.lower()].append(rel)
    pids = list(range(1, num_ids + 1))
    (folder.root / "idx").mkdir(exist_ok=True)  # there even with trials=0
    for t in range(1, o.trials + 1):
        perm = [int(p) for p in seeded_rng(seed, t).permutation(pids)]
        half = num_ids // 2
        train, test = sorted(perm[:half]), sorted(perm[half:])
        relabel = {p: i for i, p in enumerate(train)}
        for split, ids, label in (
            ("train", train, relabel.__getitem__),
            ("test", test, lambda p: p - 1),
        ):
            for modality in ("visible", "thermal"):
                lines = [f"{rel} {label(p)}" for p in ids for rel in files[p][modality]]
                folder.write_lines(f"idx/{split}_{modality}_{t}.txt", lines)
    summary = folder.summary
    summary.extra["ids"] = {
        "all": num_ids,
        "train_per_trial": num_ids // 2,
        "test_per_trial": num_ids - num_ids // 2,
    }
    summary.extra["images"] = {
        modality: sum(len(f[modality]) for f in files.values())
        for modality in ("visible", "thermal")
    }
    summary.extra["trials"] = o.trials
    return folder.finish()


def write_llcm(
    out_dir: str | Path, num_ids: int, seed: int = 0, images_per_id: Count = (2, 4), **options
) -> dict:
    """LLCM layout under ``<out_dir>/LLCM``; ``images_per_id`` is per (identity, camera).

    Train: ``vis/<pid %04d>/<pid %04d>_c<cam %02d>_s<seq %06d>_f<frame %04d>_vis.jpg`` and
    ``nir/.../..._nir.jpg`` listed in ``idx/train_vis.txt`` / ``idx/train_nir.txt`` as
    ``<relative path> <label>`` (labels 0..N-1 in pid order, shared by both modalities).
    Test: ``test_vis/cam<k>/<pid %04d>/..._vis.jpg`` and ``test_nir/cam<k>/<pid %04d>/..._nir.jpg``;
    ``idx/test_id.txt`` is ONE comma-separated line of the test pids (like SYSU-MM01).
    Each identity has 2-4 visible cameras (of 1-9) and 2-3 near-infrared cameras (of 1,2,4-9).
    ``captions_synthetic.json`` captions every image (``captions_json=False``: not written).
    """
    o = _options(options, train_ratio=2 / 3, captions_json=True, jpeg_quality=92)
    folder = DatasetFolder(out_dir, "LLCM", "llcm", o.overwrite, o.jpeg_quality, o.captions_json)
    weights = _stream_weights(o.challenge_weights, _LLCM_VIS_WEIGHTS)
    splits = assign_splits(num_ids, seed, {"train": o.train_ratio, "test": 1.0 - o.train_ratio})
    relabel = {p: i for i, p in enumerate(_ids_in(splits, "train"))}
    lines: dict[str, list[str]] = {"vis": [], "nir": []}
    vis_cams, nir_cams = list(range(1, 10)), [1, 2, 4, 5, 6, 7, 8, 9]
    for ident in each_identity(num_ids, seed, o.progress):
        pid = ident.pid
        split = splits[pid]
        rng = seeded_rng(seed, pid, 4)
        cameras = (_pick_cams(rng, vis_cams, 2, 4), _pick_cams(rng, nir_cams, 2, 3))
        count = _image_counts(pid, seed, images_per_id, per_camera=True)
        for shot in camera_images(ident, seed, o.height, o.width, cameras, count, weights):
            mod = ("vis", "nir")[shot.stream]
            if shot.k == 1:  # a new camera: its sequence and first frame number
                seq = int(rng.integers(100000, 240000))
                frame = int(rng.integers(100, 6000))
            frame += int(rng.integers(5, 60))
            fname = f"{pid:04d}_c{shot.camera:02d}_s{seq:06d}_f{frame:04d}_{mod}.jpg"
            if split == "train":
                rel = f"{mod}/{pid:04d}/{fname}"
                lines[mod].append(f"{rel} {relabel[pid]}")
            else:
                rel = f"test_{mod}/cam{shot.camera}/{pid:04d}/{fname}"
            _save_camera_image(folder, rel, shot, seed, f"{split}_{mod}")
    for mod in ("vis", "nir"):
        folder.write_lines(f"idx/train_{mod}.txt", lines[mod])
    folder.write_ids("idx/test_id.txt", _ids_in(splits, "test"))
    return folder.finish()


def write_sysumm01(
    out_dir: str | Path, num_ids: int, seed: int = 0, images_per_id: Count = (2, 4), **options
) -> dict:
    """SYSU-MM01 layout under ``<out_dir>/SYSU-MM01``; ``images_per_id`` is per (identity, camera).

    ``cam{1..6}/<pid %04d>/<k %04d>.jpg`` (k from 1 per identity and camera); visible cameras
    1, 2, 4, 5 hold RGB renders, infrared cameras 3, 6 thermal ones. Each identity appears in
    2-4 visible cameras (always 1 or 2 among them) and 1-2 infrared cameras.
    ``exp/{train_id,val_id,test_id}.txt``: one comma-separated line of pids each (default split
    60/20/20 by identity). ``captions_synthetic.json`` captions every image
    (``captions_json=False``: not written).
    """
    o = _options(options, split_ratios=None, captions_json=True, jpeg_quality=92)
    folder = DatasetFolder(
        out_dir, "SYSU-MM01", "sysumm01", o.overwrite, o.jpeg_quality, o.captions_json
    )
    weights = _stream_weights(o.challenge_weights, _VI_VIS_WEIGHTS)
    splits = assign_splits(num_ids, seed, o.split_ratios or {"train": 0.6, "val": 0.2, "test": 0.2})
    for cam in range(1, 7):
        (folder.root / f"cam{cam}").mkdir(exist_ok=True)
    for ident in each_identity(num_ids, seed, o.progress):
        pid = ident.pid
        rng = seeded_rng(seed, pid, 4)
        vis = _pick_cams(rng, [1, 2, 4, 5], 2, 4)
        if 1 not in vis and 2 not in vis:
            vis = sorted([int(rng.choice([1, 2]))] + vis[1:])
        ir = _pick_cams(rng, [3, 6], 1, 2)
        count = _image_counts(pid, seed, images_per_id, per_camera=True)
        for shot in camera_images(ident, seed, o.height, o.width, (vis, ir), count, weights):
            rel = f"cam{shot.camera}/{pid:04d}/{shot.k:04d}.jpg"
            group = f"{splits[pid]}_{('vis', 'ir')[shot.stream]}"
            _save_camera_image(folder, rel, shot, seed, group)
    for split in ("train", "val", "test"):
        folder.write_ids(f"exp/{split}_id.txt", _ids_in(splits, split))
    return folder.finish()


#: the visible-infrared formats (their writers take ``captions_json``)
_VI_FORMATS = ("regdb", "llcm", "sysumm01")

#: format name -> writer(out_dir, num_ids, seed, images_per_id, **options)
WRITERS: dict[str, Callable[..., dict]] = {
    "rgbtpedes": write_rgbtpedes,
    "cuhkpedes": write_cuhkpedes,
    "regdb": write_regdb,
    "llcm": write_llcm,
    "sysumm01": write_sysumm01,
}


def ensure_synthetic(data_root: str | Path, fmt: str, num_ids: int, seed: int = 0) -> bool:
    """Write a synthetic dataset under ``data_root`` unless one with these settings is there.

    A ``synthetic.json`` stamp in the dataset folder records the settings it was written with.
    Returns True when it generated the data, False when the cached copy was reused.
    """
    wanted = {"format": fmt, "ids": num_ids, "seed": seed}
    if fmt in _VI_FORMATS:
        # Folders written before the VI writers made captions by default have a stamp without
        # this field, so they are written again, now with captions_synthetic.json.
        wanted["captions"] = True
    for folder in Path(data_root).glob("*"):
        stamp = folder / "synthetic.json"
        if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
            return False
    summary = WRITERS[fmt](data_root, num_ids, seed=seed, overwrite=True)
    (Path(summary["root"]) / "synthetic.json").write_text(json.dumps(wanted))
    return True
