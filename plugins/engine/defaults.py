"""Config set-up shared by ``tools/train_net.py`` and the other entry points."""

import importlib
import logging

import torch
from fastreid.config import get_cfg
from fastreid.engine import default_argument_parser, default_setup
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng
from fastreid.utils.logger import setup_logger

from ..config import add_plugins_config
from .trainer import resolve_device

logger = logging.getLogger(__name__)


def plugin_argument_parser():
    """fast-reid's argument parser plus ``--extra-imports MODULE ...``."""
    parser = default_argument_parser()
    parser.add_argument(
        "--extra-imports",
        nargs="+",
        default=[],
        metavar="MODULE",
        help="import these modules (other fast-reid projects) and call their add_*_config(cfg)",
    )
    return parser


def import_extra_modules(cfg, modules):
    """Import fast-reid projects so they register, and call every ``add_*_config`` they define."""
    for name in modules:
        module = importlib.import_module(name)
        for attr in sorted(dir(module)):
            if attr.startswith("add_") and attr.endswith("_config"):
                getattr(module, attr)(cfg)


def build_config(config_file="", opts=(), extra_imports=()):
    """The full config: fast-reid defaults + plugin + every project + extra modules, then the file."""
    import projects

    cfg = get_cfg()
    add_plugins_config(cfg)
    projects.add_project_configs(cfg)
    import_extra_modules(cfg, extra_imports)
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts or []))
    cfg.MODEL.DEVICE = resolve_device(cfg)
    return cfg


def seed_everything(seed):
    """Seed python, numpy and torch (per rank) and make CPU kernels deterministic."""
    seed_all_rng(seed + comm.get_rank())
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def setup(args):
    """Build, freeze and log the config for a command-line run; seeds when ``SEED >= 0``."""
    cfg = build_config(args.config_file, args.opts, getattr(args, "extra_imports", ()))
    if args.eval_only:
        cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.freeze()
    default_setup(cfg, args)
    # fast-reid configures only its own logger; the plugin's readers and evaluators log too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="plugins")
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="projects")
    if cfg.SEED >= 0:
        seed_everything(cfg.SEED)
    return cfg


def train_or_evaluate(args):
    """``tools/train_net.py``'s body: train (or resume), or evaluate ``MODEL.WEIGHTS`` with
    ``--eval-only``. Returns the evaluation results."""
    import os

    from fastreid.utils.checkpoint import Checkpointer

    from .trainer import PluginTrainer

    cfg = setup(args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise FileNotFoundError(
                f"--eval-only needs a trained checkpoint: MODEL.WEIGHTS={cfg.MODEL.WEIGHTS!r} "
                "is not a file (pass MODEL.WEIGHTS path/to/model_final.pth)."
            )
        model = PluginTrainer.build_model(cfg)
        Checkpointer(model).load(cfg.MODEL.WEIGHTS)
        return PluginTrainer.test(cfg, model)
    trainer = PluginTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
