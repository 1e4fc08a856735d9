"""MGANet's own losses (Deng et al., Sec. 3.3-3.4). Pure functions; shapes in the docstrings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plugins.modeling.losses import info_nce

__all__ = ["binding_loss", "mab_loss", "mutual_alignment_loss", "semantic_consistency_loss"]


def mutual_alignment_loss(
    v_global: torch.Tensor, l1_global: torch.Tensor, tau: float | torch.Tensor
) -> torch.Tensor:
    """Bidirectional InfoNCE between visible and colour-masked text globals (Eq. 4 both ways).

    Args:
        v_global (Tensor): (B, D) V^C, the RGB global features (normalised inside).
        l1_global (Tensor): (B, D) L_1^C, colour-masked caption globals; row i pairs with V_i.
        tau (float or Tensor): tau_2.

    Returns:
        Tensor: () ``L_A(V, L1) + L_A(L1, V)``.
    """
    return info_nce(v_global, l1_global, tau) + info_nce(l1_global, v_global, tau)


def binding_loss(
    t_global: torch.Tensor, l3_global: torch.Tensor, tau: float | torch.Tensor
) -> torch.Tensor:
    """Binding of thermal globals to frozen colour-free text globals (Eq. 5 both ways).

    Both directions of the InfoNCE are taken, but ``l3_global`` is detached: the text side is
    an anchor (ImageBind-style), only the thermal features move.

    Args:
        t_global (Tensor): (B, D) T^C, the thermal global features.
        l3_global (Tensor): (B, D) L_3^C, colour-free masked caption globals (detached here).
        tau (float or Tensor): tau_2.

    Returns:
        Tensor: () ``L_B(T, L3) + L_B(L3, T)``.
    """
    anchor = l3_global.detach()
    return info_nce(t_global, anchor, tau) + info_nce(anchor, t_global, tau)


def mab_loss(
    v_global: torch.Tensor,
    l1_global: torch.Tensor,
    t_global: torch.Tensor,
    l3_global: torch.Tensor,
    tau: float | torch.Tensor = 0.07,
) -> torch.Tensor:
    """Mutual alignment and binding loss L_MAB (Eq. 4-6).

    ``-mean_i log softmax_n(cos(a_i, b_n) / tau)[i]`` for (a, b) = (V, L1), (L1, V), (T, L3),
    (L3, T); L3 is detached, so the binding terms send no gradient into the text encoder.

    Args:
        v_global (Tensor): (B, D) RGB globals V^C.
        l1_global (Tensor): (B, D) colour-masked text globals L_1^C.
        t_global (Tensor): (B, D) thermal globals T^C.
        l3_global (Tensor): (B, D) colour-free masked text globals L_3^C.
        tau (float or Tensor): tau_2.

    Returns:
        Tensor: () the sum of the four terms.
    """
    return mutual_alignment_loss(v_global, l1_global, tau) + binding_loss(t_global, l3_global, tau)


def semantic_consistency_loss(
    reconstructed: torch.Tensor, target: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Soft reconstruction loss of VRT / TRT (Eq. 12 / 13): 1 - mean cosine at masked tokens.

    The mean runs over every masked position of the batch; ``target`` is detached.

    Args:
        reconstructed (Tensor): (B, L, D) R, the cross-modal transformer's outputs.
        target (Tensor): (B, L, D) E, token embeddings of the unmasked caption.
        labels (LongTensor): (B, L) non-zero at masked positions.

    Returns:
        Tensor: () ``1 - mean_{i in M} cos(R_i, E_i)``; 0 (connected to ``reconstructed``) when
        nothing is masked.
    """
    mask = labels != 0
    # Over all positions, then masked: no host-device sync for the mask's count.
    cos = F.cosine_similarity(reconstructed, target.detach(), dim=-1)
    count = mask.sum()
    return (1.0 - (cos * mask).sum() / count.clamp(min=1)) * (count > 0)


def masked_mean(values, mask):
    """Mean of ``values`` where ``mask`` is true, without a host-device sync; NaN when none is.

    values (Tensor): (B, L), mask (BoolTensor): (B, L) -> Tensor: ()
    """
    return (values * mask).sum() / mask.sum()
