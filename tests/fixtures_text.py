"""Tiny caption datasets in the official on-disk layouts, for reader tests.

Each ``write_*`` function writes one dataset folder below ``root`` (the ``FASTREID_DATASETS``
folder) and returns its path. The default records are small but carry the awkward cases the
readers must handle: unsorted and non-contiguous ids, images with three captions, empty and
whitespace-only captions, an image whose captions are all empty, nested image paths and (for
RGBT-PEDES) file paths whose folder differs from ``RGB/``. The counts each default produces are
spelled out in the docstrings so tests can assert literal numbers.
"""

import json
import os

from PIL import Image


def write_image(path, color=(128, 64, 32), mode="RGB", size=(8, 16)):
    """A solid-colour image at ``path`` (format from the extension); ``mode="L"`` for thermal."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if mode == "L":
        color = color[0] if isinstance(color, tuple) else color
    Image.new(mode, size, color).save(path)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _colour(i):
    return (40 * i % 256, 90 * i % 256, 150 * i % 256)


def record(split, pid, path, captions, image_key="file_path", **extra):
    """One annotation record in the CUHK-PEDES shape (``image_key`` names the path field)."""
    return {"split": split, "captions": list(captions), image_key: path, "id": pid, **extra}


def write_caption_dataset(dataset_dir, json_name, records, image_key="file_path", skip=()):
    """Write ``records`` to ``<dataset_dir>/<json_name>`` and one image per record under ``imgs/``.

    Images whose annotation path is in ``skip`` are not written (for missing-image tests).
    """
    for i, r in enumerate(records):
        if r[image_key] not in skip:
            write_image(os.path.join(dataset_dir, "imgs", r[image_key]), _colour(i))
    write_json(os.path.join(dataset_dir, json_name), records)
    return dataset_dir


def cuhkpedes_records():
    """Default CUHK-PEDES records.

    train: 6 images in the file; ids 12, 3, 7 keep captions (3 ids after relabelling; id 5 has
    only an empty caption and disappears), 4 images with captions, 8 captions, 4 empty skipped.
    val: ids 20, 21; 3 images; 6 captions. test: ids 30, 31, 32; 4 images (id 32's image has
    only empty captions and stays in the gallery); 6 captions; 2 empty skipped.
    """
    return [
        record("test", 30, "CUHK01/0030001.png", ["t30 a one", "t30 a two"]),
        record("train", 12, "CUHK01/0012001.png", ["a man in red", "he wears a red coat"]),
        record("train", 3, "CUHK03/3_a.jpg", ["cap one", "cap two", "cap three"]),
        record("val", 20, "test_query/p20_s1.jpg", ["v20 a", "v20 b"]),
        record("train", 12, "CUHK01/0012002.png", ["red coat again", "a red coat and jeans"]),
        record("train", 3, "CUHK03/3_b.jpg", ["", "   "]),
        record("train", 7, "train_query/p7_s1.jpg", ["a woman with a bag", ""]),
        record("train", 5, "Market/0005_c1.jpg", [""]),
        record("val", 20, "test_query/p20_s2.jpg", ["v20 c", "v20 d"]),
        record("val", 21, "test_query/p21_s1.jpg", ["v21 a", "v21 b"]),
        record("test", 30, "CUHK01/0030002.png", ["t30 b one", "t30 b two"]),
        record("test", 31, "CUHK02/0031001.png", ["t31 one", "t31 two"]),
        record("test", 32, "CUHK02/0032001.png", ["", " "]),
    ]


def write_cuhkpedes(root, records=None, skip=()):
    """``<root>/CUHK-PEDES/{reid_raw.json, imgs/...}``; defaults from ``cuhkpedes_records``."""
    records = cuhkpedes_records() if records is None else records
    return write_caption_dataset(
        os.path.join(root, "CUHK-PEDES"), "reid_raw.json", records, skip=skip
    )


def icfgpedes_records():
    """Default ICFG-PEDES records (one caption per image).

    train: ids 9, 1, 2 -> 3 ids, 5 images, 5 captions. test: ids 101, 100 -> 2 ids, 3 images,
    3 captions.
    """
    return [
        record("train", 9, "train/0009/0009_001_01_0303morning_0001_0.jpg", ["p9 first"]),
        record("train", 1, "train/0001/0001_004_05_0303noon_0002_1.jpg", ["p1 only"]),
        record("test", 101, "test/0101/0101_010_05_0303morning_0032_0.jpg", ["p101"]),
        record("train", 9, "train/0009/0009_002_01_0303morning_0003_0.jpg", ["p9 second"]),
        record("train", 2, "train/0002/0002_001_02_0303afternoon_0001_0.jpg", ["p2 a"]),
        record("train", 2, "train/0002/0002_002_02_0303afternoon_0002_0.jpg", ["p2 b"]),
        record("test", 100, "test/0100/0100_001_01_0303morning_0001_0.jpg", ["p100 a"]),
        record("test", 100, "test/0100/0100_002_01_0303morning_0002_0.jpg", ["p100 b"]),
    ]


def write_icfgpedes(root, records=None, json_name="ICFG-PEDES.json", skip=()):
    """``<root>/ICFG-PEDES/{<json_name>, imgs/...}``; ``json_name`` may be ``ICFG_PEDES.json``."""
    records = icfgpedes_records() if records is None else records
    return write_caption_dataset(os.path.join(root, "ICFG-PEDES"), json_name, records, skip=skip)


def rstpreid_records():
    """Default RSTPReid records (``img_path``, two captions per image).

    train: ids 4, 2 -> 2 ids, 4 images, 8 captions. val: id 50 -> 1 id, 2 images, 4 captions.
    test: ids 60, 61 -> 2 ids, 2 images, 4 captions.
    """

    def r(split, pid, name):
        return record(split, pid, name, [f"{name} one", f"{name} two"], image_key="img_path")

    return [
        r("train", 4, "3903_c14_0007.jpg"),
        r("train", 4, "3903_c11_0012.jpg"),
        r("train", 2, "0002_c3_0001.jpg"),
        r("train", 2, "0002_c5_0004.jpg"),
        r("val", 50, "0050_c1_0001.jpg"),
        r("val", 50, "0050_c2_0001.jpg"),
        r("test", 61, "0061_c1_0001.jpg"),
        r("test", 60, "0060_c3_0002.jpg"),
    ]


def write_rstpreid(root, records=None, skip=()):
    """``<root>/RSTPReid/{data_captions.json, imgs/...}``."""
    records = rstpreid_records() if records is None else records
    return write_caption_dataset(
        os.path.join(root, "RSTPReid"),
        "data_captions.json",
        records,
        image_key="img_path",
        skip=skip,
    )


def rgbtpedes_records():
    """Default RGBT-PEDES records; ``file_path`` folders vary, only basenames locate pairs.

    train: ids 8, 1, 4 -> 3 ids, 4 pairs, 6 captions, 1 empty skipped (id 4's first caption;
    its colour-free caption "nc4 b" must stay aligned with "p4 b"); one record has no
    ``no_color_caption`` field and one a shorter list. test: ids 100, 101, 102 -> 3 ids,
    4 pairs (102's captions are all empty), 5 captions, 1 empty skipped.
    """
    return [
        record(
            "train", 8, "RGB/0008_day_01.jpg", ["p8 a", "p8 b"], no_color_caption=["nc8 a", "nc8 b"]
        ),
        record("train", 1, "0001_night_01.jpg", ["p1 a", "p1 b"]),
        record("train", 8, "imgs/day/0008_day_02.jpg", ["p8 c"], no_color_caption=[]),
        record(
            "train", 4, "RGB/0004_dusk_01.jpg", ["", "p4 b"], no_color_caption=["nc4 a", "nc4 b"]
        ),
        record("test", 100, "RGB/0100_night_01.jpg", ["q100 a", "q100 b"], no_color_caption=["n1"]),
        record("test", 100, "RGB/0100_night_02.jpg", ["q100 c"], no_color_caption=["n100 c"]),
        record(
            "test", 101, "RGB/0101_glare_01.jpg", ["q101 a", "q101 b"], no_color_caption=["a", "b"]
        ),
        record("test", 102, "RGB/0102_dark_01.jpg", ["  "], no_color_caption=["x"]),
    ]


def default_challenges():
    """Challenge subsets for the default RGBT-PEDES test split (gallery ids in comments)."""
    return {
        "low_light": ["0100_night_02.jpg", "0102_dark_01.jpg"],  # gallery ids 1, 3
        "strong_light": ["0101_glare_01.jpg"],  # gallery id 2
    }


def write_rgbtpedes(
    root,
    records=None,
    thermal_dir="T",
    caption_file="caption_2_no_color.json",
    challenges=None,
    skip_rgb=(),
    skip_thermal=(),
):
    """``<root>/RGBT-PEDES/{RGB/, <thermal_dir>/, <caption_file>, challenge_json/}``.

    Args:
        thermal_dir (str): ``T`` (current release) or ``TGray`` (older release).
        challenges (dict[str, list[str]] | None): subset name -> test image names; None writes
            no ``challenge_json`` folder.
        skip_rgb, skip_thermal: basenames whose RGB / thermal image is not written.
    """
    records = rgbtpedes_records() if records is None else records
    dataset_dir = os.path.join(root, "RGBT-PEDES")
    for i, r in enumerate(records):
        name = os.path.basename(r["file_path"])
        if name not in skip_rgb:
            write_image(os.path.join(dataset_dir, "RGB", name), _colour(i))
        if name not in skip_thermal:
            write_image(os.path.join(dataset_dir, thermal_dir, name), 30 * i % 256, mode="L")
    write_json(os.path.join(dataset_dir, caption_file), records)
    for subset, names in (challenges or {}).items():
        write_json(os.path.join(dataset_dir, "challenge_json", f"{subset}.json"), names)
    return dataset_dir
