"""The training step's precision policy and a step runner without host-device syncs.

``SOLVER.AMP.ENABLED`` runs forward and loss under ``torch.autocast`` in ``SOLVER.AMP.DTYPE``:

- ``bfloat16`` (the default): fp32's exponent range, so SDM's ``logit_scale * S`` softmax and
  the losses' exponentials cannot overflow and no gradient scaling is needed; no GradScaler
  means no per-step ``found_inf`` check either, i.e. no host-device sync. Needs an Ampere or
  newer GPU (or a CPU: bf16 autocast works there too).
- ``float16``: fast-reid's AMP (CUDA only), with a ``GradScaler`` whose ``step`` reads
  ``found_inf`` on the host every step.

Parameters, gradients and optimizer states stay fp32 in both cases; autocast keeps reductions,
norms and softmax in fp32 and runs matmuls, convolutions and attention in the low precision.

``PrecisionTrainer`` replaces fast-reid's ``SimpleTrainer`` / ``AMPTrainer``. fast-reid's
``_write_metrics`` calls ``.item()`` on every loss every step, and the models' ``put_scalars``
call ``float()`` inside ``forward``: each waits for the GPU to finish the step, so the host
cannot queue the next one. Here losses and model scalars are kept as detached tensors and
written to the event storage, one step at a time as fast-reid does, in one transfer at the log
period, at the end of an epoch and at the last iteration (where fast-reid's ``PeriodicWriter``
writes). A non-finite total loss is reported then: at most ``SOLVER.LOG_PERIOD`` steps late,
and always before the epoch's checkpoint is written.
"""

import logging
import time
from collections import defaultdict
from typing import NamedTuple

import numpy as np
import torch
from fastreid.engine.train_loop import SimpleTrainer, TrainerBase
from fastreid.utils import comm
from fastreid.utils.events import _CURRENT_STORAGE_STACK, get_event_storage

logger = logging.getLogger(__name__)

__all__ = ["AMP_DTYPES", "PrecisionTrainer", "StepPrecision", "step_precision"]

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class StepPrecision(NamedTuple):
    """How a training step runs: autocast on or off, its dtype, and the autocast device type."""

    enabled: bool
    dtype: torch.dtype
    device_type: str  # "cuda" or "cpu", as torch.autocast takes it

    @property
    def scaled(self):
        """Whether gradients are scaled: float16 on CUDA (bf16 and fp32 need no scaling)."""
        return self.enabled and self.dtype == torch.float16 and self.device_type == "cuda"

    @property
    def name(self):
        return (
            {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype] if self.enabled else "fp32"
        )

    def autocast(self):
        """The context forward and loss run in."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


def step_precision(cfg, enabled=None, dtype=None):
    """The ``StepPrecision`` of ``SOLVER.AMP`` on ``MODEL.DEVICE``; ``enabled`` / ``dtype`` (a
    ``AMP_DTYPES`` name) override the config's. Raises ``ValueError`` for a dtype the device
    cannot train in."""
    enabled = cfg.SOLVER.AMP.ENABLED if enabled is None else enabled
    name = cfg.SOLVER.AMP.DTYPE if dtype is None else dtype
    if name not in AMP_DTYPES:
        raise ValueError(
            f"SOLVER.AMP.DTYPE={name!r}: expected one of {sorted(AMP_DTYPES)} "
            "(bfloat16 needs no gradient scaling)."
        )
    device_type = torch.device(cfg.MODEL.DEVICE).type
    precision = StepPrecision(bool(enabled), AMP_DTYPES[name], device_type)
    if not precision.enabled:
        return precision
    if device_type not in ("cuda", "cpu"):
        raise ValueError(f"SOLVER.AMP on MODEL.DEVICE={cfg.MODEL.DEVICE!r}: only cuda and cpu.")
    if device_type == "cpu" and precision.dtype == torch.float16:
        raise ValueError(
            "SOLVER.AMP.DTYPE float16 on the CPU: fp16 training needs CUDA's gradient scaler; "
            "use SOLVER.AMP.DTYPE bfloat16 (or SOLVER.AMP.ENABLED False)."
        )
    if device_type == "cuda" and precision.dtype == torch.bfloat16:
        if not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"SOLVER.AMP.DTYPE bfloat16 on {torch.cuda.get_device_name()}, which has no "
                "bf16 support: use SOLVER.AMP.DTYPE float16."
            )
    return precision


class _DeferredScalars:
    """Stands in for the event storage during ``forward``: ``put_scalar(s)`` keep the values
    (detached tensors stay on their device) instead of converting them; anything else is the
    real storage's (or fails as it would without one)."""

    def __init__(self, storage):
        self._storage = storage
        self.values = {}
        self.hints = {}

    def put_scalar(self, name, value, smoothing_hint=True):
        self.values[name] = value.detach() if isinstance(value, torch.Tensor) else float(value)
        self.hints[name] = smoothing_hint

    def put_scalars(self, *, smoothing_hint=True, **kwargs):
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint)

    def __getattr__(self, name):
        if self._storage is None:
            raise AttributeError(name)
        return getattr(self._storage, name)


