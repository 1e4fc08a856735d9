"""CoRL (Yan et al., IJCAI'25): cross-modal collaborative representation learning for
text-to-image person retrieval.

Importing registers the ``CoRL`` meta-architecture; ``add_corl_config`` adds ``MODEL.CORL``.
"""

import plugins  # noqa: F401  (fastreid compat fixes before any fastreid import)

from . import model  # noqa: F401
from .config import add_corl_config  # noqa: F401
