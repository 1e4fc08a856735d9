"""CLIP backbones, shared layers, losses and meta-architectures (registered on import)."""

from . import clip, fusion, losses, retrieval  # noqa: F401
