"""VI-ReID readers (SYSU-MM01, RegDB, LLCM) on tiny official-layout fixtures and synthetic data."""

import os
import shutil
import sys
from collections import Counter

import pytest

import plugins  # noqa: F401  (applies the fastreid fixes, registers the readers)
from tests.fixtures_vi import regdb_rel, write_llcm, write_regdb, write_sysumm01

# isort: split
from fastreid.data.datasets import DATASET_REGISTRY

from plugins import synthetic
from plugins.data.datasets.llcm import LLCM
from plugins.data.datasets.regdb import RegDB
from plugins.data.datasets.sysumm01 import SYSUMM01
from plugins.data.datasets.text_reid import DatasetFormatError, DatasetLayoutError
from plugins.data.datasets.vi_reid import build_vi_dataset, is_vi_dataset
from plugins.data.items import VIImage, VITestSet
from plugins.engine.defaults import build_config

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def counts(images):
    """{(pid, camid, modality): number of images}."""
    return dict(Counter((i.pid, i.camid, i.modality) for i in images))


def check_items(images):
    for image in images:
        assert isinstance(image, VIImage)
        assert os.path.isabs(image.path) and os.path.isfile(image.path)
        assert image.modality in ("visible", "infrared")


# ------------------------------------------------------------------------------- SYSU-MM01
def test_sysumm01_counts_relabel_modality_camera(tmp_path):
    write_sysumm01(tmp_path)
    ds = SYSUMM01(root=str(tmp_path))
    check_items(ds.train)
    check_items(ds.test.images)
    # train + val ids 1, 3, 5 relabelled in increasing order, one label over both modalities.
    assert ds.train_pid_map == {1: 0, 3: 1, 5: 2} and ds.num_train_pids == 3
    assert counts(ds.train) == {
        (0, 1, "visible"): 2, (0, 3, "infrared"): 1, (0, 4, "visible"): 1,
        (2, 2, "visible"): 1, (2, 6, "infrared"): 2,
        (1, 5, "visible"): 1, (1, 3, "infrared"): 1,
    }  # fmt: skip
    assert isinstance(ds.test, VITestSet) and ds.test.protocol == "sysumm01"
    assert isinstance(ds.test.images, tuple)
    # Test keeps the dataset's ids and every camera 1-6.
    assert counts(ds.test.images) == {
        (2, 1, "visible"): 1, (2, 2, "visible"): 1, (2, 3, "infrared"): 2,
        (2, 6, "infrared"): 1, (7, 4, "visible"): 1, (7, 6, "infrared"): 1,
    }  # fmt: skip
    # The folder a file sits in decides its identity and camera.
    for image in ds.test.images:
        parts = image.path.split(os.sep)
        assert parts[-3] == f"cam{image.camid}" and int(parts[-2]) == image.pid
    assert ds.summary() == (
        "train 3 ids / 5 visible / 4 infrared; test 2 ids / 3 visible / 4 infrared"
    )


def test_sysumm01_errors_name_the_path_and_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="SYSUMM01 folder not found"):
        SYSUMM01(root=str(tmp_path))
    base = write_sysumm01(tmp_path)
    os.remove(os.path.join(base, "exp", "val_id.txt"))
    with pytest.raises(DatasetLayoutError, match=r"(?s)exp/val_id.txt.*Expected layout"):
        SYSUMM01(root=str(tmp_path))

    write_sysumm01(tmp_path, splits={"train": "5,1", "val": "3", "test": "\n7, 2x"})
    with pytest.raises(DatasetFormatError, match=r"test_id.txt, line 2: '2x'"):
        SYSUMM01(root=str(tmp_path))

    write_sysumm01(tmp_path, splits={"train": "5,1", "val": "3,7", "test": "7,2"})
    with pytest.raises(DatasetFormatError, match="both training .* and test"):
        SYSUMM01(root=str(tmp_path))

    write_sysumm01(tmp_path, splits={"train": "5,1,9", "val": "3", "test": "7,2"})
    with pytest.raises(DatasetLayoutError, match="have no image in any camera folder: 9"):
        SYSUMM01(root=str(tmp_path))


