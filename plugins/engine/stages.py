"""Multi-stage training: one command runs a model's stages in order, each in its own folder.

A meta-architecture that trains in stages defines a classmethod ``stages(cfg)`` returning a
list of :class:`Stage` (an empty list means ordinary single-stage training, which then runs
exactly as without this module). Each stage:

- applies its config changes (``opts``, KEY VALUE pairs: epochs, lr, sampler, batch size...)
  and an optional warm-up given in epochs;
- trains only the parameters its ``trainable`` / ``frozen`` prefixes leave (the others get
  ``requires_grad False`` and stay out of the optimizer) with per-prefix lr factors;
- trains on images (``train_data="images"``, the ordinary caption loader) or on features
  the model extracts once and caches (``train_data="features"``: the model's
  ``stage_train_set(stage, cfg, image_train_set)`` returns the dataset, see
  :class:`FeatureTrainSet` and :func:`load_or_build_cache`);
- checkpoints into ``OUTPUT_DIR/<name>`` with the plugin's checkpointer and hooks, and starts
  from the previous stage's ``model_final.pth`` (loaded strictly).

A stage whose ``model_final.pth`` exists is reused (its recorded config must match); an
interrupted stage continues with ``--resume``. Models may define ``enter_stage(stage)`` to learn
which stage they train in. Training itself is ``PluginTrainer``'s loop. At the end the last
stage's ``model_final.pth`` and result files are published in ``OUTPUT_DIR`` itself, where
single-stage runs leave theirs (:func:`publish_results`).
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field

import torch
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from fastreid.utils import comm
from torch.utils.data import Dataset

from ..config import checkpoint_weights_only, inference_only
from ..data.build import train_loader
from ..data.samplers import build_sampler
from .checkpoint import Checkpointer, CheckpointError, atomic_write, last_checkpoint_path
from .lr_schedule import uses_epoch_schedule, whole_epochs
from .optimizer import apply_lr_factors, build_plugin_optimizer
from .trainer import PluginTrainer, epoch_iterations

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureTrainSet",
    "Stage",
    "StageConfigMismatch",
    "StageTrainer",
    "config_differences",
    "freeze_for_stage",
    "load_or_build_cache",
    "model_stages",
    "run_stages",
    "stage_config",
    "tensor_fingerprint",
]

TRAIN_DATA = ("images", "features")
RECORD_NAME = "stage.json"
# Keys that may differ between the run that trained a stage and one that reuses it: where
# things are, how weights arrive, logging and evaluation.
_UNRECORDED = (
    "OUTPUT_DIR",
    "MODEL.DEVICE",
    "MODEL.WEIGHTS",
    "MODEL.BACKBONE.PRETRAIN",
    "MODEL.CLIP.WEIGHTS",
    "MODEL.CLIP.ALLOW_PICKLE",
    "MODEL.TRAINING_HEADS",
    "MODEL.HEADS.NUM_CLASSES",
    "DATALOADER.NUM_WORKERS",
    "DATALOADER.TEST_NUM_WORKERS",
    "SOLVER.LOG_PERIOD",
    "SOLVER.CHECKPOINT_PERIOD",
    "CUDNN_BENCHMARK",
    "TEST.",
)


class StageConfigMismatch(CheckpointError):
    """A finished or interrupted stage was trained with another config than this run's."""


