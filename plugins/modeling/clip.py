"""CLIP from open_clip for person retrieval: offline building, local weights, token encoders.

Everything here works without network access. Architectures come from open_clip's bundled
JSON configs (``ViT-B-16``, ``RN50``, ...), from the project's tiny test configs in
``plugins/modeling/model_configs`` (``tiny-vit``, ``tiny-rn``) or from a JSON file path.
Weights come only from a local file (``MODEL.CLIP.WEIGHTS``): OpenAI's released ``.pt``
TorchScript archives or plain state dicts, open_clip ``.bin`` / ``.pt`` / ``.safetensors``.
Pickled files are read with ``weights_only=True``; one that needs full unpickling (which can
run code) is refused unless ``MODEL.CLIP.ALLOW_PICKLE`` is True. From a config, weights load
exactly when ``MODEL.BACKBONE.PRETRAIN`` is True, which then requires a file.

Person images are not square (384x128, 288x144), so the visual tower is built for the
configured (H, W) and the checkpoint's position embedding grid is resized on load. Overlapping
patches (patch stride < patch size, as in IRRA / CLIP-ReID) change the ViT grid to
``((H - patch) // stride + 1, (W - patch) // stride + 1)``. The text vocabulary grows by one
``<|mask|>`` token (id 49408) for masked language modelling.
"""

import json
import logging
import math
import os
import pickle
import re
import zipfile
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from fastreid.modeling.backbones import BACKBONE_REGISTRY
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "CLIP_PIXEL_MEAN",
    "CLIP_PIXEL_STD",
    "SOT_TOKEN_ID",
    "EOT_TOKEN_ID",
    "MASK_TOKEN_ID",
    "CLIPWeightsError",
    "CLIPPickleError",
    "CLIPImageEncoder",
    "CLIPTextEncoder",
    "CLIPDualEncoder",
    "CLIPVisualBackbone",
    "build_clip_backbone",
    "build_clip_model",
    "build_clip_model_from_cfg",
    "architecture_quick_gelu",
    "clip_activation",
    "clip_file_is_openai",
    "clip_kwargs_from_cfg",
    "clip_weights_from_cfg",
    "count_parameters",
    "eot_positions",
    "get_clip_config",
    "load_clip_state_dict",
    "resize_grid_pos_embed",
    "resnet_attention_pool",
    "trim_token_ids",
    "resolve_clip_weights",
    "quick_gelu_setting",
]

# fast-reid feeds 0-255 images, so CLIP's mean / std are scaled by 255 for MODEL.PIXEL_MEAN/STD.
CLIP_PIXEL_MEAN = [v * 255 for v in (0.48145466, 0.4578275, 0.40821073)]
CLIP_PIXEL_STD = [v * 255 for v in (0.26862954, 0.26130258, 0.27577711)]

SOT_TOKEN_ID = 49406  # <|startoftext|>
EOT_TOKEN_ID = 49407  # <|endoftext|>
MASK_TOKEN_ID = 49408  # <|mask|>, appended after CLIP's 49408-token BPE vocabulary

LOCAL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
# The repository root: the Demo configs name its committed synthetic CLIPs
# (weights/synthetic-clip) relative to it, and a run from another folder still finds them.
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
# A weights value ending in ".<letters/digits>" names a file (open_clip's tags have no dot).
_FILE_EXTENSION = re.compile(r"\.[A-Za-z0-9]+$")
# Entries of OpenAI's archives (and of scripted open_clip models) that are not parameters.
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
_OPTIONAL_KEYS = ("logit_scale", "logit_bias")


class CLIPWeightsError(FileNotFoundError):
    """The CLIP weights setting names no local file (a missing path or a download tag)."""


class CLIPPickleError(ValueError):
    """A CLIP checkpoint needs full unpickling, which is refused unless explicitly allowed."""


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------------
# Architecture configs
# ---------------------------------------------------------------------------------------------
def get_clip_config(name: str) -> dict:
    """Model config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...) for ``name``.

    ``name`` is a path to a JSON file, a config in ``plugins/modeling/model_configs``
    (``tiny-vit``) or an open_clip architecture (``ViT-B-16``; OpenAI's ``ViT-B/16`` spelling
    is accepted). Nothing is downloaded.
    """
    if name.startswith(("hf-hub:", "local-dir:")):
        raise ValueError(
            f"MODEL.CLIP.NAME={name!r}: hub model names are not supported offline; use an "
            "open_clip architecture name (e.g. 'ViT-B-16') or a path to a JSON model config"
        )
    candidates = [Path(name)] if name.endswith(".json") else []
    candidates.append(LOCAL_CONFIG_DIR / f"{name}.json")
    for path in candidates:
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
            return cfg.get("model_cfg", cfg)
    cfg = open_clip.get_model_config(name.replace("/", "-"))
    if cfg is None:
        local = sorted(p.stem for p in LOCAL_CONFIG_DIR.glob("*.json"))
        raise ValueError(
            f"MODEL.CLIP.NAME={name!r} is neither a JSON file, a local config {local} nor an "
            "open_clip architecture (see open_clip.list_models())"
        )
    return cfg