# ----------------------------------------------------------------------------------- RegDB
def test_regdb_trials_relabel_modality_camera(tmp_path):
    write_regdb(tmp_path)
    ds = RegDB(root=str(tmp_path), trial=1)
    check_items(ds.train)
    assert ds.num_train_pids == 2
    # Trial 1 trains on people 1 and 3: 2 visible (camera 1) + 2 thermal (camera 2) each.
    assert counts(ds.train) == {
        (0, 1, "visible"): 2, (0, 2, "infrared"): 2, (1, 1, "visible"): 2, (1, 2, "infrared"): 2
    }  # fmt: skip
    # A label names the same person in both modalities.
    for image in ds.train:
        assert image.path.split(os.sep)[-2] == {0: "1", 1: "3"}[image.pid]
    assert ds.test.protocol == "regdb"
    # Test keeps the lists' labels (pid - 1 here), visible first in file order.
    assert [(i.pid, i.modality) for i in ds.test.images] == [
        (1, "visible"), (1, "visible"), (3, "visible"), (3, "visible"),
        (1, "infrared"), (1, "infrared"), (3, "infrared"), (3, "infrared"),
    ]  # fmt: skip
    assert ds.test.images[0].path.endswith(regdb_rel(2, "visible", 1))
    assert {i.camid for i in ds.test.images if i.modality == "infrared"} == {2}

    other = RegDB(root=str(tmp_path), trial=2, verbose=False)
    assert {i.path.split(os.sep)[-2] for i in other.train} == {"2", "4"}
    assert {i.pid for i in other.test.images} == {0, 2}


