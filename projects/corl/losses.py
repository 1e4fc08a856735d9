"""CoRL's losses (Yan et al., IJCAI'25). Pure functions; shapes in the docstrings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plugins.modeling.losses import info_nce

__all__ = [
    "IBM_BOUNDS",
    "align_loss",
    "correlation_loss",
    "crcl_loss",
    "feature_mse",
    "ibm_loss",
    "ibm_star_loss",
    "ibm_terms",
    "symmetric_nce",
]


# Eq. 9's bounds and temperatures at the paper's values (Sec. 4.1): ``ibm_loss``'s defaults.
IBM_BOUNDS = {"alpha": 0.6, "beta": 0.4, "tau_sp": 10.0, "tau_wp": 5.0, "tau_n": 40.0}


def ibm_terms(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    pids: torch.Tensor,
    image_ids: torch.Tensor | None = None,
    **bounds: float,
) -> dict[str, torch.Tensor]:
    """The four sums of Eq. 9, each divided by the batch size B.

    ``s_ij = cos(image_i, text_j)``; (i, j) is a strong positive when both come from one image
    (``image_ids`` equal; without them, i == j), a weak positive for the same identity and
    another image, a negative for another identity.

    Args:
        image_feats (Tensor): (B, D) image features (normalised inside).
        text_feats (Tensor): (B, D) text features; text i describes image i.
        pids (Tensor): (B,) identities.
        image_ids (Tensor): (B,) image of each row, or None (row i is its own image).
        bounds: any of ``alpha``, ``beta``, ``tau_sp``, ``tau_wp``, ``tau_n``; the others are
            ``IBM_BOUNDS``'.
    Returns:
        dict: ``sp`` (s_sp above alpha), ``wp_low`` (s_wp above beta), ``wp_high`` (s_wp below
        alpha), ``neg`` (s_n below beta), each () .
    """
    unknown = set(bounds) - set(IBM_BOUNDS)
    if unknown:
        raise TypeError(f"unknown IBM bounds {sorted(unknown)}; expected {list(IBM_BOUNDS)}")
    bounds = {**IBM_BOUNDS, **bounds}
    alpha, beta = bounds["alpha"], bounds["beta"]
    tau_sp, tau_wp, tau_n = bounds["tau_sp"], bounds["tau_wp"], bounds["tau_n"]
    b = image_feats.shape[0]
    sim = F.normalize(image_feats, dim=1) @ F.normalize(text_feats, dim=1).t()
    pids = pids.reshape(-1, 1).to(sim.device)
    same_id = pids == pids.t()
    if image_ids is None:
        same_image = torch.eye(b, dtype=torch.bool, device=sim.device)
    else:
        image_ids = image_ids.reshape(-1, 1).to(sim.device)
        same_image = (image_ids == image_ids.t()) & same_id
    weak = same_id & ~same_image
    zero = sim.new_zeros(())
    return {
        "sp": torch.where(same_image, F.softplus(-tau_sp * (sim - alpha)), zero).sum() / b,
        "wp_low": torch.where(weak, F.softplus(-tau_wp * (sim - beta)), zero).sum() / b,
        "wp_high": torch.where(weak, F.softplus(tau_wp * (sim - alpha)), zero).sum() / b,
        "neg": torch.where(~same_id, F.softplus(tau_n * (sim - beta)), zero).sum() / b,
    }


def ibm_loss(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    pids: torch.Tensor,
    image_ids: torch.Tensor | None = None,
    alpha: float = 0.6,
    beta: float = 0.4,
    tau_sp: float = 10.0,
    tau_wp: float = 5.0,
    tau_n: float = 40.0,
) -> torch.Tensor:
    """Identity-bounded matching loss L_IBM (Eq. 9): strong positives above alpha, weak
    positives between beta and alpha, negatives below beta, each by a logistic loss.

    ``(1/B) [sum_sp softplus(-tau_sp (s - alpha)) + sum_wp softplus(-tau_wp (s - beta))
    + sum_wp softplus(tau_wp (s - alpha)) + sum_n softplus(tau_n (s - beta))]``.

    Args:
        image_feats (Tensor): (B, D) image features (normalised inside).
        text_feats (Tensor): (B, D) text features; text i describes image i.
        pids (Tensor): (B,) identities.
        image_ids (Tensor): (B,) image of each row (two captions of one image are strong
            positives of each other), or None: only (i, i) is a strong positive.
    Returns:
        Tensor: () the loss.
    """
    terms = ibm_terms(
        image_feats, text_feats, pids, image_ids,
        alpha=alpha, beta=beta, tau_sp=tau_sp, tau_wp=tau_wp, tau_n=tau_n,
    )  # fmt: skip
    return terms["sp"] + terms["wp_low"] + terms["wp_high"] + terms["neg"]


def ibm_star_loss(image_feats, text_feats, pids, image_ids=None, **bounds) -> torch.Tensor:
    """Table 4's IBM*: Eq. 9 without its two weak-positive sums (same arguments as
    ``ibm_loss``); weak positives are neither pulled up nor held below alpha.

    Returns:
        Tensor: () the loss.
    """
    terms = ibm_terms(image_feats, text_feats, pids, image_ids, **bounds)
    return terms["sp"] + terms["neg"]


def symmetric_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE in both directions between paired rows (Eq. 2, Eq. 5): a_i must pick b_i among
    all b_j, and b_i must pick a_i among all a_j.

    Args:
        a (Tensor): (B, D), b (Tensor): (B, D); cosine similarity (normalised inside).
        tau (float): temperature.
    Returns:
        Tensor: () sum of both directions.
    """
    return info_nce(a, b, tau) + info_nce(b, a, tau)


