"""Train and test loaders for visible-infrared re-identification, on fast-reid's loaders.

Training: the readers' ``VIImage`` items through fast-reid's own transforms
(``fastreid.data.transforms.build_transforms``: the augmentation fast-reid's models are tuned
with), batched by the plugin's samplers (``ModalityIdentitySampler``: K visible + K infrared per
identity). The sampler's per-sample seed seeds that sample's augmentation, so a batch does not
depend on the worker that builds it. Test: every image of the ``VITestSet`` once, in order; the
protocol evaluator draws queries and galleries from the features.

``DATASETS.VI_TRAIN_MODALITY`` keeps one modality's training images only (identities keep their
labels and count), for stages that train on one modality in random batches (CLIP4VI-ReID).

Captions (RSBA): with ``DATASETS.VI_CAPTIONS`` set, every training item also carries its
caption's token ids (``plugins.data.vi_captions`` reads the file and assigns one caption per
image; they are tokenised once, when the training set is built).
"""

import logging
import random

import torch
from fastreid.data.transforms import build_transforms
from fastreid.utils import comm
from torch.utils.data import Dataset

from . import captions
from .build import LabelledTrainSet, test_loader, train_loader
from .datasets.vi_reid import build_vi_dataset
from .samplers import build_sampler
from .transforms import read_image
from .vi_captions import load_training_captions

logger = logging.getLogger(__name__)

__all__ = ["VITestImages", "VITrainSet", "build_vi_test_loader", "build_vi_train_loader"]

MODALITY_CODES = {"visible": 0, "infrared": 1}


class VITrainSet(LabelledTrainSet):
    """Training images with ``images`` (3, H, W) as fast-reid's transforms give them (0-255),
    ``targets`` (pid), ``camids``, ``modalities`` (0 visible, 1 infrared) and ``img_paths``;
    given captions, also ``text``: the caption's token ids, LongTensor (L,).

    Indexed by ``(index, sample_seed)`` (the plugin's samplers), the transform's random draws
    (torch's and python's generators, which fast-reid's transforms use) come from that seed and
    the caller's generator states are left as they were; a plain index uses the global state.

    Args:
        items (list[VIImage]): training images, pids relabelled 0..N-1.
        transform: fast-reid's training transform.
        texts (list[str] | None): (N,) one caption per item, or None for no ``text``.
        context_length (int): L, the token length of ``text`` (``INPUT.TEXT.CONTEXT_LENGTH``).
        num_classes (int | None): the training set's identities when ``items`` are a part of
            it (one modality's images); None: the identities of ``items``.
    """

    def __init__(
        self,
        items,
        transform,
        texts=None,
        context_length=captions.CONTEXT_LENGTH,
        num_classes=None,
    ):
        super().__init__(items, transform, num_classes)
        self.captions = None if texts is None else list(texts)
        self.text_tokens = None  # (N, L) LongTensor, row i = item i's caption
        if self.captions is not None:
            if len(self.captions) != len(items):
                raise ValueError(f"{len(self.captions)} captions for {len(items)} training images")
            # Tokenised once here, each distinct caption once: a loader step only indexes rows.
            distinct = sorted(set(self.captions))
            row = {text: i for i, text in enumerate(distinct)}
            table = captions.tokenize_batch(distinct, context_length)
            self.text_tokens = table[[row[t] for t in self.captions]]

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
        out = {
            "images": image,
            "targets": item.pid,
            "camids": item.camid,
            "modalities": MODALITY_CODES[item.modality],
            "img_paths": item.path,
        }
        if self.text_tokens is not None:
            out["text"] = self.text_tokens[index].clone()  # a view would ship the whole table
        return out


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
    num_classes = len({item.pid for item in items})
    kept = cfg.DATASETS.VI_TRAIN_MODALITY
    if kept not in ("both", *MODALITY_CODES):
        choices = ("both", *MODALITY_CODES)
        raise ValueError(f"DATASETS.VI_TRAIN_MODALITY {kept!r} not in {choices}")
    if kept != "both":
        items = [item for item in items if item.modality == kept]
        if not items:
            raise ValueError(f"DATASETS.VI_TRAIN_MODALITY {kept}: {names[0]} has no such image")
        logger.info(
            f"Training on the {len(items)} {kept} images only (DATASETS.VI_TRAIN_MODALITY); "
            f"{num_classes} identities"
        )
    texts = None
    if cfg.DATASETS.VI_CAPTIONS:
        loaded = load_training_captions(cfg, data, items)
        texts = loaded.texts
        logger.info(
            "Captions: %s covers %d of %d training images%s",
            loaded.path,
            loaded.covered,
            len(items),
            f" (the other {len(items) - loaded.covered} use the fallback caption)"
            if loaded.covered < len(items)
            else "",
        )
    train_set = VITrainSet(
        items,
        build_transforms(cfg, is_train=True),
        texts,
        cfg.INPUT.TEXT.CONTEXT_LENGTH,
        num_classes=num_classes,
    )
    sampler = build_sampler(cfg, [item.pid for item in items], [item.modality for item in items])
    return train_loader(cfg, train_set, sampler)


class VITestImages(Dataset):
    """Every image of a ``VITestSet`` once: ``images``, ``targets``, ``camids``, ``modalities``
    (0 visible, 1 infrared: two-stream models route each image through its modality's first
    layers at test time too) and its position as ``index``."""

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
            "modalities": MODALITY_CODES[item.modality],
            "index": index,
        }


def build_vi_test_loader(cfg, test_set):
    """Loader over a ``VITestSet``: contiguous batches, one share per process."""
    return test_loader(cfg, VITestImages(test_set, build_transforms(cfg, is_train=False)))