def test_regdb_errors_name_the_path_line_and_layout(tmp_path):
    base = write_regdb(tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"(?s)idx/train_visible_3.txt.*Expected layout"):
        RegDB(root=str(tmp_path), trial=3)
    with pytest.raises(ValueError, match="1-10"):
        RegDB(root=str(tmp_path), trial=11)

    path = os.path.join(base, "idx", "train_thermal_1.txt")
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join([lines[0], "", "Thermal/1/no_label.bmp", *lines[1:]]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"(?s)train_thermal_1.txt, line 3: .*Expected"):
        RegDB(root=str(tmp_path))

    # The thermal list labels person 3 as 0 while the visible list uses 0 for person 1.
    with open(path, "w") as f:
        f.write("\n".join(line[:-1] + "0" if "/3/" in line else line for line in lines) + "\n")
    with pytest.raises(DatasetFormatError, match="(?s)label 0 is used for two folders: 1 .* and 3"):
        RegDB(root=str(tmp_path))

    write_regdb(tmp_path)
    os.remove(os.path.join(base, regdb_rel(3, "thermal", 2)))
    with pytest.raises(DatasetLayoutError, match=r"1 images listed in idx/train_thermal_1.txt"):
        RegDB(root=str(tmp_path))
    write_regdb(tmp_path, splits={1: ([1, 3], [3, 4])})  # person 3 in train and test
    with pytest.raises(DatasetFormatError, match="split 1: the training and test lists share"):
        RegDB(root=str(tmp_path))


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8",  # not UTF-8: an image under the name
        b"Visible/1/male_front_v_00011_1.bmp 0\n\x00\x00\x00\x00\x00\x00\n",  # a NUL-filled tail
    ],
    ids=["undecodable", "nul-bytes"],
)
def test_regdb_index_file_with_binary_bytes_is_one_line_naming_it(tmp_path, content):
    base = write_regdb(tmp_path)
    path = os.path.join(base, "idx", "train_visible_1.txt")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(DatasetFormatError) as caught:
        RegDB(root=str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message, message
    assert path in message and "binary" in message and "copy it again" in message


# ------------------------------------------------------------------------------------ LLCM
def test_llcm_one_mapping_over_both_modalities_and_test_cameras(tmp_path):
    write_llcm(tmp_path)
    ds = LLCM(root=str(tmp_path))
    check_items(ds.train)
    check_items(ds.test.images)
    # File labels 2 (person 4) and 7 (person 1) become 0 and 1 in visible and infrared alike.
    assert ds.train_pid_map == {2: 0, 7: 1}
    assert counts(ds.train) == {
        (1, 1, "visible"): 2, (1, 3, "visible"): 1, (1, 1, "infrared"): 1,
        (0, 2, "visible"): 1, (0, 4, "infrared"): 2,
    }  # fmt: skip
    for image in ds.train:
        assert image.path.split(os.sep)[-2] == {0: "0004", 1: "0001"}[image.pid]
    assert ds.test.protocol == "llcm"
    # Only the ids of test_id.txt (folder 0006 is not listed); camera from the c<k> of the name.
    assert counts(ds.test.images) == {
        (2, 1, "visible"): 1, (2, 9, "visible"): 1, (2, 2, "infrared"): 1,
        (3, 5, "visible"): 1, (3, 4, "infrared"): 2,
    }  # fmt: skip
    names = [os.path.basename(i.path) for i in ds.test.images]
    assert all(n.split("_")[1] == f"c{i.camid:02d}" for n, i in zip(names, ds.test.images))
    assert [i.modality for i in ds.test.images] == ["visible"] * 3 + ["infrared"] * 3


def test_llcm_errors_name_the_path_line_and_layout(tmp_path):
    base = write_llcm(tmp_path)
    os.remove(os.path.join(base, "idx", "train_nir.txt"))
    with pytest.raises(DatasetLayoutError, match=r"(?s)idx/train_nir.txt.*Expected layout"):
        LLCM(root=str(tmp_path))

    write_llcm(tmp_path)
    with open(os.path.join(base, "idx", "train_vis.txt"), "a") as f:
        f.write("vis/0001/0001_c01_s100001_f0009_vis.jpg one\n")
    with pytest.raises(DatasetFormatError, match=r"train_vis.txt, line 5: expected"):
        LLCM(root=str(tmp_path))

    # The near-infrared list relabelled on its own: person 4 gets label 7, person 1's.
    write_llcm(tmp_path, train=[(1, 7, [("vis", 1), ("nir", 1)]), (4, 2, [("vis", 2)])])
    with open(os.path.join(base, "idx", "train_nir.txt"), "a") as f:
        f.write("nir/0004/0004_c04_s100004_f0001_nir.jpg 7\n")
    os.makedirs(os.path.join(base, "nir", "0004"), exist_ok=True)
    shutil.copy(
        os.path.join(base, "vis", "0004", "0004_c02_s100004_f0000_vis.jpg"),
        os.path.join(base, "nir", "0004", "0004_c04_s100004_f0001_nir.jpg"),
    )
    with pytest.raises(DatasetFormatError, match="label 7 is used for two folders: 1 .* and 4"):
        LLCM(root=str(tmp_path))

    shutil.rmtree(base)
    write_llcm(tmp_path, test_ids="2,3,8")
    with pytest.raises(DatasetLayoutError, match="test_id.txt have no image .*: 8"):
        LLCM(root=str(tmp_path))

    write_llcm(tmp_path, test_ids="2,3,1")
    with pytest.raises(DatasetFormatError, match="also have training images: 1"):
        LLCM(root=str(tmp_path))

    write_llcm(tmp_path)
    wrong = os.path.join(base, "test_nir", "cam2", "0002", "0002_c03_s1_f1_nir.jpg")
    shutil.copy(os.path.join(base, "test_nir", "cam4", "0003", os.listdir(
        os.path.join(base, "test_nir", "cam4", "0003"))[0]), wrong)  # fmt: skip
    with pytest.raises(DatasetFormatError, match="camera 3; its folders say identity 2, camera 2"):
        LLCM(root=str(tmp_path))


@pytest.mark.parametrize(
    "reader,write,folder,match",
    [
        (SYSUMM01, write_sysumm01, "cam6", r"(?s)camera folder not found: .*cam6.*cam1/"),
        (RegDB, write_regdb, "Thermal", r"image folder not found: .*Thermal"),
        (LLCM, write_llcm, "test_nir", r"test image folder not found: .*test_nir"),
    ],
)
def test_missing_image_folder_is_named(tmp_path, reader, write, folder, match):
    shutil.rmtree(os.path.join(write(tmp_path), folder))
    with pytest.raises(DatasetLayoutError, match=match):
        reader(root=str(tmp_path))


# ------------------------------------------------------------------------ registry, config
def test_registered_names_and_regdb_trial_from_config(tmp_path, monkeypatch):
    for name, cls in (("SYSUMM01", SYSUMM01), ("RegDB", RegDB), ("LLCM", LLCM)):
        assert DATASET_REGISTRY.get(name) is cls and is_vi_dataset(name)
    assert DATASET_REGISTRY.get("SYSU_mm") is not SYSUMM01  # fast-reid's own stays
    assert not is_vi_dataset("RGBTPEDES")
    write_regdb(tmp_path)
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    cfg = build_config(opts=["MODEL.DEVICE", "cpu"])
    assert cfg.DATASETS.REGDB_TRIAL == 1
    assert {i.pid for i in build_vi_dataset(cfg, "RegDB").test.images} == {1, 3}
    cfg = build_config(opts=["MODEL.DEVICE", "cpu", "DATASETS.REGDB_TRIAL", "2"])
    assert {i.pid for i in build_vi_dataset(cfg, "RegDB").test.images} == {0, 2}


# ----------------------------------------------------------------------- synthetic read-back
@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("vi_synthetic"))
    summaries = {
        fmt: synthetic.WRITERS[fmt](root, 6, seed=2, images_per_id=(1, 2))
        for fmt in ("sysumm01", "llcm")
    }
    summaries["regdb"] = synthetic.WRITERS["regdb"](root, 6, seed=2, images_per_id=2, trials=2)
    return root, summaries


