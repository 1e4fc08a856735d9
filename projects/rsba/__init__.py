"""RSBA (Dong et al., IJCAI'25): Richer Semantics, Better Alignment for visible-infrared person
re-identification: explicit semantics-guided feature alignment (ESFA), consistent
similarity-guided indirect alignment (CSIA) and cross-view semantics compensation (CVSC).

Importing registers the ``RSBA`` meta-architecture; ``add_rsba_config`` adds ``MODEL.RSBA``.
"""

import plugins  # noqa: F401  (fastreid compat fixes before any fastreid import)

from . import model  # noqa: F401
from .config import add_rsba_config  # noqa: F401
