"""The ``KEY VALUE`` config overrides every command line takes, checked in one place."""


def overrides_error(opts) -> str | None:
    """The one-line complaint about ``KEY VALUE`` overrides that are not pairs, or None."""
    if len(opts) % 2:
        return (
            f"the config overrides must be KEY VALUE pairs, but {len(opts)} words were given "
            f"({' '.join(opts)}): a KEY lacks its VALUE."
        )
    return None
