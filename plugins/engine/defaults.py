"""Config set-up shared by ``tools/train_net.py`` and the other entry points."""

import argparse
import fcntl
import importlib
import logging
import os

import torch
from fastreid.config import get_cfg
from fastreid.engine import default_argument_parser, default_setup
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng
from fastreid.utils.logger import setup_logger

from ..config import add_plugins_config, checkpoint_weights_only, resolve_clip_activation
from .arguments import add_extra_imports_argument, overrides_error
from .trainer import resolve_device

logger = logging.getLogger(__name__)

# Flags that may also be written after the KEY VALUE overrides (argparse would take them as
# overrides: "Override list has odd length").
TRAILING_FLAGS = {"--resume": "resume", "--eval-only": "eval_only"}


class PluginArgumentParser(argparse.ArgumentParser):
    """fast-reid's arguments; ``--resume`` / ``--eval-only`` are recognised anywhere."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extra = super().parse_known_args(args, namespace)
        opts = []
        for token in getattr(namespace, "opts", None) or []:
            if token in TRAILING_FLAGS:
                setattr(namespace, TRAILING_FLAGS[token], True)
            elif token.startswith("--") and len(token) > 2:
                self.error(
                    f"{token} comes after the KEY VALUE config overrides, where only "
                    f"{' and '.join(TRAILING_FLAGS)} are recognised: put it before the first "
                    "KEY VALUE pair."
                )
            else:
                opts.append(token)
        message = overrides_error(opts)
        if message:
            self.error(message)
        if hasattr(namespace, "opts"):
            namespace.opts = opts
        return namespace, extra


def plugin_argument_parser():
    """fast-reid's argument parser plus ``--extra-imports MODULE ...``; ``--resume`` and
    ``--eval-only`` may also follow the KEY VALUE overrides."""
    parser = PluginArgumentParser(
        description="Train or evaluate a model",
        parents=[default_argument_parser()],
        add_help=False,
    )
    return add_extra_imports_argument(parser)


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


def resumes(cfg, args):
    """Whether this run continues from a checkpoint in ``OUTPUT_DIR`` (``--resume`` and one exists)."""
    return bool(
        getattr(args, "resume", False)
        and cfg.OUTPUT_DIR
        and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    )


def build_run_config(args):
    """The frozen config of a command-line run, and a line saying where the model comes from.

    ``--eval-only`` and ``--resume`` (with a checkpoint) take every weight from ``MODEL.WEIGHTS``
    / the checkpoint: CLIP weights are not loaded (``MODEL.BACKBONE.PRETRAIN False``, empty
    ``MODEL.CLIP.WEIGHTS``) and CLIP's activation is the one the checkpoint records.
    ``--eval-only`` also builds the model without training-only parts. A new training decides
    the activation here (``MODEL.CLIP.QUICKGELU``), so config.yaml and every checkpoint say it.
    """
    from .checkpoint import last_checkpoint_path

    cfg = build_config(args.config_file, args.opts, getattr(args, "extra_imports", ()))
    source = checkpoint = None
    if args.eval_only:
        checkpoint = cfg.MODEL.WEIGHTS
        source = f"MODEL.WEIGHTS {checkpoint}"
        cfg.MODEL.TRAINING_HEADS = False
    elif resumes(cfg, args):
        checkpoint = last_checkpoint_path(cfg.OUTPUT_DIR)
        source = f"the last checkpoint in {cfg.OUTPUT_DIR} (--resume)"
    if source is not None:
        clip_weights = cfg.MODEL.CLIP.WEIGHTS
        activation = checkpoint_weights_only(cfg, checkpoint)
        note = (
            f"MODEL.CLIP.WEIGHTS ({clip_weights or 'empty'}) is not used: the model comes from "
            f"{source}. {activation}"
        )
    else:
        # A training that starts from a checkpoint of this trainer (and no CLIP file) builds
        # the model that checkpoint records.
        initial = cfg.MODEL.WEIGHTS if not cfg.MODEL.BACKBONE.PRETRAIN else ""
        note = resolve_clip_activation(cfg, initial if os.path.isfile(initial) else None)
    cfg.freeze()
    return cfg, note


def setup_run(cfg, args, note=None):
    """fast-reid's set-up (logs, config.yaml in OUTPUT_DIR), the plugin's loggers, seeding."""
    default_setup(cfg, args)
    # fast-reid configures only its own logger; the plugin's readers and evaluators log too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="plugins")
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="projects")
    if note:
        logger.info(note)
    if cfg.SEED >= 0:
        seed_everything(cfg.SEED)


def setup(args):
    """Build, freeze and log the config for a command-line run; seeds when ``SEED >= 0``."""
    cfg, note = build_run_config(args)
    setup_run(cfg, args, note)
    return cfg


class OutputDirInUse(RuntimeError):
    """Another live process holds the lock on ``OUTPUT_DIR``."""


class OutputDirLock:
    """An exclusive ``flock`` on ``<output_dir>/.lock`` (which holds the pid) for a run's life.

    Two runs writing one folder would interleave their logs and overwrite each other's
    checkpoints, so the second stops at once. The kernel drops the lock when its process ends,
    however it ends: a lock file left by a dead run does not block. Only the main process locks.
    """

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, ".lock") if output_dir else None
        self._fd = None

    def __enter__(self):
        if not self.path or not comm.is_main_process():
            return self
        os.makedirs(self.output_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputDirInUse(
                f"OUTPUT_DIR {os.path.abspath(self.output_dir)} is in use by another run "
                f"(pid {holder}, holding {self.path}): wait for it to finish, or pass another "
                "OUTPUT_DIR."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        return False


def train_or_evaluate(args):
    """``tools/train_net.py``'s body: train (or resume), or evaluate ``MODEL.WEIGHTS`` with
    ``--eval-only``. Returns the evaluation results.

    A meta-architecture that declares stages (``stages(cfg)``, ``plugins.engine.stages``)
    trains them in order, each in ``OUTPUT_DIR/<stage name>``; every other model trains in one
    run as before.

    The run holds ``OUTPUT_DIR``'s lock from before its first write (log, config.yaml) to its
    end. SIGINT / SIGTERM during training save ``model_interrupted.pth`` and raise
    ``plugins.engine.checkpoint.TrainingInterrupted``.
    """
    from .checkpoint import Checkpointer
    from .stages import model_stages, run_stages
    from .trainer import PluginTrainer

    cfg, note = build_run_config(args)
    if args.eval_only and (not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS)):
        raise FileNotFoundError(
            f"--eval-only needs a trained checkpoint: MODEL.WEIGHTS={cfg.MODEL.WEIGHTS!r} "
            "is not a file (pass MODEL.WEIGHTS path/to/model_final.pth)."
        )
    with OutputDirLock(cfg.OUTPUT_DIR):
        setup_run(cfg, args, note)
        if args.eval_only:
            model = PluginTrainer.build_model(cfg)
            Checkpointer(model).load(cfg.MODEL.WEIGHTS, strict=True, evaluation=True)
            return PluginTrainer.test(cfg, model)
        stages = model_stages(cfg)
        if stages:  # the model trains in stages, each in its own sub-folder of OUTPUT_DIR
            return run_stages(cfg, args, stages)
        if getattr(args, "resume", False) and not resumes(cfg, args):
            logger.info(
                f"--resume: no checkpoint in {cfg.OUTPUT_DIR} yet; training from the start."
            )
        trainer = PluginTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        return trainer.train()
