"""Per-epoch learning-rate schedules (``SOLVER.SCHED_UNIT epoch``), as IRRA steps them.

IRRA (``solver/lr_scheduler.py``, ``LRSchedulerWithWarmup``, stepped once per epoch in
``processor/processor.py``) sets one lr per epoch. With ``e`` the 0-based epoch (IRRA's
``last_epoch``), ``W`` warm-up epochs, ``T`` epochs in all and ``lr_0`` a parameter group's
initial lr:

- warm-up, ``e < W``: ``lr_0 * f`` with ``f = factor * (1 - e / W) + e / W`` ("linear") or
  ``f = factor`` ("constant") or ``f = (e + 1) / W`` ("agw": AGW's ``train.py``,
  ``adjust_learning_rate``, which ignores ``factor``);
- "cosine": ``eta_min + (lr_0 - eta_min) * 0.5 * (1 + cos(pi * (e - W) / (T - W)))``, so the
  first epoch after the warm-up runs at ``lr_0`` and the last one above ``eta_min``;
- "multistep": ``lr_0 * gamma ** k``, ``k`` the milestones ``<= e``: milestones count epochs from
  the start of training (milestone 60: epochs 61, 62, ... counted from 1 are decayed).

fast-reid's ``LRScheduler`` hook differs: its warm-up is per iteration, its cosine starts one
epoch early and its last epoch trains at ``ETA_MIN_LR``, and its milestones count after the
warm-up. :class:`EpochLRHook` sets each epoch's lr before the epoch's first iteration.
"""

import logging
import math
from bisect import bisect_right

from fastreid.engine import hooks
from torch.optim.lr_scheduler import LRScheduler

logger = logging.getLogger(__name__)

__all__ = [
    "EpochLRHook",
    "EpochWarmupLR",
    "SCHED_UNITS",
    "build_epoch_lr_scheduler",
    "uses_epoch_schedule",
    "whole_epochs",
]

SCHED_UNITS = ("iteration", "epoch")
# SOLVER.SCHED -> the schedule after the warm-up (fast-reid's names for the same shapes)
EPOCH_MODES = {"CosineAnnealingLR": "cosine", "MultiStepLR": "multistep"}
WARMUP_METHODS = ("linear", "constant", "agw")
SCHEDULER_KEY = "epoch_sched"  # its name in checkpoints


class EpochWarmupLR(LRScheduler):
    """One lr per epoch: warm-up over ``warmup_epochs``, then cosine or multi-step.

    ``last_epoch`` is the 0-based epoch whose lr the groups hold. ``step()`` moves to the next
    epoch (IRRA's use, once after every epoch); :meth:`set_epoch` jumps to any epoch.

    Args:
        optimizer (Optimizer): every group's lr at construction is its ``lr_0``.
        total_epochs (int): ``T``, the epochs the cosine spans together with the warm-up.
        warmup_epochs (int): ``W``, 0 for none.
        warmup_factor (float): the warm-up's first factor.
        warmup_method (str): "linear", "constant" or "agw".
        mode (str): "cosine" or "multistep".
        eta_min (float): the cosine's target lr (absolute, shared by every group).
        milestones (Sequence[int]): increasing 0-based epochs at which a decay starts.
        gamma (float): the factor of each milestone.
    """

    def __init__(
        self,
        optimizer,
        total_epochs,
        warmup_epochs=0,
        warmup_factor=0.1,
        warmup_method="linear",
        mode="cosine",
        eta_min=0.0,
        milestones=(),
        gamma=0.1,
        last_epoch=-1,
    ):
        if mode not in EPOCH_MODES.values():
            raise ValueError(f"mode {mode!r} not in {tuple(EPOCH_MODES.values())}")
        if warmup_method not in WARMUP_METHODS:
            raise ValueError(f"warm-up method {warmup_method!r} not in {WARMUP_METHODS}")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must increase: {list(milestones)}")
        self.total_epochs = int(total_epochs)
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_factor = float(warmup_factor)
        self.warmup_method = warmup_method
        self.mode = mode
        self.eta_min = float(eta_min)
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def lrs_at(self, epoch):
        """Every group's lr in 0-based ``epoch``."""
        if epoch < self.warmup_epochs:
            factor = self.warmup_factor
            if self.warmup_method == "linear":
                alpha = epoch / self.warmup_epochs
                factor = self.warmup_factor * (1 - alpha) + alpha
            elif self.warmup_method == "agw":
                factor = (epoch + 1) / self.warmup_epochs
            return [base * factor for base in self.base_lrs]
        if self.mode == "multistep":
            decay = self.gamma ** bisect_right(self.milestones, epoch)
            return [base * decay for base in self.base_lrs]
        # Past the last epoch (a step() after training) the cosine stays at eta_min; a run
        # that ends inside its warm-up never reaches this line within its epochs.
        span = self.total_epochs - self.warmup_epochs
        ratio = min((epoch - self.warmup_epochs) / span, 1.0) if span > 0 else 1.0
        factor = 0.5 * (1 + math.cos(math.pi * ratio))
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_lrs]

    def get_lr(self):
        return self.lrs_at(self.last_epoch)

    def _get_closed_form_lr(self):
        return self.lrs_at(self.last_epoch)

    def set_epoch(self, epoch):
        """Give every group its lr of 0-based ``epoch``."""
        self.last_epoch = int(epoch)
        lrs = self.lrs_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def uses_epoch_schedule(cfg):
    """Whether ``cfg`` schedules the lr per epoch (``SOLVER.SCHED_UNIT``); a ValueError for an
    unknown unit."""
    unit = cfg.SOLVER.SCHED_UNIT
    if unit not in SCHED_UNITS:
        raise ValueError(f"SOLVER.SCHED_UNIT {unit!r} not in {SCHED_UNITS}")
    return unit == "epoch"


