"""Train and test loaders for text retrieval (text-to-image and text-to-RGBT) on fast-reid's loaders.

Training: one item per caption; the plugin's samplers (``plugins.data.samplers``: IRRA's random
batches or PK identity batches) draw ``(index, sample_seed)`` and fast-reid's
``build_reid_train_loader`` wraps them, so GPU prefetch comes from fast-reid. Each sample's
augmentation and masking are drawn from its own seed: batches are reproducible and resumable.
Test: one dataset of caption queries followed by gallery images, cut into homogeneous batches
(a batch holds only captions or only images), so fast-reid's ``inference_on_dataset`` drives the
model and the evaluator sees ``{"text": ...}`` and ``{"images": ...}`` batches.
"""

import logging
import os

import torch
from fastreid.data import build_reid_train_loader
from fastreid.data.build import fast_batch_collator
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.utils import comm
from torch.utils.data import Dataset, Sampler

from . import captions
from .samplers import build_sampler
from .transforms import PairTransform, read_image, seeded_numpy_rng

logger = logging.getLogger(__name__)

TEXT_VIEWS = ("mlm", "color_masked", "nocolor", "nocolor_mlm")


def datasets_root():
    """The dataset root: ``$FASTREID_DATASETS``, read now (fast-reid reads it once at import)."""
    return os.getenv("FASTREID_DATASETS", "datasets")


def build_text_dataset(cfg, name):
    """Construct a registered caption dataset reader by name."""
    return DATASET_REGISTRY.get(name)(root=datasets_root(), caption_file=cfg.DATASETS.CAPTION_FILE)


def is_text_dataset(name):
    """True when ``name`` is a registered reader with caption splits (train items of captions)."""
    from .datasets.text_reid import TextReIDDataset

    cls = DATASET_REGISTRY.get(name)
    return isinstance(cls, type) and issubclass(cls, TextReIDDataset)


def loads_thermal(cfg):
    """Whether loaders read the thermal image of RGBT pairs (not for RGB-only models)."""
    return cfg.MODEL.RETRIEVAL.FUSION != "rgb"


def load_images(item, transform, load_thermal, generator=None):
    """``{"images": ...}`` or, for a pair, ``{"images", "t_images"}`` augmented as one.

    item: a ``CaptionItem`` or ``GalleryImage`` (``img_path``, ``t_path``); generator: the
    ``torch.Generator`` of the sample's random steps (None: torch's global RNG).
    """
    if item.t_path and load_thermal:
        rgb, thermal = transform(
            read_image(item.img_path), read_image(item.t_path), generator=generator
        )
        return {"images": rgb, "t_images": thermal}
    return {"images": transform(read_image(item.img_path), generator=generator)}


class TextViews:
    """Turn a caption into the token-id views a model trains on.

    ``text`` is always produced; other views are chosen by ``INPUT.TEXT.VIEWS``:
    ``mlm`` (random masking for masked language modelling), ``color_masked`` (every colour word
    masked), ``nocolor`` (colour-free caption), ``nocolor_mlm`` (colour-free caption with random
    masking of its attribute words). A masked view ``v`` comes with ``v_labels``: the original
    ids at masked positions, 0 elsewhere.
    """

    def __init__(self, views=(), context_length=77, mlm_prob=0.15):
        unknown = set(views) - set(TEXT_VIEWS)
        if unknown:
            raise ValueError(f"Unknown INPUT.TEXT.VIEWS {sorted(unknown)}; known: {TEXT_VIEWS}")
        self.views = tuple(views)
        self.context_length = context_length
        self.mlm_prob = mlm_prob

    def __call__(self, caption, no_color_caption="", generator=None):
        """generator: the ``torch.Generator`` random masking draws from (None: global RNG)."""
        length = self.context_length
        out = {"text": captions.tokenize(caption, length)}
        if not self.views:
            return out
        rng = seeded_numpy_rng(generator)
        if "mlm" in self.views:
            ids, labels = captions.mlm_mask(out["text"], rng, prob=self.mlm_prob)
            out["text_mlm"], out["text_mlm_labels"] = ids, labels
        if "color_masked" in self.views:
            ids, labels = captions.mask_color_words(caption, context_length=length)
            out["text_color_masked"], out["text_color_masked_labels"] = ids, labels
        if "nocolor" in self.views or "nocolor_mlm" in self.views:
            free = no_color_caption or captions.remove_color_words(caption)
            free_ids, word_ids = captions.get_tokenizer().tokenize_with_words(free, length)
            if "nocolor" in self.views:
                out["text_nocolor"] = free_ids
            if "nocolor_mlm" in self.views:
                allowed = captions.attribute_word_mask(free_ids, word_ids)
                ids, labels = captions.mlm_mask(
                    free_ids, rng, prob=self.mlm_prob, positions_allowed=allowed
                )
                out["text_nocolor_mlm"], out["text_nocolor_mlm_labels"] = ids, labels
        return out

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.INPUT.TEXT.VIEWS, cfg.INPUT.TEXT.CONTEXT_LENGTH, cfg.INPUT.TEXT.MLM_PROB)


