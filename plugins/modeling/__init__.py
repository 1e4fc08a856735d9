"""CLIP backbones, shared layers, losses and meta-architectures (registered on import)."""

from . import agw, clip, cross_modal, fusion, irra, losses, retrieval  # noqa: F401
