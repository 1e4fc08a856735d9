"""Fusion of RGB and thermal token sequences from one shared image encoder."""

import torch
from torch import nn

FUSION_MODES = ("rgb", "t", "add", "cat")


class TokenFusion(nn.Module):
    """Fuse RGB tokens V and thermal tokens T into one sequence (index 0 = global token).

    ``rgb`` / ``t``: one modality alone (unimodal text-RGB / text-T); ``add``: V + T;
    ``cat``: Linear([V; T]) per token, initialised to the average (V + T) / 2 so training starts
    from Add's behaviour.

    Args:
        mode (str): one of ``FUSION_MODES``.
        dim (int): token width D.
    """

    def __init__(self, mode, dim):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"Unknown fusion {mode!r}; expected one of {FUSION_MODES}")
        self.mode = mode
        if mode == "cat":
            self.proj = nn.Linear(2 * dim, dim)
            with torch.no_grad():
                eye = torch.eye(dim) / 2
                self.proj.weight.copy_(torch.cat([eye, eye], dim=1))
                self.proj.bias.zero_()

    @property
    def needs_thermal(self):
        return self.mode != "rgb"

    @property
    def needs_rgb(self):
        return self.mode != "t"

    def forward(self, rgb_tokens, t_tokens):
        """rgb_tokens, t_tokens (Tensor): (B, N, D), either may be None when unused -> (B, N, D)."""
        if self.mode == "rgb":
            return rgb_tokens
        if self.mode == "t":
            return t_tokens
        if self.mode == "add":
            return rgb_tokens + t_tokens
        return self.proj(torch.cat([rgb_tokens, t_tokens], dim=-1))