class PrecisionTrainer(SimpleTrainer):
    """fast-reid's ``SimpleTrainer`` with ``StepPrecision`` autocast and deferred metrics.

    One step: next batch, forward + loss sum under ``precision.autocast()``, ``zero_grad``,
    backward (scaled for float16 on CUDA), optimizer step (through the scaler for float16). The
    step issues no host-device sync of its own; metrics are written by ``flush_metrics`` (module
    docstring), which ``run_step`` calls when fast-reid's writers are about to read them.

    Args:
        model, data_loader, optimizer, param_wrapper: as ``SimpleTrainer``'s.
        precision (StepPrecision): None: fp32 on the model's device.
        log_period (int): flush every ``log_period`` iterations (``SOLVER.LOG_PERIOD``).
        iters_per_epoch (int | None): also flush at the last iteration of every epoch.
        max_iter (int | None): also flush at the last iteration.
        data_loader_iter: an iterator already started over ``data_loader`` (taken over from
            another runner); None starts one.
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        param_wrapper=None,
        precision=None,
        log_period=1,
        iters_per_epoch=None,
        max_iter=None,
        data_loader_iter=None,
    ):
        # SimpleTrainer.__init__ without its iter(data_loader): a loader's workers start once.
        TrainerBase.__init__(self)
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter = iter(data_loader) if data_loader_iter is None else data_loader_iter
        self.optimizer = optimizer
        self.param_wrapper = param_wrapper
        if precision is None:
            device = next(model.parameters()).device.type
            precision = StepPrecision(False, torch.bfloat16, device)
        self.precision = precision
        self.grad_scaler = torch.amp.GradScaler("cuda") if precision.scaled else None
        self.log_period = max(1, int(log_period))
        self.iters_per_epoch = iters_per_epoch
        self.max_iter = max_iter
        self.iter = 0
        self._pending = []  # per step: (iteration, losses dict, model scalars, hints, data time)

    @classmethod
    def from_config(cls, cfg, runner, iters_per_epoch=None, max_iter=None):
        """A runner that takes over ``runner``'s (fast-reid's) model, loader and its started
        iterator, optimizer and parameter wrapper, with ``SOLVER.AMP`` and ``SOLVER.LOG_PERIOD``."""
        precision = step_precision(cfg)
        logger.info(
            f"Training step in {precision.name}"
            + (f" autocast on {precision.device_type}" if precision.enabled else "")
            + (" with gradient scaling" if precision.scaled else "")
        )
        return cls(
            runner.model,
            runner.data_loader,
            runner.optimizer,
            runner.param_wrapper,
            precision=precision,
            log_period=cfg.SOLVER.LOG_PERIOD,
            iters_per_epoch=iters_per_epoch,
            max_iter=max_iter,
            data_loader_iter=runner._data_loader_iter,
        )

    def run_step(self):
        """One training step; writes the pending metrics when they are due (class docstring)."""
        assert self.model.training, "[PrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        loss_dict, scalars = self.forward_losses(data)
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            losses.backward()
            self.optimizer.step()
        if hasattr(self.param_wrapper, "assert_buffer_is_valid"):  # fast-reid's ContiguousParams
            self.param_wrapper.assert_buffer_is_valid()

        detached = {k: v.detach() for k, v in loss_dict.items()}
        self._pending.append((self.iter, detached, scalars.values, scalars.hints, data_time))
        if self.metrics_due():
            self.flush_metrics()

    def forward_losses(self, data):
        """``model(data)`` under the step's autocast, with the model's ``put_scalars`` deferred.

        Returns:
            tuple: (loss dict, ``_DeferredScalars`` holding what the model put).
        """
        scalars = _DeferredScalars(_open_storage())
        _CURRENT_STORAGE_STACK.append(scalars)
        try:
            with self.precision.autocast():
                loss_dict = self.model(data)
        finally:
            _CURRENT_STORAGE_STACK.pop()
        return loss_dict, scalars

    def metrics_due(self):
        """Whether fast-reid's ``PeriodicWriter`` writes after this iteration."""
        step = self.iter + 1
        return (
            step % self.log_period == 0
            or (self.iters_per_epoch is not None and step % self.iters_per_epoch == 0)
            or (self.max_iter is not None and step >= self.max_iter)
        )

    def flush_metrics(self):
        """Write the pending steps' metrics to the event storage, each at its own iteration,
        as fast-reid's ``_write_metrics`` would have (losses averaged over processes, data time
        the slowest process's, ``total_loss``); all values leave the device in one transfer.

        Raises:
            FloatingPointError: a step's total loss is infinite or NaN.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        tensors = [
            v for _, losses, scalars, _, _ in pending for v in [*losses.values(), *scalars.values()]
        ]
        tensors = [v for v in tensors if isinstance(v, torch.Tensor)]
        host = iter(_to_host(tensors))
        steps = []
        for iteration, losses, scalars, hints, data_time in pending:
            losses = {k: _value(v, host) for k, v in losses.items()}
            scalars = {k: _value(v, host) for k, v in scalars.items()}
            steps.append((iteration, losses, scalars, hints, data_time))

        gathered = comm.gather([(losses, data_time) for _, losses, _, _, data_time in steps])
        if not comm.is_main_process():
            return
        storage = _open_storage()
        current = storage.iter if storage is not None else None
        try:
            for i, (iteration, losses, scalars, hints, _) in enumerate(steps):
                per_worker = [worker[i] for worker in gathered]
                metrics = {k: float(np.mean([w[0][k] for w in per_worker])) for k in losses}
                total = sum(metrics.values())
                if not np.isfinite(total):
                    raise FloatingPointError(
                        f"Loss became infinite or NaN at iteration={iteration}!\n"
                        f"loss_dict = {metrics}"
                    )
                if storage is None:
                    continue
                storage.iter = iteration
                for name, value in scalars.items():
                    storage.put_scalar(name, value, smoothing_hint=hints[name])
                storage.put_scalar("data_time", max(w[1] for w in per_worker))
                storage.put_scalar("total_loss", total)
                if len(metrics) > 1:
                    storage.put_scalars(**metrics)
        finally:
            if storage is not None:
                storage.iter = current


def _open_storage():
    """fast-reid's current event storage, or None outside one (scripts, tests): then model
    scalars are dropped and only the non-finite loss check runs."""
    try:
        return get_event_storage()
    except AssertionError:
        return None


def _to_host(tensors):
    """Python floats of scalar tensors, one device-to-host copy per device."""
    out = [0.0] * len(tensors)
    by_device = defaultdict(list)
    for i, t in enumerate(tensors):
        by_device[t.device].append(i)
    for indices in by_device.values():
        stacked = torch.stack([tensors[i].reshape(()).float() for i in indices]).cpu().tolist()
        for i, v in zip(indices, stacked):
            out[i] = v
    return out


def _value(value, host):
    return next(host) if isinstance(value, torch.Tensor) else value
