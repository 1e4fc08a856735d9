"""Caption dataset readers (CUHK-PEDES, ICFG-PEDES, RSTPReid, RGBT-PEDES) on tiny fixtures."""

import json
import logging
import os
import sys

import pytest

import plugins  # noqa: F401  (applies the fastreid fixes, registers the readers)
from tests.fixtures_text import (
    cuhkpedes_records,
    default_challenges,
    rgbtpedes_records,
    write_cuhkpedes,
    write_icfgpedes,
    write_json,
    write_rgbtpedes,
    write_rstpreid,
)

# isort: split
from fastreid.data.datasets import DATASET_REGISTRY

from plugins.data.datasets.cuhkpedes import CUHKPEDES
from plugins.data.datasets.icfgpedes import ICFGPEDES
from plugins.data.datasets.rgbtpedes import RGBTPEDES
from plugins.data.datasets.rstpreid import RSTPReid
from plugins.data.datasets.text_reid import DatasetFormatError, DatasetLayoutError
from plugins.data.items import CaptionItem, GalleryImage, QueryCaption, RetrievalSplit

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def counts(split):
    """(# ids, # gallery images, # query captions) of a RetrievalSplit."""
    return len({g.pid for g in split.images}), len(split.images), len(split.captions)


def train_counts(dataset):
    return (
        len({i.pid for i in dataset.train}),
        len({i.image_id for i in dataset.train}),
        len(dataset.train),
    )


