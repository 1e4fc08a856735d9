"""Tiny models and caption batches shared by the method tests (IRRA, FMFA, CoRL, MGANet).

``build_model_from`` builds any config with a tiny CLIP on the CPU, seeded, so that two calls
give models with the same initial weights; ``caption_batch`` makes a four-caption training
batch (ids 0, 0, 1, 2) with random images; ``SHORT_RUN`` keeps end-to-end training short.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401  (fastreid compatibility fixes, registration)

# isort: split
import torch  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402

from plugins.data.build import TextViews  # noqa: E402
from plugins.engine import build_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# A 64x32 tiny ViT with random weights on the CPU: every method test builds on this.
TINY_CLIP = [
    "MODEL.CLIP.NAME", "tiny-vit",
    "MODEL.CLIP.STRIDE", "8",
    "MODEL.BACKBONE.PRETRAIN", "False",
    "MODEL.CLIP.WEIGHTS", "",
    "MODEL.DEVICE", "cpu",
    "INPUT.SIZE_TRAIN", "[64, 32]",
    "INPUT.SIZE_TEST", "[64, 32]",
]  # fmt: skip
CAPTIONS = [
    "A woman with long black hair wears a red coat and blue jeans",
    "A man in a white shirt and grey trousers carries a black bag",
    "A girl wearing a pink dress and white shoes",
    "A tall man with a green jacket and a black backpack",
]
BATCH_PIDS = (0, 0, 1, 2)
# A small identity classifier and implicit-relation-reasoning stack for the IRRA family.
IRRA_HEADS = ["MODEL.HEADS.NUM_CLASSES", "3", "MODEL.IRR.DEPTH", "2"]
# tools/train_net.py overrides for a short run: two epochs of batches of four, one evaluation
# at the end, every iteration logged.
SHORT_RUN = [
    "SOLVER.IMS_PER_BATCH", "4",
    "SOLVER.MAX_EPOCH", "2",
    "TEST.EVAL_PERIOD", "2",
    "SOLVER.LOG_PERIOD", "1",
]  # fmt: skip


def build_model_from(config, *opts):
    """The model of ``config`` (a path below the repository) with ``TINY_CLIP`` and ``opts``.

    torch is seeded with 0 just before building, so equal configs give equal weights.
    Returns:
        tuple: (cfg, model).
    """
    cfg = build_config(str(ROOT / config), TINY_CLIP + list(opts))
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def caption_batch(
    views=("mlm",), seed=0, thermal=False, captions=CAPTIONS, context_length=77, pids=BATCH_PIDS
):
    """A training batch: the caption views of ``captions`` and random images, ids ``pids``.

    Args:
        views (tuple): ``TextViews`` views besides ``text``.
        seed (int | None): torch seed set before the masking and image draws; None keeps the
            current random state.
        thermal (bool): add ``t_images`` (drawn after ``images``).
        context_length (int): token positions per caption.
    Returns:
        dict: ``text`` and each view (B, L), ``images`` (B, 3, 64, 32) in [0, 255),
        ``targets`` (B,).
    """
    if seed is not None:
        torch.manual_seed(seed)
    text_views = TextViews(views, context_length)
    items = [text_views(c) for c in captions]
    batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
    batch["images"] = torch.rand(len(captions), 3, 64, 32) * 255
    if thermal:
        batch["t_images"] = torch.rand(len(captions), 3, 64, 32) * 255
    batch["targets"] = torch.tensor(pids)
    return batch
