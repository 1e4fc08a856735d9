"""Adaptive token fusion (ATF, MGANet Sec. 3.5, Fig. 3)."""

import torch
from torch import nn

from plugins.modeling.cross_modal import QuickGELU


def _projection(dim, hidden, dropout):
    return nn.Sequential(
        nn.Linear(dim, hidden),
        QuickGELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        QuickGELU(),
        nn.Dropout(dropout),
    )


class AdaptiveTokenFusion(nn.Module):
    """Fuse RGB tokens V and thermal tokens T per token: ``F = w V + (1 - w) T + E``.

    V and T each pass through their own two linear layers (QuickGELU, dropout); the two results
    are concatenated into the mixed embedding M. One branch predicts the convex-combination
    weights ``w = sigmoid(Linear(M))`` (one weight per token and channel), the other the
    enhancement ``E = Linear(M)`` added to the combination.

    Both branches start at zero, so an untrained ATF returns ``(V + T) / 2``: Add fusion's
    direction, which keeps CLIP's embedding space at the start of fine-tuning (the paper
    credits that property for Add beating Cat, Sec. 5.2).

    Same interface as ``plugins.modeling.fusion.TokenFusion``.

    Args:
        dim (int): token width D.
        hidden (int): width of the projection layers; 0 or None: D.
        dropout (float): dropout rate after each projection layer.
    """

    mode = "atf"
    needs_rgb = True
    needs_thermal = True

    def __init__(self, dim, hidden=0, dropout=0.1):
        super().__init__()
        hidden = hidden or dim
        self.proj_rgb = _projection(dim, hidden, dropout)
        self.proj_t = _projection(dim, hidden, dropout)
        self.weight_branch = nn.Linear(2 * hidden, dim)
        self.enhance_branch = nn.Linear(2 * hidden, dim)
        for layer in (self.weight_branch, self.enhance_branch):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def weights_and_enhancement(self, rgb_tokens, t_tokens):
        """Convex weights ``w`` in (0, 1) and enhancement ``E``, each (B, N, D)."""
        mixed = torch.cat([self.proj_rgb(rgb_tokens), self.proj_t(t_tokens)], dim=-1)
        return torch.sigmoid(self.weight_branch(mixed)), self.enhance_branch(mixed)

    def forward(self, rgb_tokens, t_tokens):
        """rgb_tokens, t_tokens (Tensor): (B, N, D) -> fused tokens F (B, N, D)."""
        if rgb_tokens is None or t_tokens is None:
            raise ValueError("adaptive token fusion needs both RGB and thermal tokens")
        w, enhancement = self.weights_and_enhancement(rgb_tokens, t_tokens)
        return w * rgb_tokens + (1.0 - w) * t_tokens + enhancement
