"""MGANet (Deng et al.): multilevel global-local cross-modal alignment for text-RGBT retrieval.

Importing registers the ``MGANet`` meta-architecture; ``add_mganet_config`` adds
``MODEL.MGANET``.
"""

import plugins  # noqa: F401  (fastreid compat fixes before any fastreid import)

from . import model  # noqa: F401
from .config import add_mganet_config  # noqa: F401
