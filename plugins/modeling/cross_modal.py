"""Cross-modal reasoning layers shared by masked-text reconstruction methods (IRRA-style).

``CrossModalTransformer``: text tokens (queries) cross-attend to image tokens, then a few
self-attention blocks over the text positions. ``MLMHead`` maps the result to the vocabulary.
``masked_token_loss`` / ``masked_accuracy`` score predictions at masked positions only (label 0
means "not masked", the convention of ``plugins.data.captions.mlm_mask``).
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CrossModalTransformer",
    "MLMHead",
    "QuickGELU",
    "ResidualAttentionBlock",
    "masked_accuracy",
    "masked_token_loss",
]


class QuickGELU(nn.Module):
    """CLIP's GELU approximation ``x * sigmoid(1.702 x)``."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: ``x + MSA(LN(x))`` then ``x + MLP(LN(x))`` (MLP ratio 4, QuickGELU).

    Args:
        width (int): token width W.
        heads (int): attention heads (W must be divisible by it).
        mlp_ratio (float): hidden width of the MLP relative to W.
    """

    def __init__(self, width, heads, mlp_ratio=4.0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(width, hidden),
                gelu=QuickGELU(),
                c_proj=nn.Linear(hidden, width),
            )
        )

    def forward(self, x, key_padding_mask=None):
        """x (Tensor): (B, L, W); key_padding_mask (BoolTensor): (B, L), True = ignore -> (B, L, W)."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class CrossModalTransformer(nn.Module):
    """Text tokens attend to image tokens, then ``depth`` self-attention blocks over the text.

    ``R = LN(Blocks(MCA(q=LN(text), k=v=LN(image))))``, as IRRA's cross-modal encoder and
    MGANet's Eq. 8 / 10 / 11 (``MSA(MCA(LN(L, F, F)))``). The cross-attention has no residual
    connection: every output token is a mixture of image values chosen by its text query, so
    what is reconstructed must come from the image. The blocks are pre-LN, so their first
    LayerNorm normalises the cross-attention output.

    Initialisation follows CLIP / IRRA: with ``s = width ** -0.5``, attention input projections
    ``N(0, s)``, output projections ``N(0, s / sqrt(2 depth))``, MLP inputs
    ``N(0, (2 width) ** -0.5)``.

    Args:
        width (int): token width W of both modalities (the shared embedding width).
        heads (int): attention heads.
        depth (int): number of self-attention blocks after the cross-attention (>= 0).
    """

    # Submodules IRRA's optimizer treats as new cross-modal layers (its ``cross*`` names); the
    # pre/post LayerNorms correspond to IRRA's ``ln_pre_t`` / ``ln_pre_i`` / ``ln_post``.
    NEW_LAYERS = ("cross_attn", "blocks")

    def __init__(self, width, heads, depth):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.width = width
        self.depth = depth
        self.ln_pre_text = nn.LayerNorm(width)
        self.ln_pre_image = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(depth))
        self.ln_post = nn.LayerNorm(width)
        self.reset_parameters()

    @property
    def proj_std(self):
        """Std of output projections: ``width ** -0.5 / sqrt(2 * depth)``."""
        return self.width**-0.5 * (2 * max(self.depth, 1)) ** -0.5

    def reset_parameters(self):
        attn_std = self.width**-0.5
        fc_std = (2 * self.width) ** -0.5
        for attn in [self.cross_attn] + [b.attn for b in self.blocks]:
            nn.init.normal_(attn.in_proj_weight, std=attn_std)
            nn.init.normal_(attn.out_proj.weight, std=self.proj_std)
        for block in self.blocks:
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=self.proj_std)

    def forward(self, text_tokens, image_tokens, text_padding_mask=None):
        """Reconstruct text tokens from image tokens.

        Args:
            text_tokens (Tensor): (B, L, W) queries.
            image_tokens (Tensor): (B, N, W) keys and values (global token included).
            text_padding_mask (BoolTensor): optional (B, L), True at padding; those positions
                are not attended to in the self-attention blocks.

        Returns:
            Tensor: (B, L, W) the reconstructed text tokens.
        """
        q = self.ln_pre_text(text_tokens)
        kv = self.ln_pre_image(image_tokens)
        x = self.cross_attn(q, kv, kv, need_weights=False)[0]
        for block in self.blocks:
            x = block(x, key_padding_mask=text_padding_mask)
        return self.ln_post(x)


