"""One trainer for every method: fast-reid's ``DefaultTrainer`` with the plugin's loaders and evaluators."""

import contextlib
import json
import logging
import math
import os
from collections import OrderedDict

import fastreid.engine.defaults as fastreid_defaults
import numpy as np
import torch
from fastreid.engine import DefaultTrainer, hooks
from fastreid.evaluation import inference_on_dataset
from fastreid.utils import comm
from fastreid.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    JSONWriter,
    TensorboardXWriter,
)

from ..data.build import (
    build_text_dataset,
    build_text_test_loader,
    build_text_train_loader,
    is_text_dataset,
)
from ..data.datasets.vi_reid import build_vi_dataset, is_vi_dataset
from ..data.samplers import EpochBatchSampler
from ..data.vi_build import build_vi_test_loader, build_vi_train_loader
from ..evaluation.retrieval_evaluator import RetrievalEvaluator
from ..evaluation.timing import InferenceTimer
from ..evaluation.vi_evaluator import VIReIDEvaluator
from .amp import PrecisionTrainer
from .checkpoint import Checkpointer, EvalCheckpointHook, InterruptHook
from .lr_schedule import (
    SCHEDULER_KEY,
    EpochLRHook,
    build_epoch_lr_scheduler,
    uses_epoch_schedule,
)
from .optimizer import build_plugin_optimizer

logger = logging.getLogger(__name__)


