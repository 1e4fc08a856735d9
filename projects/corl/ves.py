"""CoRL's Virtual-text Embedding Synthesizer layer and Adapter (Sec. 3.2)."""

import torch.nn.functional as F
from torch import nn

from plugins.modeling.prompts import encode_prompt, prompt_token_ids


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
        ids, slot = prompt_token_ids(prompt, num_tokens, key="MODEL.CORL.VES.PROMPT")
        self.slot = slot
        self.register_buffer("prompt_ids", ids, persistent=False)

    def tokens(self, image_embeds):
        """image_embeds (Tensor): (B, D) -> virtual-text tokens (B, num_tokens, width)."""
        return self.fc(image_embeds).view(-1, self.num_tokens, self.token_width)

    def forward(self, image_embeds, text_encoder):
        """z_v (B, D) -> z_hat_t (B, D_text), the text encoder's EOT feature of the prompt."""
        return encode_prompt(text_encoder, self.prompt_ids, self.slot, self.tokens(image_embeds))


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
