"""CLIP4VI-ReID's losses. Pure functions; shapes in the docstrings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["identity_contrastive_loss", "text_bank_ce_loss"]


def identity_contrastive_loss(
    query: torch.Tensor,
    keys: torch.Tensor,
    query_pids: torch.Tensor,
    key_pids: torch.Tensor,
    logit_scale: float | torch.Tensor,
) -> torch.Tensor:
    """Contrastive loss whose positives are every key of the query's identity (Eq. 3-4, 6-7).

    ``s_kj = logit_scale * cos(query_k, keys_j)``;
    ``-mean_k (1 / |P(y_k)|) sum_{p in P(y_k)} log(exp(s_kp) / sum_j exp(s_kj))`` with
    ``P(y_k)`` the keys of identity ``y_k``. Image-to-text (queries images, keys the batch's
    identity text features, one per image) and text-to-image (the reverse) are two calls.
    A query without a positive key raises.

    Args:
        query (Tensor): (B, D), normalised inside.
        keys (Tensor): (M, D), normalised inside.
        query_pids (Tensor): (B,) identities of the queries.
        key_pids (Tensor): (M,) identities of the keys.
        logit_scale (float or Tensor): the similarity scale (an inverse temperature).
    Returns:
        Tensor: () the loss.
    """
    logits = logit_scale * F.normalize(query, dim=1) @ F.normalize(keys, dim=1).t()
    positive = query_pids.reshape(-1, 1) == key_pids.reshape(1, -1)
    counts = positive.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("every query needs at least one key of its identity")
    log_prob = F.log_softmax(logits, dim=1)
    return -((log_prob * positive).sum(dim=1) / counts).mean()


def text_bank_ce_loss(
    image_feats: torch.Tensor,
    text_bank: torch.Tensor,
    pids: torch.Tensor,
    logit_scale: float | torch.Tensor,
) -> torch.Tensor:
    """Image-to-text cross-entropy over every identity's text feature (Eq. 9-10).

    ``-mean_k log softmax_y(logit_scale * cos(image_k, text_bank_y))[pid_k]``.

    Args:
        image_feats (Tensor): (B, D), normalised inside.
        text_bank (Tensor): (N, D) one text feature per training identity, row = label.
        pids (Tensor): (B,) labels in [0, N).
        logit_scale (float or Tensor): the similarity scale.
    Returns:
        Tensor: () the loss.
    """
    logits = logit_scale * F.normalize(image_feats, dim=1) @ F.normalize(text_bank, dim=1).t()
    return F.cross_entropy(logits, pids)
