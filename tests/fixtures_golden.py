"""Seeded weights for the reference-code parity tests (``tests/data/*_golden``).

The golden files hold what a reference repository's own code computed with a small model of its
own architecture. That model's checkpoint is not committed: its weights come from
``golden_state_dict(layout)``, one seeded tensor per key, which both the run that made the golden
files and the tests use, and ``content_sha256`` pins the result.

The recipe, per key (``seed`` 0): ``torch.randn(shape)`` from a generator seeded with ``seed`` plus
the first four bytes (little-endian) of the key's SHA-256, then scaled by the key's role:
LayerNorm and other 1-D ``weight``: ``1 + 0.2 x``; any bias: ``0.1 x``; token and positional
embeddings: ``0.1 x``; ``class_embedding``: ``x / sqrt(width)``; ``proj`` / ``text_projection``
(in x out): ``x / sqrt(in)``; other matrices (out x in) and convolutions: ``x / sqrt(fan_in)``.
The scales keep activations of order one, so a dropped or renamed layer, another activation or
another transform changes every feature.
"""

import hashlib
import json
import math

import torch

__all__ = ["content_sha256", "golden_state_dict", "golden_tensor", "read_layout"]


def golden_tensor(key, shape, seed=0):
    """The recipe's tensor for ``key`` (float32)."""
    offset = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    generator = torch.Generator().manual_seed(seed + offset)
    x = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    name = key.rsplit(".", 1)[-1]
    if name.endswith("bias"):
        return 0.1 * x
    if name == "class_embedding":
        return x / math.sqrt(shape[-1])
    if name in ("positional_embedding",) or key.endswith("token_embedding.weight"):
        return 0.1 * x
    if len(shape) == 1:
        return 1 + 0.2 * x
    if name in ("proj", "text_projection"):
        return x / math.sqrt(shape[0])
    return x / math.sqrt(math.prod(shape[1:]))


def golden_state_dict(layout, seed=0):
    """``{key: golden_tensor(key, shape)}`` for a ``{key: shape}`` layout, in its order."""
    return {key: golden_tensor(key, shape, seed) for key, shape in layout.items()}


def content_sha256(state_dict):
    """SHA-256 over the keys, dtypes, shapes and bytes of a state dict, in key order (unlike a
    ``torch.save`` file's, it does not depend on the serialisation format)."""
    digest = hashlib.sha256()
    for key, value in state_dict.items():
        value = value.detach().contiguous().cpu()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def read_layout(path):
    """The ``{key: shape}`` layout a golden folder's ``layout.json`` records."""
    with open(path, encoding="utf-8") as f:
        return {k: tuple(v) for k, v in json.load(f).items()}
