"""Training and set-up on fast-reid's engine."""

from .defaults import (  # noqa: F401
    build_config,
    plugin_argument_parser,
    setup,
    train_or_evaluate,
)
from .stages import Stage, StageTrainer, run_stages  # noqa: F401
from .trainer import PluginTrainer, resolve_device  # noqa: F401
