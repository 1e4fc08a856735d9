"""Prompts with learned token slots for CLIP's text encoder (CoRL's virtual text, CLIP4VI-ReID's
identity prompts): fixed words around slots whose embeddings a model supplies."""

import torch

from ..data.captions import get_tokenizer
from .clip import EOT_TOKEN_ID, SOT_TOKEN_ID

__all__ = ["encode_prompt", "prompt_token_ids"]


def prompt_token_ids(prompt, num_tokens, key="the prompt"):
    """Token ids of ``SOT prompt EOT`` with ``num_tokens`` slots where ``{}`` stands.

    Args:
        prompt (str): text with exactly one ``{}``, e.g. ``"a photo of a {} person."``.
        num_tokens (int): learned tokens at ``{}``.
        key (str): the config key ``prompt`` comes from, for error messages.
    Returns:
        (LongTensor (L,), int): the ids (0 at the slots) and the first slot's position.
    """
    if prompt.count("{}") != 1:
        raise ValueError(f"{key} {prompt!r} must contain '{{}}' exactly once")
    if num_tokens < 1:
        raise ValueError(f"{key}: the number of learned tokens must be >= 1, got {num_tokens}")
    before, after = prompt.split("{}")
    tok = get_tokenizer()
    head = [SOT_TOKEN_ID, *tok.encode_bpe(before)[0]]
    ids = head + [0] * num_tokens + tok.encode_bpe(after)[0] + [EOT_TOKEN_ID]
    return torch.tensor(ids, dtype=torch.long), len(head)


def encode_prompt(text_encoder, prompt_ids, slot, learned):
    """Global text features of a prompt whose slots hold ``learned`` token embeddings.

    Only the prompt's own positions are encoded (EOT last): CLIP's text transformer is causal,
    so the EOT feature is the one the zero-padded 77-token input would give.

    Args:
        text_encoder (CLIPTextEncoder): the encoder (its token embedding, transformer, ...).
        prompt_ids (LongTensor): (L,) from :func:`prompt_token_ids`.
        slot (int): position of the first learned token.
        learned (Tensor): (B, M, width) token embeddings, M the number of slots.
    Returns:
        Tensor: (B, D) EOT features.
    """
    fixed = text_encoder.token_embedding(prompt_ids.to(learned.device))
    fixed = fixed.unsqueeze(0).expand(learned.shape[0], -1, -1).to(learned.dtype)
    end = slot + learned.shape[1]
    embeddings = torch.cat([fixed[:, :slot], learned, fixed[:, end:]], dim=1)
    eot = torch.full((learned.shape[0],), embeddings.shape[1] - 1, dtype=torch.long)
    return text_encoder.forward_embeddings(embeddings, eot)[0]