def _grid(size, patch: int, stride: int):
    return tuple((s - patch) // stride + 1 for s in size)


def _resnet_grid(image_size, last_stride: int = 2):
    """Attention-pool grid of a ModifiedResNet: the sides over the total stride (32, or 16 with
    ``last_stride`` 1), which must divide them (the stem and stages pool by exact halves)."""
    if last_stride not in (1, 2):
        raise ValueError(f"MODEL.CLIP.RESNET_LAST_STRIDE must be 1 or 2, got {last_stride}")
    total = 16 * last_stride
    height, width = image_size
    if height % total or width % total:
        hint = " (or MODEL.CLIP.RESNET_LAST_STRIDE 1 for sides divisible by 16)" * (total == 32)
        raise ValueError(
            f"ResNet CLIP with last stride {last_stride} needs image sides divisible by {total}, "
            f"got {tuple(image_size)}{hint}"
        )
    return height // total, width // total


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------
def _arch_label(name: str) -> str:
    """``ViT-B-16`` for ``ViT-B/16``, ``tiny`` for ``/configs/tiny.json``: for file names."""
    return Path(name).stem if name.endswith(".json") else name.replace("/", "-")


def _looks_like_path(weights: str) -> bool:
    separators = [sep for sep in (os.sep, os.altsep, "/") if sep]
    return (
        any(sep in weights for sep in separators)
        or weights.startswith((".", "~"))
        or _FILE_EXTENSION.search(weights) is not None
    )


def resolve_clip_weights(weights: str, name: str = "ViT-B-16") -> str:
    """Return the existing file ``weights`` names (``~`` expanded; a relative path not found
    from the working directory is looked up in the repository), else raise
    :class:`CLIPWeightsError`.

    Anything that looks like a path (a separator, a leading ``.`` or ``~``, a file extension)
    and does not exist fails as a missing file, typos included (``ViT-B-16.ptt``). Only a bare
    name is taken for a download tag (``openai``, ``laion2b_s34b_b88k``, ``hf-hub:...``),
    refused at once with the address to fetch the file from on a connected machine; nothing is
    downloaded.
    """
    arch = _arch_label(name)
    what_to_pass = (
        f"Pass MODEL.CLIP.WEIGHTS /path/to/{arch}.pt: a local CLIP checkpoint (OpenAI's "
        f"{arch}.pt or an open_clip .bin / .pt / .safetensors file)."
    )
    if weights.startswith("hf-hub:"):
        raise CLIPWeightsError(
            f"MODEL.CLIP.WEIGHTS={weights!r} is a download tag, and this code never downloads. "
            f"Download the weights from https://huggingface.co/{weights[len('hf-hub:') :]} on a "
            f"machine with network access and copy them here. {what_to_pass}"
        )
    path = os.path.expanduser(weights)
    if os.path.isfile(path):
        return path
    in_repository = REPOSITORY_ROOT / path
    if not os.path.isabs(path) and in_repository.is_file():
        return str(in_repository)
    if os.path.isdir(path):
        raise CLIPWeightsError(f"MODEL.CLIP.WEIGHTS={weights!r} is a directory. {what_to_pass}")
    if _looks_like_path(weights):
        raise CLIPWeightsError(
            f"MODEL.CLIP.WEIGHTS={weights!r}: no such file: {path}. {what_to_pass}"
        )
    tag_cfg = open_clip.get_pretrained_cfg(arch, weights)
    if not tag_cfg:
        raise CLIPWeightsError(
            f"MODEL.CLIP.WEIGHTS={weights!r} is neither an existing file nor an open_clip "
            f"download tag of {arch}. {what_to_pass}"
        )
    source = ""
    if tag_cfg.get("url"):
        source = f" from {tag_cfg['url']}"
    elif tag_cfg.get("hf_hub"):
        source = f" from https://huggingface.co/{tag_cfg['hf_hub'].rstrip('/')}"
    file_name = f"{arch}.pt" if weights == "openai" else f"{arch} {weights} weights"
    raise CLIPWeightsError(
        f"MODEL.CLIP.WEIGHTS={weights!r} is a download tag, and this code never downloads. "
        f"Download {file_name}{source} on a machine with network access, copy it here and pass "
        f"MODEL.CLIP.WEIGHTS /path/to/{arch}.pt (or .bin / .safetensors)."
    )


def _is_torchscript_archive(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def _unpickling_reason(err: Exception) -> str:
    """The part of torch's weights-only error that says what the file pickles."""
    text = str(err)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it pickles {found.group(1)}"
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return found.group(1).strip() if found else (text.splitlines() or [type(err).__name__])[0]


def _torch_load(path: str, allow_pickle: bool):
    """``torch.load`` with ``weights_only=True``; full unpickling only when allowed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickling_reason(err)
        if not allow_pickle:
            raise CLIPPickleError(
                f"{path} is not a plain weights file ({reason}): reading it would unpickle "
                "arbitrary Python objects, which can run any code the file carries, so it is "
                "refused. If you trust this file, set MODEL.CLIP.ALLOW_PICKLE True; better, "
                "re-save its state dict (torch.save(model.state_dict()) or safetensors)."
            ) from err
    # Only reached with allow_pickle: the user vouched for this file.
    logger.warning(
        "%s is not a weights-only checkpoint (%s); unpickling it fully (MODEL.CLIP.ALLOW_PICKLE)",
        path,
        reason,
    )
    return torch.load(path, map_location="cpu", weights_only=False)


def load_clip_state_dict(path: str, allow_pickle: bool = False):
    """Read a CLIP checkpoint file into an open_clip-keyed fp32 state dict.

    Safetensors files and TorchScript archives are read by their own loaders; anything else by
    ``torch.load(weights_only=True)``. A file that needs full unpickling raises
    :class:`CLIPPickleError` unless ``allow_pickle`` (``MODEL.CLIP.ALLOW_PICKLE``) is True.

    Returns:
        (state_dict, is_openai): ``is_openai`` is True for OpenAI's release format (a
        TorchScript archive or a state dict carrying ``input_resolution``), whose models were
        trained with QuickGELU.
    """
    is_openai = False
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        checkpoint = load_file(path, device="cpu")
    elif _is_torchscript_archive(path):
        checkpoint = torch.jit.load(path, map_location="cpu").state_dict()
        is_openai = True
    else:
        checkpoint = _torch_load(path, allow_pickle)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ValueError(f"{path} holds no CLIP state dict (got {type(checkpoint).__name__})")
    state_dict = {}
    for key, value in checkpoint.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if key == "input_resolution":
            is_openai = True
        if key in _NON_PARAMETER_KEYS or not torch.is_tensor(value):
            continue
        state_dict[key] = value.float() if value.is_floating_point() else value
    return state_dict, is_openai


def clip_file_is_openai(path: str, allow_pickle: bool = False) -> bool:
    """Whether a CLIP weights file is in OpenAI's release format (see :func:`load_clip_state_dict`),
    read without loading its tensors where the format allows."""
    if path.endswith(".safetensors"):
        return False
    if _is_torchscript_archive(path):
        return True
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, ValueError):
        checkpoint = _torch_load(path, allow_pickle)  # a legacy (non-zip) or pickled file
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    return isinstance(checkpoint, dict) and any(
        k in ("input_resolution", "module.input_resolution") for k in checkpoint
    )


def architecture_quick_gelu(name: str) -> bool:
    """The activation an architecture is defined with: True for open_clip's ``*-quickgelu``
    configs (and JSON configs saying ``"quick_gelu": true``), False otherwise."""
    return bool(get_clip_config(name).get("quick_gelu", False))


def clip_activation(model: nn.Module):
    """Whether the CLIP transformers inside ``model`` use QuickGELU (True) or GELU (False); None
    when ``model`` holds no open_clip transformer block (a ResNet image tower alone)."""
    found = {
        isinstance(m.mlp.gelu, QuickGELU)
        for m in model.modules()
        if isinstance(m, ResidualAttentionBlock)
    }
    if len(found) > 1:
        raise ValueError("the model mixes QuickGELU and GELU CLIP transformer blocks")
    return found.pop() if found else None


# How a checkpoint's grid of position embeddings is resized to the model's: "bilinear" as IRRA
# (clip_model.py, resize_pos_embed) and CLIP-ReID do (F.interpolate's bilinear, corners not
# aligned, no antialiasing), or "bicubic" with antialiasing.
POS_EMBED_RESIZE_MODES = ("bilinear", "bicubic")


def resize_grid_pos_embed(pos_embed, old_grid, new_grid, num_prefix: int = 1, mode="bilinear"):
    """Resize a grid of position embeddings, keeping the prefix rows unchanged.

    Args:
        pos_embed (Tensor): (num_prefix + old_h * old_w, C)
        old_grid, new_grid: (h, w) of the checkpoint and of the model
        mode: "bilinear" (IRRA's and CLIP-ReID's resize) or "bicubic" (with antialiasing)
    Returns:
        Tensor: (num_prefix + new_h * new_w, C)
    """
    if mode not in POS_EMBED_RESIZE_MODES:
        raise ValueError(
            f"MODEL.CLIP.POS_EMBED_RESIZE must be one of {POS_EMBED_RESIZE_MODES}, got {mode!r}"
        )
    prefix, grid = pos_embed[:num_prefix], pos_embed[num_prefix:]
    channels = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], channels).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid.float(),
        size=tuple(new_grid),
        mode=mode,
        align_corners=False,
        antialias=mode == "bicubic",
    )
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], channels)
    return torch.cat([prefix, grid.to(pos_embed.dtype)], dim=0)


def _square_grid(num_positions: int, key: str, new_grid):
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise ValueError(
            f"{key}: cannot infer the checkpoint's grid from {num_positions} positions "
            f"(not square) to resize it to {tuple(new_grid)}; build the model with the image "
            "size and stride the checkpoint was trained with"
        )
    return side, side


def _adapt_state_dict(state_dict: dict, model: nn.Module, resize_mode="bilinear") -> dict:
    """Reshape checkpoint tensors for ``model``: position grids, <|mask|> row, context length."""
    state_dict = dict(state_dict)
    visual = model.visual
    grid_keys = {"visual.positional_embedding": "positional_embedding"}
    if isinstance(visual, ModifiedResNet):
        grid_keys = {"visual.attnpool.positional_embedding": "attnpool.positional_embedding"}
    for key, attr in grid_keys.items():
        if key not in state_dict:
            continue
        target = visual.get_parameter(attr)
        source = state_dict[key]
        if source.shape == target.shape:
            continue
        new_grid = visual.grid_size
        old_grid = _square_grid(source.shape[0] - 1, key, new_grid)
        logger.info(
            "Resizing %s from grid %s to %s (%s)", key, old_grid, tuple(new_grid), resize_mode
        )
        state_dict[key] = resize_grid_pos_embed(source, old_grid, new_grid, mode=resize_mode)

    key = "token_embedding.weight"
    if key in state_dict:
        source, rows = state_dict[key], model.token_embedding.num_embeddings
        if source.shape[0] < rows:
            extra = source.mean(dim=0, keepdim=True).expand(rows - source.shape[0], -1)
            state_dict[key] = torch.cat([source, extra], dim=0)
            logger.info(
                "Token embedding: %d checkpoint rows, %d in the model; new rows (<|mask|>) "
                "initialised to the mean embedding",
                source.shape[0],
                rows,
            )

    key = "positional_embedding"
    if key in state_dict and state_dict[key].shape[0] > model.positional_embedding.shape[0]:
        logger.info(
            "Text context length %d -> %d: keeping the first positions",
            state_dict[key].shape[0],
            model.positional_embedding.shape[0],
        )
        state_dict[key] = state_dict[key][: model.positional_embedding.shape[0]]

    for key in _OPTIONAL_KEYS:
        param = getattr(model, key, None)
        if key in state_dict and param is not None and state_dict[key].ndim != param.ndim:
            state_dict[key] = state_dict[key].reshape(param.shape)
    return state_dict


def _load_weights(model: nn.Module, state_dict: dict, path: str, resize_mode="bilinear"):
    """Strictly load an adapted state dict; one error lists every missing/extra/mis-shaped key."""
    state_dict = _adapt_state_dict(state_dict, model, resize_mode)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    optional_missing = [k for k in missing if k in _OPTIONAL_KEYS]
    missing = [k for k in missing if k not in _OPTIONAL_KEYS]
    if missing or unexpected or mismatched:
        problems = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
                problems.append(f"{len(keys)} {label} ({shown})")
        raise RuntimeError(
            f"CLIP checkpoint {path} does not fit the model: " + "; ".join(problems) + ". "
            "Check that MODEL.CLIP.NAME names the checkpoint's architecture."
        )
    if optional_missing:
        logger.warning("CLIP checkpoint %s has no %s; keeping defaults", path, optional_missing)
    model.load_state_dict(state_dict, strict=False)
    logger.info("Loaded CLIP weights from %s (%d tensors)", path, len(state_dict))


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------
def _set_vit_grid(visual: VisionTransformer, image_size, stride: int):
    patch = visual.patch_size[0]
    grid = _grid(image_size, patch, stride)
    visual.conv1.stride = (stride, stride)
    visual.stride = stride
    visual.image_size = tuple(image_size)
    if tuple(grid) != tuple(visual.grid_size):
        width = visual.positional_embedding.shape[-1]
        visual.positional_embedding = nn.Parameter(
            width**-0.5 * torch.randn(grid[0] * grid[1] + 1, width)
        )
    visual.grid_size = tuple(grid)


def _set_resnet_last_stride(visual: ModifiedResNet, last_stride: int):
    """Make layer4's first block keep its input resolution when ``last_stride`` is 1.

    A ModifiedResNet block downsamples with parameter-free average pools (after its 3x3
    convolution and before its shortcut convolution); replacing both by identities keeps every
    parameter name and shape, so the released weights load unchanged.
    """
    if last_stride == 2:
        return
    block = visual.layer4[0]
    block.avgpool = nn.Identity()
    block.stride = 1
    if block.downsample is not None:
        block.downsample[0] = nn.Identity()  # the "-1" AvgPool2d; its conv and BN stay


def _set_resnet_grid(visual: ModifiedResNet, image_size, last_stride: int = 2):
    grid = _resnet_grid(image_size, last_stride)
    _set_resnet_last_stride(visual, last_stride)
    pool = visual.attnpool
    channels = pool.positional_embedding.shape[-1]
    pool.positional_embedding = nn.Parameter(
        torch.randn(grid[0] * grid[1] + 1, channels) / channels**0.5
    )
    visual.image_size = tuple(image_size)
    visual.grid_size = grid


def build_clip_model(
    name="ViT-B-16",
    image_size=(384, 128),
    stride=None,
    vocab_size: int = 49409,
    context_length: int = 77,
    weights: str = "",
    quick_gelu=None,
    warn_random_init: bool = True,
    allow_pickle: bool = False,
    resnet_last_stride: int = 2,
    pos_embed_resize: str = "bilinear",
):
    """Build an open_clip ``CLIP`` (fp32, CPU) for (H, W) images, optionally from local weights.

    Args:
        name: architecture (see :func:`get_clip_config`); a yacs cfg is also accepted here and
            forwarded to :func:`build_clip_model_from_cfg`.
        image_size: (H, W) of the input images.
        stride: ViT patch stride; None or 0 means the patch size (no overlap). Ignored for
            ResNets.
        vocab_size: text vocabulary rows (49409 = CLIP's 49408 + ``<|mask|>``).
        context_length: text positions.
        weights: local checkpoint file, or '' for random initialisation.
        quick_gelu: None follows the architecture's config, switched on for OpenAI-format
            weights files; True / False force it (a rebuild passes the recorded value).
        warn_random_init: warn when no weights are given.
        allow_pickle: let a weights file that needs full unpickling load (it can run code).
        resnet_last_stride: ResNets only: 2 (CLIP's total stride 32) or 1 (16, CLIP-ReID's
            choice for person crops such as 288x144). Ignored for ViTs.
        pos_embed_resize: how the weights' position-embedding grid is resized to the model's
            ("bilinear" as IRRA and CLIP-ReID, or "bicubic").
    Returns:
        open_clip.model.CLIP
    """
    if not isinstance(name, str):
        return build_clip_model_from_cfg(name)
    cfg = get_clip_config(name)
    # Resolve and read the weights before building: a bad path fails in milliseconds.
    state_dict, is_openai, path = None, False, None
    if weights:
        path = resolve_clip_weights(weights, name)
        state_dict, is_openai = load_clip_state_dict(path, allow_pickle=allow_pickle)

    if cfg.pop("custom_text", False) or "hf_model_name" in cfg["text_cfg"]:
        raise ValueError(f"{name}: only CLIP models with open_clip's own text tower are supported")
    if "timm_model_name" in cfg["vision_cfg"]:
        raise ValueError(f"{name}: timm vision towers are not supported")
    if quick_gelu is None:
        quick_gelu = bool(cfg.get("quick_gelu", False)) or is_openai
        why = "OpenAI weights, trained with it" if is_openai else "the architecture's own"
    else:
        why = "MODEL.CLIP.QUICKGELU"
        if is_openai and not quick_gelu:
            logger.warning(
                "%s is in OpenAI's format (trained with QuickGELU) but the model is built with "
                "GELU (MODEL.CLIP.QUICKGELU False)",
                path,
            )
    cfg["quick_gelu"] = bool(quick_gelu)
    logger.info("CLIP %s: %s activation (%s)", name, "QuickGELU" if quick_gelu else "GELU", why)

    image_size = tuple(int(s) for s in image_size)
    vision_cfg, text_cfg = cfg["vision_cfg"], cfg["text_cfg"]
    is_resnet = isinstance(vision_cfg.get("layers"), (list, tuple))
    # ModifiedResNet only takes a square size; its attention-pool grid is replaced below.
    vision_cfg["image_size"] = 224 if is_resnet else image_size
    text_cfg["vocab_size"] = vocab_size
    text_cfg["context_length"] = context_length
    model = open_clip.model.CLIP(**cfg)

    if is_resnet:
        _set_resnet_grid(model.visual, image_size, int(resnet_last_stride))
    else:
        patch = model.visual.patch_size[0]
        _set_vit_grid(model.visual, image_size, int(stride) if stride else patch)

    if state_dict is not None:
        _load_weights(model, state_dict, path, pos_embed_resize)
    elif warn_random_init:
        logger.warning("CLIP %s is randomly initialised (MODEL.CLIP.WEIGHTS is empty)", name)
    return model.float()


def clip_weights_from_cfg(cfg) -> str:
    """The CLIP weights file a config asks for, '' for random initialisation.

    ``MODEL.BACKBONE.PRETRAIN`` decides, and ``MODEL.CLIP.WEIGHTS`` must agree with it: True
    needs a file (no silent training from scratch), False needs WEIGHTS empty (no silently
    ignored file). ``--eval-only`` / ``--resume`` set PRETRAIN False and clear WEIGHTS.
    """
    weights = cfg.MODEL.CLIP.WEIGHTS
    if cfg.MODEL.BACKBONE.PRETRAIN and not weights:
        raise CLIPWeightsError(
            "MODEL.BACKBONE.PRETRAIN is True but MODEL.CLIP.WEIGHTS is empty: pass "
            f"MODEL.CLIP.WEIGHTS /path/to/{_arch_label(cfg.MODEL.CLIP.NAME)}.pt (OpenAI or "
            "open_clip weights), or set MODEL.BACKBONE.PRETRAIN False to train from random "
            "initialisation"
        )
    if not cfg.MODEL.BACKBONE.PRETRAIN and weights:
        raise ValueError(
            f"MODEL.CLIP.WEIGHTS is {weights!r} but MODEL.BACKBONE.PRETRAIN is False, so the "
            "file would be ignored: set MODEL.BACKBONE.PRETRAIN True to load it, or clear "
            "MODEL.CLIP.WEIGHTS ('') to train from random initialisation"
        )
    return weights


def clip_kwargs_from_cfg(cfg) -> dict:
    """Keyword arguments of :func:`build_clip_model` from ``cfg.MODEL.CLIP``, ``INPUT`` and
    ``MODEL.BACKBONE.PRETRAIN`` (checked by :func:`clip_weights_from_cfg`)."""
    clip = cfg.MODEL.CLIP
    return {
        "name": clip.NAME,
        "image_size": tuple(cfg.INPUT.SIZE_TRAIN),
        "stride": clip.STRIDE,
        "vocab_size": clip.VOCAB_SIZE,
        "context_length": clip.CONTEXT_LENGTH,
        "weights": clip_weights_from_cfg(cfg),
        "allow_pickle": clip.ALLOW_PICKLE,
        "resnet_last_stride": clip.RESNET_LAST_STRIDE,
        "quick_gelu": quick_gelu_setting(clip.QUICKGELU),
        "pos_embed_resize": clip.POS_EMBED_RESIZE,
    }


def quick_gelu_setting(value):
    """``MODEL.CLIP.QUICKGELU`` as None (auto), True or False."""
    if value is None or (isinstance(value, str) and value.lower() == "auto"):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"MODEL.CLIP.QUICKGELU must be auto, True or False, got {value!r}")


def build_clip_model_from_cfg(cfg):
    """:func:`build_clip_model` from a config: MODEL.CLIP.WEIGHTS when MODEL.BACKBONE.PRETRAIN."""
    kwargs = clip_kwargs_from_cfg(cfg)
    if not kwargs["weights"]:
        logger.info(
            "CLIP %s: random initialisation (MODEL.BACKBONE.PRETRAIN False, MODEL.CLIP.WEIGHTS "
            "empty)",
            kwargs["name"],
        )
    return build_clip_model(**kwargs, warn_random_init=False)


# ---------------------------------------------------------------------------------------------
# Token-level encoders
# ---------------------------------------------------------------------------------------------
def resnet_attention_pool(pool, x, training=False, all_positions=True):
    """CLIP's attention pool (``AttentionPool2d``) on a ResNet feature map.

    The spatial mean token is prepended, as in CLIP; its output is CLIP's image feature. With
    ``all_positions`` every position is also a query (the projected tokens of the grid).

    x (Tensor): (B, C, h, w) -> (B, 1 + h*w, D), or (B, 1, D) without ``all_positions``
    """
    x = x.flatten(2).permute(2, 0, 1)  # (hw, B, C)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    x = x + pool.positional_embedding[:, None, :].to(x.dtype)
    x, _ = F.multi_head_attention_forward(
        query=x if all_positions else x[:1],
        key=x,
        value=x,
        embed_dim_to_check=x.shape[-1],
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        training=training,
        need_weights=False,
    )
    return x.permute(1, 0, 2)


class CLIPImageEncoder(nn.Module):
    """Image tower returning the projected global feature and projected patch tokens.

    ViT: global = ``ln_post(x[:, 0]) @ proj`` (the class token), tokens = ``ln_post(x[:, 1:])
    @ proj``. ModifiedResNet: the attention pool is run with every position as a query (the
    spatial mean token first, as in CLIP), so global is exactly CLIP's image feature and
    tokens are the attention-pool outputs of the H/32 x W/32 positions, projected by ``c_proj``.
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        visual = getattr(visual, "visual", visual)  # accept the CLIP model itself
        if isinstance(visual, VisionTransformer):
            if visual.attn_pool is not None or visual.pool_type != "tok" or visual.proj is None:
                raise ValueError("CLIPImageEncoder supports class-token ViTs with a projection")
            self.is_vit = True
        elif isinstance(visual, ModifiedResNet):
            self.is_vit = False
        else:
            raise TypeError(f"unsupported CLIP vision tower {type(visual).__name__}")
        if not hasattr(visual, "grid_size"):  # a ModifiedResNet built by open_clip: square
            side = math.isqrt(visual.attnpool.positional_embedding.shape[0] - 1)
            visual.grid_size = (side, side)
        self.visual = visual
        self.embed_dim = visual.output_dim
        self.grid_size = tuple(visual.grid_size)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def _check_grid(self, tokens: int, images):
        if tokens != self.num_patches:
            raise ValueError(
                f"images of size {tuple(images.shape[-2:])} give {tokens} positions, but the "
                f"encoder was built for a {self.grid_size} grid (image size "
                f"{self.visual.image_size})"
            )

    def _vit_tokens(self, images):
        v = self.visual
        x = v.conv1(images)
        x = x.flatten(2).transpose(1, 2)
        self._check_grid(x.shape[1], images)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.patch_dropout(x)
        x = v.ln_pre(x)
        x = v.transformer(x)
        return v.ln_post(x) @ v.proj

    def _resnet_tokens(self, images):
        v = self.visual
        x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images)))))
        self._check_grid(x.shape[2] * x.shape[3], images)
        return resnet_attention_pool(v.attnpool, x, self.training)

    def forward_tokens(self, images):
        """All projected tokens, index 0 the global one.

        images (Tensor): (B, 3, H, W), normalised with CLIP's mean / std
        returns (Tensor): (B, 1 + N, D), N = grid_h * grid_w
        """
        return self._vit_tokens(images) if self.is_vit else self._resnet_tokens(images)

    def forward(self, images):
        """images (Tensor): (B, 3, H, W) -> global (B, D), tokens (B, N, D)."""
        x = self.forward_tokens(images)
        return x[:, 0], x[:, 1:]


