"""Optimizer construction: fast-reid's parameter groups or IRRA's, with Adam's betas and eps.

IRRA (Jiang & Ye, CVPR'23) builds one group per parameter, in this order of rules:

1. a newly initialised cross-modal layer: lr x ``lr_factor`` (5);
2. a name containing ``bias`` (``in_proj_bias`` included): lr x ``bias_lr_factor`` (2), weight
   decay ``weight_decay_bias`` (0); this overrides rule 1;
3. the identity classifier or the MLM head: lr x ``lr_factor``, keeping rule 2's weight decay
   (so their biases train at 5x without decay);

and every other parameter, LayerNorm weights included, at the base lr with ``weight_decay``.
IRRA's own new LayerNorms around its cross-modal encoder (``ln_pre_t``, ``ln_pre_i``,
``ln_post``) match no rule and stay at 1x. Models say which of their parameters are new through
``new_layers()``, which returns ``{"cross": prefixes, "head": prefixes}`` (rule 1 and rule 3).

Precision differs from IRRA's on purpose. IRRA's ``convert_weights`` (``model/clip_model.py``)
turns CLIP's Conv, Linear and attention weights and the two projections to fp16 (LayerNorms and
embeddings stay fp32), and Adam (eps 1e-3, large enough not to vanish against fp16 gradients)
updates those fp16 tensors in place, so every step rounds the weights to fp16. Here the weights,
gradients and Adam's moments stay fp32; ``SOLVER.AMP`` adds bf16 (or fp16 on CUDA) autocast for
the arithmetic only. The eps 1e-3 is kept, as IRRA trains with it; no pure-fp16 mode is offered.
"""

import logging
import re

import torch
from fastreid.solver import build as solver_build

logger = logging.getLogger(__name__)

__all__ = ["apply_lr_factors", "build_plugin_optimizer", "irra_param_groups"]


def _new_layer_prefixes(model):
    new = getattr(model, "new_layers", None)
    roles = new() if callable(new) else {}
    return tuple(roles.get("cross", ())), tuple(roles.get("head", ()))


def irra_param_groups(
    model,
    base_lr,
    weight_decay,
    bias_lr_factor=2.0,
    weight_decay_bias=0.0,
    new_lr_factor=5.0,
    freeze_layers=(),
):
    """One optimizer group per trainable parameter, by IRRA's rules (module docstring).

    Returns:
        list[dict]: ``{"params": [p], "lr", "weight_decay", "name", "freeze_status"}``.
    """
    cross, head = _new_layer_prefixes(model)
    frozen = [re.compile(pattern) for pattern in freeze_layers]
    groups = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr, decay = base_lr, weight_decay
        if name.startswith(cross):
            lr = base_lr * new_lr_factor
        if "bias" in name:
            lr, decay = base_lr * bias_lr_factor, weight_decay_bias
        if name.startswith(head):
            lr = base_lr * new_lr_factor
        status = "freeze" if any(p.match(name) for p in frozen) else "normal"
        groups.append(
            {
                "params": [param],
                "lr": lr,
                "weight_decay": decay,
                "name": name,
                "freeze_status": status,
            }
        )
    return groups


def build_plugin_optimizer(cfg, model):
    """``(optimizer, params)`` as fast-reid's ``build_optimizer`` returns them, with the lr
    factors a model declares through ``lr_factors()`` (prefix -> factor, see
    :func:`apply_lr_factors`: RSBA's text encoder at 1e-6 beside its visual encoder at 3e-4).
    """
    optimizer, params = _build_optimizer(cfg, model)
    declared = getattr(model, "lr_factors", None)
    if callable(declared):
        apply_lr_factors(optimizer, model, declared())
    return optimizer, params