class PluginTrainer(DefaultTrainer):
    """``DefaultTrainer`` that knows caption datasets and cross-modal evaluation.

    Optimizer groups follow ``SOLVER.PARAM_GROUPS`` (plugins.engine.optimizer); caption datasets
    use the plugin's resumable samplers. The lr schedule is fast-reid's, or one lr per epoch as
    IRRA steps it (``SOLVER.SCHED_UNIT epoch``, ``plugins.engine.lr_schedule``). Hooks are
    fast-reid's; so is DDP, which here also wraps CPU models (gloo, ``plugins.engine.launch``).
    Datasets that are not the plugin's go through fast-reid's own loaders and ``ReidEvaluator``.
    """

    def __init__(self, cfg):
        self._epoch_cfg = cfg  # read when DefaultTrainer.__init__ sets iters_per_epoch
        with ddp_on_every_device():
            super().__init__(cfg)
        # fast-reid's SimpleTrainer / AMPTrainer (CUDA fp16 only, a sync per loss per step)
        # give way to the plugin's step runner: SOLVER.AMP in bf16 or fp16 on CUDA, bf16 on the
        # CPU, and metrics kept on the device until they are written.
        self._trainer = PrecisionTrainer.from_config(
            self.cfg, self._trainer, iters_per_epoch=self.iters_per_epoch, max_iter=self.max_iter
        )
        if self._trainer.grad_scaler is not None:  # float16: a resumed run keeps its scale
            self.checkpointer.checkpointables["grad_scaler"] = self._trainer.grad_scaler

    @property
    def iters_per_epoch(self):
        """Iterations in one training epoch (``DATALOADER.VI_EPOCH``, :func:`epoch_iterations`)."""
        return self._iters_per_epoch

    @iters_per_epoch.setter
    def iters_per_epoch(self, value):
        # DefaultTrainer.__init__ assigns fast-reid's len(training set) // IMS_PER_BATCH here,
        # and then builds the lr schedule and max_iter from it.
        loader = self._trainer.data_loader
        self._iters_per_epoch = epoch_iterations(self._epoch_cfg, loader, default=value)

    @classmethod
    def build_train_loader(cls, cfg):
        task = training_task(cfg)
        if task == "text":
            logger.info("Prepare caption training set")
            return build_text_train_loader(cfg)
        if task == "vi":
            logger.info("Prepare visible-infrared training set")
            return build_vi_train_loader(cfg)
        return super().build_train_loader(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_plugin_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch):
        """``SOLVER.SCHED_UNIT epoch``: one lr per epoch as IRRA sets it
        (``plugins.engine.lr_schedule``); ``iteration``: fast-reid's schedule, checked."""
        if uses_epoch_schedule(cfg):
            return build_epoch_lr_scheduler(cfg, optimizer)
        # fast-reid anneals over MAX_EPOCH minus the warm-up's (or delay's) whole epochs and
        # steps the schedule at the end of every epoch after them; with no epoch left but a
        # step still to come, its cosine schedule divides by zero. (A warm-up as long as the
        # whole training never steps it, and is fine.)
        max_epoch = cfg.SOLVER.MAX_EPOCH
        warmup = math.ceil(cfg.SOLVER.WARMUP_ITERS / max(iters_per_epoch, 1))
        left = max_epoch - max(warmup, cfg.SOLVER.DELAY_EPOCHS)
        steps = (
            max_epoch * iters_per_epoch > cfg.SOLVER.WARMUP_ITERS
            and max_epoch > cfg.SOLVER.DELAY_EPOCHS
        )
        if cfg.SOLVER.SCHED == "CosineAnnealingLR" and left <= 0 and steps:
            raise ValueError(
                f"SOLVER.MAX_EPOCH {cfg.SOLVER.MAX_EPOCH} leaves no epoch to anneal after the "
                f"warm-up (SOLVER.WARMUP_ITERS {cfg.SOLVER.WARMUP_ITERS} = {warmup} epochs of "
                f"{iters_per_epoch} iterations) or SOLVER.DELAY_EPOCHS "
                f"{cfg.SOLVER.DELAY_EPOCHS}: train longer or warm up for less."
            )
        return super().build_lr_scheduler(cfg, optimizer, iters_per_epoch)

    def flush_metrics(self):
        """Write the training steps' metrics still held on the device (``PrecisionTrainer``)."""
        self._trainer.flush_metrics()

    @property
    def train_sampler(self):
        """The plugin's training sampler, or None for fast-reid's own loaders."""
        sampler = getattr(self._trainer.data_loader.batch_sampler, "sampler", None)
        return sampler if isinstance(sampler, EpochBatchSampler) else None

    def resume_or_load(self, resume=True):
        """fast-reid's resume, then the data stream continues at the first batch not yet seen.

        The sampler's seed travels in the checkpoint, and its position follows from the
        iteration, so a resumed seeded run sees the batches the uninterrupted run would."""
        sampler = self.train_sampler
        if sampler is not None:
            self.checkpointer.checkpointables["sampler"] = sampler
        super().resume_or_load(resume=resume)
        self.start_sampler_at(self.resume_iteration())

    def start_sampler_at(self, iteration):
        """Make the training stream start at batch ``iteration`` (one batch per iteration)."""
        sampler = self.train_sampler
        if sampler is None or iteration == sampler.start_batch:
            return
        sampler.set_start(iteration)
        # The iterator made in __init__ has already begun prefetching from the old position.
        self._trainer._data_loader_iter = iter(self._trainer.data_loader)

    def run_step(self):
        # Seeded runs draw each step's model randomness (dropout) from (SEED, iteration, rank),
        # so a step does not depend on what ran before it: resumed runs equal uninterrupted ones.
        if self.cfg.SEED >= 0:
            torch.manual_seed(step_seed(self.cfg.SEED, self.iter, comm.get_rank()))
        super().run_step()

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None, split="test"):
        """Loader and evaluator of a dataset's ``split``: "test", or "val" (its test split when
        it has no val split, said in the log). VI-ReID datasets are evaluated by their
        protocol (``VIReIDEvaluator``) on their test images."""
        if is_vi_dataset(dataset_name):
            data = build_vi_dataset(cfg, dataset_name)
            if comm.is_main_process():
                data.show_test()
            evaluator = VIReIDEvaluator(
                data.test,
                trials=cfg.TEST.VI_TRIALS,
                chunk_size=cfg.TEST.RANK_CHUNK,
                dataset_name=dataset_name,
                llcm_vis2ir=cfg.TEST.LLCM_VIS2IR,
            )
            return build_vi_test_loader(cfg, data.test), evaluator
        if not is_text_dataset(dataset_name):
            return super().build_evaluator(cfg, dataset_name, output_dir)
        data = build_text_dataset(cfg, dataset_name)
        if comm.is_main_process() and split == "test":
            data.show_test()
        evaluated, used = data.test, "test"
        if split == "val":
            if data.val is not None:
                evaluated, used = data.val, "val"
            elif comm.is_main_process():
                logger.warning(f"{dataset_name} has no val split: selecting on its test split")
        loader, _ = build_text_test_loader(cfg, evaluated)
        evaluator = RetrievalEvaluator(
            evaluated,
            i2t=cfg.TEST.I2T,
            chunk_size=cfg.TEST.RANK_CHUNK,
            dataset_name=dataset_name if split == "test" else f"{dataset_name} ({used})",
            subset_gallery=cfg.TEST.SUBSET_GALLERY,
        )
        evaluator.evaluated_split = used  # the split actually evaluated, for the results line
        return loader, evaluator

    @classmethod
    def test(cls, cfg, model, split="test", label="", results_file="results.json"):
        """Evaluate on every dataset in ``DATASETS.TESTS``; returns fast-reid's result dict.

        Args:
            split (str): "test", or "val" (model selection during training, see
                ``TEST.SELECT_ON``); fast-reid's own datasets always use their test split.
            label (str): shown after the dataset name in the results line; default ``split``
                when it is not "test".
            results_file (str): where in ``OUTPUT_DIR`` the results are written.
        """
        label = label or (split if split != "test" else "")
        results = OrderedDict()
        for dataset_name in cfg.DATASETS.TESTS:
            loader, evaluator = cls.build_evaluator(cfg, dataset_name, split=split)
            # Flip-test flips ``images`` only; caption batches carry none, and the plugin's
            # evaluators do not use it.
            flip = cfg.TEST.FLIP.ENABLED and not isinstance(evaluator, RetrievalEvaluator)
            timed = InferenceTimer(model)
            result = inference_on_dataset(timed, loader, evaluator, flip_test=flip)
            results[dataset_name] = result
            if comm.is_main_process():
                logger.info(
                    f"{dataset_name} {timed.summary(cfg.TEST.IMS_PER_BATCH, cfg.MODEL.DEVICE)}"
                )
                summary = {k: v for k, v in result.items() if "/" not in k}
                shown = label
                # Only caption datasets have val splits: every other evaluator ran on test.
                if getattr(evaluator, "evaluated_split", "test") != split:
                    shown = f"test, no {split} split"
                logger.info(
                    f"Evaluation results for {dataset_name}{f' ({shown})' if shown else ''}: "
                    + ", ".join(f"{k} {v:.2f}" for k, v in summary.items())
                )
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            # The latest evaluation, machine-readable (tools/benchmark_synthetic.py reads it).
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            with open(os.path.join(cfg.OUTPUT_DIR, results_file), "w") as f:
                json.dump(results, f, indent=1, default=float)
        if len(results) == 1:
            results = list(results.values())[0]
        return results

    def build_hooks(self):
        """fast-reid's hooks, with the epoch's checkpoint written before its evaluation
        (``EvalCheckpointHook`` replaces ``EvalHook`` + ``PeriodicCheckpointer``, whose order
        lost ``model_final`` when the final evaluation failed), SIGINT / SIGTERM handling, and
        ``EpochLRHook`` for per-epoch schedules."""
        ret = []
        for hook in super().build_hooks():
            if isinstance(hook, hooks.PeriodicCheckpointer):
                continue
            if isinstance(hook, hooks.EvalHook):
                hook = EvalCheckpointHook(
                    self.cfg.TEST.EVAL_PERIOD,
                    self.cfg.SOLVER.CHECKPOINT_PERIOD,
                    # fast-reid's closure that records _last_eval_results, or its val twin
                    self._evaluate_on_val if self.selects_on_val else hook._func,
                    self.cfg.DATASETS.TESTS,
                )
            elif isinstance(hook, hooks.LRScheduler) and uses_epoch_schedule(self.cfg):
                hook = EpochLRHook(self.optimizer, self.scheduler[SCHEDULER_KEY])
            elif isinstance(hook, hooks.PeriodicWriter):
                # fast-reid writes metrics every 200 iterations; short runs would show nothing.
                hook = hooks.PeriodicWriter(self.build_writers(), self.cfg.SOLVER.LOG_PERIOD)
            ret.append(hook)
        ret.append(InterruptHook())
        return ret

    @property
    def checkpointer(self):
        return self._checkpointer

    @checkpointer.setter
    def checkpointer(self, value):
        # DefaultTrainer.__init__ builds fast-reid's Checkpointer; every save and load goes
        # through the plugin's (atomic writes, strict resume) with the same checkpointables.
        if not isinstance(value, Checkpointer):
            value = Checkpointer.from_fastreid(value)
        self._checkpointer = value

    def resume_iteration(self):
        """The first iteration to run: the resumed checkpoint's finished iterations (mid-epoch
        after an interrupt), else the first iteration of ``start_epoch``."""
        state = self.checkpointer.resumed_state
        if state is not None and state.get("iteration") is not None:
            return int(state["iteration"])
        return self.start_epoch * self.iters_per_epoch

    def train(self):
        """Train from ``resume_iteration()`` to ``max_iter``; returns the last evaluation.

        fast-reid's loop starts only at epoch boundaries; this one continues inside an epoch,
        so a run interrupted at iteration i resumes at iteration i.
        """
        start_iter = self.resume_iteration()
        self.start_sampler_at(start_iter)
        self.run_loop(start_iter)
        if self.selects_on_val and self.iter >= self.max_iter:
            self.test_final_and_selected()
        if comm.is_main_process():
            if not hasattr(self, "_last_eval_results"):
                raise RuntimeError("Training ended without an evaluation result.")
            return self._last_eval_results

    @property
    def selects_on_val(self):
        """Whether evaluations during training use the val split (``TEST.SELECT_ON val``)."""
        return self.cfg.TEST.SELECT_ON == "val"

    def _evaluate_on_val(self):
        self._last_eval_results = self.test(self.cfg, self.model, split="val")
        return self._last_eval_results

    def test_final_and_selected(self):
        """After training with ``TEST.SELECT_ON val``: the test split's figures of the final
        model (``results.json``, returned as the run's result) and of the model selected on val
        (``model_best.pth``, ``results_val_selected.json``), one after the other in the log: the
        first in the usual "Evaluation results for <dataset>:" line, the second labelled."""
        model = self.model.module if hasattr(self.model, "module") else self.model
        self._last_eval_results = self.test(self.cfg, model)
        best = os.path.join(self.cfg.OUTPUT_DIR, "model_best.pth")
        if not os.path.isfile(best):
            return
        final_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        checkpoint = Checkpointer(model).load(
            best, checkpointables=[], strict=True, source="TEST.SELECT_ON val's model_best.pth"
        )
        epoch = checkpoint.get("epoch")
        label = "test, model selected on val" + (
            f" after epoch {epoch + 1}" if epoch is not None else ""
        )
        self.test(self.cfg, model, label=label, results_file="results_val_selected.json")
        model.load_state_dict(final_state)

    def run_loop(self, start_iter):
        """Epochs of ``iters_per_epoch`` steps with the hooks around them, from ``start_iter``."""
        per_epoch = self.iters_per_epoch
        self.iter = self.start_iter = start_iter
        self.start_epoch = start_iter // per_epoch
        logger.info(
            f"Starting training from epoch {self.start_epoch}, iteration {start_iter} of "
            f"{self.max_iter}"
        )
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for epoch in range(self.start_epoch, self.max_epoch):
                    self.epoch = epoch
                    self.before_epoch()
                    while self.iter < (self.epoch + 1) * per_epoch:
                        self.before_step()
                        self.run_step()
                        self.after_step()
                        self.iter += 1
                    self.after_epoch()
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    def build_writers(self):
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")),
            TensorboardXWriter(self.cfg.OUTPUT_DIR),
        ]

    @classmethod
    def build_model(cls, cfg):
        from fastreid.modeling.meta_arch import build_model

        model = build_model(cfg)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info(
            f"Model {cfg.MODEL.META_ARCHITECTURE}: {total / 1e6:.2f}M parameters "
            f"({trainable / 1e6:.2f}M trainable) on {cfg.MODEL.DEVICE}"
        )
        return model