def modality_counts(images):
    c = Counter(i.modality for i in images)
    ids = {m: len({i.pid for i in images if i.modality == m}) for m in c}
    return c, ids


def test_sysumm01_reads_synthetic_back(synthetic_root):
    root, summaries = synthetic_root
    s = summaries["sysumm01"]
    ds = DATASET_REGISTRY.get("SYSUMM01")(root=root, verbose=False)
    c, ids = modality_counts(ds.train)
    assert c["visible"] == s["images"]["train_vis"] + s["images"]["val_vis"]
    assert c["infrared"] == s["images"]["train_ir"] + s["images"]["val_ir"]
    assert ds.num_train_pids == s["ids"]["train_vis"] + s["ids"]["val_vis"]
    assert sorted({i.pid for i in ds.train}) == list(range(ds.num_train_pids))
    c, ids = modality_counts(ds.test.images)
    assert (c["visible"], c["infrared"]) == (s["images"]["test_vis"], s["images"]["test_ir"])
    assert (ids["visible"], ids["infrared"]) == (s["ids"]["test_vis"], s["ids"]["test_ir"])
    assert {i.camid for i in ds.test.images if i.modality == "infrared"} <= {3, 6}


def test_regdb_reads_synthetic_back(synthetic_root):
    root, summaries = synthetic_root
    s = summaries["regdb"]
    for trial in (1, 2):
        ds = DATASET_REGISTRY.get("RegDB")(root=root, trial=trial, verbose=False)
        assert ds.num_train_pids == s["ids"]["train_per_trial"]
        test_ids = {i.pid for i in ds.test.images}
        assert len(test_ids) == s["ids"]["test_per_trial"]
        for modality, name in (("visible", "visible"), ("infrared", "thermal")):
            total = sum(1 for i in [*ds.train, *ds.test.images] if i.modality == modality)
            assert total == s["images"][name]
    with pytest.raises(DatasetLayoutError, match="test_visible_3.txt|train_visible_3.txt"):
        DATASET_REGISTRY.get("RegDB")(root=root, trial=3, verbose=False)


def test_llcm_reads_synthetic_back(synthetic_root):
    root, summaries = synthetic_root
    s = summaries["llcm"]
    ds = DATASET_REGISTRY.get("LLCM")(root=root, verbose=False)
    c, ids = modality_counts(ds.train)
    assert (c["visible"], c["infrared"]) == (s["images"]["train_vis"], s["images"]["train_nir"])
    assert ds.num_train_pids == s["ids"]["train_vis"]
    c, ids = modality_counts(ds.test.images)
    assert (c["visible"], c["infrared"]) == (s["images"]["test_vis"], s["images"]["test_nir"])
    assert (ids["visible"], ids["infrared"]) == (s["ids"]["test_vis"], s["ids"]["test_nir"])
    assert {i.camid for i in ds.test.images if i.modality == "infrared"} <= {1, 2, 4, 5, 6, 7, 8, 9}


# ------------------------------------------------------------------------ tools/dataset_stats
def test_dataset_stats_tool_for_vi_datasets(tmp_path, capsys, monkeypatch):
    write_regdb(tmp_path)
    write_llcm(tmp_path)
    monkeypatch.syspath_prepend(TOOLS)
    sys.modules.pop("dataset_stats", None)
    import dataset_stats

    def report(*argv):
        assert dataset_stats.main(["--root", str(tmp_path), *argv]) == 0
        return [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]

    lines = report("--dataset", "RegDB", "--trial", "2", "--verify")
    assert lines[0].endswith("(split 2)")
    assert lines.count("ids 2 (published 206)") == 2  # train and test
    assert lines.count("infrared images 4 (published 2,060)") == 2
    assert "ids 4 (published 412)" in lines and "cameras 1,2" in lines
    assert "verified 16 images, 0 unreadable" in lines

    lines = report("--dataset", "LLCM")
    train = lines[lines.index("train") : lines.index("test")]
    assert "visible images 4 (published 16,946)" in train
    assert "infrared images 3 (published 13,975)" in train
    assert "cameras 1,2,3,4" in train
    assert "ids 4 (published 1,064)" in lines
