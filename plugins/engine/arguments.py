"""Arguments every command line that builds a model from a config takes, defined in one place:
``--extra-imports MODULE ...`` and the ``KEY VALUE`` config overrides."""


def add_extra_imports_argument(parser):
    """Add ``--extra-imports MODULE ...`` (other fast-reid projects to import)."""
    parser.add_argument(
        "--extra-imports",
        nargs="+",
        default=[],
        metavar="MODULE",
        help="import these modules (other fast-reid projects) and call their add_*_config(cfg)",
    )
    return parser


def overrides_error(opts) -> str | None:
    """The one-line complaint about ``KEY VALUE`` overrides that are not pairs, or None."""
    if len(opts) % 2:
        return (
            f"the config overrides must be KEY VALUE pairs, but {len(opts)} words were given "
            f"({' '.join(opts)}): a KEY lacks its VALUE."
        )
    return None
