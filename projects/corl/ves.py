"""CoRL's Virtual-text Embedding Synthesizer layer and Adapter (Sec. 3.2)."""

import torch
import torch.nn.functional as F
from torch import nn

from plugins.data.captions import get_tokenizer
from plugins.modeling.clip import EOT_TOKEN_ID, SOT_TOKEN_ID


def prompt_token_ids(prompt, num_tokens):
    """Token ids of ``SOT prompt EOT`` with ``num_tokens`` slots where ``{}`` stands.

    Args:
        prompt (str): text with exactly one ``{}``, e.g. ``"a photo of a {} person."``.
        num_tokens (int): virtual tokens at ``{}``.
    Returns:
        (LongTensor (L,), int): the ids (0 at the slots) and the first slot's position.
    """
    if prompt.count("{}") != 1:
        raise ValueError(f"MODEL.CORL.VES.PROMPT {prompt!r} must contain '{{}}' exactly once")
    if num_tokens < 1:
        raise ValueError(f"MODEL.CORL.VES.NUM_TOKENS must be >= 1, got {num_tokens}")
    before, after = prompt.split("{}")
    tok = get_tokenizer()
    head = [SOT_TOKEN_ID, *tok.encode_bpe(before)[0]]
    ids = head + [0] * num_tokens + tok.encode_bpe(after)[0] + [EOT_TOKEN_ID]
    return torch.tensor(ids, dtype=torch.long), len(head)


class VirtualTextSynthesizer(nn.Module):
    """VES's trainable part: one FC layer turns an image embedding z_v into virtual-text tokens,
    which CLIP's text encoder decodes inside a prompt into the virtual-text embedding z_hat_t.

    The text encoder is passed to ``forward``, not held, so its parameters keep one name (the
    model's shared encoder).

    Args:
        embed_dim (int): D of z_v.
        token_width (int): the text encoder's token width.
        num_tokens (int): virtual tokens per image.
        prompt (str): text around them (see ``prompt_token_ids``).
    """

    def __init__(self, embed_dim, token_width, num_tokens=1, prompt="{}"):
        super().__init__()
        self.num_tokens = num_tokens
        self.token_width = token_width
        self.fc = nn.Linear(embed_dim, num_tokens * token_width)
        ids, slot = prompt_token_ids(prompt, num_tokens)
        self.slot = slot
        self.register_buffer("prompt_ids", ids, persistent=False)

    def tokens(self, image_embeds):
        """image_embeds (Tensor): (B, D) -> virtual-text tokens (B, num_tokens, width)."""
        return self.fc(image_embeds).view(-1, self.num_tokens, self.token_width)

    def forward(self, image_embeds, text_encoder):
        """z_v (B, D) -> z_hat_t (B, D_text), the text encoder's EOT feature of the prompt."""
        virtual = self.tokens(image_embeds)
        fixed = text_encoder.token_embedding(self.prompt_ids.to(virtual.device))
        fixed = fixed.unsqueeze(0).expand(virtual.shape[0], -1, -1).to(virtual.dtype)
        end = self.slot + self.num_tokens
        embeddings = torch.cat([fixed[:, : self.slot], virtual, fixed[:, end:]], dim=1)
        eot = torch.full((virtual.shape[0],), embeddings.shape[1] - 1, dtype=torch.long)
        return text_encoder.forward_embeddings(embeddings, eot)[0]


class Adapter(nn.Module):
    """g(.): virtual-text embedding -> virtual-text feature, ``z + W2 relu(W1 z)``.

    W2 starts at zero, so g starts as the identity (stage 1's evaluation scores z_hat_t itself).

    Args:
        dim (int): feature width D.
        hidden (int): bottleneck width.
    """

    def __init__(self, dim, hidden):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        """x (Tensor): (B, D) -> (B, D)."""
        return x + self.up(F.relu(self.down(x)))
