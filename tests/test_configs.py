"""Every config under configs/ merges, names only registered components, and builds a model."""

import glob
import os

import pytest
import torch

import plugins  # noqa: F401

# isort: split
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.modeling.backbones import BACKBONE_REGISTRY
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, build_model

from plugins.engine import build_config, resolve_device
from plugins.modeling.clip import CLIPWeightsError, build_clip_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)

# MODEL.BACKBONE.PRETRAIN stays as each config sets it: random-initialisation configs must
# say False themselves, the others get a tiny weights file (``tiny_clip_weights``).
TINY = [
    "MODEL.CLIP.NAME", "tiny-vit",
    "MODEL.CLIP.STRIDE", "8",
    "MODEL.HEADS.NUM_CLASSES", "5",
    "INPUT.SIZE_TRAIN", "[64, 32]",
    "INPUT.SIZE_TEST", "[64, 32]",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_clip_weights(tmp_path_factory):
    """A tiny-vit CLIP state dict for TINY's image size, the file PRETRAIN True configs need."""
    path = tmp_path_factory.mktemp("clip") / "tiny-vit.pt"
    torch.save(build_clip_model("tiny-vit", image_size=(64, 32), stride=8).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_rn_weights(tmp_path_factory):
    """A tiny-rn CLIP state dict (64x32, last stride 1) for the CLIP ResNet VI-ReID configs."""
    path = tmp_path_factory.mktemp("clip") / "tiny-rn.pt"
    model = build_clip_model("tiny-rn", image_size=(64, 32), resnet_last_stride=1)
    torch.save(model.state_dict(), path)
    return str(path)


def _is_clip_resnet(cfg):
    """A CLIP ResNet config (the two-stream VI-ReID methods): tested on tiny-rn, not tiny-vit."""
    name = cfg.MODEL.CLIP.NAME
    return name.startswith("RN") or name == "tiny-rn"


def test_there_are_configs():
    assert len(CONFIGS) >= 6


@pytest.mark.parametrize("path", CONFIGS)
def test_config_merges_and_names_registered_components(path):
    cfg = build_config(os.path.join(ROOT, path))
    assert cfg.MODEL.META_ARCHITECTURE in META_ARCH_REGISTRY._obj_map
    if cfg.MODEL.META_ARCHITECTURE == "Baseline":
        assert cfg.MODEL.BACKBONE.NAME in BACKBONE_REGISTRY._obj_map
    for name in list(cfg.DATASETS.NAMES) + list(cfg.DATASETS.TESTS):
        assert name in DATASET_REGISTRY._obj_map, name
    assert cfg.MODEL.DEVICE in ("cpu", "cuda")
    assert not os.path.isabs(cfg.OUTPUT_DIR), "configs must not hold absolute paths"
    assert not os.path.isabs(cfg.MODEL.CLIP.WEIGHTS or "x")
    # Users pass the CLIP file. The Demo configs fine-tune from the committed synthetic CLIP of
    # their architecture (weights/synthetic-clip); the Demo configs without a CLIP (fast-reid's
    # ResNet) start from random weights, explicitly.
    if not path.startswith(os.path.join("configs", "Demo")):
        assert cfg.MODEL.CLIP.WEIGHTS == "" and cfg.MODEL.BACKBONE.PRETRAIN
    elif _is_resnet(cfg):
        assert not cfg.MODEL.BACKBONE.PRETRAIN
    else:
        assert cfg.MODEL.BACKBONE.PRETRAIN
        assert cfg.MODEL.CLIP.WEIGHTS == f"weights/synthetic-clip/{cfg.MODEL.CLIP.NAME}.safetensors"
        assert os.path.isfile(os.path.join(ROOT, cfg.MODEL.CLIP.WEIGHTS))


@pytest.fixture(scope="module")
def imagenet_weights(tmp_path_factory):
    """A stand-in for the ImageNet file fast-reid's ResNet configs take in PRETRAIN_PATH (fast-reid
    loads it with strict=False; tests/test_vi_configs.py checks a real entry is loaded)."""
    path = tmp_path_factory.mktemp("resnet") / "resnet.pth"
    torch.save({}, path)
    return str(path)


def _is_resnet(cfg):
    """fast-reid's Baseline, or AGW's two-stream network, on fast-reid's ResNet (BACKBONE.NAME's
    default names it everywhere)."""
    return cfg.MODEL.META_ARCHITECTURE in ("Baseline", "AGWTwoStream") and (
        cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone"
    )


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds_a_model(path, tiny_clip_weights, tiny_rn_weights, imagenet_weights):
    opts = list(TINY)
    cfg = build_config(os.path.join(ROOT, path))
    if _is_clip_resnet(cfg):
        opts += ["MODEL.CLIP.NAME", "tiny-rn", "MODEL.CLIP.STRIDE", "0"]
        tiny_clip_weights = tiny_rn_weights
    if cfg.MODEL.META_ARCHITECTURE == "Baseline" and not _is_resnet(cfg):
        opts += ["MODEL.BACKBONE.FEAT_DIM", "64"]
    if cfg.MODEL.BACKBONE.PRETRAIN and _is_resnet(cfg):
        opts += ["MODEL.BACKBONE.PRETRAIN_PATH", imagenet_weights]
    elif cfg.MODEL.BACKBONE.PRETRAIN:
        opts += ["MODEL.CLIP.WEIGHTS", tiny_clip_weights]
    cfg = build_config(os.path.join(ROOT, path), opts + ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize(
    "path", [p for p in CONFIGS if not p.startswith(os.path.join("configs", "Demo"))]
)
def test_real_data_config_without_clip_weights_is_an_error(path):
    cfg = build_config(os.path.join(ROOT, path), TINY + ["MODEL.DEVICE", "cpu"])
    if _is_resnet(cfg):
        pytest.skip("fast-reid's ResNet: ImageNet weights come from MODEL.BACKBONE.PRETRAIN_PATH")
    with pytest.raises(CLIPWeightsError, match="MODEL.CLIP.WEIGHTS is empty"):
        build_model(cfg)


def test_device_auto_resolves_to_an_available_device():
    cfg = build_config(os.path.join(ROOT, CONFIGS[0]), ["MODEL.DEVICE", "auto"])
    assert cfg.MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_device_without_cuda_is_a_clear_error():
    cfg = build_config(os.path.join(ROOT, CONFIGS[0]))
    cfg.MODEL.DEVICE = "cuda"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device(cfg)


def test_extra_imports_mix_in_another_project(tmp_path, monkeypatch):
    (tmp_path / "other_project.py").write_text(
        "from fastreid.config import CfgNode as CN\n"
        "def add_other_config(cfg):\n"
        "    cfg.MODEL.OTHER = CN()\n"
        "    cfg.MODEL.OTHER.DEPTH = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = os.path.join(ROOT, "configs", "Demo", "clip_sdm_add.yml")
    cfg = build_config(path, ["MODEL.OTHER.DEPTH", "5"], extra_imports=["other_project"])
    assert cfg.MODEL.OTHER.DEPTH == 5
    with pytest.raises(AssertionError, match="Non-existent key"):  # yacs' error for unknown keys
        build_config(path, ["MODEL.OTHER.DEPTH", "5"])
