"""VI-ReID captions (RSBA): the synthetic writers caption every image under the key the readers
see, the caption file is read and checked, training items carry the caption's tokens, test items
their modality, and ``tools/check_captions.py`` reports coverage with the right exit status."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import plugins  # noqa: F401  (applies the fast-reid fixes)

# isort: split
from fastreid.config import get_cfg
from fastreid.data.transforms import build_transforms

from plugins.config import add_plugins_config
from plugins.data import captions
from plugins.data.datasets.llcm import LLCM
from plugins.data.datasets.regdb import RegDB
from plugins.data.datasets.sysumm01 import SYSUMM01
from plugins.data.items import VIImage
from plugins.data.vi_build import VITestImages, VITrainSet, build_vi_train_loader
from plugins.data.vi_captions import (
    CaptionFileError,
    caption_coverage,
    captions_for_items,
    image_key,
    load_training_captions,
    missing_captions,
    read_caption_file,
)
from plugins.synthetic import ensure_synthetic, write_llcm, write_regdb, write_sysumm01

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = "captions_synthetic.json"
# 4 RegDB ids (2 train / 2 test per trial), 2 images of each modality per id: a trial trains on
# 4 visible + 4 thermal images and tests on as many.
REGDB_IDS, REGDB_IMAGES, REGDB_TRIALS = 4, 2, 10
SIZE = {"height": 32, "width": 16}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Synthetic RegDB, LLCM and SYSU-MM01 folders, with their default captions file."""
    root = tmp_path_factory.mktemp("vi")
    write_regdb(root, REGDB_IDS, seed=0, images_per_id=REGDB_IMAGES, trials=REGDB_TRIALS, **SIZE)
    write_llcm(root, 4, seed=0, images_per_id=1, **SIZE)
    write_sysumm01(root, 5, seed=0, images_per_id=1, **SIZE)
    return str(root)


def _read(reader, root, **kwargs):
    return reader(root=root, verbose=False, **kwargs)


def _file_captions(dataset):
    return read_caption_file(os.path.join(dataset.dataset_root, CAPTIONS))


def _cfg(**opts):
    cfg = add_plugins_config(get_cfg())
    cfg.merge_from_list(
        [
            "DATASETS.NAMES", ("RegDB",),
            "INPUT.SIZE_TRAIN", [32, 16],
            "INPUT.SIZE_TEST", [32, 16],
            "DATALOADER.SAMPLER_TRAIN", "ModalityIdentitySampler",
            "DATALOADER.NUM_INSTANCE", 1,
            "DATALOADER.NUM_WORKERS", 0,
            "SOLVER.IMS_PER_BATCH", 4,
            "SEED", 0,
        ]
        + [x for kv in opts.items() for x in kv]
    )  # fmt: skip
    return cfg


# ------------------------------------------------------------------- synthetic captions, keys
_KEY_PATTERNS = {
    "RegDB": r"(Visible/\d+/(male|female)_(front|back)_v|Thermal/\d+/(male|female)_(front|back)_t)"
    r"_\d{5}_\d+\.bmp",
    "LLCM": r"(vis|nir)/(\d{4})/\2_c\d{2}_s\d{6}_f\d{4}_\1\.jpg",
    "SYSUMM01": r"cam[1-6]/\d{4}/\d{4}\.jpg",
}
_SPLITS = [(RegDB, {"trial": t}) for t in range(1, REGDB_TRIALS + 1)]
_SPLITS += [(LLCM, {}), (SYSUMM01, {})]


@pytest.mark.parametrize(
    "reader, kwargs", _SPLITS, ids=[f"{r.__name__}{k.get('trial', '')}" for r, k in _SPLITS]
)
def test_synthetic_captions_cover_every_training_image(data_root, reader, kwargs):
    dataset = _read(reader, data_root, **kwargs)
    file_captions = _file_captions(dataset)
    texts = captions_for_items(dataset.train, dataset.dataset_root, file_captions)
    assert len(texts) == len(dataset.train) > 0
    for item, text in zip(dataset.train, texts):
        rel = os.path.relpath(item.path, dataset.dataset_root).replace(os.sep, "/")
        assert re.fullmatch(_KEY_PATTERNS[reader.__name__], rel), rel
        assert text == file_captions[rel] and text.strip()
    # every file key is an image of this split's train or test list, and every image has one
    report = caption_coverage(dataset, file_captions)
    assert report.stale == [] and report.ok
    assert all(row["captioned"] == row["images"] > 0 for row in report.rows)
    assert len(file_captions) == len(dataset.train) + len(dataset.test.images)