def whole_epochs(value, what):
    """``value`` as an int number of epochs; a ValueError names ``what`` when it is fractional
    or negative (per-epoch schedules change the lr only between epochs)."""
    if value < 0 or float(value) != int(value):
        raise ValueError(
            f"{what} is {value}: per-epoch schedules (SOLVER.SCHED_UNIT epoch) need a whole, "
            "non-negative number of epochs"
        )
    return int(value)


def build_epoch_lr_scheduler(cfg, optimizer):
    """The per-epoch schedule ``cfg.SOLVER`` describes, checked, as fast-reid's scheduler dict.

    Keys: ``MAX_EPOCH`` (T), ``WARMUP_EPOCHS`` (W), ``WARMUP_FACTOR``, ``WARMUP_METHOD``,
    ``SCHED`` ("CosineAnnealingLR": cosine to ``ETA_MIN_LR``; "MultiStepLR": ``GAMMA`` at each
    of ``STEPS``, epochs counted from the start). ``WARMUP_ITERS`` and ``DELAY_EPOCHS`` belong
    to fast-reid's per-iteration schedule and must be 0.
    """
    s = cfg.SOLVER
    if s.SCHED not in EPOCH_MODES:
        raise ValueError(
            f"SOLVER.SCHED {s.SCHED!r}: per-epoch schedules (SOLVER.SCHED_UNIT epoch) are "
            f"{tuple(EPOCH_MODES)}"
        )
    if s.MAX_EPOCH < 1:
        raise ValueError(f"SOLVER.MAX_EPOCH is {s.MAX_EPOCH}: train for at least one epoch")
    if s.WARMUP_ITERS:
        raise ValueError(
            f"SOLVER.WARMUP_ITERS is {s.WARMUP_ITERS}, fast-reid's per-iteration warm-up; with "
            "SOLVER.SCHED_UNIT epoch the warm-up is SOLVER.WARMUP_EPOCHS: set WARMUP_ITERS 0 "
            "(or SOLVER.SCHED_UNIT iteration for fast-reid's schedule)"
        )
    if s.DELAY_EPOCHS:
        raise ValueError(
            f"SOLVER.DELAY_EPOCHS is {s.DELAY_EPOCHS}: per-epoch schedules have no delay; set "
            "it 0 (or SOLVER.SCHED_UNIT iteration for fast-reid's schedule)"
        )
    warmup = whole_epochs(s.WARMUP_EPOCHS, "SOLVER.WARMUP_EPOCHS")
    if warmup:
        if s.WARMUP_METHOD not in WARMUP_METHODS:
            raise ValueError(
                f"SOLVER.WARMUP_METHOD {s.WARMUP_METHOD!r}: per-epoch warm-ups are {WARMUP_METHODS}"
            )
        if not s.WARMUP_FACTOR > 0:
            raise ValueError(
                f"SOLVER.WARMUP_FACTOR is {s.WARMUP_FACTOR}: the first warm-up epoch would train "
                "at lr 0 or below"
            )
    mode = EPOCH_MODES[s.SCHED]
    milestones = list(s.STEPS) if mode == "multistep" else []
    if mode == "multistep":
        if any(int(m) != m for m in milestones) or milestones != sorted(set(milestones)):
            raise ValueError(f"SOLVER.STEPS {milestones} must be increasing whole epochs")
        inside = [m for m in milestones if m < warmup]
        if inside:
            raise ValueError(
                f"SOLVER.STEPS {inside} fall inside the {warmup}-epoch warm-up "
                "(SOLVER.WARMUP_EPOCHS); per-epoch milestones count epochs from the start of "
                "training"
            )
        if not s.GAMMA > 0:
            raise ValueError(f"SOLVER.GAMMA is {s.GAMMA}: decayed epochs would train at lr 0")
    elif s.ETA_MIN_LR < 0:
        raise ValueError(f"SOLVER.ETA_MIN_LR is {s.ETA_MIN_LR}: a learning rate is not negative")
    if warmup >= s.MAX_EPOCH:
        logger.warning(
            f"SOLVER.WARMUP_EPOCHS {warmup} >= SOLVER.MAX_EPOCH {s.MAX_EPOCH}: training ends "
            "inside the warm-up, below the base learning rate"
        )
    scheduler = EpochWarmupLR(
        optimizer,
        total_epochs=s.MAX_EPOCH,
        warmup_epochs=warmup,
        warmup_factor=s.WARMUP_FACTOR,
        warmup_method=s.WARMUP_METHOD,
        mode=mode,
        eta_min=s.ETA_MIN_LR,
        milestones=[int(m) for m in milestones],
        gamma=s.GAMMA,
    )
    return {SCHEDULER_KEY: scheduler}


class EpochLRHook(hooks.LRScheduler):
    """fast-reid's ``LRScheduler`` hook for :class:`EpochWarmupLR`: the epoch's lr is set
    before its first iteration (also the first epoch of a resumed run, inside an epoch or not),
    and every step logs the lr it ran at, of the group fast-reid's hook would show."""

    def __init__(self, optimizer, scheduler):
        super().__init__(optimizer, scheduler)
        if not isinstance(scheduler, EpochWarmupLR):
            raise TypeError(f"EpochLRHook needs an EpochWarmupLR, got {type(scheduler).__name__}")

    def before_epoch(self):
        self._scheduler.set_epoch(self.trainer.epoch)

    def after_step(self):
        lr = self._optimizer.param_groups[self._best_param_group_id]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)

    def after_epoch(self):
        pass  # the next epoch's before_epoch sets its lr
