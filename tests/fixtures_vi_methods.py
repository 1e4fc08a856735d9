"""What the tests of the visible-infrared methods on CLIP (CLIP4VI-ReID, RSBA) share: a config's
model built on the CPU for four identities, and a batch as the two-modality PK sampler gives it."""

import os

import plugins  # noqa: F401  (fastreid compatibility fixes first)

# isort: split
import torch
from fastreid.modeling.meta_arch import build_model

from plugins.engine import build_config
from tests.fixtures_model import ROOT

# 4 identities x (2 visible + 2 infrared): the visible half of the batch first.
PIDS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3] * 2)
CODES = torch.tensor([0] * 8 + [1] * 8)  # modality: 0 visible, 1 infrared


def build_vi_model(config, *opts):
    """(cfg, model) of ``config`` (a path in the repository) + ``opts`` on the CPU with four
    identities, the model built after ``torch.manual_seed(0)``."""
    cfg = build_config(
        os.path.join(ROOT, config), ["MODEL.HEADS.NUM_CLASSES", "4", "MODEL.DEVICE", "cpu", *opts]
    )
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def vi_batch(generator):
    """``images`` (16, 3, 64, 32) in 0-255 drawn from ``generator``, ``targets`` ``PIDS`` and
    ``modalities`` ``CODES``."""
    return {
        "images": torch.rand(16, 3, 64, 32, generator=generator) * 255,
        "targets": PIDS.clone(),
        "modalities": CODES.clone(),
    }