@pytest.mark.parametrize("reader", [RegDB, LLCM, SYSUMM01])
def test_infrared_captions_name_no_colour(data_root, reader):
    dataset = _read(reader, data_root)
    file_captions = _file_captions(dataset)
    split_words = captions.get_tokenizer().split_words
    words = {"visible": set(), "infrared": set()}
    for item in dataset.train + list(dataset.test.images):
        text = file_captions[image_key(item.path, dataset.dataset_root)]
        words[item.modality].update(split_words(text))
    assert not words["infrared"] & captions.COLOR_WORDS
    assert words["visible"] & captions.COLOR_WORDS  # the check can see colour words


def test_writers_can_leave_the_captions_out(tmp_path):
    for writer in (write_regdb, write_llcm, write_sysumm01):
        summary = writer(tmp_path, 2, seed=0, images_per_id=1, captions_json=False, **SIZE)
        assert not (Path(summary["root"]) / CAPTIONS).exists()
        assert (Path(summary["root"]) / "idx").is_dir() or "SYSU" in summary["root"]


def test_make_synthetic_writes_captions_unless_told_not_to(tmp_path):
    def run(*extra):
        cmd = [sys.executable, str(ROOT / "tools" / "make_synthetic.py"), "--format"]
        cmd += [*extra, "--ids", "2", "--height", "32", "--width", "16", "--quiet"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    done = run("regdb", "--out", str(tmp_path / "a"), "--images-per-id", "1", "1")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "RegDB" / CAPTIONS).is_file()
    done = run("llcm", "--out", str(tmp_path / "b"), "--no-captions-json")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b" / "LLCM" / "idx").is_dir()
    assert not (tmp_path / "b" / "LLCM" / CAPTIONS).exists()
    refused = run("cuhkpedes", "--out", str(tmp_path / "c"), "--no-captions-json")
    assert refused.returncode == 2 and "regdb, llcm and sysumm01" in refused.stderr


def test_ensure_synthetic_rewrites_a_folder_stamped_before_captions(tmp_path):
    assert ensure_synthetic(tmp_path, "regdb", 2)
    folder = tmp_path / "RegDB"
    assert (folder / CAPTIONS).is_file()
    assert json.loads((folder / "synthetic.json").read_text())["captions"] is True
    assert not ensure_synthetic(tmp_path, "regdb", 2)
    # a folder of the earlier writers: no captions file, a stamp without the field
    (folder / CAPTIONS).unlink()
    (folder / "synthetic.json").write_text(json.dumps({"format": "regdb", "ids": 2, "seed": 0}))
    assert ensure_synthetic(tmp_path, "regdb", 2)
    assert (folder / CAPTIONS).is_file()
    # text formats keep their stamp
    assert ensure_synthetic(tmp_path, "cuhkpedes", 2)
    stamp = json.loads((tmp_path / "CUHK-PEDES" / "synthetic.json").read_text())
    assert stamp == {"format": "cuhkpedes", "ids": 2, "seed": 0}


# -------------------------------------------------------------------------- reading, assigning
def test_missing_or_empty_caption_names_the_image(data_root):
    dataset = _read(RegDB, data_root)
    file_captions = _file_captions(dataset)
    keys = [image_key(i.path, dataset.dataset_root) for i in dataset.train]
    gone, blank = keys[1], keys[-1]
    del file_captions[gone]
    file_captions[blank] = "  \n"
    assert missing_captions(dataset.train, dataset.dataset_root, file_captions) == ([gone], [blank])
    with pytest.raises(CaptionFileError) as err:
        captions_for_items(dataset.train, dataset.dataset_root, file_captions, source="x.json")
    message = str(err.value)
    assert "x.json" in message and "2 of 8 training images" in message
    assert "1 missing, 1 empty" in message
    assert gone in message and blank in message and "DATASETS.VI_CAPTION_FALLBACK" in message
    # many: the first few are named and the rest counted
    with pytest.raises(CaptionFileError, match=r"8 of 8 training images .*\(3 more\)"):
        captions_for_items(dataset.train, dataset.dataset_root, {})


