"""Tests of the procedural synthetic pedestrian benchmark and its dataset writers."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

# The generator needs only numpy and PIL; loading the package on its own keeps these tests free
# of the torch / fastreid import that the ``plugins`` package performs.
_PACKAGE = ROOT / "plugins" / "synthetic"
_spec = importlib.util.spec_from_file_location(
    "_synthetic_pedestrians_test",
    _PACKAGE / "__init__.py",
    submodule_search_locations=[str(_PACKAGE)],
)
syn = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = syn
_spec.loader.exec_module(syn)

COLOR_RE = re.compile(r"\b(" + "|".join(syn.ALL_COLOR_WORDS) + r")\b", re.IGNORECASE)
CARRY_RE = re.compile(r"\b(backpack|rucksack|handbag|purse|bag|umbrella)\b", re.IGNORECASE)
BACKPACK_RE = re.compile(r"\b(backpack|rucksack)\b", re.IGNORECASE)
HAT_RE = re.compile(r"\b(cap|hat)\b", re.IGNORECASE)
HAIR_RE = re.compile(r"\b(hair|bald)\b", re.IGNORECASE)
SHOES_RE = re.compile(r"\b(shoes|sneakers|trainers)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def records():
    return list(syn.generate(60, (2, 2), seed=0))


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def _find_identity(pred, seed: int = 0) -> syn.Identity:
    for pid in range(1, 500):
        ident = syn.make_identity(pid, seed)
        if pred(ident):
            return ident
    raise AssertionError("no identity matches")


def _normal_spec(ident, **changes) -> syn.ViewSpec:
    spec = syn.sample_view(ident, 1, 0)
    return dataclasses.replace(spec, challenge="normal", occluder=None, **changes)


# ---------------------------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------------------------


def test_palette_names():
    assert len(syn.COLOR_NAMES) == 12
    assert set(syn.COLOR_NAMES) == set(syn.PALETTE)
    assert set(syn.HAIR_COLOR_NAMES) <= set(syn.ALL_COLOR_WORDS)


def test_generate_is_deterministic():
    a = list(syn.generate(4, (2, 3), seed=3))
    b = list(syn.generate(4, (2, 3), seed=3))
    c = list(syn.generate(4, (2, 3), seed=4))
    assert [r.name for r in a] == [r.name for r in b]
    for x, y in zip(a, b):
        assert x.captions == y.captions and x.no_color_captions == y.no_color_captions
        assert x.rgb.tobytes() == y.rgb.tobytes()
        assert x.thermal.tobytes() == y.thermal.tobytes()
        assert x.identity == y.identity and x.spec == y.spec
    assert [r.identity for r in a] != [r.identity for r in c]
    assert [r.rgb.tobytes() for r in a[:2]] != [r.rgb.tobytes() for r in c[:2]]


def test_identity_and_view_do_not_depend_on_generation_order():
    ident = syn.make_identity(7, seed=2)
    assert ident == syn.make_identity(7, seed=2)
    assert syn.sample_view(ident, 3, 2) == syn.sample_view(ident, 3, 2)
    assert syn.sample_view(ident, 3, 2) != syn.sample_view(ident, 3, 2, stream=1)


def test_record_fields(records):
    for r in records:
        assert r.rgb.mode == "RGB" and r.rgb.size == (64, 128)
        assert r.thermal.mode == "L" and r.thermal.size == (64, 128)
        assert r.split in ("train", "test")
        assert r.challenge in syn.CHALLENGES and r.view in syn.VIEWS and r.scene in syn.SCENES
        assert r.name == f"{r.pid:04d}_{r.index:02d}"
        assert 1 <= len(r.captions) <= 2 and len(r.no_color_captions) == len(r.captions)
        assert all(c and c[-1] == "." for c in r.captions)
    # colours are shared: telling identities apart needs more than the upper garment colour
    upper = [r.identity.upper_color for r in records if r.index == 1]
    assert len(set(upper)) < len(upper)


def test_custom_size():
    rec = next(syn.generate(1, 1, seed=0, height=96, width=48))
    assert rec.rgb.size == (48, 96) and rec.thermal.size == (48, 96)


def test_assign_splits():
    splits = syn.assign_splits(100, seed=1)
    assert sorted(splits) == list(range(1, 101))
    assert sum(s == "train" for s in splits.values()) == 70
    assert splits == syn.assign_splits(100, seed=1)
    assert splits != syn.assign_splits(100, seed=2)
    small = syn.assign_splits(3, 0, {"train": 0.8, "val": 0.1, "test": 0.1})
    assert sorted(small.values()) == ["test", "train", "val"]


# ---------------------------------------------------------------------------------------------
# captions
# ---------------------------------------------------------------------------------------------


def _norm_tokens(text: str) -> list[str]:
    return ["a" if t == "an" else t for t in syn.tokenize(text)]


def test_color_free_captions(records):
    colored = 0
    for r in records:
        for cap, plain in zip(r.captions, r.no_color_captions):
            assert not COLOR_RE.search(plain), plain
            colored += bool(COLOR_RE.search(cap))
            # the colour-free caption is the same sentence without its colour words
            kept = [t for t in _norm_tokens(cap) if t not in syn.ALL_COLOR_WORDS]
            assert kept == _norm_tokens(plain)
            for text in (cap, plain):
                assert not re.search(r"\ba [aeiou]", text, re.IGNORECASE), text
                assert not re.search(r"\ban [^aeiou\s]", text, re.IGNORECASE), text
    assert colored > 0.8 * sum(len(r.captions) for r in records)


def test_captions_are_varied(records):
    caps = [c for r in records for c in r.captions]
    assert len(set(caps)) == len(caps)
    starts = {" ".join(c.split()[:2]) for c in caps}
    assert len(starts) > 8


def test_captions_only_mention_visible_attributes(records):
    front_backpacks = 0
    for r in records:
        text = " ".join(r.captions)
        if "carry" not in r.visible:
            assert not CARRY_RE.search(text), (r.name, text)
        if r.view == "front" and r.identity.carry == "backpack":
            front_backpacks += 1
            assert "carry" not in r.visible
            assert not BACKPACK_RE.search(text), (r.name, text)
        if "hat" not in r.visible:
            assert not HAT_RE.search(text), (r.name, text)
        if "hair" not in r.visible:
            assert not HAIR_RE.search(text), (r.name, text)
        if "shoes" not in r.visible:
            assert not SHOES_RE.search(text), (r.name, text)
    assert front_backpacks > 0


def test_captions_mention_a_subset():
    ident = _find_identity(lambda i: i.carry == "shoulder bag" and i.lower == "trousers")
    spec = _normal_spec(ident, view="front")
    out = syn.render(ident, spec)
    assert {"upper", "lower", "carry"} <= set(out.visible)
    caps, _ = syn.make_captions(ident, spec, out.visible, np.random.default_rng(0), 2)
    assert len(caps) == 2 and caps[0] != caps[1]
    mentions = []
    for c in caps:
        words = set(syn.tokenize(c))
        mentions.append(
            {
                "carry": bool(CARRY_RE.search(c)),
                "shoes": bool(SHOES_RE.search(c)),
                "hair": bool(HAIR_RE.search(c)),
                "lower": bool(words & {"trousers", "pants", "jeans"}),
            }
        )
    assert any(not all(m.values()) for m in mentions)


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------


def test_visibility_depends_on_view():
    ident = _find_identity(lambda i: i.carry == "backpack")
    front = syn.render(ident, _normal_spec(ident, view="front"))
    back = syn.render(ident, _normal_spec(ident, view="back"))
    side = syn.render(ident, _normal_spec(ident, view="side"))
    assert "carry" not in front.visible
    assert "carry" in back.visible and "carry" in side.visible


def test_thermal_ignores_clothing_colour():
    for pid in (1, 2, 3):
        ident = syn.make_identity(pid, 0)
        spec = _normal_spec(ident)
        other = "white" if syn.person.lum(syn.PALETTE[ident.upper_color]) < 120 else "black"
        a = syn.render(ident, spec)
        b = syn.render(dataclasses.replace(ident, upper_color=other), spec)
        assert a.thermal.mode == "L" and len(a.thermal.getbands()) == 1
        rgb_diff = np.abs(_arr(a.rgb) - _arr(b.rgb)).mean()
        t_diff = np.abs(_arr(a.thermal) - _arr(b.thermal)).mean()
        assert rgb_diff > 5.0
        assert t_diff < 1.5
        assert rgb_diff > 10 * t_diff


def test_thermal_depends_on_garment_type():
    ident = _find_identity(lambda i: i.upper == "t-shirt")
    spec = _normal_spec(ident, view="front")
    a = syn.render(ident, spec)
    b = syn.render(dataclasses.replace(ident, upper="coat"), spec)
    mask = a.labels[::2, ::2] == syn.canvas.L_UPPER
    assert mask.sum() > 100
    # the t-shirt is warmer (brighter) than a coat on the same body
    assert _arr(a.thermal)[mask].mean() > _arr(b.thermal)[mask].mean() + 20


def test_dark_challenges_darken_rgb_not_thermal():
    for pid in (1, 4):
        ident = syn.make_identity(pid, 0)
        spec = _normal_spec(ident)
        normal = syn.render(ident, spec)
        n_rgb = _arr(normal.rgb)
        n_std = n_rgb.mean(2).std()
        n_sat = (n_rgb.max(2) - n_rgb.min(2)).mean()
        for challenge, max_mean, std_ratio in (("darkness", 20, 0.15), ("low_light", 45, 0.4)):
            dark = syn.render(ident, dataclasses.replace(spec, challenge=challenge))
            rgb = _arr(dark.rgb)
            assert rgb.mean() < max_mean
            assert rgb.mean(2).std() < std_ratio * n_std
            assert (rgb.max(2) - rgb.min(2)).mean() < 0.5 * n_sat
            assert dark.thermal.tobytes() == normal.thermal.tobytes()


def test_light_challenges_change_rgb_only():
    ident = syn.make_identity(2, 0)
    spec = _normal_spec(ident)
    normal = syn.render(ident, spec)
    glare = syn.render(ident, dataclasses.replace(spec, challenge="strong_light"))
    cast = syn.render(ident, dataclasses.replace(spec, challenge="abnormal_illumination"))
    assert (_arr(glare.rgb).mean(2) > 240).mean() > (_arr(normal.rgb).mean(2) > 240).mean() + 0.05
    assert np.abs(_arr(cast.rgb) - _arr(normal.rgb)).mean() > 20
    assert glare.thermal.tobytes() == normal.thermal.tobytes() == cast.thermal.tobytes()


def test_occlusion_hits_both_modalities():
    ident = syn.make_identity(1, 0)
    spec = _normal_spec(ident)
    clear = syn.render(ident, spec)
    for kind in syn.OCCLUDERS:
        occ = syn.render(ident, dataclasses.replace(spec, challenge="occlusion", occluder=kind))
        hidden = np.isin(occ.labels, [syn.canvas.L_OCC_A, syn.canvas.L_OCC_B, syn.canvas.L_OCC_C])
        person_before = (clear.labels >= 32) & (clear.labels < 48)
        assert (hidden & person_before).sum() > 0.1 * person_before.sum(), kind
        assert np.abs(_arr(occ.rgb) - _arr(clear.rgb)).mean() > 3
        assert np.abs(_arr(occ.thermal) - _arr(clear.thermal)).mean() > 3


def test_generation_speed():
    import time

    start = time.perf_counter()
    n = sum(1 for _ in syn.generate(25, (4, 4), seed=0))
    assert n == 100
    # ~5 ms per RGB + thermal pair on one core; generous bound for busy machines
    assert time.perf_counter() - start < 10.0


def test_contact_sheet():
    recs = list(syn.generate(2, (2, 2), seed=0))
    sheet = syn.contact_sheet(recs, cols=2)
    assert sheet.size[0] >= 2 * 2 * 64 * 2


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------


def test_write_rgbtpedes(tmp_path):
    summary = syn.write_rgbtpedes(tmp_path, 10, seed=1, images_per_id=(2, 3))
    root = tmp_path / "RGBT-PEDES"
    entries = json.loads((root / "caption_2_no_color.json").read_text())
    assert len(entries) == sum(summary["images"].values())
    names = set()
    for e in entries:
        assert set(e) == {"split", "captions", "no_color_caption", "file_path", "id"}
        assert e["split"] in ("train", "test") and 1 <= e["id"] <= 10
        assert len(e["captions"]) == len(e["no_color_caption"]) >= 1
        name = Path(e["file_path"]).name
        assert e["file_path"] == f"RGB/{name}"
        names.add(name)
        assert Image.open(root / "RGB" / name).mode == "RGB"
        assert Image.open(root / "T" / name).mode == "L"
    assert len(names) == len(entries)
    assert len({e["id"] for e in entries if e["split"] == "train"}) == 7
    test_names = {Path(e["file_path"]).name for e in entries if e["split"] == "test"}
    listed = []
    for challenge in (
        "low_light",
        "darkness",
        "strong_light",
        "abnormal_illumination",
        "occlusion",
    ):
        items = json.loads((root / "challenge_json" / f"{challenge}.json").read_text())
        assert set(items) <= test_names
        listed += items
    assert len(listed) == len(set(listed)) == sum(summary["test_challenges"].values())
    assert not (root / "challenge_json" / "normal.json").exists()
    assert sorted((root / "RGB").iterdir()) != []
    # byte-identical output for the same seed
    syn.write_rgbtpedes(tmp_path / "again", 10, seed=1, images_per_id=(2, 3))
    for sub in ("caption_2_no_color.json", "RGB/0001_01.jpg", "T/0001_01.jpg"):
        assert (root / sub).read_bytes() == (tmp_path / "again" / "RGBT-PEDES" / sub).read_bytes()


def test_write_rgbtpedes_empty_captions(tmp_path):
    syn.write_rgbtpedes(tmp_path, 6, seed=0, empty_caption_prob=0.5)
    entries = json.loads((tmp_path / "RGBT-PEDES" / "caption_2_no_color.json").read_text())
    caps = [c for e in entries for c in e["captions"]]
    assert "" in caps and any(caps)


def test_write_cuhkpedes(tmp_path):
    summary = syn.write_cuhkpedes(tmp_path, 12, seed=0, images_per_id=(1, 2))
    root = tmp_path / "CUHK-PEDES"
    entries = json.loads((root / "reid_raw.json").read_text())
    assert {e["split"] for e in entries} == {"train", "val", "test"}
    assert summary["captions"]["train"] == sum(
        len(e["captions"]) for e in entries if e["split"] == "train"
    )
    for e in entries:
        assert set(e) == {"split", "captions", "file_path", "processed_tokens", "id"}
        assert e["file_path"].startswith("synth/")
        assert len(e["processed_tokens"]) == len(e["captions"]) == 2
        assert e["processed_tokens"][0] == syn.tokenize(e["captions"][0])
        assert Image.open(root / "imgs" / e["file_path"]).mode == "RGB"
    by_split = {}
    for e in entries:
        by_split.setdefault(e["id"], set()).add(e["split"])
    assert all(len(s) == 1 for s in by_split.values())


def _read_index(path: Path) -> list[tuple[str, int]]:
    out = []
    for line in path.read_text().splitlines():
        rel, label = line.split()
        out.append((rel, int(label)))
    return out


def test_write_regdb(tmp_path):
    n_ids, n_img = 6, 3
    syn.write_regdb(tmp_path, n_ids, seed=0, images_per_id=n_img, trials=10)
    root = tmp_path / "RegDB"
    for pid in range(1, n_ids + 1):
        assert len(list((root / "Visible" / str(pid)).glob("*_v_*.bmp"))) == n_img
        assert len(list((root / "Thermal" / str(pid)).glob("*_t_*.bmp"))) == n_img
    name_re = re.compile(
        r"^(Visible|Thermal)/(\d+)/(male|female)_(front|back)_(v|t)_\d{5}_\d+\.bmp$"
    )
    splits = set()
    for t in range(1, 11):
        ids = {}
        for split in ("train", "test"):
            for modality in ("visible", "thermal"):
                lines = _read_index(root / "idx" / f"{split}_{modality}_{t}.txt")
                assert len(lines) == n_img * n_ids // 2
                for rel, label in lines:
                    m = name_re.match(rel)
                    assert m and (root / rel).is_file(), rel
                    assert m.group(1).lower() == modality
                    pid = int(m.group(2))
                    ids.setdefault(split, set()).add(pid)
                    if split == "test":
                        assert label == pid - 1
                if split == "train":
                    assert sorted({lab for _, lab in lines}) == list(range(n_ids // 2))
        assert not ids["train"] & ids["test"] and len(ids["train"] | ids["test"]) == n_ids
        splits.add(tuple(sorted(ids["train"])))
    assert len(splits) > 1  # trials differ
    img = Image.open(next((root / "Thermal" / "1").iterdir()))
    assert img.mode == "L" and img.size == (64, 128)
    # the infrared images of an identity are other views than its visible ones
    vis = sorted((root / "Visible" / "1").iterdir())[0]
    th = sorted((root / "Thermal" / "1").iterdir())[0]
    v = _arr(Image.open(vis).convert("L"))
    assert not np.array_equal(v, _arr(Image.open(th)))


def test_write_llcm(tmp_path):
    summary = syn.write_llcm(tmp_path, 9, seed=0, images_per_id=(1, 2), captions_json=True)
    root = tmp_path / "LLCM"
    test_ids = [int(x) for x in (root / "idx" / "test_id.txt").read_text().strip().split(",")]
    assert len(test_ids) == 3
    labels = {}
    for mod in ("vis", "nir"):
        lines = _read_index(root / "idx" / f"train_{mod}.txt")
        assert lines
        for rel, label in lines:
            m = re.match(
                rf"^{mod}/(\d{{4}})/(\d{{4}})_c(\d{{2}})_s\d{{6}}_f\d{{4}}_{mod}\.jpg$", rel
            )
            assert m and m.group(1) == m.group(2) and (root / rel).is_file(), rel
            pid = int(m.group(1))
            assert pid not in test_ids
            assert labels.setdefault(pid, label) == label
            if mod == "nir":
                assert int(m.group(3)) != 3
    assert sorted(labels.values()) == list(range(len(labels))) and len(labels) == 6
    for mod in ("vis", "nir"):
        files = list((root / f"test_{mod}").glob("cam*/*/*.jpg"))
        assert files and {int(f.parent.name) for f in files} == set(test_ids)
        for f in files:
            cam = int(f.parent.parent.name[3:])
            assert f"_c{cam:02d}_" in f.name and f.name.endswith(f"_{mod}.jpg")
            assert 1 <= cam <= 9 and (mod == "vis" or cam != 3)
    caps = json.loads((root / "captions_synthetic.json").read_text())
    assert len(caps) == sum(summary["images"].values())
    assert all(not COLOR_RE.search(c) for k, c in caps.items() if "nir" in k)


def test_write_sysumm01(tmp_path):
    syn.write_sysumm01(tmp_path, 10, seed=0, images_per_id=(1, 2))
    root = tmp_path / "SYSU-MM01"
    ids = {}
    for split in ("train", "val", "test"):
        text = (root / "exp" / f"{split}_id.txt").read_text().strip()
        assert "\n" not in text
        ids[split] = [int(x) for x in text.split(",")]
    assert sorted(sum(ids.values(), [])) == list(range(1, 11))
    for pid in range(1, 11):
        vis = [c for c in (1, 2, 4, 5) if (root / f"cam{c}" / f"{pid:04d}").is_dir()]
        ir = [c for c in (3, 6) if (root / f"cam{c}" / f"{pid:04d}").is_dir()]
        assert vis and ir and ({1, 2} & set(vis))
    for cam in range(1, 7):
        files = sorted((root / f"cam{cam}").glob("*/*.jpg"))
        for f in files[:3]:
            assert re.fullmatch(r"\d{4}\.jpg", f.name)
            assert Image.open(f).mode == ("L" if cam in (3, 6) else "RGB")


def test_writers_refuse_to_overwrite(tmp_path):
    syn.write_cuhkpedes(tmp_path, 3, seed=0, images_per_id=1)
    with pytest.raises(FileExistsError):
        syn.write_cuhkpedes(tmp_path, 3, seed=0, images_per_id=1)
    summary = syn.write_cuhkpedes(tmp_path, 4, seed=0, images_per_id=1, overwrite=True)
    assert sum(summary["ids"].values()) == 4
    entries = json.loads((tmp_path / "CUHK-PEDES" / "reid_raw.json").read_text())
    assert len({e["id"] for e in entries}) == 4


def test_cli(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "make_synthetic.py"),
        "--format",
        "rgbtpedes",
        "--ids",
        "4",
        "--seed",
        "2",
        "--out",
        str(tmp_path),
        "--images-per-id",
        "1",
        "2",
        "--quiet",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "images" in run.stdout and "time" in run.stdout
    assert (tmp_path / "RGBT-PEDES" / "caption_2_no_color.json").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "overwrite" in again.stderr
    forced = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0, forced.stderr


# ---------------------------------------------------------------------------------------------
# golden output: the bytes every writer produces for a tiny set
# ---------------------------------------------------------------------------------------------

# format -> (identities, writer keywords); seed 11, 32 x 16 images
_GOLDEN_SETS = {
    "rgbtpedes": (8, {"images_per_id": (1, 2), "empty_caption_prob": 0.3}),
    "cuhkpedes": (4, {"images_per_id": (1, 2)}),
    "regdb": (4, {"images_per_id": 2, "trials": 2, "captions_json": True}),
    "llcm": (4, {"images_per_id": 1, "captions_json": True}),
    "sysumm01": (5, {"images_per_id": 1, "captions_json": True}),
}
# Recorded from the generator as it was when these sets were introduced. A change of any file
# (an image, an index / JSON file) or of the returned summary changes a digest: regenerate the
# numbers only for an intended change of the output.
_GOLDEN = {
    "rgbtpedes": {
        "files": 30,
        "images": "f4cc65e48b430de6dd42b083ac1120556f0ac4276b4d03dc49a0b5f46351a35f",
        "text": "f5a1c70165eeeb32224a8940612773101dc7903a156ca691cbcbaf91a44b6900",
        "summary": "1c3aed6f0598408e5293dbb0727eb71e12825c121258b32f888e2b3cc329f16f",
    },
    "cuhkpedes": {
        "files": 6,
        "images": "4ae0a3aed63d72c166a0d1b919f69311297c23d3cc596dac16f2431c353ab02f",
        "text": "e14904938d4f79b0976547773f09eff6f4937856238ecf3d247dd14cf0160b4c",
        "summary": "7e1833ea7e35631a9dfbebf6fb169c33bd9cb02a2988f00fa6dc624ec681b6eb",
    },
    "regdb": {
        "files": 25,
        "images": "e58c309b2f0666fbbd7527c89aa7875bf68c631509f809bb9aadea2d44334917",
        "text": "5beb5f0d09681ec0f359c105964cf8746b87a1f02afb8da2a1ec3c71dd464b59",
        "summary": "d22365faa92289467f5c3170b5c959d01d46d632f3f82d0e94080ceead09a803",
    },
    "llcm": {
        "files": 29,
        "images": "f29aead44dd32ae42d14a3a359d45b58c32e3403cc578f1864c2468c05373200",
        "text": "41ec1038b28c5bdda8aeef6652c5813cf38a55b7271237b0145f4cbc41c12db6",
        "summary": "14c5bba92096c03d1868cdf4dbafe99dc68f02f3c240fa833953d050dd7db3bc",
    },
    "sysumm01": {
        "files": 31,
        "images": "dec584277d044853e2c3bcbc2690c6e223cb48214fac77580fa903172fbe76a7",
        "text": "39f33001d2e96259c60bbefe462de3606b7f1548581a54364fbb05b713b20a97",
        "summary": "cad0bb1830652ad017107849b2a108f2357004dbcb54f86e9fd0c2f1aab74aae",
    },
}


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _golden_digests(fmt: str, out: Path) -> dict:
    """File count and sha256 over ``<path> <sha256 of file>`` lines of the images and of the
    other files, and over the summary (its root made relative)."""
    num_ids, kwargs = _GOLDEN_SETS[fmt]
    summary = syn.WRITERS[fmt](out, num_ids, 11, height=32, width=16, **kwargs)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    lines: dict[bool, list[str]] = {True: [], False: []}
    for p in files:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        lines[p.suffix in (".jpg", ".bmp")].append(f"{p.relative_to(out)} {digest}\n")
    summary["root"] = Path(summary["root"]).name
    return {
        "files": len(files),
        "images": _digest(lines[True]),
        "text": _digest(lines[False]),
        "summary": _digest([json.dumps(summary)]),
    }


@pytest.mark.parametrize("fmt", sorted(_GOLDEN_SETS))
def test_writers_output_is_unchanged(tmp_path, fmt):
    assert _golden_digests(fmt, tmp_path) == _GOLDEN[fmt]


# ---------------------------------------------------------------------------------------------
# pretraining population (tools/pretrain_synthetic_clip.py)
# ---------------------------------------------------------------------------------------------


def _committed_populations() -> list:
    """The training and held-out populations of every committed synthetic CLIP, from the records
    next to the weights (identity index ranges)."""
    ranges = []
    for path in sorted((ROOT / "weights" / "synthetic-clip").glob("*.json")):
        args = json.loads(path.read_text())["args"]
        train = syn.PretrainingSet(args["images"], args["images_per_id"])
        held_out = syn.PretrainingSet(
            args["val_images"], args["images_per_id"], first_identity=train.num_identities
        )
        ranges += [train.identity_range(), held_out.identity_range()]
    assert ranges, "no record in weights/synthetic-clip"
    return ranges


def test_pretraining_identities_are_no_benchmark_identity():
    # The benchmark identities (data seeds 0-2, pids 1-1000: every set the README, the demo and
    # the benchmarks make), drawn here without the module's reserved set.
    benchmark = {
        syn.identity_key(syn.make_identity(pid, seed))
        for seed in (0, 1, 2)
        for pid in range(1, 1001)
    }
    seen = set()
    for identities in _committed_populations():
        for j in identities:
            if j in seen:
                continue
            seen.add(j)
            ident = syn.pretraining_identity(j)
            assert ident.pid > syn.PRETRAIN_PID_OFFSET  # benchmark pids run from 1
            assert syn.identity_key(ident) not in benchmark, (j, ident)
    assert len(seen) > 1000
    assert syn.PRETRAIN_SEED not in (0, 1, 2)


def test_a_pretraining_identity_equal_to_a_benchmark_one_is_redrawn(monkeypatch):
    pretraining = sys.modules[f"{syn.__name__}.pretraining"]
    first = syn.make_identity(syn.PRETRAIN_PID_OFFSET + 1, syn.PRETRAIN_SEED)
    assert syn.pretraining_identity(0) == first
    monkeypatch.setattr(
        pretraining, "reserved_identity_keys", lambda: frozenset({syn.identity_key(first)})
    )
    redrawn = syn.pretraining_identity(0)
    assert redrawn.pid != first.pid and syn.identity_key(redrawn) != syn.identity_key(first)


def test_pretraining_renders_are_no_benchmark_render():
    benchmark = {
        hashlib.sha256(r.rgb.tobytes()).hexdigest()
        for r in syn.generate(40, (2, 4), seed=0, modalities=("rgb",))
    }
    samples = syn.PretrainingSet(60, 2, size=None)
    for sample in samples:
        assert sample.image.size == (64, 128)
        assert hashlib.sha256(sample.image.tobytes()).hexdigest() not in benchmark


def test_pretraining_samples_are_deterministic_and_varied():
    samples = syn.PretrainingSet(40, 2, captions_per_image=4, grey_share=0.5)
    a, b = samples[7], syn.PretrainingSet(40, 2, captions_per_image=4, grey_share=0.5)[7]
    assert a.captions == b.captions and a.image.tobytes() == b.image.tobytes()
    assert a.image.size == (32, 64) and a.pid == samples[6].pid != samples[8].pid
    every = list(samples)
    # Four different captions per image, naming attributes rather than repeating one template.
    assert all(len(set(s.captions)) >= 3 for s in every)
    greys = [s for s in every if s.grey]
    assert 5 <= len(greys) <= 35
    for s in greys:
        pixels = np.asarray(s.image, dtype=np.int16)
        assert np.abs(pixels[..., 0] - pixels[..., 1]).max() <= 2  # one channel, repeated
        assert not any(COLOR_RE.search(c) for c in s.captions), s.captions
    assert any(COLOR_RE.search(c) for s in every if not s.grey for c in s.captions)