@dataclass(frozen=True)
class Stage:
    """One stage of a multi-stage schedule.

    Attributes:
        name (str): its sub-folder of ``OUTPUT_DIR`` and its name in logs.
        opts (tuple): KEY VALUE config overrides for this stage.
        trainable (tuple | None): parameter-name prefixes that train; None: every parameter.
        frozen (tuple): prefixes that do not train (applied after ``trainable``).
        lr_factors (dict): prefix -> factor on the lr the ``SOLVER.PARAM_GROUPS`` rules give.
        warmup_epochs (float | None): warm-up length in epochs: sets ``SOLVER.WARMUP_EPOCHS``
            (a whole number) with ``SOLVER.SCHED_UNIT epoch``, else ``SOLVER.WARMUP_ITERS``
            (epochs x iterations per epoch); None keeps the config's.
        train_data (str): "images" (the caption loader) or "features" (the model's
            ``stage_train_set``).
    """

    name: str
    opts: tuple = ()
    trainable: tuple = None
    frozen: tuple = ()
    lr_factors: dict = field(default_factory=dict)
    warmup_epochs: float = None
    train_data: str = "images"

    def __post_init__(self):
        if not self.name or os.sep in self.name or self.name.startswith("."):
            raise ValueError(f"stage name {self.name!r} must be a plain folder name")
        if self.train_data not in TRAIN_DATA:
            raise ValueError(
                f"stage {self.name}: train_data {self.train_data!r} not in {TRAIN_DATA}"
            )
        if len(self.opts) % 2:
            raise ValueError(f"stage {self.name}: opts must be KEY VALUE pairs, got {self.opts}")


def model_stages(cfg):
    """The stages ``MODEL.META_ARCHITECTURE`` declares for this config ([] : single stage)."""
    cls = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    declare = getattr(cls, "stages", None)
    stages = list(declare(cfg)) if callable(declare) else []
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(
            f"{cfg.MODEL.META_ARCHITECTURE} declares stages with one name twice: {names}"
        )
    return stages


def stage_config(cfg, stage, checkpoint=None):
    """The frozen config of one stage: ``cfg`` + ``stage.opts``, ``OUTPUT_DIR/<name>``.

    ``checkpoint``: the file the stage starts from (the previous stage's or its own last one):
    the CLIP weights file is not read, and the model is built as the checkpoint records.
    """
    scfg = cfg.clone()
    scfg.defrost()
    scfg.merge_from_list(list(stage.opts))
    scfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, stage.name)
    if checkpoint:
        logger.info(f"Stage '{stage.name}': {checkpoint_weights_only(scfg, checkpoint)}")
        scfg.MODEL.WEIGHTS = ""
    scfg.freeze()
    return scfg


def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def recorded_config(scfg, stage):
    """What identifies a stage's training: its config without paths, logging and evaluation."""
    flat = _flatten(json.loads(json.dumps(scfg, default=list)))
    keep = {k: v for k, v in flat.items() if not k.startswith(_UNRECORDED)}
    return {"stage": stage.name, "config": keep}


def config_differences(old, new):
    """The keys whose values differ between two ``recorded_config(...)["config"]`` dicts, as
    ``KEY: <old> there, <new> now`` (the first six, then how many more); "" when none differ."""
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    shown = "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in differ[:6])
    more = f"; ... ({len(differ) - 6} more)" if len(differ) > 6 else ""
    return shown + more


def check_recorded(scfg, stage, stage_dir):
    """Write the stage's record, or raise ``StageConfigMismatch`` if an existing one differs."""
    path = os.path.join(stage_dir, RECORD_NAME)
    record = recorded_config(scfg, stage)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)["config"]
        differ = config_differences(old, record["config"])
        if differ:
            raise StageConfigMismatch(
                f"stage '{stage.name}' in {stage_dir} was trained with another config ({differ})"
                f". Delete {stage_dir} to train the stage again, pass another OUTPUT_DIR, "
                "or restore those settings."
            )
        return
    if comm.is_main_process():
        os.makedirs(stage_dir, exist_ok=True)
        text = json.dumps(record, indent=1, sort_keys=True)
        atomic_write(path, lambda f: f.write(text.encode()))


def freeze_for_stage(model, stage):
    """Set ``requires_grad`` from the stage's ``trainable`` / ``frozen`` prefixes.

    Returns:
        (int, int): trainable and frozen parameter counts.
    """
    prefixes = list(stage.trainable or ()) + list(stage.frozen) + list(stage.lr_factors)
    names = [n for n, _ in model.named_parameters()]
    unmatched = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unmatched:
        raise ValueError(f"stage '{stage.name}': prefixes {unmatched} match no parameter")
    trainable = frozen = 0
    for name, param in model.named_parameters():
        train = stage.trainable is None or name.startswith(tuple(stage.trainable))
        train = train and not name.startswith(tuple(stage.frozen))
        param.requires_grad_(train)
        if train:
            trainable += param.numel()
        else:
            frozen += param.numel()
    return trainable, frozen


