"""Checkpoints that are written atomically, loaded strictly, and saved before evaluation.

- ``Checkpointer``: fast-reid's, but every file goes through a temporary file in the same
  folder (flush, fsync, ``os.replace``), so a kill during a save leaves the previous file intact;
  a file that is not a ``torch.save`` checkpoint is a one-line error; evaluation and resume
  load strictly (see ``load``).
- ``EvalCheckpointHook``: fast-reid's ``EvalHook`` and ``PeriodicCheckpointer`` in one hook, in
  the safe order: the epoch's checkpoint (``model_final`` after the last epoch) is written
  *before* the evaluation, ``model_best`` after it.
- ``InterruptHook``: SIGINT / SIGTERM stop training at the next iteration boundary after saving
  ``model_interrupted.pth``; ``--resume`` continues from that iteration.
"""

import contextlib
import errno
import logging
import os
import pickle
import shutil
import signal
import threading
import zipfile

import torch
from fastreid.engine.train_loop import HookBase
from fastreid.evaluation.testing import flatten_results_dict
from fastreid.utils import comm
from fastreid.utils.checkpoint import Checkpointer as _FastreidCheckpointer
from fastreid.utils.checkpoint import _filter_reused_missing_keys, _strip_prefix_if_present

from ..config import QUICKGELU_KEY, RECORD_ENTRY
from ..modeling.agw_checkpoint import (
    AGW_META_ARCHITECTURES,
    SAFE_NUMPY_GLOBALS,
    agw_checkpoint_metrics,
    check_agw_method,
    from_agw_state_dict,
    is_agw_checkpoint,
)
from ..modeling.clip import clip_activation
from ..modeling.irra_checkpoint import (
    IRRA_META_ARCHITECTURES,
    from_irra_state_dict,
    is_irra_checkpoint,
)

logger = logging.getLogger(__name__)

INTERRUPTED_NAME = "model_interrupted"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model."""


class NotACheckpointError(CheckpointError):
    """The file is not a checkpoint written by ``torch.save`` (or has no ``model`` entry)."""


class CheckpointMismatchError(CheckpointError):
    """Strict loading found missing, unexpected or differently shaped model entries."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving a checkpoint; ``exit_code`` is 128 + signal."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def atomic_write(path, write):
    """Write ``path`` through ``write(file)`` on a temporary file in the same folder, then rename.

    The data is flushed and fsynced before ``os.replace``, so ``path`` is at every moment either
    its previous content or the complete new one. The temporary name starts with a dot and does
    not end with ``.pth``: fast-reid's checkpoint listing never sees it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    )
    # O_EXCL: never write into a file another process opened; the mode follows the umask.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        full = _disk_full(e)
        if full is not None:
            raise _disk_full_error(path, full) from full
        raise
    # The rename itself is durable only once the folder is synced (best effort: not every
    # file system lets a folder be opened).
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _disk_full(error):
    """The "disk full" or "quota exceeded" OSError behind ``error``, if any: torch reports a
    failed write as a RuntimeError about zip positions, with the OSError as its context."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        error = error.__cause__ or error.__context__
    return None


def _disk_full_error(path, cause):
    """One line for a write that ran out of room: what failed, the room left, and the fix."""
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2**20
        room = f"{free:.1f} MB free there"
    except OSError:
        room = "free space unknown"
    return OSError(
        cause.errno,
        f"{os.strerror(cause.errno)}: writing {path} failed ({room}; the previous file, if "
        "any, is intact). Free some space on that disk or set OUTPUT_DIR to one with room, then "
        "run the same command again (with --resume to continue a training).",
    )


def training_only_prefixes(model):
    """State-dict prefixes only training uses (identity classifiers, auxiliary heads).

    A model declares them as ``training_only_prefixes``; for fast-reid's own meta-architectures
    the classifier weight of every ``EmbeddingHead`` counts (sized from the training set, which
    an evaluation does not build).
    """
    declared = getattr(model, "training_only_prefixes", None)
    if declared is not None:
        return tuple(declared)
    from fastreid.modeling.heads import EmbeddingHead

    return tuple(
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, EmbeddingHead)
    )


def _summarise_keys(keys, limit=12):
    """Keys grouped by a common prefix, as deep as ``limit`` groups allow (``a.b.* (5)``)."""
    keys = sorted(keys)
    groups = {}
    for depth in range(1, max((k.count(".") + 1 for k in keys), default=0) + 1):
        deeper = {}
        for k in keys:
            deeper.setdefault(".".join(k.split(".")[:depth]), []).append(k)
        if len(deeper) > limit and depth > 1:
            break
        groups = deeper
    return ", ".join(
        members[0] if len(members) == 1 else f"{prefix}.* ({len(members)})"
        for prefix, members in groups.items()
    )


