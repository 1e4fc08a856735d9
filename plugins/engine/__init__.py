"""Training and set-up on fast-reid's engine."""

from .defaults import build_config, plugin_argument_parser, setup  # noqa: F401
from .trainer import PluginTrainer, resolve_device  # noqa: F401
