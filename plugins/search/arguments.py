"""Command-line arguments of the tools that rebuild a trained model from its config.

``tools/build_index.py`` and ``tools/export_onnx.py`` take the model as ``tools/train_net.py``
does: ``--config-file FILE``, ``--extra-imports MODULE ...`` and trailing ``KEY VALUE`` config
overrides (``MODEL.WEIGHTS path`` among them), with their own flags allowed anywhere between.
"""

import argparse

from plugins.engine.arguments import add_extra_imports_argument, overrides_error

__all__ = ["add_config_arguments", "overrides_error", "parse_config_args"]


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--config-file``, ``--extra-imports`` and the ``KEY VALUE`` overrides (``opts``)."""
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    add_extra_imports_argument(parser)
    parser.add_argument(
        "opts",
        nargs="*",
        metavar="KEY VALUE",
        help="config overrides, MODEL.WEIGHTS path/to/model_final.pth among them",
    )
    return parser


def parse_config_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv`` with flags and ``KEY VALUE`` overrides in any order; ``parser.error``
    (exit status 2) when the overrides are not pairs."""
    args = parser.parse_intermixed_args(argv)
    message = overrides_error(args.opts)
    if message:
        parser.error(message)
    return args
