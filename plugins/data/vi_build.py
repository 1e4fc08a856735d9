"""Train and test loaders for visible-infrared re-identification, on fast-reid's loaders.

Training: the readers' ``VIImage`` items through fast-reid's own transforms
(``fastreid.data.transforms.build_transforms``: the augmentation fast-reid's models are tuned
with), batched by the plugin's samplers (``ModalityIdentitySampler``: K visible + K infrared per
identity). The sampler's per-sample seed seeds that sample's augmentation, so a batch does not
depend on the worker that builds it. Test: every image of the ``VITestSet`` once, in order; the
protocol evaluator draws queries and galleries from the features.
"""

import logging
import random

import torch
from fastreid.data.transforms import build_transforms
from fastreid.utils import comm
from torch.utils.data import Dataset

from .build import LabelledTrainSet, test_loader, train_loader
from .datasets.vi_reid import build_vi_dataset
from .samplers import build_sampler
from .transforms import read_image

logger = logging.getLogger(__name__)

__all__ = ["VITestImages", "VITrainSet", "build_vi_test_loader", "build_vi_train_loader"]

MODALITY_CODES = {"visible": 0, "infrared": 1}


class VITrainSet(LabelledTrainSet):
    """Training images with ``images`` (3, H, W) as fast-reid's transforms give them (0-255),
    ``targets`` (pid), ``camids``, ``modalities`` (0 visible, 1 infrared) and ``img_paths``.

    Indexed by ``(index, sample_seed)`` (the plugin's samplers), the transform's random draws
    (torch's and python's generators, which fast-reid's transforms use) come from that seed and
    the caller's generator states are left as they were; a plain index uses the global state.
    """

    def _load(self, item):
        return self.transform(read_image(item.path))

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        item = self.img_items[index]
        if seed is None:
            image = self._load(item)
        else:
            state = random.getstate()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                image = self._load(item)
            random.setstate(state)
        return {
            "images": image,
            "targets": item.pid,
            "camids": item.camid,
            "modalities": MODALITY_CODES[item.modality],
            "img_paths": item.path,
        }


def build_vi_train_loader(cfg):
    """Training loader over the one VI-ReID dataset in ``DATASETS.NAMES``."""
    names = list(cfg.DATASETS.NAMES)
    if len(names) != 1:
        raise ValueError(
            f"DATASETS.NAMES={names}: VI-ReID training takes one dataset (its identities and "
            "cameras do not carry over to another)."
        )
    data = build_vi_dataset(cfg, names[0])
    if comm.is_main_process():
        data.show_train()
    items = list(data.train)
    train_set = VITrainSet(items, build_transforms(cfg, is_train=True))
    sampler = build_sampler(cfg, [item.pid for item in items], [item.modality for item in items])
    return train_loader(cfg, train_set, sampler)


class VITestImages(Dataset):
    """Every image of a ``VITestSet`` once, with its position as ``index``."""

    def __init__(self, test_set, transform):
        self.images = test_set.images
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        item = self.images[index]
        return {
            "images": self.transform(read_image(item.path)),
            "targets": item.pid,
            "camids": item.camid,
            "index": index,
        }


def build_vi_test_loader(cfg, test_set):
    """Loader over a ``VITestSet``: contiguous batches, one share per process."""
    return test_loader(cfg, VITestImages(test_set, build_transforms(cfg, is_train=False)))