class FeatureTrainSet(Dataset):
    """Training items made of pre-extracted tensors, for stages that train on cached features.

    Item ``i`` is ``{"targets": pids[i], "image_ids": image_ids[i], name: table[row]}`` for every
    feature table, ``row = index[name][i]`` (or ``i`` when the table has no index): a table of
    per-image features is shared by every caption of the image. Indexed like the caption
    training set, by ``index`` or ``(index, sample_seed)`` (the seed is unused: no augmentation).

    Args:
        features (dict[str, Tensor]): name -> (N_name, ...) table.
        pids (Sequence[int]): (N,) identity of each item (the PK sampler reads ``pids``).
        image_ids (Sequence[int]): (N,) image of each item.
        index (dict[str, Tensor]): name -> (N,) long rows into that table.
        num_classes (int): training identities (the trainer sizes classifiers from it).
    """

    def __init__(self, features, pids, image_ids, index=None, num_classes=None):
        self.features = dict(features)
        self.pids = [int(p) for p in pids]
        self.image_ids = [int(i) for i in image_ids]
        self.index = {k: torch.as_tensor(v, dtype=torch.long) for k, v in (index or {}).items()}
        self._num_classes = num_classes if num_classes is not None else len(set(self.pids))
        for name, table in self.features.items():
            rows = len(self.index[name]) if name in self.index else table.shape[0]
            if rows != len(self.pids):
                raise ValueError(f"feature {name!r} gives {rows} items for {len(self.pids)} pids")

    @property
    def num_classes(self):
        return self._num_classes

    def __len__(self):
        return len(self.pids)

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        out = {"targets": self.pids[i], "image_ids": self.image_ids[i]}
        for name, table in self.features.items():
            out[name] = table[self.index[name][i] if name in self.index else i]
        return out


def build_feature_train_loader(cfg, train_set):
    """Loader over a :class:`FeatureTrainSet` with the sampler ``DATALOADER.SAMPLER_TRAIN``
    names (PK or random batches, resumable); in-process (the tables are in memory)."""
    return train_loader(cfg, train_set, build_sampler(cfg, train_set.pids), num_workers=0)


