"""Checkpoints of AGW's own code (mangye16/Cross-Modal-Re-ID-baseline, ``train.py``) for
``AGWTwoStream``.

AGW's ``train.py`` saves ``{"net": embed_net.state_dict(), "cmc": ndarray, "mAP": numpy float,
"mINP": numpy float, "epoch": int}``. ``embed_net`` keeps three whole ResNet-50s but uses only
the stem of two of them and the stages of the third, so its state dict always holds unused
entries: ``visible_module.visible.layer1-4``, ``thermal_module.thermal.layer1-4`` and the
``base_resnet.base`` stem (conv1, bn1). Those known entries are logged and dropped; every other
entry is renamed to this project's modules; a key this module does not know is an error.

AGW's ``train.py`` builds one of two networks (``--method``): "agw" (non-local blocks, GeM) or
"base" (neither, average pooling). A checkpoint's ``NL_*`` entries tell which; ``check_agw_method``
refuses to load one into a model configured for the other, whose features would differ without
any missing weight to say so (the pooling has no parameters).

The numpy values need more than a weights-only ``torch.load``: ``SAFE_NUMPY_GLOBALS`` are the
array / scalar / dtype reconstructors (data, never code) that a weights-only load may accept;
nothing else is unpickled.
"""

import logging
import re

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "AGWCheckpointError",
    "AGW_META_ARCHITECTURES",
    "SAFE_NUMPY_GLOBALS",
    "from_agw_state_dict",
    "is_agw_checkpoint",
    "AGW_METHOD_CONFIGS",
    "agw_checkpoint_method",
    "agw_checkpoint_metrics",
    "check_agw_method",
]

AGW_META_ARCHITECTURES = ("AGWTwoStream",)
# train.py --method -> the config file (under configs/<DATASET>/) that builds its network.
AGW_METHOD_CONFIGS = {"agw": "agw_two_stream.yml", "base": "agw_two_stream_base.yml"}

# AGW's prefix -> this project's, first match wins.
RENAMES = (
    ("visible_module.visible.conv1.", "backbone.visible.conv1."),
    ("visible_module.visible.bn1.", "backbone.visible.bn1."),
    ("thermal_module.thermal.conv1.", "backbone.infrared.conv1."),
    ("thermal_module.thermal.bn1.", "backbone.infrared.bn1."),
    ("base_resnet.base.layer", "backbone.shared.layer"),
    ("bottleneck.", "heads.bottleneck."),
    ("classifier.", "heads.classifier."),
)
# AGW's Non_local wraps g in a Sequential (g.0); fast-reid's is the bare convolution.
NON_LOCAL = re.compile(r"^NL_([1-4])\.(\d+)\.(g\.0|W\.0|W\.1|theta|phi)\.([A-Za-z_]+)$")
# Entries embed_net holds but never uses.
UNUSED = re.compile(
    r"^(visible_module\.visible\.layer[1-4]\.|thermal_module\.thermal\.layer[1-4]\."
    r"|base_resnet\.base\.(conv1|bn1)\.)"
)


def _numpy_globals():
    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    out = [core._reconstruct, core.scalar, np.ndarray, np.dtype]
    # Files written with numpy 1.x name the reconstructors under numpy.core.
    out += [
        (core._reconstruct, "numpy.core.multiarray._reconstruct"),
        (core.scalar, "numpy.core.multiarray.scalar"),
    ]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [
            getattr(dtypes, n)
            for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType")
            if hasattr(dtypes, n)
        ]
    return out


#: What a weights-only ``torch.load`` may accept besides tensors: numpy arrays and scalars.
SAFE_NUMPY_GLOBALS = _numpy_globals()


class AGWCheckpointError(ValueError):
    """An AGW-layout checkpoint that cannot be converted (unknown keys)."""


def _agw_net(checkpoint):
    net = checkpoint.get("net") if isinstance(checkpoint, dict) else None
    return net if isinstance(net, dict) else None


def is_agw_checkpoint(checkpoint) -> bool:
    """Whether a loaded checkpoint is AGW's: a ``net`` state dict with ``base_resnet.base.``
    entries (``module.``-prefixed from DataParallel or not)."""
    net = _agw_net(checkpoint)
    return net is not None and any(
        isinstance(k, str) and k.removeprefix("module.").startswith("base_resnet.base.")
        for k in net
    )


