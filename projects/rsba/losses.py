"""RSBA's losses (Dong et al., IJCAI'25). Pure functions; shapes in the docstrings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plugins.modeling.losses import info_nce, pairwise_euclidean

__all__ = ["contrastive_alignment_loss", "modality_shared_loss", "similarity_consistency_loss"]


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=1)


def modality_shared_loss(
    f_vis: torch.Tensor, f_ir: torch.Tensor, pids: torch.Tensor
) -> torch.Tensor:
    """Modality-shared enhancement loss L_mse (Eq. 2-4).

    Euclidean distances. For every sample of either modality: ``D_intra`` = mean distance to
    the other samples of its identity in its own modality, ``D_across`` = mean distance to the
    samples of its identity in the other modality; the loss is the mean over samples of
    ``(D_intra - D_across)^2``. A sample with no other same-identity sample in its modality, or
    none in the other, has no term (the mean is over the samples that have both); with none at
    all the loss is 0.

    Args:
        f_vis (Tensor): (N, D) visible features.
        f_ir (Tensor): (M, D) infrared features.
        pids (Tensor): (N,) identities of ``f_vis``; with M == N also of ``f_ir`` (the paired
            batch), or pass ``(vis_pids, ir_pids)``.
    Returns:
        Tensor: () the loss.
    """
    vis_pids, ir_pids = pids if isinstance(pids, (tuple, list)) else (pids, pids)
    feats = torch.cat([f_vis, f_ir])
    labels = torch.cat([vis_pids, ir_pids]).reshape(-1, 1)
    modality = torch.cat(
        [torch.zeros(len(f_vis), dtype=torch.bool), torch.ones(len(f_ir), dtype=torch.bool)]
    ).to(feats.device)
    dist = pairwise_euclidean(feats)
    same_id = labels == labels.t()
    same_mod = modality.reshape(-1, 1) == modality.reshape(1, -1)
    eye = torch.eye(len(feats), dtype=torch.bool, device=feats.device)
    intra = same_id & same_mod & ~eye
    across = same_id & ~same_mod
    n_intra, n_across = intra.sum(1), across.sum(1)
    valid = (n_intra > 0) & (n_across > 0)
    if not bool(valid.any()):
        return feats.sum() * 0.0
    d_intra = (dist * intra).sum(1)[valid] / n_intra[valid]
    d_across = (dist * across).sum(1)[valid] / n_across[valid]
    return ((d_intra - d_across) ** 2).mean()


def contrastive_alignment_loss(
    f_vis: torch.Tensor,
    t_vis: torch.Tensor,
    f_ir: torch.Tensor,
    t_ir: torch.Tensor,
    tau: float = 1.0,
) -> torch.Tensor:
    """ESFA's image-text contrastive loss L_con = L_i2t + L_t2i within each modality (Eq. 5-7;
    Eq. 11-13 when ``t_*`` are CVSC's multi-view text features).

    Image i's positive is caption i of the same modality, every other caption of that modality
    in the batch a negative; the same from the captions' side. Cosine logits over ``tau``.

    Args:
        f_vis, t_vis (Tensor): (N, D) visible image and caption features (pairs by row).
        f_ir, t_ir (Tensor): (N, D) infrared image and caption features.
        tau (float): temperature (1.0: the plain cosine of Sec. 3.2).
    Returns:
        Tensor: () ``i2t_vis + i2t_ir + t2i_vis + t2i_ir``.
    """
    i2t = info_nce(f_vis, t_vis, tau) + info_nce(f_ir, t_ir, tau)
    t2i = info_nce(t_vis, f_vis, tau) + info_nce(t_ir, f_ir, tau)
    return i2t + t2i


def similarity_consistency_loss(
    f_vis: torch.Tensor,
    t_vis: torch.Tensor,
    f_ir: torch.Tensor,
    t_ir: torch.Tensor,
    m_vis: torch.Tensor | None = None,
    m_ir: torch.Tensor | None = None,
) -> torch.Tensor:
    """CSIA's similarity consistency loss L_sc (Eq. 8), or L_sc^o2m (Eq. 14) given CVSC's
    multi-view text features.

    Cosine s. ``mean_i (s(f_vis_i, m_vis_i) - s(t_ir_i, m_vis_i))^2
    + mean_i (s(f_ir_i, m_ir_i) - s(t_vis_i, m_ir_i))^2`` with ``m_vis = t_vis`` and
    ``m_ir = t_ir`` when not given (Eq. 8).

    Args:
        f_vis, t_vis, f_ir, t_ir (Tensor): (N, D) image and caption features, row i of each the
            same identity (pair i).
        m_vis, m_ir (Tensor, optional): (N, D) multi-view text features t_m (Eq. 10).
    Returns:
        Tensor: () the loss.
    """
    m_vis = t_vis if m_vis is None else m_vis
    m_ir = t_ir if m_ir is None else m_ir
    vis = (_cos(f_vis, m_vis) - _cos(t_ir, m_vis)) ** 2
    ir = (_cos(f_ir, m_ir) - _cos(t_vis, m_ir)) ** 2
    return vis.mean() + ir.mean()