class LabelledTrainSet(Dataset):
    """Base of the training sets: items with ``pid`` relabelled 0..N-1, and a transform.

    ``img_items`` and ``num_classes`` are the attributes fast-reid's trainer reads.
    ``num_classes`` given: the items are a subset of a training set of that many identities
    (labels in 0..num_classes-1, some possibly absent).
    """

    def __init__(self, items, transform, num_classes=None):
        self.img_items = items
        self.transform = transform
        self.pids = sorted({item.pid for item in items})
        if num_classes is None:
            if self.pids != list(range(len(self.pids))):
                raise ValueError("Training identities must be relabelled 0..N-1 by the reader.")
            num_classes = len(self.pids)
        elif self.pids and not 0 <= self.pids[0] <= self.pids[-1] < num_classes:
            raise ValueError(f"Training labels must lie in 0..{num_classes - 1}.")
        self._num_classes = num_classes

    @property
    def num_classes(self):
        return self._num_classes

    def __len__(self):
        return len(self.img_items)


class CaptionTrainSet(LabelledTrainSet):
    """Training set of ``CaptionItem``s: images (or RGB + thermal pairs) with their caption views.

    Returns dicts with ``images`` (3, H, W) in 0-255, ``t_images`` for pairs, ``targets`` (pid),
    ``image_ids`` and the text views of ``TextViews``. Indexed by ``(index, sample_seed)`` (the
    plugin's samplers) every random step comes from that seed; a plain index uses torch's RNG.
    """

    def __init__(self, items, transform, text_views, load_thermal=True):
        super().__init__(items, transform)
        self.text_views = text_views
        self.load_thermal = load_thermal

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        item = self.img_items[index]
        out = {"targets": item.pid, "image_ids": item.image_id}
        out.update(load_images(item, self.transform, self.load_thermal, generator))
        out.update(self.text_views(item.caption, item.no_color_caption, generator))
        return out


def build_text_train_loader(cfg):
    """Training loader over the captions of every dataset in ``DATASETS.NAMES``, batched by
    ``DATALOADER.SAMPLER_TRAIN`` (checked to form a batch before training starts)."""
    items = []
    for name in cfg.DATASETS.NAMES:
        data = build_text_dataset(cfg, name)
        if comm.is_main_process():
            data.show_train()
        offset = max((item.pid for item in items), default=-1) + 1
        image_offset = max((item.image_id for item in items), default=-1) + 1
        items.extend(
            item._replace(pid=item.pid + offset, image_id=item.image_id + image_offset)
            for item in data.train
        )
    train_set = CaptionTrainSet(
        items,
        PairTransform.from_config(cfg, is_train=True),
        TextViews.from_config(cfg),
        load_thermal=loads_thermal(cfg),
    )
    return train_loader(cfg, train_set, build_sampler(cfg, [item.pid for item in items]))


def train_loader(cfg, train_set, sampler, num_workers=None):
    """fast-reid's training loader (GPU prefetch, worker seeding) over the plugin's sampler;
    ``num_workers`` defaults to ``DATALOADER.NUM_WORKERS``."""
    return build_reid_train_loader(
        train_set=train_set,
        sampler=sampler,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        num_workers=cfg.DATALOADER.NUM_WORKERS if num_workers is None else num_workers,
    )


class RetrievalTestSet(Dataset):
    """Caption queries followed by gallery images (or pairs) of one ``RetrievalSplit``.

    Index ``i < num_queries`` is a caption (``text``), otherwise a gallery entry (``images``,
    ``t_images``). Every item carries its ``index`` so results gathered across processes can
    be put back in order.
    """

    def __init__(self, split, transform, context_length=77, load_thermal=True):
        self.split = split
        self.transform = transform
        self.context_length = context_length
        self.load_thermal = load_thermal
        self.num_queries = len(split.captions)

    def __len__(self):
        return self.num_queries + len(self.split.images)

    def __getitem__(self, index):
        if index < self.num_queries:
            query = self.split.captions[index]
            text = captions.tokenize(query.caption, self.context_length)
            return {"text": text, "pids": query.pid, "index": index}
        image = self.split.images[index - self.num_queries]
        out = {"pids": image.pid, "index": index}
        out.update(load_images(image, self.transform, self.load_thermal))
        return out


class HomogeneousBatchSampler(Sampler):
    """Batches that never mix queries and gallery items; sharded across processes by batch."""

    def __init__(self, num_queries, num_gallery, batch_size):
        self.batches = []
        for start, stop in ((0, num_queries), (num_queries, num_queries + num_gallery)):
            for begin in range(start, stop, batch_size):
                self.batches.append(list(range(begin, min(begin + batch_size, stop))))
        rank, world = comm.get_rank(), comm.get_world_size()
        self.local = self.batches[rank::world]

    def __iter__(self):
        return iter(self.local)

    def __len__(self):
        return len(self.local)


def build_text_test_loader(cfg, split):
    """Loader over a ``RetrievalSplit``; returns ``(loader, num_queries)``."""
    test_set = RetrievalTestSet(
        split,
        PairTransform.from_config(cfg, is_train=False),
        cfg.INPUT.TEXT.CONTEXT_LENGTH,
        load_thermal=loads_thermal(cfg),
    )
    return test_loader(cfg, test_set, test_set.num_queries), test_set.num_queries


def test_loader(cfg, dataset, num_queries=0):
    """Evaluation loader over ``dataset``: its first ``num_queries`` items, then the rest, in
    batches of ``TEST.IMS_PER_BATCH`` that never mix the two, one share per process."""
    batch_size = max(1, cfg.TEST.IMS_PER_BATCH // comm.get_world_size())
    sampler = HomogeneousBatchSampler(num_queries, len(dataset) - num_queries, batch_size)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.DATALOADER.TEST_NUM_WORKERS,
        collate_fn=fast_batch_collator,
        pin_memory=torch.cuda.is_available(),
    )