def agw_checkpoint_metrics(checkpoint):
    """AGW's recorded ``epoch``, ``mAP``, ``mINP`` and R1 (``cmc[0]``) as plain numbers (fractions
    0-1 as AGW stores them); missing or unreadable ones are left out."""
    out = {}
    for key in ("epoch", "mAP", "mINP"):
        value = checkpoint.get(key)
        if isinstance(value, (int, float, np.number)) or (
            isinstance(value, np.ndarray) and value.size == 1
        ):
            out[key] = float(value) if key != "epoch" else int(value)
    cmc = checkpoint.get("cmc")
    if isinstance(cmc, (np.ndarray, torch.Tensor)) and len(cmc) > 0:
        out["R1"] = float(cmc[0])
    return out


def agw_checkpoint_method(state_dict) -> str:
    """AGW's ``--method`` that wrote a ``net`` state dict: "agw" when it has non-local blocks
    (``NL_*`` entries), else "base"."""
    has_nl = any(NON_LOCAL.match(k.removeprefix("module.")) for k in state_dict)
    return "agw" if has_nl else "base"


def check_agw_method(state_dict, model):
    """Refuse an AGW ``net`` state dict that another ``--method`` wrote than ``model``
    (``AGWTwoStream``) is configured for.

    Raises:
        AGWCheckpointError: naming both and the config of the checkpoint's method.
    """
    method = agw_checkpoint_method(state_dict)
    configured = {"agw": (True, "gem"), "base": (False, "avg")}
    mine = (model.non_local, model.pool_kind)
    if configured[method] == mine:
        return
    config = AGW_METHOD_CONFIGS[method]
    non_local, pool = configured[method]
    raise AGWCheckpointError(
        f"the AGW checkpoint was trained with train.py --method {method} (non-local blocks "
        f"{'on' if non_local else 'off'}, {pool} pooling), but this model has non-local blocks "
        f"{'on' if mine[0] else 'off'} and {mine[1]} pooling: use configs/<DATASET>/{config} "
        f"(MODEL.BACKBONE.WITH_NL {non_local}, MODEL.AGW.POOL {pool})"
    )


def _listed(keys, limit=12):
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")


def _rename(key):
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    m = NON_LOCAL.match(key)
    if m:
        stage, index, part, leaf = m.groups()
        part = "g" if part == "g.0" else part
        return f"backbone.shared.NL_{stage}.{index}.{part}.{leaf}"
    return None


def from_agw_state_dict(state_dict, model_keys=None):
    """AGW's ``net`` entries under this project's names (``AGWTwoStream``), in fp32.

    Args:
        state_dict (dict): the ``net`` entry of AGW's checkpoint.
        model_keys: the state-dict keys of the model it is for; the classifier is dropped (and
            logged) when the model has none (an evaluation model). None keeps every entry.
    Returns:
        dict: the converted state dict.
    Raises:
        AGWCheckpointError: an entry neither known to be unused nor renamable.
    """
    converted, unused, unknown = {}, [], []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if UNUSED.match(key):
            unused.append(key)
            continue
        name = _rename(key)
        if name is None or not torch.is_tensor(value):
            unknown.append(key)
            continue
        converted[name] = value.float() if value.is_floating_point() else value
    if unknown:
        raise AGWCheckpointError(
            f"{len(unknown)} entries of the AGW checkpoint are not known to the converter "
            f"({_listed(unknown)}): it was written by a modified embed_net; convert those "
            "entries yourself or remove them"
        )
    if unused:
        logger.info(
            "AGW checkpoint: dropping %d entries embed_net keeps but never uses (the visible and "
            "thermal ResNets' layer1-4, the shared ResNet's stem)",
            len(unused),
        )
    if model_keys is not None:
        model_keys = set(model_keys)
        dropped = sorted(
            k for k in converted if k not in model_keys and k.startswith("heads.classifier.")
        )
        for key in dropped:
            del converted[key]
        if dropped:
            logger.info("AGW checkpoint: the identity classifier is not used by this model")
    return converted