def eot_positions(token_ids, eot_id: int = EOT_TOKEN_ID):
    """Index of the first ``<|endoftext|>`` in each row.

    ``argmax(token_ids)`` (CLIP's shortcut) is wrong once ``<|mask|>`` (49408 > 49407) occurs.
    A row without EOT falls back to its last non-zero token.

    token_ids (Tensor): (B, L) -> (Tensor): (B,) long
    """
    is_eot = token_ids == eot_id
    first_eot = is_eot.int().argmax(dim=1)
    length = token_ids.shape[1]
    last_nonzero = length - 1 - (token_ids.flip(1) != 0).int().argmax(dim=1)
    return torch.where(is_eot.any(dim=1), first_eot, last_nonzero)


def trim_token_ids(token_ids):
    """Drop the padding columns after the last ``<|endoftext|>`` of a batch.

    CLIP's text transformer is causal, so the end-of-text feature of the trimmed ids equals
    that of the zero-padded ones, computed on fewer positions.

    token_ids (Tensor): (B, L) -> (B, L'), L' = 1 + the largest EOT position (at least 2)
    """
    length = int(eot_positions(token_ids).max()) + 1
    return token_ids[:, : max(length, 2)]


class CLIPTextEncoder(nn.Module):
    """CLIP's causal text transformer returning the EOT feature, every token and the padding.

    Shares its modules and parameters with the CLIP model it is built from.
    """

    def __init__(self, clip_model: nn.Module, eot_id: int = EOT_TOKEN_ID):
        super().__init__()
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.eot_id = eot_id
        self.context_length = self.positional_embedding.shape[0]
        self.vocab_size = self.token_embedding.num_embeddings
        self.width = self.token_embedding.embedding_dim
        if self.text_projection is None:
            self.embed_dim = self.width
        elif isinstance(self.text_projection, nn.Linear):
            self.embed_dim = self.text_projection.out_features
        else:
            self.embed_dim = self.text_projection.shape[1]

    def project(self, x):
        """x (Tensor): (..., width) -> (..., D)."""
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def forward(self, token_ids):
        """Encode token ids.

        token_ids (Tensor): (B, L) long, L <= context_length, zero-padded after EOT
        returns: global (B, D) at the EOT position, tokens (B, L, D) after ln_final and the
            projection, padding_mask (B, L) bool, True after the EOT position
        """
        length = token_ids.shape[1]
        eot = eot_positions(token_ids, self.eot_id)
        global_feat, x = self.forward_embeddings(self.token_embedding(token_ids), eot)
        positions = torch.arange(length, device=token_ids.device)
        padding_mask = positions[None, :] > eot[:, None]
        return global_feat, x, padding_mask

    def forward_embeddings(self, embeddings, eot):
        """Encode token embeddings (looked-up ids, learned or synthesised ones) with the same
        positional embedding, causal transformer, ``ln_final`` and projection as ``forward``.

        embeddings (Tensor): (B, L, width) token embeddings before the positional embedding,
            L <= context_length
        eot (Tensor): (B,) long, the position whose output is the global feature
        returns: global (B, D), tokens (B, L, D) after ln_final and the projection
        """
        length = embeddings.shape[1]
        if length > self.context_length:
            raise ValueError(f"{length} tokens exceed the context length {self.context_length}")
        x = embeddings + self.positional_embedding[:length].to(embeddings.dtype)
        mask = self.attn_mask[:length, :length] if self.attn_mask is not None else None
        x = self.transformer(x, attn_mask=mask)
        x = self.project(self.ln_final(x))
        eot = eot.to(x.device)
        return x[torch.arange(x.shape[0], device=x.device), eot], x


