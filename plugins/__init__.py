"""Cross-modal person retrieval for fast-reid.

Importing this package applies the fastreid 1.4.0 compatibility fixes (``plugins.compat``) and
registers every backbone, meta-architecture and dataset reader of the plugin.
"""

from . import compat

compat.apply()

from . import data, engine, evaluation, modeling  # noqa: E402, F401
from .config import add_plugins_config  # noqa: E402, F401
