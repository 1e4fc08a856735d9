"""Dataset readers, caption utilities and loaders for cross-modal retrieval."""

from . import datasets  # noqa: F401
