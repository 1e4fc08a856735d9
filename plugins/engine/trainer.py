"""One trainer for every method: fast-reid's ``DefaultTrainer`` with the plugin's loaders and evaluators."""

import json
import logging
import os
from collections import OrderedDict

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
from ..data.samplers import EpochBatchSampler
from ..evaluation.retrieval_evaluator import RetrievalEvaluator
from ..evaluation.timing import InferenceTimer
from .checkpoint import Checkpointer, EvalCheckpointHook, InterruptHook
from .optimizer import build_plugin_optimizer

logger = logging.getLogger(__name__)


class PluginTrainer(DefaultTrainer):
    """``DefaultTrainer`` that knows caption datasets and cross-modal evaluation.

    Optimizer groups follow ``SOLVER.PARAM_GROUPS`` (plugins.engine.optimizer); caption datasets
    use the plugin's resumable samplers. LR schedule, hooks and DDP are fast-reid's. Datasets
    that are not the plugin's go through fast-reid's own loaders and ``ReidEvaluator``.
    """

    @classmethod
    def build_train_loader(cls, cfg):
        names = list(cfg.DATASETS.NAMES)
        text = [is_text_dataset(n) for n in names]
        if all(text):
            logger.info("Prepare caption training set")
            return build_text_train_loader(cfg)
        if any(text):
            raise ValueError(f"DATASETS.NAMES mixes caption and image-only datasets: {names}")
        return super().build_train_loader(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_plugin_optimizer(cfg, model)

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
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        if not is_text_dataset(dataset_name):
            return super().build_evaluator(cfg, dataset_name, output_dir)
        data = build_text_dataset(cfg, dataset_name)
        if comm.is_main_process():
            data.show_test()
        loader, _ = build_text_test_loader(cfg, data.test)
        evaluator = RetrievalEvaluator(
            data.test,
            i2t=cfg.TEST.I2T,
            chunk_size=cfg.TEST.RANK_CHUNK,
            dataset_name=dataset_name,
            subset_gallery=cfg.TEST.SUBSET_GALLERY,
        )
        return loader, evaluator

    @classmethod
    def test(cls, cfg, model):
        """Evaluate on every dataset in ``DATASETS.TESTS``; returns fast-reid's result dict."""
        results = OrderedDict()
        for dataset_name in cfg.DATASETS.TESTS:
            loader, evaluator = cls.build_evaluator(cfg, dataset_name)
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
                logger.info(
                    f"Evaluation results for {dataset_name}: "
                    + ", ".join(f"{k} {v:.2f}" for k, v in summary.items())
                )
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            # The latest evaluation, machine-readable (tools/benchmark_synthetic.py reads it).
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            with open(os.path.join(cfg.OUTPUT_DIR, "results.json"), "w") as f:
                json.dump(results, f, indent=1, default=float)
        if len(results) == 1:
            results = list(results.values())[0]
        return results

    def build_hooks(self):
        """fast-reid's hooks, with the epoch's checkpoint written before its evaluation
        (``EvalCheckpointHook`` replaces ``EvalHook`` + ``PeriodicCheckpointer``, whose order
        lost ``model_final`` when the final evaluation failed) and SIGINT / SIGTERM handling."""
        ret = []
        for hook in super().build_hooks():
            if isinstance(hook, hooks.PeriodicCheckpointer):
                continue
            if isinstance(hook, hooks.EvalHook):
                hook = EvalCheckpointHook(
                    self.cfg.TEST.EVAL_PERIOD,
                    self.cfg.SOLVER.CHECKPOINT_PERIOD,
                    hook._func,  # fast-reid's closure that records _last_eval_results
                    self.cfg.DATASETS.TESTS,
                )
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
        if comm.is_main_process():
            if not hasattr(self, "_last_eval_results"):
                raise RuntimeError("Training ended without an evaluation result.")
            return self._last_eval_results

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