@contextlib.contextmanager
def ddp_on_every_device():
    """While active, ``DefaultTrainer.__init__``'s DDP wrap also works on the CPU.

    fast-reid wraps with ``device_ids=[local_rank]``, which DDP refuses for a CPU module: on the
    CPU no device ids are passed. On every device ``find_unused_parameters`` is on, since
    without it the second step fails for a model with a trainable parameter that no loss
    reaches (a branch switched off by its config).
    """
    original = fastreid_defaults.DistributedDataParallel

    def wrap(module, device_ids=None, **kwargs):
        if next(module.parameters()).device.type == "cpu":
            device_ids = None
        kwargs.setdefault("find_unused_parameters", True)
        return original(module, device_ids=device_ids, **kwargs)

    fastreid_defaults.DistributedDataParallel = wrap
    try:
        yield
    finally:
        fastreid_defaults.DistributedDataParallel = original


def training_task(cfg):
    """What ``DATASETS.NAMES`` trains: ``"text"`` (caption datasets: TIPR, text-RGBT), ``"vi"``
    (visible-infrared datasets) or ``"fastreid"`` (fast-reid's own); a mix is a ValueError."""
    names = list(cfg.DATASETS.NAMES)
    text = [is_text_dataset(n) for n in names]
    vi = [is_vi_dataset(n) for n in names]
    if all(text):
        return "text"
    if all(vi):
        return "vi"
    if any(text) or any(vi):
        raise ValueError(
            f"DATASETS.NAMES mixes caption, visible-infrared and fast-reid datasets: {names}"
        )
    return "fastreid"


