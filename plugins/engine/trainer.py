"""One trainer for every method: fast-reid's ``DefaultTrainer`` with the plugin's loaders and evaluators."""

import json
import logging
import os
from collections import OrderedDict

import torch
from fastreid.engine import DefaultTrainer, hooks
from fastreid.evaluation import inference_on_dataset
from fastreid.utils import comm
from fastreid.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

from ..data.build import (
    build_text_dataset,
    build_text_test_loader,
    build_text_train_loader,
    is_text_dataset,
)
from ..evaluation.retrieval_evaluator import RetrievalEvaluator

logger = logging.getLogger(__name__)


class PluginTrainer(DefaultTrainer):
    """``DefaultTrainer`` that knows caption datasets and cross-modal evaluation.

    Everything else (optimizer, LR schedule, checkpointing, hooks, DDP) is fast-reid's. Datasets
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
            result = inference_on_dataset(model, loader, evaluator, flip_test=flip)
            results[dataset_name] = result
            if comm.is_main_process():
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
        # fast-reid writes metrics every 200 iterations; short runs would show no progress.
        ret = super().build_hooks()
        for i, hook in enumerate(ret):
            if isinstance(hook, hooks.PeriodicWriter):
                ret[i] = hooks.PeriodicWriter(self.build_writers(), self.cfg.SOLVER.LOG_PERIOD)
        return ret

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