def test_fallback_fills_and_counts(data_root, caplog):
    dataset = _read(RegDB, data_root)
    file_captions = _file_captions(dataset)
    vis = next(i for i in dataset.train if i.modality == "visible")
    ir = next(i for i in dataset.train if i.modality == "infrared")
    for item in (vis, ir):
        del file_captions[image_key(item.path, dataset.dataset_root)]
    with caplog.at_level(logging.WARNING, logger="plugins.data.vi_captions"):
        texts = captions_for_items(
            dataset.train, dataset.dataset_root, file_captions, "a {modality} photo of a person"
        )
    assert "2 of 8 training images have no caption" in caplog.text
    assert texts[dataset.train.index(vis)] == "a visible photo of a person"
    assert texts[dataset.train.index(ir)] == "a infrared photo of a person"
    assert sum(t.endswith("photo of a person") for t in texts) == 2

    path = os.path.join(str(data_root), "partial.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(file_captions, f)
    cfg = _cfg(
        **{"DATASETS.VI_CAPTIONS": path, "DATASETS.VI_CAPTION_FALLBACK": "a {modality} person"}
    )
    loaded = load_training_captions(cfg, dataset, dataset.train)
    assert loaded.covered == 6 and loaded.path == path
    assert loaded.texts[dataset.train.index(ir)] == "a infrared person"


def test_dot_slash_and_backslash_keys(data_root, tmp_path):
    dataset = _read(SYSUMM01, data_root)
    file_captions = _file_captions(dataset)
    mangled = {}
    for n, (key, text) in enumerate(file_captions.items()):
        mangled[(f".\\{key}".replace("/", "\\") if n % 2 else f"./{key}")] = text
    path = tmp_path / "windows.json"
    path.write_text(json.dumps(mangled))
    read = read_caption_file(str(path))
    assert read == file_captions
    texts = captions_for_items(dataset.train, dataset.dataset_root, read)
    assert texts == captions_for_items(dataset.train, dataset.dataset_root, file_captions)
    # two spellings of one image: fine with one caption, an error with two
    key = next(iter(file_captions))
    path.write_text(json.dumps({key: "a man", "./" + key: "a man"}))
    assert read_caption_file(str(path)) == {key: "a man"}
    path.write_text(json.dumps({key: "a man", "./" + key: "a woman"}))
    with pytest.raises(CaptionFileError, match=re.escape(f"name the same image '{key}'")):
        read_caption_file(str(path))


@pytest.mark.parametrize(
    "content, pattern",
    [
        ('{"cam1/0001/0001.jpg": "a man",', r"not valid UTF-8 JSON"),
        ('["cam1/0001/0001.jpg", "a man"]', r"holds an array, expected one JSON object"),
        ('{"cam1/0001/0001.jpg": 3}', r"key 'cam1/0001/0001.jpg' is a number"),
        ('{"a.jpg": "x", "cam1/0002/0001.jpg": {"text": "a"}}', r"'cam1/0002/0001.jpg' is an object"),
        ('{"cam1/0001/0001.jpg": null}', r"is null, expected the caption as a string"),
    ],
)  # fmt: skip
def test_malformed_caption_file_is_a_clear_error(tmp_path, content, pattern):
    path = tmp_path / "captions.json"
    path.write_text(content)
    with pytest.raises(CaptionFileError, match=pattern) as err:
        read_caption_file(str(path))
    assert str(path) in str(err.value) and "DATASETS.VI_CAPTIONS" in str(err.value)


def test_missing_caption_file_names_path_and_key(tmp_path):
    with pytest.raises(CaptionFileError) as err:
        read_caption_file(str(tmp_path / "llava.json"))
    assert isinstance(err.value, ValueError)
    assert f"not found: {tmp_path / 'llava.json'}" in str(err.value)
    assert "DATASETS.VI_CAPTIONS" in str(err.value)


# ----------------------------------------------------------------------------------- loaders
def test_train_items_carry_caption_tokens(data_root, monkeypatch, caplog):
    monkeypatch.setenv("FASTREID_DATASETS", data_root)
    cfg = _cfg(**{"DATASETS.VI_CAPTIONS": CAPTIONS, "INPUT.TEXT.CONTEXT_LENGTH": 77})
    with caplog.at_level(logging.INFO, logger="plugins.data.vi_build"):
        loader = build_vi_train_loader(cfg)
    dataset = _read(RegDB, data_root)
    path = os.path.join(dataset.dataset_root, CAPTIONS)
    assert f"Captions: {path} covers 8 of 8 training images" in caplog.text
    train_set = loader.dataset
    file_captions = _file_captions(dataset)
    tokenizer = captions.get_tokenizer()
    for index, item in enumerate(dataset.train):
        out = train_set[(index, 5)]
        assert out["img_paths"] == item.path
        assert out["text"].dtype == torch.long and out["text"].shape == (77,)
        caption = file_captions[image_key(item.path, dataset.dataset_root)]
        assert tokenizer.decode(out["text"]) == " ".join(tokenizer.split_words(caption))
    batch = next(iter(loader))
    assert batch["text"].shape == (4, 77) and batch["images"].shape[0] == 4


def test_text_follows_the_context_length_and_is_absent_without_captions():
    items = [VIImage("/a.jpg", 0, 1, "visible"), VIImage("/b.jpg", 0, 2, "infrared")]
    long = "a man " * 40
    train_set = VITrainSet(items, transform=None, texts=[long, "a man"], context_length=8)
    assert train_set.text_tokens.shape == (2, 8)
    first = train_set.text_tokens[0].tolist()
    assert first[0] == captions.SOT_TOKEN_ID and first[-1] == captions.EOT_TOKEN_ID
    second = train_set.text_tokens[1].tolist()
    assert 0 not in first
    # SOT, "a", "man", EOT, then padding
    assert second[3] == captions.EOT_TOKEN_ID and second[4:] == [0] * 4
    with pytest.raises(ValueError, match="1 captions for 2 training images"):
        VITrainSet(items, transform=None, texts=["a man"])


def test_train_items_unchanged_without_the_key(data_root, monkeypatch):
    monkeypatch.setenv("FASTREID_DATASETS", data_root)
    loader = build_vi_train_loader(_cfg())
    assert set(loader.dataset[(0, 1)]) == {"images", "targets", "camids", "modalities", "img_paths"}


def test_test_items_carry_modalities(data_root):
    dataset = _read(RegDB, data_root)
    images = VITestImages(dataset.test, build_transforms(_cfg(), is_train=False))
    # RegDB's test list: the 4 visible images, then the 4 thermal ones
    assert [images[i]["modalities"] for i in range(len(images))] == [0] * 4 + [1] * 4
    assert [images[i]["index"] for i in range(len(images))] == list(range(8))


# ------------------------------------------------------------------------ tools/check_captions
def _check_captions(*args, env_root=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if env_root is not None:
        env["FASTREID_DATASETS"] = env_root
    cmd = [sys.executable, str(ROOT / "tools" / "check_captions.py")]
    cmd += ["--config-file", str(ROOT / "configs" / "Demo" / "regdb_agw.yml"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    return done.returncode, done.stdout, done.stderr


def _row(split, modality, *counts):
    cells = [split, modality, *map(str, counts)]
    return re.compile(r"\|\s*" + r"\s*\|\s*".join(map(re.escape, cells)) + r"\s*\|")


def test_check_captions_passes_on_the_synthetic_file(data_root):
    path = os.path.join(data_root, "RegDB", CAPTIONS)
    code, out, err = _check_captions("--captions", path, env_root=data_root)
    assert code == 0, out + err
    for split in ("train", "test"):
        for modality in ("visible", "infrared"):
            assert _row(split, modality, 4, 4, 0, 0).search(out), out
    assert "stale keys: none" in out
    assert out.strip().splitlines()[-1] == "OK: all 8 training images have a caption"


def test_check_captions_fails_on_a_missing_training_caption(data_root, tmp_path):
    dataset = _read(RegDB, data_root, trial=2)
    file_captions = _file_captions(dataset)
    visible = [i for i in dataset.train if i.modality == "visible"]
    gone = image_key(visible[0].path, dataset.dataset_root)
    del file_captions[gone]
    # one text given to two training images, and a key of no image
    twins = [image_key(i.path, dataset.dataset_root) for i in visible[1:3]]
    for key in twins:
        file_captions[key] = "The pedestrian in the image is a young man."
    file_captions["RegDB/" + twins[0]] = "a key with the dataset folder in front"
    file_captions["Visible/99/ghost.bmp"] = "a ghost"
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(file_captions))

    code, out, err = _check_captions(
        "--root", data_root, "--captions", str(path), "DATASETS.REGDB_TRIAL", "2"
    )
    assert code == 1, out + err
    assert _row("train", "visible", 4, 3, 1, 0).search(out), out
    assert _row("train", "infrared", 4, 4, 0, 0).search(out), out
    assert "1 distinct training captions are each shared by more than one image (2 images" in out
    assert "2 x 'The pedestrian in the image is a young man.'" in out
    assert "stale keys: 2 keys" in out and "Visible/99/ghost.bmp" in out
    assert "1 of them name an image once 'RegDB/' is dropped" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("FAIL: 1 of 8 training images have no caption") and gone in last

    code, out, err = _check_captions(
        "--root", data_root, "--captions", str(path), "DATASETS.REGDB_TRIAL", "2",
        "DATASETS.VI_CAPTION_FALLBACK", "a photo of a person",
    )  # fmt: skip
    assert code == 0, out + err
    assert out.strip().splitlines()[-1].startswith("OK: 1 of 8 training images have no caption")