def _build_optimizer(cfg, model):
    """``(optimizer, params)`` as fast-reid's ``build_optimizer`` returns them.

    ``SOLVER.PARAM_GROUPS`` picks the groups (``fastreid`` or ``irra``); Adam and AdamW get
    ``SOLVER.ADAM_BETAS`` / ``SOLVER.ADAM_EPS``. Other optimizers go through fast-reid.
    """
    solver = cfg.SOLVER
    if solver.PARAM_GROUPS not in ("fastreid", "irra"):
        raise ValueError(f"SOLVER.PARAM_GROUPS={solver.PARAM_GROUPS!r}; expected fastreid or irra")
    freeze = cfg.MODEL.FREEZE_LAYERS if solver.FREEZE_ITERS > 0 else []
    if solver.PARAM_GROUPS == "fastreid":
        if solver.OPT not in ("Adam", "AdamW"):
            return solver_build.build_optimizer(cfg, model, contiguous=False)
        # fast-reid's own groups, from the same keys its build_optimizer reads.
        keys = ("BASE_LR", "WEIGHT_DECAY", "WEIGHT_DECAY_NORM", "BIAS_LR_FACTOR")
        keys += ("HEADS_LR_FACTOR", "WEIGHT_DECAY_BIAS")
        options = {key.lower(): solver[key] for key in keys}
        params = solver_build.get_default_optimizer_params(model, freeze_layers=freeze, **options)
    else:
        params = irra_param_groups(
            model,
            solver.BASE_LR,
            solver.WEIGHT_DECAY,
            bias_lr_factor=solver.BIAS_LR_FACTOR,
            weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
            new_lr_factor=solver.NEW_LAYERS_LR_FACTOR,
            freeze_layers=freeze,
        )
    if solver.OPT == "SGD":
        opt_class, kwargs = (
            torch.optim.SGD,
            {"momentum": solver.MOMENTUM, "nesterov": solver.NESTEROV},
        )
    elif solver.OPT in ("Adam", "AdamW"):
        opt_class = getattr(torch.optim, solver.OPT)
        kwargs = {"betas": tuple(solver.ADAM_BETAS), "eps": solver.ADAM_EPS}
    else:
        opt_class, kwargs = getattr(torch.optim, solver.OPT), {}
    opt_class = solver_build.maybe_add_gradient_clipping(cfg, opt_class)
    opt_class = solver_build.maybe_add_freeze_layer(cfg, opt_class)
    optimizer = opt_class(params, lr=solver.BASE_LR, **kwargs)
    logger.info(
        f"Optimizer {solver.OPT} ({solver.PARAM_GROUPS} parameter groups, {len(params)} groups, "
        + ", ".join(f"{k}={v}" for k, v in kwargs.items())
        + ")"
    )
    return optimizer, params


def apply_lr_factors(optimizer, model, lr_factors):
    """Multiply the lr of every group whose parameters' names start with a prefix.

    The factor multiplies whatever lr the group rules gave (``SOLVER.PARAM_GROUPS``); the first
    matching prefix wins. Call before the lr scheduler is built (schedulers record each group's
    initial lr). Every prefix must match a parameter of the optimizer, and a group must not mix
    parameters with different factors.

    Args:
        optimizer (torch.optim.Optimizer): built from ``model``'s parameters.
        model (nn.Module): the model the optimizer trains.
        lr_factors (Mapping[str, float]): parameter-name prefix -> lr factor.
    Returns:
        dict: prefix -> number of parameter tensors scaled.
    """
    factors = dict(lr_factors or {})
    if not factors:
        return {}
    names = {id(p): n for n, p in model.named_parameters()}
    scaled = dict.fromkeys(factors, 0)
    for group in optimizer.param_groups:
        hits = set()
        for p in group["params"]:
            name = names.get(id(p), "")
            hits.add(next((prefix for prefix in factors if name.startswith(prefix)), None))
        if len(hits) > 1:
            raise ValueError(
                f"an optimizer group mixes parameters with different lr factors ({sorted(map(str, hits))})"
            )
        prefix = hits.pop() if hits else None
        if prefix is not None:
            group["lr"] *= factors[prefix]
            scaled[prefix] += len(group["params"])
    unused = [prefix for prefix, count in scaled.items() if count == 0]
    if unused:
        raise ValueError(f"lr factors for {unused} match no trainable parameter of the optimizer")
    logger.info(
        "lr factors: " + ", ".join(f"{p}* x{factors[p]:g} ({n} tensors)" for p, n in scaled.items())
    )
    return scaled
