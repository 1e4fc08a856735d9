"""Losses shared by two or more methods. Pure functions; shapes in the docstrings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["id_loss", "info_nce", "pairwise_euclidean", "sdm_loss", "sdm_row_kl", "wrt_loss"]


def sdm_row_kl(
    logits: torch.Tensor, pids: torch.Tensor, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDM's KL divergence of every row, both directions, from an image-by-text logit matrix.

    ``q = y / y.sum(1)`` with ``y_ij = [pid_i == pid_j]``; image row i gives
    ``sum_j p_ij (log p_ij - log(q_ij + eps))`` with ``p = softmax(logits, dim=1)``, text row i
    the same with ``p = softmax(logits.T, dim=1)``.

    Args:
        logits (Tensor): (B, B) scaled similarities of image i (row) and text j (column).
        pids (Tensor): (B,) identity labels of the pairs (row i and column i).
        eps (float): added to ``q`` inside the log.

    Returns:
        tuple: (B,) image-to-text and (B,) text-to-image divergences.
    """
    pids = pids.reshape(-1, 1)
    y = (pids == pids.t()).to(logits.dtype)
    # y is symmetric, so both directions share one target distribution.
    log_q = torch.log(y / y.sum(dim=1, keepdim=True) + eps)

    def kl(rows):
        log_p = F.log_softmax(rows, dim=1)
        return (log_p.exp() * (log_p - log_q)).sum(dim=1)

    return kl(logits), kl(logits.t())


