"""FMFA (Yin et al.): cross-modal full-mode fine-grained alignment for text-to-image retrieval.

Importing registers the ``FMFA`` meta-architecture; ``add_fmfa_config`` adds ``MODEL.FMFA``.
"""

import plugins  # noqa: F401  (fastreid compat fixes before any fastreid import)

from . import model  # noqa: F401
from .config import add_fmfa_config  # noqa: F401