VI_EPOCHS = ("images", "sampler")


def epoch_iterations(cfg, data_loader, default=None):
    """Iterations in one training epoch of ``data_loader`` as ``DATALOADER.VI_EPOCH`` defines it.

    "images": fast-reid's ``len(training set) // SOLVER.IMS_PER_BATCH`` (``default`` when
    given); "sampler": the plugin's training sampler's ``epoch_iterations()`` (with
    ``ModalityIdentitySampler`` AGW's two-modality epoch, ``int(max(n_vis, n_ir) / (P K)) + 1``).
    """
    mode = cfg.DATALOADER.VI_EPOCH
    if mode not in VI_EPOCHS:
        raise ValueError(f"DATALOADER.VI_EPOCH {mode!r} not in {VI_EPOCHS}")
    images = len(data_loader.dataset) // cfg.SOLVER.IMS_PER_BATCH
    if mode == "images":
        return images if default is None else default
    sampler = getattr(getattr(data_loader, "batch_sampler", None), "sampler", None)
    if not isinstance(sampler, EpochBatchSampler):
        raise ValueError(
            "DATALOADER.VI_EPOCH sampler counts an epoch as the plugin's training samplers do; "
            "fast-reid's own loaders have none: set DATALOADER.VI_EPOCH images"
        )
    iterations = sampler.epoch_iterations()
    if comm.is_main_process() and iterations != images:
        logger.info(
            f"One training epoch is {iterations} iterations (DATALOADER.VI_EPOCH sampler, "
            f"{type(sampler).__name__}); fast-reid's count would be {images}"
        )
    return iterations


def step_seed(seed, iteration, rank=0):
    """The torch seed of one training step, derived from the run's seed alone."""
    return int(np.random.default_rng([seed, iteration, rank]).integers(0, 2**63 - 1))


def resolve_device(cfg):
    """Replace ``MODEL.DEVICE auto`` by ``cuda`` or ``cpu``; a CUDA device without CUDA is an error."""
    device = cfg.MODEL.DEVICE
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"MODEL.DEVICE={device!r} but this machine has no CUDA device; "
            "use MODEL.DEVICE auto (or cpu)."
        )
    return device
