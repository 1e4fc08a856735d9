"""Fusion of RGB and thermal token sequences from one shared image encoder."""

import torch
from torch import nn

FUSION_MODES = ("rgb", "t", "add", "cat")
CAT_INITS = ("default", "average")


class TokenFusion(nn.Module):
    """Fuse RGB tokens V and thermal tokens T into one sequence (index 0 = global token).

    ``rgb`` / ``t``: one modality alone (unimodal text-RGB / text-T); ``add``: V + T;
    ``cat``: Linear([V; T]) per token, MGANet's Table 5 Cat (concatenation then a linear layer,
    which the paper blames for Cat's drop). The layer starts from PyTorch's ordinary
    initialisation; ``cat_init="average"`` starts it at exactly (V + T) / 2, i.e. Add.

    Args:
        mode (str): one of ``FUSION_MODES``.
        dim (int): token width D.
        cat_init (str): ``"default"`` or ``"average"`` (Cat only).
    """

    def __init__(self, mode, dim, cat_init="default"):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"Unknown fusion {mode!r}; expected one of {FUSION_MODES}")
        if cat_init not in CAT_INITS:
            raise ValueError(
                f"Unknown Cat initialisation {cat_init!r}; expected one of {CAT_INITS}"
            )
        self.mode = mode
        if mode == "cat":
            self.proj = nn.Linear(2 * dim, dim)
        if mode == "cat" and cat_init == "average":
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
