"""Unreadable images name their file, and ``tools/dataset_stats.py --verify`` finds them all."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import plugins  # noqa: F401  (applies the fastreid fixes, registers the readers)
from tests.fixtures_text import rgbtpedes_records, write_rgbtpedes

# isort: split
from plugins.data.build import CaptionTrainSet
from plugins.data.datasets.rgbtpedes import RGBTPEDES
from plugins.data.transforms import ImageReadError, read_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATS_TOOL = os.path.join(REPO, "tools", "dataset_stats.py")

TRUNCATED = "0008_day_01.jpg"  # a training pair: its RGB image is cut in half
GARBAGE = "0101_glare_01.jpg"  # a test pair: its thermal image is not an image at all


def write_truncated_jpeg(path):
    """A valid noisy JPEG at ``path``, then only the first half of its bytes kept."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def write_garbage(path):
    with open(path, "wb") as f:
        f.write(b"this is not an image\n" * 20)


@pytest.fixture
def broken_rgbtpedes(tmp_path):
    """An RGBT-PEDES fixture with one truncated RGB JPEG and one garbage thermal file.

    Returns (root, truncated RGB path, garbage thermal path).
    """
    dataset_dir = write_rgbtpedes(str(tmp_path))
    truncated = os.path.join(dataset_dir, "RGB", TRUNCATED)
    garbage = os.path.join(dataset_dir, "T", GARBAGE)
    write_truncated_jpeg(truncated)
    write_garbage(garbage)
    return str(tmp_path), truncated, garbage


def assert_names_file(error, path):
    message = str(error)
    assert message.startswith(f"cannot read image {path}: ")
    assert "tools/dataset_stats.py --dataset NAME --verify" in message


# ------------------------------------------------------------------------------- read_image
def test_read_image_names_truncated_jpeg(broken_rgbtpedes):
    _, truncated, _ = broken_rgbtpedes
    with pytest.raises(ImageReadError) as info:
        read_image(truncated)
    assert_names_file(info.value, truncated)
    assert "truncated" in str(info.value)  # the original error is kept in the message
    assert isinstance(info.value, OSError)  # callers catching OSError keep working
    assert isinstance(info.value.__cause__, OSError)


def test_read_image_names_garbage_file(broken_rgbtpedes):
    _, _, garbage = broken_rgbtpedes
    with pytest.raises(ImageReadError) as info:
        read_image(garbage)
    assert_names_file(info.value, garbage)
    assert isinstance(info.value.__cause__, Image.UnidentifiedImageError)


def test_read_image_names_missing_file(tmp_path):
    missing = str(tmp_path / "gone.jpg")
    with pytest.raises(ImageReadError) as info:
        read_image(missing)
    assert_names_file(info.value, missing)


def test_read_image_reads_clean_thermal_as_rgb(broken_rgbtpedes):
    root, _, _ = broken_rgbtpedes
    img = read_image(os.path.join(root, "RGBT-PEDES", "T", "0001_night_01.jpg"))
    assert img.mode == "RGB" and img.size == (8, 16)


# -------------------------------------------------------------------------- training dataset
def train_set(root):
    """The RGBT-PEDES training set of ``root`` with stand-ins for the transform and text views.

    Images are read before the transform is called, so any transform shows the read error.
    """
    items = RGBTPEDES(root=root, verbose=False).train
    return CaptionTrainSet(
        items,
        transform=lambda *images, generator=None: images,
        text_views=lambda caption, no_color, generator=None: {},
        load_thermal=True,
    )


def test_train_set_getitem_names_unreadable_image(broken_rgbtpedes):
    root, truncated, _ = broken_rgbtpedes
    data = train_set(root)
    bad = [i for i, item in enumerate(data.img_items) if item.img_path == truncated]
    good = [i for i, item in enumerate(data.img_items) if item.img_path != truncated]
    assert bad and good
    assert {"images", "t_images"} <= set(data[good[0]])  # an intact pair reads as before
    with pytest.raises(ImageReadError) as info:
        data[bad[0]]
    assert_names_file(info.value, truncated)


def test_loader_worker_error_names_unreadable_image(broken_rgbtpedes):
    # Training reads images in worker processes: the path must survive the re-raise.
    root, truncated, _ = broken_rgbtpedes
    data = train_set(root)
    bad = next(i for i, item in enumerate(data.img_items) if item.img_path == truncated)
    loader = torch.utils.data.DataLoader(
        data, sampler=[bad], num_workers=1, collate_fn=lambda batch: batch
    )
    with pytest.raises(ImageReadError) as info:
        next(iter(loader))
    assert f"cannot read image {truncated}: " in str(info.value)


# ---------------------------------------------------------------- tools/dataset_stats --verify
def run_verify(root, *extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, STATS_TOOL, "--dataset", "RGBTPEDES", "--root", root, "--verify", *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def listed_bad_files(stdout):
    """Path -> error of the files listed under ``unreadable images:``."""
    lines = stdout.splitlines()
    if "unreadable images:" not in lines:
        return {}
    listed = {}
    for line in lines[lines.index("unreadable images:") + 1 :]:
        if not line.startswith("  "):
            break
        path, error = line.strip().split(": ", 1)
        listed[path] = error
    return listed


def test_verify_lists_exactly_the_bad_files(broken_rgbtpedes):
    root, truncated, garbage = broken_rgbtpedes
    result = run_verify(root, "--workers", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    listed = listed_bad_files(result.stdout)
    assert set(listed) == {truncated, garbage}
    assert "truncated" in listed[truncated]
    assert "UnidentifiedImageError" in listed[garbage]
    # 8 pairs, RGB and thermal each: 16 files.
    assert result.stdout.splitlines()[-1] == "verified 16 images, 2 unreadable"


def test_verify_clean_dataset_exits_0(tmp_path):
    records = rgbtpedes_records()
    records.append(dict(records[-1]))  # a duplicated test pair is decoded once
    write_rgbtpedes(str(tmp_path), records=records)
    result = run_verify(str(tmp_path), "--workers", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert listed_bad_files(result.stdout) == {}
    assert result.stdout.splitlines()[-1] == "verified 16 images, 0 unreadable"


def test_stats_without_verify_does_not_decode(broken_rgbtpedes, capsys, monkeypatch):
    root, _, _ = broken_rgbtpedes
    monkeypatch.syspath_prepend(os.path.dirname(STATS_TOOL))
    sys.modules.pop("dataset_stats", None)
    import dataset_stats

    assert dataset_stats.main(["--dataset", "RGBTPEDES", "--root", root]) == 0
    assert "unreadable" not in capsys.readouterr().out