# ------------------------------------------------------------------------------- CUHK-PEDES
def test_cuhkpedes_counts_relabel_and_indexing(tmp_path, caplog):
    write_cuhkpedes(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = CUHKPEDES(root=str(tmp_path))
    assert ds.name == "CUHKPEDES"
    assert all(isinstance(i, CaptionItem) for i in ds.train)

    assert train_counts(ds) == (3, 4, 8)
    assert ds.num_train_pids == 3 and ds.num_train_images == 4
    # Sorted original ids 3 < 7 < 12 become 0, 1, 2; id 5 has no caption and no label.
    assert ds.train_pid_map == {3: 0, 7: 1, 12: 2}
    by_caption = {i.caption: i for i in ds.train}
    assert by_caption["a man in red"].pid == 2
    assert by_caption["cap three"].pid == 0
    assert by_caption["a woman with a bag"].pid == 1
    # Image ids follow file order over training images that have captions.
    assert by_caption["a man in red"].image_id == 0
    assert by_caption["cap one"].image_id == 1
    assert by_caption["red coat again"].image_id == 2
    assert by_caption["a woman with a bag"].image_id == 3
    assert by_caption["cap two"].img_path == os.path.join(
        str(tmp_path), "CUHK-PEDES", "imgs", "CUHK03/3_a.jpg"
    )
    assert {i.camid for i in ds.train} == {0}
    assert {i.t_path for i in ds.train} == {""}
    assert {i.no_color_caption for i in ds.train} == {""}

    assert isinstance(ds.val, RetrievalSplit)
    assert counts(ds.val) == (2, 3, 6)
    assert counts(ds.test) == (3, 4, 6)
    assert ds.test.subsets == {}

    # Empty and whitespace captions: 4 in train, 2 in test, logged with the file name.
    assert ds.empty_captions == {"train": 4, "val": 0, "test": 2}
    assert ds.num_empty_captions == 6
    assert any(
        "skipped 6 empty captions" in r.getMessage() and "reid_raw.json" in r.getMessage()
        for r in caplog.records
    )


def test_cuhkpedes_test_split_keeps_original_ids_and_captionless_images(tmp_path):
    write_cuhkpedes(tmp_path)
    test = CUHKPEDES(root=str(tmp_path), verbose=False).test
    assert all(isinstance(g, GalleryImage) for g in test.images)
    assert all(isinstance(q, QueryCaption) for q in test.captions)
    assert [g.image_id for g in test.images] == [0, 1, 2, 3]
    assert [g.pid for g in test.images] == [30, 30, 31, 32]
    assert [g.name for g in test.images] == [
        "0030001.png",
        "0030002.png",
        "0031001.png",
        "0032001.png",
    ]
    # The image of id 32 has only empty captions: a gallery entry without queries.
    assert [(q.caption, q.pid, q.image_id) for q in test.captions] == [
        ("t30 a one", 30, 0),
        ("t30 a two", 30, 0),
        ("t30 b one", 30, 1),
        ("t30 b two", 30, 1),
        ("t31 one", 31, 2),
        ("t31 two", 31, 2),
    ]
    for q in test.captions:
        assert test.images[q.image_id].pid == q.pid


def test_cuhkpedes_show_tables(tmp_path, caplog):
    write_cuhkpedes(tmp_path)
    ds = CUHKPEDES(root=str(tmp_path), verbose=False)
    with caplog.at_level(logging.INFO):
        ds.show_train()
        ds.show_test()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "# captions" in text
    assert "| train" in text and "| val" in text and "| test" in text


# ------------------------------------------------------------------------------- ICFG-PEDES
@pytest.mark.parametrize("json_name", ["ICFG-PEDES.json", "ICFG_PEDES.json"])
def test_icfgpedes_counts_and_file_names(tmp_path, json_name):
    write_icfgpedes(tmp_path, json_name=json_name)
    ds = ICFGPEDES(root=str(tmp_path))
    assert ds.annotation_file.endswith(json_name)
    assert ds.val is None
    assert train_counts(ds) == (3, 5, 5)
    assert ds.train_pid_map == {1: 0, 2: 1, 9: 2}
    assert counts(ds.test) == (2, 3, 3)
    assert [g.pid for g in ds.test.images] == [101, 100, 100]
    assert ds.num_empty_captions == 0


def test_icfgpedes_rejects_val_records(tmp_path):
    records = [*cuhkpedes_records()]  # has train, val and test
    write_icfgpedes(tmp_path, records=records)
    with pytest.raises(DatasetFormatError, match="split 'val'"):
        ICFGPEDES(root=str(tmp_path))


# --------------------------------------------------------------------------------- RSTPReid
def test_rstpreid_counts_with_img_path(tmp_path):
    write_rstpreid(tmp_path)
    ds = RSTPReid(root=str(tmp_path))
    assert train_counts(ds) == (2, 4, 8)
    assert ds.train_pid_map == {2: 0, 4: 1}
    assert counts(ds.val) == (1, 2, 4)
    assert counts(ds.test) == (2, 2, 4)
    assert ds.test.images[0].img_path == os.path.join(
        str(tmp_path), "RSTPReid", "imgs", "0061_c1_0001.jpg"
    )
    assert [g.pid for g in ds.test.images] == [61, 60]


def test_rstpreid_rejects_file_path_records(tmp_path):
    root = write_rstpreid(tmp_path)
    write_json(os.path.join(root, "data_captions.json"), cuhkpedes_records())
    with pytest.raises(DatasetFormatError, match="'img_path'"):
        RSTPReid(root=str(tmp_path))


# ------------------------------------------------------------------------------- RGBT-PEDES
@pytest.mark.parametrize("thermal_dir", ["T", "TGray"])
def test_rgbtpedes_pairs_by_basename(tmp_path, thermal_dir):
    write_rgbtpedes(tmp_path, thermal_dir=thermal_dir)
    ds = RGBTPEDES(root=str(tmp_path))
    base = os.path.join(str(tmp_path), "RGBT-PEDES")
    assert train_counts(ds) == (3, 4, 6)
    assert ds.train_pid_map == {1: 0, 4: 1, 8: 2}
    assert ds.val is None
    assert counts(ds.test) == (3, 4, 5)
    assert ds.empty_captions == {"train": 1, "test": 1}

    by_caption = {i.caption: i for i in ds.train}
    # "imgs/day/0008_day_02.jpg": only the basename locates the pair.
    p8c = by_caption["p8 c"]
    assert p8c.img_path == os.path.join(base, "RGB", "0008_day_02.jpg")
    assert p8c.t_path == os.path.join(base, thermal_dir, "0008_day_02.jpg")
    assert p8c.image_id == 2 and p8c.pid == 2
    for item in ds.train:
        assert os.path.basename(item.img_path) == os.path.basename(item.t_path)
        assert os.path.isfile(item.t_path)

    # Colour-free captions stay parallel to the kept captions; missing ones read "".
    assert [(i.caption, i.no_color_caption) for i in ds.train] == [
        ("p8 a", "nc8 a"),
        ("p8 b", "nc8 b"),
        ("p1 a", ""),
        ("p1 b", ""),
        ("p8 c", ""),
        ("p4 b", "nc4 b"),
    ]
    assert [(q.caption, q.no_color_caption, q.image_id) for q in ds.test.captions] == [
        ("q100 a", "n1", 0),
        ("q100 b", "", 0),
        ("q100 c", "n100 c", 1),
        ("q101 a", "a", 2),
        ("q101 b", "b", 2),
    ]
    assert [g.t_path for g in ds.test.images] == [
        os.path.join(base, thermal_dir, g.name) for g in ds.test.images
    ]


def test_rgbtpedes_challenge_subsets(tmp_path, caplog):
    write_rgbtpedes(tmp_path, challenges=default_challenges())
    ds = RGBTPEDES(root=str(tmp_path))
    assert ds.test.subsets == {"low_light": [1, 3], "strong_light": [2]}
    names = {g.image_id: g.name for g in ds.test.images}
    assert [names[i] for i in ds.test.subsets["low_light"]] == [
        "0100_night_02.jpg",
        "0102_dark_01.jpg",
    ]
    with caplog.at_level(logging.INFO):
        ds.show_test()
    assert "test/low_light" in "\n".join(r.getMessage() for r in caplog.records)


def test_rgbtpedes_unknown_challenge_name(tmp_path):
    challenges = {"low_light": ["0100_night_02.jpg", "9999_none.jpg", "0008_day_01.jpg"]}
    write_rgbtpedes(tmp_path, challenges=challenges)
    # 0008_day_01.jpg exists, but in the train split: also not a test image.
    with pytest.raises(DatasetFormatError) as err:
        RGBTPEDES(root=str(tmp_path))
    message = str(err.value)
    assert os.path.join("challenge_json", "low_light.json") in message
    assert "2 images" in message
    assert "9999_none.jpg" in message and "0008_day_01.jpg" in message


def test_rgbtpedes_caption_file_override(tmp_path):
    root = write_rgbtpedes(tmp_path)
    alt = [r for r in rgbtpedes_records() if r["id"] in (8, 100)]
    write_json(os.path.join(root, "other", "alt.json"), alt)

    ds = RGBTPEDES(root=str(tmp_path), caption_file="other/alt.json")
    assert ds.annotation_file == os.path.join(root, "other", "alt.json")
    assert train_counts(ds) == (1, 2, 3)
    assert counts(ds.test) == (1, 2, 3)

    absolute = os.path.join(root, "other", "alt.json")
    assert len(RGBTPEDES(root=str(tmp_path), caption_file=absolute).train) == 3

    with pytest.raises(DatasetLayoutError, match="nope.json"):
        RGBTPEDES(root=str(tmp_path), caption_file="nope.json")


def test_registry_lookup(tmp_path):
    write_rgbtpedes(tmp_path)
    write_cuhkpedes(tmp_path)
    write_icfgpedes(tmp_path)
    write_rstpreid(tmp_path)
    for name, cls in [
        ("RGBTPEDES", RGBTPEDES),
        ("CUHKPEDES", CUHKPEDES),
        ("ICFGPEDES", ICFGPEDES),
        ("RSTPReid", RSTPReid),
    ]:
        assert DATASET_REGISTRY.get(name) is cls
        ds = DATASET_REGISTRY.get(name)(root=str(tmp_path), verbose=False)
        assert ds.name == name and ds.num_train_pids > 0


# ------------------------------------------------------------------------------ bad layouts
@pytest.mark.parametrize("cls", [CUHKPEDES, ICFGPEDES, RSTPReid, RGBTPEDES])
def test_missing_root(tmp_path, cls):
    with pytest.raises(DatasetLayoutError) as err:
        cls(root=str(tmp_path))
    assert os.path.join(str(tmp_path), cls.dataset_dir) in str(err.value)
    assert "Expected layout" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


@pytest.mark.parametrize(
    "cls, write, expected",
    [
        (CUHKPEDES, write_cuhkpedes, "reid_raw.json"),
        (ICFGPEDES, write_icfgpedes, "ICFG-PEDES.json"),
        (RSTPReid, write_rstpreid, "data_captions.json"),
        (RGBTPEDES, write_rgbtpedes, "caption_2_no_color.json"),
    ],
)
def test_missing_annotation_file(tmp_path, cls, write, expected):
    root = write(tmp_path)
    os.remove(os.path.join(root, cls.annotation_files[0]))
    with pytest.raises(DatasetLayoutError) as err:
        cls(root=str(tmp_path))
    assert os.path.join(root, expected) in str(err.value)
    assert "imgs" in str(err.value) or "RGB/" in str(err.value)


@pytest.mark.parametrize(
    "cls, write, missing",
    [
        (CUHKPEDES, write_cuhkpedes, "CUHK02/0032001.png"),
        (ICFGPEDES, write_icfgpedes, "train/0002/0002_001_02_0303afternoon_0001_0.jpg"),
        (RSTPReid, write_rstpreid, "0050_c2_0001.jpg"),
    ],
)
def test_missing_image(tmp_path, cls, write, missing):
    root = write(tmp_path, skip=(missing,))
    with pytest.raises(DatasetLayoutError) as err:
        cls(root=str(tmp_path))
    assert "1 images" in str(err.value)
    assert os.path.join(root, "imgs", missing) in str(err.value)


def test_missing_image_folder(tmp_path):
    root = write_cuhkpedes(tmp_path)
    os.rename(os.path.join(root, "imgs"), os.path.join(root, "images"))
    with pytest.raises(DatasetLayoutError, match="image folder not found"):
        CUHKPEDES(root=str(tmp_path))


def test_missing_rgb_and_thermal_images(tmp_path):
    root = write_rgbtpedes(tmp_path / "a", skip_thermal=("0101_glare_01.jpg",))
    with pytest.raises(DatasetLayoutError) as err:
        RGBTPEDES(root=str(tmp_path / "a"))
    assert "thermal" in str(err.value)
    assert os.path.join(root, "T", "0101_glare_01.jpg") in str(err.value)

    root = write_rgbtpedes(tmp_path / "b", skip_rgb=("0001_night_01.jpg",))
    with pytest.raises(DatasetLayoutError) as err:
        RGBTPEDES(root=str(tmp_path / "b"))
    assert os.path.join(root, "RGB", "0001_night_01.jpg") in str(err.value)


def test_missing_thermal_folder(tmp_path):
    root = write_rgbtpedes(tmp_path, thermal_dir="Thermal")
    with pytest.raises(DatasetLayoutError) as err:
        RGBTPEDES(root=str(tmp_path))
    assert os.path.join(root, "T") in str(err.value)
    assert os.path.join(root, "TGray") in str(err.value)


def test_malformed_records(tmp_path):
    records = cuhkpedes_records()
    del records[3]["id"]
    write_cuhkpedes(tmp_path, records=records)
    with pytest.raises(DatasetFormatError, match="record 3 has no 'id' field"):
        CUHKPEDES(root=str(tmp_path))

    root = write_cuhkpedes(
        tmp_path, records=[r for r in cuhkpedes_records() if r["split"] != "val"]
    )
    with pytest.raises(DatasetFormatError, match="no records with split 'val'"):
        CUHKPEDES(root=str(tmp_path))

    bad = {"split": "train", "captions": "one string", "file_path": "x.jpg", "id": 1}
    write_json(os.path.join(root, "reid_raw.json"), [bad])
    with pytest.raises(DatasetFormatError, match="'captions' must be a list"):
        CUHKPEDES(root=str(tmp_path))

    with open(os.path.join(root, "reid_raw.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(DatasetFormatError, match="not valid JSON"):
        CUHKPEDES(root=str(tmp_path))


# ------------------------------------------------------------------------ tools/dataset_stats
def test_dataset_stats_tool(tmp_path, capsys, monkeypatch):
    write_rgbtpedes(tmp_path)
    monkeypatch.syspath_prepend(TOOLS)
    sys.modules.pop("dataset_stats", None)
    import dataset_stats

    assert dataset_stats.main(["--dataset", "RGBTPEDES", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    # Every image counts, including the test pair whose captions are all empty.
    assert "pairs 4 (published 3,250)" in lines  # train
    assert "pairs 4 (published 1,473)" in lines  # test
    assert "pairs 8 (published 4,723)" in lines  # all
    assert "ids 6 (published 1,822)" in lines
    assert "captions 11 (published 7,987)" in lines
    assert "words max 2 (published 112)" in lines
    assert "pairs with 0 captions 1" in lines

    alt = [r for r in rgbtpedes_records() if r["split"] == "train" or r["id"] == 100]
    with open(os.path.join(str(tmp_path), "alt.json"), "w") as f:
        json.dump(alt, f)
    argv = ["--dataset", "RGBTPEDES", "--root", str(tmp_path)]
    assert (
        dataset_stats.main([*argv, "--caption-file", os.path.join(str(tmp_path), "alt.json")]) == 0
    )
    out = capsys.readouterr().out
    assert "pairs 2 (published 1,473)" in [" ".join(line.split()) for line in out.splitlines()]