class CLIPDualEncoder(nn.Module):
    """Image and text encoders of one CLIP model, with CLIP's ``logit_scale`` parameter.

    Hold this (not the open_clip model as well) so each parameter has a single name.
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.image = CLIPImageEncoder(clip_model.visual)
        self.text = CLIPTextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.embed_dim = self.image.embed_dim

    @classmethod
    def from_cfg(cls, cfg):
        return cls(build_clip_model_from_cfg(cfg))

    def encode_image(self, images):
        """images (Tensor): (B, 3, H, W) -> (B, D) global image features."""
        return self.image(images)[0]

    def encode_text(self, token_ids):
        """token_ids (Tensor): (B, L) -> (B, D) global text features."""
        return self.text(token_ids)[0]


# ---------------------------------------------------------------------------------------------
# fast-reid backbone
# ---------------------------------------------------------------------------------------------
class CLIPVisualBackbone(nn.Module):
    """CLIP image tower as a fast-reid backbone: the global feature as a (B, D, 1, 1) map."""

    def __init__(self, image_encoder: CLIPImageEncoder):
        super().__init__()
        self.encoder = image_encoder
        self.feat_dim = image_encoder.embed_dim

    def forward(self, images):
        """images (Tensor): (B, 3, H, W) -> (B, D, 1, 1)."""
        return self.encoder(images)[0][:, :, None, None]


@BACKBONE_REGISTRY.register()
def build_clip_backbone(cfg):
    """``MODEL.BACKBONE.NAME: build_clip_backbone``; the text tower is dropped.

    CLIP weights (``MODEL.CLIP.WEIGHTS``) are loaded exactly when ``MODEL.BACKBONE.PRETRAIN``
    is True (see :func:`clip_weights_from_cfg`; ``--eval-only`` turns both off and restores
    everything from MODEL.WEIGHTS).
    """
    model = build_clip_model_from_cfg(cfg)
    backbone = CLIPVisualBackbone(CLIPImageEncoder(model.visual))
    if cfg.MODEL.BACKBONE.FEAT_DIM != backbone.feat_dim:
        raise ValueError(
            f"MODEL.BACKBONE.FEAT_DIM is {cfg.MODEL.BACKBONE.FEAT_DIM} but {cfg.MODEL.CLIP.NAME} "
            f"outputs {backbone.feat_dim}-d features: set MODEL.BACKBONE.FEAT_DIM "
            f"{backbone.feat_dim}"
        )
    return backbone