def sdm_loss(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    pids: torch.Tensor,
    logit_scale: float | torch.Tensor = 50.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Similarity distribution matching (IRRA): KL from the image-text similarity softmax to the
    normalised identity-match distribution, in both directions.

    ``S = norm(img) @ norm(txt).T``, ``q = y / y.sum(1)`` with ``y_ij = [pid_i == pid_j]``,
    ``p = softmax(logit_scale * S, dim=1)``; returns
    ``mean_i sum_j p_ij (log p_ij - log(q_ij + eps))`` plus the same on ``S.T``.

    Args:
        image_feats (Tensor): (B, D) image features (normalised inside).
        text_feats (Tensor): (B, D) text features (normalised inside); row i pairs with image i.
        pids (Tensor): (B,) identity labels.
        logit_scale (float or Tensor): scalar multiplying the cosine similarities.
        eps (float): added to ``q`` inside the log.

    Returns:
        Tensor: () ``L_i2t + L_t2i``.
    """
    img = F.normalize(image_feats, dim=1)
    txt = F.normalize(text_feats, dim=1)
    i2t, t2i = sdm_row_kl(logit_scale * (img @ txt.t()), pids, eps)
    return i2t.mean() + t2i.mean()


def info_nce(query: torch.Tensor, keys: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """One-directional InfoNCE: query i must pick key i among all keys by cosine similarity.

    ``-mean_i log softmax_j(cos(query_i, keys_j) / tau)[i]``. Gradients reach both arguments;
    callers detach one to freeze it.

    Args:
        query (Tensor): (N, D) queries (normalised inside).
        keys (Tensor): (M, D) keys with M >= N; key i is the positive of query i, all other
            keys are negatives.
        tau (float or Tensor): temperature.

    Returns:
        Tensor: () the loss.
    """
    n = query.shape[0]
    if keys.shape[0] < n:
        raise ValueError(f"need at least as many keys as queries, got {keys.shape[0]} < {n}")
    logits = F.normalize(query, dim=1) @ F.normalize(keys, dim=1).t() / tau
    return F.cross_entropy(logits, torch.arange(n, device=logits.device))


def pairwise_euclidean(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distances with a gradient-safe square root (squared distances clamped at 1e-12).

    Args:
        x (Tensor): (N, D).
        y (Tensor): (M, D); ``x`` when omitted, and then the diagonal is exactly 0.

    Returns:
        Tensor: (N, M) distances.
    """
    same = y is None
    y = x if y is None else y
    sq = (x * x).sum(dim=1, keepdim=True) + (y * y).sum(dim=1).unsqueeze(0) - 2.0 * (x @ y.t())
    dist = sq.clamp(min=1e-12).sqrt()
    if same:
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        dist = dist.masked_fill(eye, 0.0)
    return dist


def _masked_softmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row softmax over the True entries of ``mask``; 0 elsewhere and on rows with no True."""
    masked = x.masked_fill(~mask, float("-inf"))
    row_max = masked.max(dim=1, keepdim=True).values
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max)).detach()
    e = torch.exp(masked - row_max)
    # Valid rows sum to at least 1 (their max term is exp(0)); the clamp only protects empty rows.
    return e / e.sum(dim=1, keepdim=True).clamp(min=1e-12)


def wrt_loss(feats: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """Weighted regularised triplet loss (AGW).

    For anchor i, positives j (same pid, the anchor itself included at distance 0) are weighted
    by ``softmax(d_ij)`` over positives and negatives k by ``softmax(-d_ik)`` over negatives;
    the loss is ``mean_i softplus(sum_j w_ij d_ij - sum_k w_ik d_ik)``. An anchor without
    negatives (e.g. a batch of one identity) has a negative term of 0, so its loss is
    ``softplus(sum_j w_ij d_ij)``. Weights are not detached.

    Args:
        feats (Tensor): (B, D) features, used as given (not normalised).
        pids (Tensor): (B,) identity labels.

    Returns:
        Tensor: () the loss.
    """
    dist = pairwise_euclidean(feats)
    pids = pids.reshape(-1, 1)
    is_pos = pids == pids.t()
    is_neg = ~is_pos
    w_pos = _masked_softmax(dist, is_pos)
    w_neg = _masked_softmax(-dist, is_neg)
    furthest_pos = (w_pos * dist).sum(dim=1)
    closest_neg = (w_neg * dist).sum(dim=1)
    return F.softplus(furthest_pos - closest_neg).mean()


def agw_wrt_loss(feats: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """AGW's own weighted regularised triplet (``TripletLoss_WRT`` and ``softmax_weights``,
    mangye16/Cross-Modal-Re-ID-baseline ``loss.py``), which is not ``wrt_loss`` at large distances.

    Distances are ``sqrt(clamp(d^2, 1e-12))`` (an anchor's own is 1e-6, not 0). Weights are
    ``exp(a - m) * mask / (sum(exp(a - m) * mask) + 1e-6)`` with ``m`` the row maximum of
    ``a * mask``: for the negatives ``a = -d`` and the masked-out entries count as 0, so ``m = 0``
    and, once every negative is far (``exp(-d) << 1e-6``), their weights and the negative term
    vanish. Loss: ``mean_i softplus(sum_j w_ij d_ij - sum_k w_ik d_ik)`` (``SoftMarginLoss`` with
    target 1). fast-reid's ``TripletLoss`` (margin 0, no hard mining) has the same weights.

    Args:
        feats (Tensor): (B, D) features, used as given.
        pids (Tensor): (B,) identity labels.

    Returns:
        Tensor: () the loss.
    """
    dist = pairwise_euclidean(feats, feats)  # both arguments: the diagonal keeps its clamp
    pids = pids.reshape(-1, 1)
    is_pos = (pids == pids.t()).to(dist.dtype)
    is_neg = 1.0 - is_pos
    dist_ap, dist_an = dist * is_pos, dist * is_neg

    def softmax_weights(x, mask):
        shifted = x - torch.max(x * mask, dim=1, keepdim=True)[0]
        z = torch.sum(torch.exp(shifted) * mask, dim=1, keepdim=True) + 1e-6
        return torch.exp(shifted) * mask / z

    furthest_pos = (dist_ap * softmax_weights(dist_ap, is_pos)).sum(dim=1)
    closest_neg = (dist_an * softmax_weights(-dist_an, is_neg)).sum(dim=1)
    return F.softplus(furthest_pos - closest_neg).mean()


def id_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Identity classification loss: cross-entropy, optionally label-smoothed.

    Args:
        logits (Tensor): (B, C) classifier outputs.
        targets (Tensor): (B,) class indices in [0, C).
        label_smoothing (float): smoothing in [0, 1).

    Returns:
        Tensor: () mean loss.
    """
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