class MLMHead(nn.Module):
    """Masked-language-model head: ``Linear -> QuickGELU -> LayerNorm -> Linear(vocab)``.

    Args:
        width (int): input token width W.
        vocab_size (int): number of classes V (49409 with the ``<|mask|>`` token).
        output_std (float): std of the vocabulary projection's init; default ``width ** -0.5``
            (pass ``CrossModalTransformer.proj_std`` to match IRRA).
    """

    def __init__(self, width, vocab_size, output_std=None):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.gelu = QuickGELU()
        self.ln = nn.LayerNorm(width)
        self.fc = nn.Linear(width, vocab_size)
        nn.init.normal_(self.dense.weight, std=(2 * width) ** -0.5)
        nn.init.normal_(self.fc.weight, std=width**-0.5 if output_std is None else output_std)

    def forward(self, x):
        """x (Tensor): (..., W) -> logits (..., V)."""
        return self.fc(self.ln(self.gelu(self.dense(x))))


def masked_token_loss(logits, labels):
    """Cross-entropy over masked positions (``labels != 0``), averaged over those positions.

    Args:
        logits (Tensor): (B, L, V) or (M, V) vocabulary scores.
        labels (LongTensor): (B, L) or (M,) original token ids at masked positions, 0 elsewhere.

    Returns:
        Tensor: () the mean loss; 0 (still connected to ``logits`` for autograd) when nothing is
        masked. Computed without reading the mask on the host (no host-device sync).
    """
    vocab = logits.shape[-1]
    total = F.cross_entropy(
        logits.reshape(-1, vocab).float(), labels.reshape(-1), ignore_index=0, reduction="sum"
    )
    return total / (labels != 0).sum().clamp(min=1)


@torch.no_grad()
def masked_accuracy(logits, labels):
    """Share of masked positions whose arg-max prediction is the original token.

    Args:
        logits (Tensor): (B, L, V) or (M, V).
        labels (LongTensor): (B, L) or (M,), 0 at unmasked positions.

    Returns:
        Tensor: () accuracy in [0, 1]; NaN when nothing is masked (0 / 0, without a sync).
    """
    mask = labels != 0
    hits = (logits.argmax(dim=-1) == labels) & mask
    return hits.sum() / mask.sum()


def gather_masked(mask, *tensors):
    """The rows of ``tensors`` at the positions where ``mask`` is true, in row-major order.

    One ``nonzero`` (the single host-device sync: the result's size is the mask's count), then
    ``index_select``s, whose backward needs no sync (a boolean index needs one per use, and one
    more in its backward).

    Args:
        mask (BoolTensor): (B, L).
        tensors (Tensor): each (B, L, ...).

    Returns:
        tuple: each (M, ...), M = the number of true entries.
    """
    index = mask.reshape(-1).nonzero().squeeze(1)
    return tuple(t.reshape(-1, *t.shape[2:]).index_select(0, index) for t in tensors)


def masked_token_prediction(head, tokens, labels):
    """The masked-token loss of IRRA's IRR and MGANet's FRT: ``head`` predicts the original
    token at the masked positions only (one ``gather_masked``, the step's one sync).

    Args:
        head (nn.Module): (M, W) -> (M, V) vocabulary scores (``MLMHead``).
        tokens (Tensor): (B, L, W) reconstructed caption tokens.
        labels (LongTensor): (B, L) original token ids at masked positions, 0 elsewhere.

    Returns:
        tuple: (loss (), accuracy () -- NaN when nothing is masked), as ``masked_token_loss``
        and ``masked_accuracy``.
    """
    tokens, labels = gather_masked(labels != 0, tokens, labels)
    logits = head(tokens)
    return masked_token_loss(logits, labels), masked_accuracy(logits, labels)