def last_checkpoint_path(folder):
    """The file ``<folder>/last_checkpoint`` points at, None when there is no such pointer."""
    path = os.path.join(folder, "last_checkpoint")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return os.path.join(folder, f.read().strip())


def model_record(model):
    """What a rebuild of ``model`` needs beyond its state dict, as config keys and values
    (``plugins.config.RECORD_ENTRY``): CLIP's activation, read from the built model itself."""
    model = getattr(model, "module", model)  # DDP
    quick_gelu = clip_activation(model)
    return {} if quick_gelu is None else {QUICKGELU_KEY: quick_gelu}


def check_model_record(model, record, path, source="MODEL.WEIGHTS"):
    """Refuse to load a checkpoint into a model built otherwise than its record says: its
    features would silently differ from the ones it was trained to give."""
    built = model_record(model).get(QUICKGELU_KEY)
    recorded = (record or {}).get(QUICKGELU_KEY)
    if built is None or recorded is None or built == recorded:
        return
    names = {True: "QuickGELU", False: "GELU"}
    raise CheckpointMismatchError(
        f"{source} {path} records a CLIP built with {names[recorded]}, but this model was built "
        f"with {names[built]}: build it from the checkpoint's record "
        "(plugins.config.checkpoint_weights_only), or leave MODEL.CLIP.QUICKGELU on auto."
    )


