"""CLIP4VI-ReID: CLIP-driven modality-shared representation learning for visible-infrared person
re-identification (text semantic generation, infrared feature embedding, high-level semantic
alignment).

Importing registers the ``CLIP4VIReID`` meta-architecture; ``add_clip4vireid_config`` adds
``MODEL.CLIP4VI``.
"""

import plugins  # noqa: F401  (fastreid compat fixes before any fastreid import)

from . import model  # noqa: F401
from .config import add_clip4vireid_config  # noqa: F401
