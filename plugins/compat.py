"""The smallest runtime fixes that make fastreid 1.4.0 work on Python >= 3.10 and torch >= 2.

Each fix names the defect it repairs (see the defect list in the project README) and has a
test in ``tests/test_compat.py`` that fails without it. ``apply()`` runs on ``import plugins``
and is idempotent. The import-level fixes (``collections.Mapping``, ``torch._six``) must run
before anything imports ``fastreid.data``, so this module imports no fastreid code at the top.
"""

import collections
import collections.abc
import functools
import logging
import os
import sys
import types

import torch

logger = logging.getLogger(__name__)

_APPLIED = False


def fix_collections_mapping():
    """Defect 1: ``from collections import Mapping`` fails on Python >= 3.10."""
    if not hasattr(collections, "Mapping"):
        collections.Mapping = collections.abc.Mapping


def fix_torch_six():
    """Defect 2: ``from torch._six import string_classes`` fails on torch 2."""
    if "torch._six" in sys.modules or hasattr(torch, "_six"):
        return
    shim = types.ModuleType("torch._six")
    shim.string_classes = (str, bytes)
    sys.modules["torch._six"] = shim
    torch._six = shim


def fix_optimizer_contiguous():
    """Defect 3: with ``contiguous=True`` the optimizer owns flattened copies of the parameters.

    torch >= 2 ``zero_grad()`` sets grads to None, so those copies never see a gradient and no
    parameter is ever updated. Build the optimizer on the parameters themselves.
    """
    import fastreid.engine.defaults as defaults
    import fastreid.solver as solver
    import fastreid.solver.build as solver_build

    original = solver_build.build_optimizer
    if getattr(original, "_plugins_fixed", False):
        return

    @functools.wraps(original)
    def build_optimizer(cfg, model, contiguous=False):
        return original(cfg, model, contiguous=False)

    build_optimizer._plugins_fixed = True
    for module in (solver_build, solver, defaults):
        module.build_optimizer = build_optimizer


def fix_dataloader_without_cuda():
    """Defect 4: ``DataLoaderX`` creates CUDA streams in ``__init__``; crashes without a GPU.

    Without CUDA the loader falls back to a plain ``DataLoader`` iterator. With CUDA the
    original prefetching path is kept.
    """
    import fastreid.data.data_utils as data_utils
    from torch.utils.data import DataLoader

    cls = data_utils.DataLoaderX
    if getattr(cls, "_plugins_fixed", False):
        return
    original_init = cls.__init__
    original_iter = cls.__iter__
    original_next = cls.__next__

    def __init__(self, local_rank, **kwargs):
        if torch.cuda.is_available():
            original_init(self, local_rank, **kwargs)
        else:
            kwargs["pin_memory"] = False
            DataLoader.__init__(self, **kwargs)
            self.local_rank = local_rank
            self.stream = None

    def __iter__(self):
        if self.stream is None:
            self.iter = DataLoader.__iter__(self)
            return self
        return original_iter(self)

    def __next__(self):
        if self.stream is None:
            return next(self.iter)
        return original_next(self)

    def shutdown(self):
        if self.stream is not None:
            self._shutdown_background_thread()

    cls.__init__ = __init__
    cls.__iter__ = __iter__
    cls.__next__ = __next__
    cls.shutdown = shutdown
    cls._plugins_fixed = True


def fix_amp_on_cpu():
    """Defect 5 (AMP): ``AMPTrainer`` asserts CUDA and uses ``torch.cuda.amp``.

    On a CPU-only machine AMP falls back to fp32 training with a warning instead of asserting.
    """
    import fastreid.engine.train_loop as train_loop

    cls = train_loop.AMPTrainer
    if getattr(cls, "_plugins_fixed", False):
        return
    original_run_step = cls.run_step

    def run_step(self):
        if torch.cuda.is_available():
            return original_run_step(self)
        if not getattr(self, "_warned_cpu_amp", False):
            logger.warning("SOLVER.AMP.ENABLED on a machine without CUDA: training in fp32.")
            self._warned_cpu_amp = True
        return train_loop.SimpleTrainer.run_step(self)

    original_init = cls.__init__

    def __init__(self, model, data_loader, optimizer, param_wrapper, grad_scaler=None):
        if grad_scaler is None:
            grad_scaler = torch.amp.GradScaler("cuda", enabled=torch.cuda.is_available())
        original_init(self, model, data_loader, optimizer, param_wrapper, grad_scaler)

    cls.run_step = run_step
    cls.__init__ = __init__
    cls._plugins_fixed = True