class Checkpointer(_FastreidCheckpointer):
    """fast-reid's ``Checkpointer`` with atomic saves, readable errors and strict loading.

    Every entry of ``checkpointables`` (optimizer, schedulers, anything added later, e.g. a
    sampler) is saved by ``save``, including the interrupt checkpoint.

    Attributes:
        resumed_state (dict | None): after ``resume_or_load`` resumed, the checkpoint's
            ``path``, ``epoch`` (last finished epoch) and ``iteration`` (finished iterations, or
            None for checkpoints that do not record it); None otherwise.
    """

    resumed_state = None

    @classmethod
    def from_fastreid(cls, other):
        """The same model, folder and checkpointables as fast-reid's checkpointer ``other``."""
        return cls(
            other.model, other.save_dir, save_to_disk=other.save_to_disk, **other.checkpointables
        )

    def save(self, name, tag_last=True, **kwargs):
        """Write ``<save_dir>/<name>.pth`` atomically; ``tag_last`` points ``last_checkpoint``
        at it (``model_best`` does not: resuming continues from the latest state)."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        record = model_record(self.model)
        if record:
            data[RECORD_ENTRY] = record
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_write(path, lambda f: torch.save(data, f))
        if tag_last:
            self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )

    def _load_file(self, f, source="MODEL.WEIGHTS"):
        """The checkpoint in this trainer's format: IRRA's and FMFA's (``best.pth`` of their
        code) and AGW's (its ``train.py``'s ``best.t``) are recognised by their keys and converted
        (``plugins.modeling.irra_checkpoint``, ``plugins.modeling.agw_checkpoint``)."""
        checkpoint = self._read_file(f, source)
        if is_agw_checkpoint(checkpoint):
            return self._convert_agw(checkpoint, f, source)
        if not is_irra_checkpoint(checkpoint):
            return checkpoint
        what = "a checkpoint of IRRA's or FMFA's code"
        model, name = self._model_for(IRRA_META_ARCHITECTURES, f"{source} {f} is {what}")
        self.logger.info(
            f"{source} {f} is in IRRA's layout (IRRA's or FMFA's code): converting its "
            f"{len(checkpoint['model'])} model entries; its other states are not loaded."
        )
        state = from_irra_state_dict(checkpoint["model"], model.state_dict().keys(), name)
        return {"model": state, RECORD_ENTRY: {QUICKGELU_KEY: True}}

    def _model_for(self, architectures, what):
        """The (unwrapped) model and its class name, when it is one of ``architectures`` that a
        converted checkpoint (``what``) loads into; otherwise a CheckpointError."""
        model = getattr(self.model, "module", self.model)
        name = type(model).__name__
        if name not in architectures:
            raise CheckpointError(
                f"{what}, which loads into {', '.join(architectures)} models, not {name}."
            )
        return model, name

    def _convert_agw(self, checkpoint, f, source):
        what = f"{source} {f} is a checkpoint of AGW's code (embed_net)"
        model, _ = self._model_for(AGW_META_ARCHITECTURES, what)
        check_agw_method(checkpoint["net"], model)
        recorded = agw_checkpoint_metrics(checkpoint)
        self.logger.info(
            f"{source} {f} is in AGW's layout (mangye16/Cross-Modal-Re-ID-baseline): converting "
            f"its {len(checkpoint['net'])} entries"
            + (f"; it records {recorded}" if recorded else "")
            + "; its other entries are not loaded."
        )
        return {"model": from_agw_state_dict(checkpoint["net"], model.state_dict().keys())}

    def _read_file(self, f, source="MODEL.WEIGHTS"):
        """A ``torch.save`` checkpoint with a ``model`` state dict, as written; readable errors."""
        with open(f, "rb") as fh:
            head = fh.read(8)
        # torch.save writes a zip archive (or, before torch 1.6, a pickle): anything else, such
        # as a text file, makes torch fail with errors like "KeyError: 101".
        if not head.startswith((b"PK\x03\x04", b"\x80")):
            what = (
                f"it starts with {head!r}, neither a zip archive nor a pickle" if head else "empty"
            )
            raise NotACheckpointError(
                f"{source} {f} is not a checkpoint written by torch.save ({what}); pass a "
                "model_*.pth file that training wrote."
            )
        try:
            # Weights-only, plus numpy arrays and scalars (AGW's checkpoints record its metrics
            # as such): data, never code.
            with torch.serialization.safe_globals(SAFE_NUMPY_GLOBALS):
                checkpoint = torch.load(f, map_location=torch.device("cpu"), weights_only=True)
        except pickle.UnpicklingError as e:
            if "weights only" not in str(e).lower():
                raise NotACheckpointError(
                    f"{source} {f} is not a checkpoint written by torch.save ({e})."
                ) from e
            raise NotACheckpointError(
                f"{source} {f} holds Python objects other than tensors, numbers and "
                "containers, which torch.load refuses to unpickle (weights_only); this trainer "
                f"never writes such files. torch says: {str(e).splitlines()[0]}"
            ) from e
        except (zipfile.BadZipFile, EOFError, KeyError) as e:
            raise NotACheckpointError(
                f"{source} {f} is not a checkpoint written by torch.save "
                f"({type(e).__name__}: {e}); pass a model_*.pth file that training wrote."
            ) from e
        except RuntimeError as e:
            # torch reports truncated or foreign zip archives as RuntimeError.
            if "zip" not in str(e).lower() and "archive" not in str(e).lower():
                raise
            raise NotACheckpointError(
                f"{source} {f} is not a checkpoint written by torch.save (a truncated or "
                f"damaged file: {e}); pass a model_*.pth file that training wrote."
            ) from e
        if is_agw_checkpoint(checkpoint):
            return checkpoint
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
            kind = type(checkpoint).__name__
            raise NotACheckpointError(
                f"{source} {f} is not a checkpoint written by torch.save from this trainer "
                f"(a {kind} without a 'model' state dict); plain CLIP weights belong in "
                "MODEL.CLIP.WEIGHTS."
            )
        return checkpoint

    def load(self, path, checkpointables=None, *, strict=False, evaluation=False, source=None):
        """Load ``path`` into the model (and the named checkpointables; None: all of them).

        Args:
            strict (bool): any missing, unexpected or differently shaped model entry is a
                ``CheckpointMismatchError`` listing them; otherwise they are logged as warnings
                and skipped (a new training initialised from other weights).
            evaluation (bool): the model was built without training-only parts: entries under
                ``training_only_prefixes(model)`` are expected to be left over.
            source (str): how the path was given, for messages (default ``MODEL.WEIGHTS``).
        Returns:
            dict: the checkpoint's remaining entries (``epoch``, ``iteration``, ...).
        """
        source = source or "MODEL.WEIGHTS"
        if not path:
            self.logger.info("No checkpoint found. Training model from scratch")
            return {}
        if not os.path.isfile(path):
            raise CheckpointError(f"{source} {path}: no such file.")
        self.logger.info(f"Loading checkpoint from {path}")
        checkpoint = self._load_file(path, source)
        self._load_model_checked(checkpoint, path, strict, evaluation, source)
        for key in self.checkpointables if checkpointables is None else checkpointables:
            if key in checkpoint:
                self.logger.info(f"Loading {key} from {path}")
                self.checkpointables[key].load_state_dict(checkpoint.pop(key))
            elif strict and checkpointables is None:
                self.logger.warning(
                    f"{source} {path} has no '{key}' state: it keeps its freshly built state."
                )
        return checkpoint

    def _load_model_checked(self, checkpoint, path, strict, evaluation, source):
        check_model_record(self.model, checkpoint.get(RECORD_ENTRY), path, source)
        state = checkpoint.pop("model")
        self._convert_ndarray_to_tensor(state)
        _strip_prefix_if_present(state, "module.")
        own = self.model.state_dict()
        shapes = [
            (k, tuple(v.shape), tuple(own[k].shape))
            for k, v in state.items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        missing = _filter_reused_missing_keys(self.model, [k for k in own if k not in state])
        # Entries a model fills itself when a checkpoint lacks them (older files; the model
        # warns in its _load_from_state_dict).
        optional = tuple(getattr(getattr(self.model, "module", self.model), "optional_state", ()))
        missing = [k for k in missing if k not in optional]
        unexpected = [k for k in state if k not in own]
        if evaluation:
            prefixes = training_only_prefixes(self.model)
            ignored = [k for k in unexpected if k.startswith(prefixes)]
            ignored += [k for k, _, _ in shapes if k.startswith(prefixes)]
            unexpected = [k for k in unexpected if not k.startswith(prefixes)]
            shapes = [s for s in shapes if not s[0].startswith(prefixes)]
            missing = [k for k in missing if not k.startswith(prefixes)]
            if ignored:
                self.logger.info(
                    f"Not loading {len(ignored)} training-only entries ({_summarise_keys(ignored)}):"
                    " evaluation does not use them."
                )
            for k in ignored:
                state.pop(k, None)
        problems = []
        if missing:
            problems.append(
                f"missing from the checkpoint ({len(missing)}): {_summarise_keys(missing)}"
            )
        if unexpected:
            problems.append(
                f"in the checkpoint but not in the model ({len(unexpected)}): "
                f"{_summarise_keys(unexpected)}"
            )
        if shapes:
            listed = "; ".join(
                f"{k} {c} in the checkpoint, {m} in the model" for k, c, m in shapes[:8]
            )
            more = f"; ... ({len(shapes) - 8} more)" if len(shapes) > 8 else ""
            problems.append(f"shapes differ ({len(shapes)}): {listed}{more}")
        if problems and strict:
            name = type(self.model).__name__
            raise CheckpointMismatchError(
                f"{source} {path} does not fit the {name} model this config builds:\n  "
                + "\n  ".join(problems)
                + "\nIt was written for another model or config (MODEL.META_ARCHITECTURE, "
                "MODEL.CLIP.NAME, fusion, ...): pass the config it was trained with (the "
                "config.yaml in its output folder)."
            )
        for problem in problems:
            self.logger.warning(f"Loading {path}: {problem}; these entries are not loaded.")
        for k, _, _ in shapes:
            state.pop(k)
        self.model.load_state_dict(state, strict=False)

    def resume_or_load(self, path, *, resume=True):
        """Resume (strictly, with every checkpointable) from ``last_checkpoint`` when ``resume``
        and one exists; otherwise initialise the model from ``path`` (leniently)."""
        self.resumed_state = None
        if resume and self.has_checkpoint():
            last = self.get_checkpoint_file()
            source = f"the last checkpoint ({os.path.join(self.save_dir, 'last_checkpoint')} ->)"
            if not os.path.isfile(last):
                raise CheckpointError(
                    f"--resume: {source} {last} does not exist; delete last_checkpoint to start "
                    "afresh or point it at an existing model_*.pth."
                )
            checkpoint = self.load(last, strict=True, source=source)
            self.resumed_state = {
                "path": last,
                "epoch": checkpoint.get("epoch", -1),
                "iteration": checkpoint.get("iteration"),
            }
            return checkpoint
        return self.load(path, checkpointables=[])


class EvalCheckpointHook(HookBase):
    """Per-epoch checkpoints and evaluation, in the order that loses nothing.

    After every epoch: write ``model_{epoch:04d}.pth`` every ``checkpoint_period`` epochs, or
    ``model_final.pth`` after the last one, *then* evaluate every ``eval_period`` epochs (and
    once more at the end of training when the last epoch is not a multiple), then write
    ``model_best.pth`` when the main metric improved. A failing (or interrupted) evaluation
    therefore never costs the model it was evaluating. ``eval_period <= 0``: evaluate at the end
    only. Runs on every process (evaluation synchronises them); only the main one writes.
    """

    def __init__(self, eval_period, checkpoint_period, eval_function, test_names):
        self._eval_period = int(eval_period)
        self._checkpoint_period = max(int(checkpoint_period), 1)
        self._func = eval_function
        self._metric = "metric" if len(test_names) == 1 else f"{test_names[0]}/metric"
        self.best_metric = float("-inf")
        self._last_saved = None

    def _state(self, epoch):
        return {"epoch": epoch, "iteration": self.trainer.iter}

    def after_epoch(self):
        trainer = self.trainer
        epoch = trainer.epoch
        if epoch + 1 >= trainer.max_epoch:
            self._save("model_final", epoch)
        elif (epoch + 1) % self._checkpoint_period == 0:
            self._save(f"model_{epoch:04d}", epoch)
        if self._eval_period > 0 and (epoch + 1) % self._eval_period == 0:
            self._evaluate(epoch)

    def after_train(self):
        trainer = self.trainer
        completed = trainer.iter >= trainer.max_iter
        # The last epoch was evaluated in after_epoch unless it is not a multiple of the period;
        # an interrupted or failed training is not evaluated here.
        if completed and (self._eval_period <= 0 or trainer.max_epoch % self._eval_period):
            self._evaluate(trainer.max_epoch - 1)
        self._func = None  # a closure over the trainer

    def _save(self, name, epoch):
        self.trainer.checkpointer.save(name, **self._state(epoch))
        self._last_saved = os.path.join(self.trainer.checkpointer.save_dir, f"{name}.pth")

    def _evaluate(self, epoch):
        try:
            results = self._func()
        except Exception:
            if comm.is_main_process() and self._last_saved:
                logger.error(
                    f"Evaluation after epoch {epoch} failed. The trained model is saved in "
                    f"{self._last_saved}: evaluate it again with --eval-only MODEL.WEIGHTS "
                    f"{self._last_saved}"
                )
            raise
        if results:
            flat = flatten_results_dict(results)
            for k, v in flat.items():
                try:
                    flat[k] = float(v)
                except (TypeError, ValueError) as e:
                    raise ValueError(
                        f"Evaluation must return a nested dict of numbers; got {k}: {v!r}"
                    ) from e
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
            metric = flat.get(self._metric)
            if metric is not None and metric > self.best_metric:
                self.best_metric = metric
                self.trainer.checkpointer.save(
                    "model_best", tag_last=False, metric=metric, **self._state(epoch)
                )
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        comm.synchronize()


class InterruptHook(HookBase):
    """On SIGINT / SIGTERM, save ``model_interrupted.pth`` at the next iteration boundary and stop.

    The signal only sets a flag: the save happens in ``before_step``, when the model, optimizer,
    schedulers and every other checkpointable describe exactly ``trainer.iter`` finished
    iterations (a save from inside the handler could catch an optimizer step half done).
    A second signal stops at once without saving. With several processes the flag is shared at
    every step, so all stop at the same iteration.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def before_train(self):
        self.signum = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)

    def after_train(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        if self.signum is not None and self.trainer.iter >= self.trainer.max_iter:
            logger.warning(
                f"{signal.Signals(self.signum).name} arrived after the last iteration: training "
                "completed and model_final.pth is saved."
            )

    def _handle(self, signum, frame):
        if self.signum is not None:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
            raise KeyboardInterrupt(
                f"second {signal.Signals(signum).name}: stopping without saving"
            )
        self.signum = signum
        logger.warning(
            f"Received {signal.Signals(signum).name}: saving a checkpoint after the current "
            "iteration, then stopping (send it again to stop at once without saving)."
        )

    def _stop_requested(self):
        if comm.get_world_size() > 1:
            return any(comm.all_gather(self.signum))
        return self.signum is not None

    def before_step(self):
        if not self._stop_requested():
            return
        trainer = self.trainer
        signum = self.signum or signal.SIGTERM
        # The steps' deferred metrics first: a non-finite loss stops here, before it is saved.
        flush = getattr(trainer, "flush_metrics", None)
        if flush is not None:
            flush()
        # trainer.iter iterations are finished; the epoch in progress is not.
        trainer.checkpointer.save(INTERRUPTED_NAME, epoch=trainer.epoch - 1, iteration=trainer.iter)
        path = os.path.join(trainer.checkpointer.save_dir, f"{INTERRUPTED_NAME}.pth")
        message = (
            f"Training interrupted by {signal.Signals(signum).name} at iteration {trainer.iter} "
            f"of {trainer.max_iter} (epoch {trainer.epoch}); saved {path}. To continue, run "
            "the same command again with --resume."
        )
        if comm.is_main_process():
            logger.warning(message)
        raise TrainingInterrupted(signum, message)