def tensor_fingerprint(tensors):
    """sha256 of named tensors (names, dtypes, shapes and values), e.g. a module's state dict."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # reshape first: a 0-d tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def load_or_build_cache(path, fingerprint, build, what="features"):
    """Tensors cached in ``path`` when its fingerprint equals ``fingerprint``, else ``build()``
    saved there with it. The main process builds; the others wait and read the file.

    Args:
        path (str): cache file.
        fingerprint (dict): JSON-able description of everything the tensors depend on.
        build (callable): () -> dict of tensors.
    Returns:
        dict: the tensors.
    """
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    if comm.is_main_process():
        reason = "no cache yet"
        if os.path.isfile(path):
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("fingerprint") == key:
                logger.info(f"Reusing the cached {what} in {path}")
                return cached["tensors"]
            old = cached.get("description", {})
            changed = sorted(
                k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k)
            )
            reason = f"the cache was made for another {', '.join(changed) or 'setting'}"
        logger.info(f"Extracting {what} into {path} ({reason})")
        tensors = build()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        data = {"fingerprint": key, "description": fingerprint, "tensors": tensors}
        atomic_write(path, lambda f: torch.save(data, f))
    comm.synchronize()
    if not comm.is_main_process():
        tensors = torch.load(path, map_location="cpu", weights_only=True)["tensors"]
    return tensors


class StageTrainer(PluginTrainer):
    """``PluginTrainer`` for one stage: the same loop, hooks and checkpointing; the model is
    built first (the start weights loaded strictly, the stage's parameters frozen), then the
    loader (images, or the model's cached features), optimizer (with the stage's lr factors)
    and schedule (warm-up in epochs)."""

    def __init__(self, cfg, stage, start_weights=None, strict=True):
        self.stage = stage
        self._start_weights = start_weights
        self._strict = strict
        self._model = None
        self._loader = None
        super().__init__(cfg)
        if comm.is_main_process():
            with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
                f.write(self.cfg.dump())

    def _prepare_model(self, cfg):
        model = PluginTrainer.build_model(cfg)
        if self._start_weights:
            Checkpointer(model).load(
                self._start_weights,
                checkpointables=[],
                strict=self._strict,
                source=f"stage '{self.stage.name}' start weights",
            )
        trainable, frozen = freeze_for_stage(model, self.stage)
        logger.info(f"Stage '{self.stage.name}': {trainable:,} parameters train, {frozen:,} frozen")
        enter = getattr(model, "enter_stage", None)
        if callable(enter):
            enter(self.stage)
        return model

    def build_train_loader(self, cfg):
        image_loader = PluginTrainer.build_train_loader(cfg)
        if self.stage.train_data == "images":
            self._loader = image_loader
            return image_loader
        image_set = image_loader.dataset
        model_cfg = cfg.clone()
        model_cfg.defrost()
        if model_cfg.MODEL.HEADS.NUM_CLASSES == 0:
            model_cfg.MODEL.HEADS.NUM_CLASSES = image_set.num_classes
        model_cfg.freeze()
        self._model = self._prepare_model(model_cfg)
        make = getattr(self._model, "stage_train_set", None)
        if not callable(make):
            raise TypeError(
                f"stage '{self.stage.name}' trains on features, but {type(self._model).__name__} "
                "has no stage_train_set(stage, cfg, image_train_set)"
            )
        train_set = make(self.stage, model_cfg, image_set)
        logger.info(
            f"Stage '{self.stage.name}' trains on {len(train_set)} cached feature items "
            f"({', '.join(train_set.features)})"
        )
        self._loader = build_feature_train_loader(cfg, train_set)
        return self._loader

    def auto_scale_hyperparams(self, cfg, num_classes):
        cfg = PluginTrainer.auto_scale_hyperparams(cfg, num_classes)
        if self.stage.warmup_epochs is not None:
            cfg.defrost()
            if uses_epoch_schedule(cfg):
                what = f"stage '{self.stage.name}': its warm-up"
                cfg.SOLVER.WARMUP_EPOCHS = whole_epochs(self.stage.warmup_epochs, what)
            else:
                # An epoch as the trainer counts it (DATALOADER.VI_EPOCH).
                per_epoch = epoch_iterations(cfg, self._loader)
                cfg.SOLVER.WARMUP_ITERS = int(round(self.stage.warmup_epochs * per_epoch))
            cfg.freeze()
        return cfg

    def build_model(self, cfg):
        if self._model is None:
            self._model = self._prepare_model(cfg)
        return self._model

    def build_optimizer(self, cfg, model):
        optimizer, params = build_plugin_optimizer(cfg, model)
        apply_lr_factors(optimizer, model, self.stage.lr_factors)
        return optimizer, params

    def resume_or_load(self, resume=True):
        """Resume this stage's last checkpoint (strictly, with every state), or start at
        iteration 0 from the weights the model was built with."""
        if resume and self.checkpointer.has_checkpoint():
            return super().resume_or_load(resume=True)
        sampler = self.train_sampler
        if sampler is not None:
            self.checkpointer.checkpointables["sampler"] = sampler
        self.checkpointer.resumed_state = None
        self.start_sampler_at(0)
        return {}


def run_stages(cfg, args, stages):
    """Run ``stages`` in order under ``cfg.OUTPUT_DIR`` (see the module docstring); returns the
    last stage's evaluation results."""
    from .defaults import seed_everything

    previous, results = None, None
    count = len(stages)
    for number, stage in enumerate(stages, 1):
        label = f"Stage {number}/{count} '{stage.name}'"
        stage_dir = os.path.join(cfg.OUTPUT_DIR, stage.name)
        final = os.path.join(stage_dir, "model_final.pth")
        last = last_checkpoint_path(stage_dir)
        resuming = bool(getattr(args, "resume", False) and last and not os.path.isfile(final))
        if os.path.isfile(final):
            check_recorded(stage_config(cfg, stage, previous), stage, stage_dir)
            logger.info(
                f"{label}: reusing its finished output {final} (delete {stage_dir} to train it "
                "again)"
            )
            previous = final
            continue
        if resuming:
            start, why = last, f"resuming its interrupted run from {last} (--resume)"
        elif previous:
            start, why = previous, f"training, starting from the previous stage's {previous}"
        else:
            start = cfg.MODEL.WEIGHTS or None
            if start:
                origin = f"MODEL.WEIGHTS {start}"
            elif cfg.MODEL.BACKBONE.PRETRAIN:
                origin = f"the CLIP weights {cfg.MODEL.CLIP.WEIGHTS}"
            else:
                origin = "random initialisation"
            why = f"training, starting from {origin}"
        if last and not resuming:
            why += " (the checkpoints of its interrupted run are ignored without --resume)"
        scfg = stage_config(cfg, stage, start if (resuming or previous) else None)
        check_recorded(scfg, stage, stage_dir)
        logger.info(f"{label}: {why}; output in {stage_dir}")
        if scfg.SEED >= 0:
            seed_everything(scfg.SEED)
        # A user's MODEL.WEIGHTS for the first stage loads leniently, as in single-stage runs.
        trainer = StageTrainer(scfg, stage, start, strict=bool(resuming or previous))
        trainer.resume_or_load(resume=resuming)
        results = trainer.train()
        logger.info(f"{label}: finished; {final}")
        previous = final
    if results is None:
        logger.info(f"Every stage is finished already: evaluating the final model {previous}")
        scfg = stage_config(cfg, stages[-1], previous)
        scfg.defrost()
        inference_only(scfg, previous)
        scfg.freeze()
        model = PluginTrainer.build_model(scfg)
        Checkpointer(model).load(previous, strict=True, evaluation=True)
        results = PluginTrainer.test(scfg, model)
    publish_results(os.path.join(cfg.OUTPUT_DIR, stages[-1].name), cfg.OUTPUT_DIR)
    return results


RESULT_FILES = ("results.json", "results_val_selected.json")
FINAL_MODEL = "model_final.pth"


def publish_results(stage_dir, output_dir):
    """Put the last stage's final model and result files in ``OUTPUT_DIR``, where a
    single-stage run leaves them: ``--eval-only MODEL.WEIGHTS OUTPUT_DIR/model_final.pth``,
    ``tools/benchmark_synthetic.py`` and users' scripts read them there.

    The model comes first (``tools/run_trials.py`` takes a ``results.json`` newer than the model
    as the mark of a finished run), as a hard link (:func:`publish_file`)."""
    if not comm.is_main_process():
        return
    source = os.path.join(stage_dir, FINAL_MODEL)
    if os.path.isfile(source):
        target = os.path.join(output_dir, FINAL_MODEL)
        how = publish_file(source, target)
        logger.info(f"{FINAL_MODEL} of the last stage {how} to {target}")
    for name in RESULT_FILES:
        source = os.path.join(stage_dir, name)
        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(output_dir, name))
            logger.info(f"{name} of the last stage copied to {output_dir}")


def publish_file(source, target):
    """Make ``target`` hold ``source``'s content, atomically; returns "linked" or "copied".

    A hard link where the file system allows one: a checkpoint can take gigabytes, and the two
    names cannot drift apart, because checkpoints are never rewritten in place (a new save
    replaces the file by a rename, and the next publication links the new one). Where links
    fail (another file system, one without hard links), an atomic copy. Either way the new name
    is made under a temporary name first and renamed over ``target``, so ``target`` is at every
    moment the previous file or the complete new one.
    """
    if os.path.exists(target) and os.path.samefile(source, target):
        return "linked"
    folder = os.path.dirname(os.path.abspath(target))
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{os.getpid()}.link.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.link(source, tmp)
    except OSError as e:
        logger.info(f"No hard link from {target} to {source} ({e}): copying it")
        with open(source, "rb") as f:
            atomic_write(target, lambda out: shutil.copyfileobj(f, out, 2**24))
        return "copied"
    try:
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return "linked"