def feature_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the squared L2 distance (Eq. 3, Eq. 6); features as given.

    pred (Tensor): (B, D), target (Tensor): (B, D) -> Tensor: ()
    """
    return (pred - target).pow(2).sum(dim=1).mean()


def correlation_loss(
    image_embeds: torch.Tensor, virtual_embeds: torch.Tensor, pids: torch.Tensor, tau: float
) -> torch.Tensor:
    """L_cor^s1 (Eq. 4): z_v,i must pick its own virtual-text embedding among those of other
    identities, and the other way round; same-identity rows other than i are left out.

    Eq. 4's printed denominators run over other identities only, which leaves the positive out
    and makes the loss unbounded below; here the positive is in the denominator (InfoNCE).

    Args:
        image_embeds (Tensor): (B, D) z_v (normalised inside).
        virtual_embeds (Tensor): (B, D) z_hat_t (normalised inside).
        pids (Tensor): (B,) identities l_i.
        tau (float): tau_a.
    Returns:
        Tensor: () sum of both directions.
    """
    sim = F.normalize(image_embeds, dim=1) @ F.normalize(virtual_embeds, dim=1).t() / tau
    pids = pids.reshape(-1, 1).to(sim.device)
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    drop = (pids == pids.t()) & ~eye
    target = torch.arange(sim.shape[0], device=sim.device)
    i2v = F.cross_entropy(sim.masked_fill(drop, float("-inf")), target)
    v2i = F.cross_entropy(sim.t().masked_fill(drop.t(), float("-inf")), target)
    return i2v + v2i


def align_loss(
    virtual_feats: torch.Tensor, text_feats: torch.Tensor, lambda1: float = 0.1, tau: float = 0.02
) -> torch.Tensor:
    """L_align^s2 = lambda_1 L_nce^s2 + L_mse^s2 (Eq. 5-6) against stop-gradient text features.

    Args:
        virtual_feats (Tensor): (B, D) t_hat (the Adapter's output).
        text_feats (Tensor): (B, D) t; detached here (sg in Eq. 5-6).
        lambda1 (float): lambda_1.
        tau (float): temperature of L_nce^s2 (cosine similarities).
    Returns:
        Tensor: ()
    """
    target = text_feats.detach()
    return lambda1 * symmetric_nce(target, virtual_feats, tau) + feature_mse(virtual_feats, target)


def _prototypes(feats: torch.Tensor, inverse: torch.Tensor, count: int) -> torch.Tensor:
    """L2-normalised mean of the (normalised) features of each identity: (K, D)."""
    sums = feats.new_zeros(count, feats.shape[1]).index_add(0, inverse, feats)
    return F.normalize(sums, dim=1)


def _log_relations(feats, slot, used, tau, proto_feats=None):
    """log r_i (B, B): log-softmax over the used prototype slots; 0 at the unused ones, where
    the relation is 0 and so is every KL term. Prototypes of ``proto_feats`` (default
    ``feats``)."""
    protos = _prototypes(feats if proto_feats is None else proto_feats, slot, len(slot))
    logits = feats @ protos.t() / tau
    return F.log_softmax(logits.masked_fill(~used, float("-inf")), dim=1).masked_fill(~used, 0.0)


def crcl_loss(
    image_feats: torch.Tensor,
    virtual_feats: torch.Tensor,
    pids: torch.Tensor,
    tau: float = 0.02,
    text_feats: torch.Tensor = None,
) -> torch.Tensor:
    """Cross-modal relation consistency loss L_CRCL (Eq. 7).

    Per batch, visual prototypes p_v (mean image feature of each identity) and textual
    prototypes p_t (mean text feature t of each identity, or mean virtual-text feature when
    ``text_feats`` is None); ``r_i^v = softmax_k(cos(v_i, p_v,k) / tau)``,
    ``r_i^t = softmax_k(cos(t_hat_i, p_t,k) / tau)``; returns
    ``(1 / 2B) sum_i [KL(r_i^t || r_i^v) + KL(r_i^v || r_i^t)]``. Gradients reach both branches
    and the prototypes (mutual distillation).

    Args:
        image_feats (Tensor): (B, D) v (normalised inside).
        virtual_feats (Tensor): (B, D) t_hat (normalised inside).
        pids (Tensor): (B,) identities.
        tau (float): relation temperature.
        text_feats (Tensor | None): (B, D) t, the captions' features p_t is made of
            (normalised inside); None: p_t from t_hat.
    Returns:
        Tensor: ()
    """
    v = F.normalize(image_feats, dim=1)
    t = F.normalize(virtual_feats, dim=1)
    text = None if text_feats is None else F.normalize(text_feats, dim=1)
    # One prototype slot per batch position, used by the identity's first sample: the number of
    # identities is never read on the host (torch.unique would stall a CUDA step).
    pids = pids.to(v.device, non_blocking=True)
    slot = (pids[:, None] == pids[None, :]).float().argmax(dim=1)  # first same-pid position
    used = slot == torch.arange(len(pids), device=v.device)
    log_rv = _log_relations(v, slot, used, tau)
    log_rt = _log_relations(t, slot, used, tau, text)
    kl_tv = (log_rt.exp() * (log_rt - log_rv)).sum(dim=1)
    kl_vt = (log_rv.exp() * (log_rv - log_rt)).sum(dim=1)
    return (kl_tv + kl_vt).sum() / (2 * v.shape[0])
