"""Paper-specific projects. Each registers its own components and config keys on import."""

import importlib

# Every project adds its keys to every config, so one entry point serves all of them.
PROJECTS = ("mganet", "fmfa", "corl", "clip4vireid", "rsba")


def add_project_configs(cfg):
    """Import every project and call its ``add_<name>_config(cfg)``."""
    for name in PROJECTS:
        module = importlib.import_module(f"projects.{name}")
        getattr(module, f"add_{name}_config")(cfg)
    return cfg