def fix_cython_exit():
    """Defect 6: a failed Cython build of the ranking code calls ``sys.exit(1)``.

    A failed build now logs a warning and the evaluator uses fastreid's pure-Python ranking.
    """
    import fastreid.evaluation.rank_cylib as rank_cylib

    original = rank_cylib.compile_helper
    if getattr(original, "_plugins_fixed", False):
        return

    def compile_helper():
        try:
            original()
        except SystemExit:
            logger.warning("Compiling fastreid's Cython ranking failed; using the Python one.")

    compile_helper._plugins_fixed = True
    rank_cylib.compile_helper = compile_helper
    import fastreid.evaluation.reid_evaluation as reid_evaluation

    reid_evaluation.compile_helper = compile_helper


def fix_random_affine():
    """Defect 7: ``RandomAffine(resample=..., fillcolor=...)`` is a TypeError in torchvision >= 0.13."""
    import fastreid.data.transforms.build as transforms_build
    import torchvision.transforms as T

    if getattr(transforms_build.T, "_plugins_fixed", False):
        return

    class RandomAffine(T.RandomAffine):
        def __init__(self, *args, resample=None, fillcolor=None, **kwargs):
            if fillcolor is not None and "fill" not in kwargs:
                kwargs["fill"] = fillcolor
            super().__init__(*args, **kwargs)

    # fastreid's module reads ``T.RandomAffine`` through its own ``T``; give it a namespace
    # that differs only in that name so torchvision itself stays untouched.
    namespace = types.SimpleNamespace(
        **{k: getattr(T, k) for k in dir(T) if not k.startswith("__")}
    )
    namespace.RandomAffine = RandomAffine
    namespace._plugins_fixed = True
    transforms_build.T = namespace


def fix_baseline_inplace_normalisation():
    """Defect 9: ``Baseline.preprocess_image`` normalises its input in place.

    The evaluator's flip-test then flips and feeds the already-normalised tensor, normalising it
    twice. Normalise out of place.
    """
    from fastreid.modeling.meta_arch.baseline import Baseline

    if getattr(Baseline.preprocess_image, "_plugins_fixed", False):
        return

    def preprocess_image(self, batched_inputs):
        if isinstance(batched_inputs, dict):
            images = batched_inputs["images"]
        elif isinstance(batched_inputs, torch.Tensor):
            images = batched_inputs
        else:
            raise TypeError(f"batched_inputs must be dict or Tensor, got {type(batched_inputs)}")
        return (images.to(self.pixel_mean.device) - self.pixel_mean) / self.pixel_std

    preprocess_image._plugins_fixed = True
    Baseline.preprocess_image = preprocess_image


def fix_metric_printer_repeat():
    """``CommonMetricPrinter`` divides by zero when it writes twice at one iteration.

    It does so at the end of an epoch (after the step and after the epoch) while fewer than a
    few iterations have been timed, i.e. on short runs. A repeated write is skipped.
    """
    from fastreid.utils.events import CommonMetricPrinter, get_event_storage

    if getattr(CommonMetricPrinter.write, "_plugins_fixed", False):
        return
    original = CommonMetricPrinter.write

    def write(self):
        last = getattr(self, "_last_write", None)
        if last is not None and last[0] == get_event_storage().iter:
            return
        original(self)

    write._plugins_fixed = True
    CommonMetricPrinter.write = write


FIXES = (
    fix_collections_mapping,
    fix_torch_six,
    fix_optimizer_contiguous,
    fix_dataloader_without_cuda,
    fix_amp_on_cpu,
    fix_cython_exit,
    fix_random_affine,
    fix_baseline_inplace_normalisation,
    fix_metric_printer_repeat,
)


def apply():
    """Apply every fix once, import-level fixes first.

    ``PLUGINS_COMPAT_DISABLE=fix_a,fix_b`` skips the named fixes: a way to see a defect again
    (the compat tests use it to show that each fix is needed).
    """
    global _APPLIED
    if _APPLIED:
        return
    disabled = {n.strip() for n in os.environ.get("PLUGINS_COMPAT_DISABLE", "").split(",")}
    unknown = disabled - {f.__name__ for f in FIXES} - {""}
    if unknown:
        raise ValueError(f"PLUGINS_COMPAT_DISABLE names unknown fixes: {sorted(unknown)}")
    for fix in FIXES:
        if fix.__name__ not in disabled:
            fix()
    _APPLIED = True
