"""The project's readers read the synthetic writers' output back with the writers' counts."""

import re

import pytest

import plugins  # noqa: F401

# isort: split
from fastreid.data.datasets import DATASET_REGISTRY

from plugins import synthetic


@pytest.mark.parametrize(
    "fmt, name, splits",
    [
        ("rgbtpedes", "RGBTPEDES", ("train", "test")),
        ("cuhkpedes", "CUHKPEDES", ("train", "val", "test")),
    ],
)
def test_reader_reads_synthetic_back(tmp_path, fmt, name, splits):
    summary = synthetic.WRITERS[fmt](str(tmp_path), 14, seed=3)
    data = DATASET_REGISTRY.get(name)(root=str(tmp_path), verbose=False)
    assert data.num_train_pids == summary["ids"]["train"]
    assert data.num_train_images == summary["images"]["train"]
    assert len(data.train) == summary["captions"]["train"]
    assert sorted({item.pid for item in data.train}) == list(range(data.num_train_pids))
    for split_name in splits[1:]:
        split = getattr(data, split_name)
        assert len(split.images) == summary["images"][split_name]
        assert len(split.captions) == summary["captions"][split_name]
        assert len({image.pid for image in split.images}) == summary["ids"][split_name]
    if fmt == "rgbtpedes":
        assert all(item.t_path and item.no_color_caption for item in data.train)
        subsets = {k: len(v) for k, v in data.test.subsets.items()}
        assert subsets == summary["test_challenges"]
        no_color = {item.no_color_caption for item in data.train}
        words = {w for c in no_color for w in re.findall(r"[a-z]+", c.lower())}
        assert words and not words & set(synthetic.ALL_COLOR_WORDS)
