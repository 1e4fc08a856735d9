"""The per-epoch lr schedule (``SOLVER.SCHED_UNIT epoch``): IRRA's ``LRSchedulerWithWarmup``
values for every epoch and parameter group, in real training runs, across resumes and stages."""

import glob
import json
import math
import os
import signal
import subprocess
import sys

import plugins  # noqa: F401  (fastreid compatibility fixes, registration)

# isort: split
import pytest
import torch
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from plugins.engine import build_config
from plugins.engine.lr_schedule import (
    EpochWarmupLR,
    build_epoch_lr_scheduler,
    uses_epoch_schedule,
    whole_epochs,
)
from plugins.engine.stages import Stage, model_stages, stage_config
from plugins.engine.trainer import PluginTrainer
from plugins.modeling.retrieval import CLIPRetrieval
from tests.test_train_net import ROOT, TINY, TRAIN_NET, train_net


def irra_factor(epoch, total=60, warmup=5, warmup_factor=0.1):
    """IRRA's lr factor of 1-based ``epoch`` (last_epoch = epoch - 1), written out."""
    last = epoch - 1
    if last < warmup:
        alpha = last / warmup
        return warmup_factor * (1 - alpha) + alpha
    return 0.5 * (1 + math.cos(math.pi * (last - warmup) / (total - warmup)))


def close(a, b, rel=1e-12):
    return abs(a - b) <= rel * abs(b)


def optimizer_with_groups(*lrs):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)])


def lrs(optimizer):
    return [g["lr"] for g in optimizer.param_groups]


# ------------------------------------------------------------------ the schedule itself


@pytest.mark.filterwarnings("ignore:Detected call of")  # step() without training
def test_irra_cosine_schedule_equals_the_formula_for_every_epoch_and_group():
    cfg = build_config(os.path.join(ROOT, "configs/CUHKPEDES/irra.yml"))
    s = cfg.SOLVER
    assert (s.SCHED_UNIT, s.SCHED, s.MAX_EPOCH) == ("epoch", "CosineAnnealingLR", 60)
    assert (s.WARMUP_EPOCHS, s.WARMUP_FACTOR, s.WARMUP_METHOD) == (5, 0.1, "linear")
    assert (s.ETA_MIN_LR, s.WARMUP_ITERS) == (0.0, 0)
    base = (1e-5, 5e-5)  # a weight and a new layer (IRRA's 5x)
    optimizer = optimizer_with_groups(*base)
    scheduler = PluginTrainer.build_lr_scheduler(cfg, optimizer, iters_per_epoch=7)["epoch_sched"]
    # Built: epoch 1's lr is already in place.
    assert all(close(lr, b * 0.1) for lr, b in zip(lrs(optimizer), base))
    stepped = optimizer_with_groups(*base)  # IRRA's use: step() once after every epoch
    irra = EpochWarmupLR(stepped, 60, 5, 0.1, "linear", "cosine", 0.0)
    seen = []
    for epoch in range(1, 61):
        scheduler.set_epoch(epoch - 1)
        factor = irra_factor(epoch)
        for got, again, b in zip(lrs(optimizer), lrs(stepped), base):
            assert close(got, b * factor), (epoch, got, b * factor)
            assert close(again, b * factor), (epoch, again, b * factor)
        seen.append(lrs(optimizer)[0] / base[0])
        irra.step()
    assert [round(f, 2) for f in seen[:6]] == [0.1, 0.28, 0.46, 0.64, 0.82, 1.0]
    assert lrs(optimizer)[0] > 0 and seen[5] == 1.0  # epoch 6 at exactly the base lr
    assert seen[-1] == pytest.approx(8.1545e-4, rel=1e-4) and min(seen) == seen[-1] > 0


def test_multistep_milestones_count_epochs_from_the_start():
    # "decay x0.1 at epochs 60 and 100": epochs 61-100 at 0.1x, 101-120 at 0.01x.
    opts = ["SOLVER.SCHED", "MultiStepLR", "SOLVER.STEPS", "[60, 100]", "SOLVER.GAMMA", "0.1"]
    opts += ["SOLVER.MAX_EPOCH", "120", "SOLVER.WARMUP_EPOCHS", "10"]
    opts += ["SOLVER.WARMUP_FACTOR", "0.01"]
    cfg = build_config(os.path.join(ROOT, "configs/Demo/irra.yml"), opts)
    base = (3e-4, 1e-6)
    optimizer = optimizer_with_groups(*base)
    scheduler = build_epoch_lr_scheduler(cfg, optimizer)["epoch_sched"]
    for epoch in range(1, 121):
        scheduler.set_epoch(epoch - 1)
        if epoch <= 10:
            alpha = (epoch - 1) / 10
            factor = 0.01 * (1 - alpha) + alpha
        else:
            factor = 1.0 if epoch <= 60 else 0.1 if epoch <= 100 else 0.01
        assert all(close(lr, b * factor) for lr, b in zip(lrs(optimizer), base)), epoch
    # A constant warm-up holds the factor for the warm-up epochs.
    cfg.SOLVER.WARMUP_METHOD = "constant"
    scheduler = build_epoch_lr_scheduler(cfg, optimizer_with_groups(1.0))["epoch_sched"]
    assert [scheduler.lrs_at(e)[0] for e in (0, 9, 10, 59, 60)] == [0.01, 0.01, 1.0, 1.0, 0.1]


@pytest.mark.filterwarnings("ignore:Detected call of")  # step() without training
def test_runs_shorter_than_the_warm_up_and_impossible_settings():
    cfg = build_config(os.path.join(ROOT, "configs/Demo/irra.yml"))
    cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.WARMUP_EPOCHS = 3, 5
    scheduler = build_epoch_lr_scheduler(cfg, optimizer_with_groups(1.0))["epoch_sched"]
    got = [scheduler.lrs_at(e)[0] for e in range(3)]
    assert got == pytest.approx([0.1, 0.28, 0.46]) and all(v > 0 for v in got)
    for total in (1, 2, 5):  # as long as the warm-up: IRRA's step() after training divided by 0
        cfg.SOLVER.MAX_EPOCH = total
        scheduler = build_epoch_lr_scheduler(cfg, optimizer_with_groups(1.0))["epoch_sched"]
        for _ in range(total + 2):
            scheduler.step()
    cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.WARMUP_EPOCHS = 6, 2
    bad = {
        "SOLVER.WARMUP_ITERS": (100, "WARMUP_ITERS is 100"),
        "SOLVER.DELAY_EPOCHS": (2, "DELAY_EPOCHS"),
        "SOLVER.WARMUP_FACTOR": (0.0, "lr 0"),
        "SOLVER.WARMUP_METHOD": ("exp", "WARMUP_METHOD 'exp'"),
        "SOLVER.SCHED": ("CosineAnnealingWarmRestarts", "SOLVER.SCHED"),
        "SOLVER.MAX_EPOCH": (0, "at least one epoch"),
        "SOLVER.WARMUP_EPOCHS": (-1, "WARMUP_EPOCHS is -1"),
        "SOLVER.SCHED_UNIT": ("step", "SCHED_UNIT 'step'"),
    }
    for key, (value, message) in bad.items():
        broken = cfg.clone()
        broken.merge_from_list([key, value])
        with pytest.raises(ValueError, match=message):
            PluginTrainer.build_lr_scheduler(broken, optimizer_with_groups(1.0), 10)
    inside = cfg.clone()
    inside.merge_from_list(["SOLVER.SCHED", "MultiStepLR", "SOLVER.STEPS", "[1, 4]"])
    with pytest.raises(ValueError, match=r"\[1\] fall inside the 2-epoch warm-up"):
        build_epoch_lr_scheduler(inside, optimizer_with_groups(1.0))
    with pytest.raises(ValueError, match="stage 'x'.*2.5"):
        whole_epochs(2.5, "stage 'x'")
    assert whole_epochs(5.0, "w") == 5


FASTREID_BASES = ("Base-bagtricks.yml", "Base-AGW.yml", "Base-CLIP-VIReID.yml")


def _bases(path):
    """The config's file and every file it inherits from, by name."""
    names = []
    while path:
        names.append(os.path.basename(path))
        with open(path) as f:
            base = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("_BASE_")), "")
        path = os.path.normpath(os.path.join(os.path.dirname(path), base)) if base else ""
    return names


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yml"), recursive=True))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_config_builds_its_schedule(path):
    """Text configs (IRRA family, CoRL, MGANet, demos) schedule per epoch with IRRA's values, the
    CLIP VI-ReID configs (CLIP4VI-ReID, RSBA) and AGW's two-stream network per epoch with the
    papers' (or their code's) epochs; fast-reid's own
    (Bag of Tricks, AGW, on every dataset) keep fast-reid's schedule."""
    cfg = build_config(path)
    bases = _bases(path)
    if "Base-TextRetrieval.yml" in bases:
        assert uses_epoch_schedule(cfg) and cfg.SOLVER.WARMUP_ITERS == 0
        assert cfg.SOLVER.WARMUP_FACTOR == 0.1 and cfg.SOLVER.SCHED == "CosineAnnealingLR"
        if "Demo" not in path:
            assert cfg.SOLVER.WARMUP_EPOCHS == 5 and cfg.SOLVER.ETA_MIN_LR == 0.0
    elif "Base-CLIP-VIReID.yml" in bases:
        assert uses_epoch_schedule(cfg) and cfg.SOLVER.WARMUP_ITERS == 0
        assert cfg.DATALOADER.VI_EPOCH == "sampler"
    elif "Base-AGWTwoStream.yml" in bases:  # AGW's own train.py: per epoch, its warm-up
        assert uses_epoch_schedule(cfg) and cfg.SOLVER.WARMUP_ITERS == 0
        assert cfg.SOLVER.WARMUP_METHOD == "agw" and cfg.DATALOADER.VI_EPOCH == "sampler"
    else:
        assert not uses_epoch_schedule(cfg), bases
        assert cfg.DATALOADER.VI_EPOCH == "images"
        assert set(bases) & set(FASTREID_BASES) or "Market1501" in path
    configs = [cfg]
    for stage in model_stages(cfg):
        scfg = stage_config(cfg, stage)
        scfg.defrost()
        if stage.warmup_epochs is not None and uses_epoch_schedule(scfg):
            scfg.SOLVER.WARMUP_EPOCHS = whole_epochs(stage.warmup_epochs, stage.name)
            if "Demo" not in path and "clip4vireid" not in path:  # CoRL's
                assert scfg.SOLVER.WARMUP_EPOCHS == 5 and scfg.SOLVER.MAX_EPOCH == 60
        configs.append(scfg)
    for c in configs:
        schedule = PluginTrainer.build_lr_scheduler(c, optimizer_with_groups(1.0), 50)
        assert schedule


# ------------------------------------------------------------------ real training runs

# 6 captions / batch 2 = 3 iterations per epoch; 6 epochs, the first 2 warming up.
EPOCHS, WARMUP, PER_EPOCH, LR = 6, 2, 3, 1e-3
RUN = [
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.MAX_EPOCH", str(EPOCHS),
    "SOLVER.WARMUP_EPOCHS", str(WARMUP),
    "SOLVER.BASE_LR", str(LR),
    "SOLVER.LOG_PERIOD", "1",
    "SOLVER.CHECKPOINT_PERIOD", "1",
    "TEST.EVAL_PERIOD", str(EPOCHS),
]  # fmt: skip
CONFIG = "configs/Demo/clip_sdm_add.yml"


def run_factor(epoch):
    """The factor of 0-based ``epoch`` in RUN."""
    return irra_factor(epoch + 1, total=EPOCHS, warmup=WARMUP)


def logged_lrs(out_dir, skip_lines=0):
    """iteration -> the lr fast-reid's metrics.json recorded for it (lines after ``skip_lines``)."""
    with open(os.path.join(out_dir, "metrics.json")) as f:
        lines = f.read().splitlines()[skip_lines:]
    rows = [json.loads(line) for line in lines]
    return {r["iteration"]: r["lr"] for r in rows if "lr" in r}


def check_logged(logged, iterations):
    assert set(logged) == set(iterations), sorted(logged)
    for it in iterations:
        expected = LR * run_factor(it // PER_EPOCH)
        assert close(logged[it], expected), (it, logged[it], expected)


@pytest.fixture(scope="module")
def full_run(rgbt, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    train_net(CONFIG, rgbt, *RUN, "OUTPUT_DIR", str(out))
    return out


def test_every_epoch_trains_at_its_scheduled_lr(full_run):
    # The lr every step ran at (fast-reid logs the base-lr group's) ...
    check_logged(logged_lrs(full_run), range(EPOCHS * PER_EPOCH))
    # ... and every group's lr in each epoch (each checkpoint is written after its epoch).
    names = [f"model_{e:04d}.pth" for e in range(EPOCHS - 1)] + ["model_final.pth"]
    initial = set()
    for epoch, name in enumerate(names):
        state = torch.load(full_run / name, map_location="cpu", weights_only=True)
        assert state["epoch"] == epoch
        groups = state["optimizer"]["param_groups"]
        for g in groups:
            assert g["lr"] > 0 and close(g["lr"], g["initial_lr"] * run_factor(epoch)), (epoch, g)
            initial.add(g["initial_lr"])
    assert {LR, 2 * LR} <= initial  # IRRA's groups: weights, biases at 2x, ...


_INTERRUPT_DRIVER = """
import os, runpy, signal, sys
sys.path.insert(0, {root!r})
import plugins  # noqa: F401
from plugins.engine.trainer import PluginTrainer

run_step = PluginTrainer.run_step
def interrupted(self):
    run_step(self)
    if self.iter == {at}:
        os.kill(os.getpid(), signal.SIGINT)
PluginTrainer.run_step = interrupted
sys.argv = {argv!r}
runpy.run_path({train_net!r}, run_name="__main__")
"""


def test_resumed_runs_keep_the_per_epoch_lrs(rgbt, full_run, tmp_path):
    # SIGINT during iteration 9: the run saves after it, inside epoch 3 (iterations 9-11).
    out = tmp_path / "interrupted"
    argv = [TRAIN_NET, "--config-file", os.path.join(ROOT, CONFIG), *TINY, *RUN]
    argv += ["OUTPUT_DIR", str(out)]
    code = _INTERRUPT_DRIVER.format(root=ROOT, at=9, argv=argv, train_net=TRAIN_NET)
    env = dict(os.environ, FASTREID_DATASETS=rgbt, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 128 + signal.SIGINT, log[-3000:]
    checkpoint = torch.load(out / "model_interrupted.pth", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 10
    with open(out / "metrics.json") as f:
        before = len(f.read().splitlines())

    resumed = train_net(CONFIG, rgbt, *RUN, "OUTPUT_DIR", str(out), resume=True)
    assert "Starting training from epoch 3, iteration 10 of 18" in resumed
    check_logged(logged_lrs(out, skip_lines=before), range(10, EPOCHS * PER_EPOCH))

    # Resumed at an epoch boundary (after epoch 2) as well.
    boundary = tmp_path / "boundary"
    boundary.mkdir()
    (boundary / "model_0002.pth").write_bytes((full_run / "model_0002.pth").read_bytes())
    (boundary / "last_checkpoint").write_text("model_0002.pth")
    resumed = train_net(CONFIG, rgbt, *RUN, "OUTPUT_DIR", str(boundary), resume=True)
    assert "Starting training from epoch 3, iteration 9 of 18" in resumed
    check_logged(logged_lrs(boundary), range(9, EPOCHS * PER_EPOCH))
    full = torch.load(full_run / "model_final.pth", map_location="cpu", weights_only=True)
    again = torch.load(boundary / "model_final.pth", map_location="cpu", weights_only=True)
    assert [g["lr"] for g in again["optimizer"]["param_groups"]] == [
        g["lr"] for g in full["optimizer"]["param_groups"]
    ]


# ------------------------------------------------------------------ stages

WARMUP_TOY = "ToyWarmupStages"

if WARMUP_TOY not in META_ARCH_REGISTRY._obj_map:

    @META_ARCH_REGISTRY.register()
    class ToyWarmupStages(CLIPRetrieval):
        """CLIP + SDM in two stages with their own warm-ups (in epochs) and an lr factor."""

        @classmethod
        def stages(cls, cfg):
            return [
                Stage(
                    "first",
                    opts=("SOLVER.MAX_EPOCH", 3),
                    warmup_epochs=2.0,
                    lr_factors={"text_encoder.": 0.5},
                ),
                Stage("second", opts=("SOLVER.MAX_EPOCH", 2), warmup_epochs=0.0),
            ]


def test_stages_schedule_per_epoch_with_their_own_warm_up(rgbt, tmp_path):
    out = tmp_path / "stages"
    cmd = [sys.executable, TRAIN_NET, "--extra-imports", "tests.test_epoch_schedule"]
    cmd += ["--config-file", os.path.join(ROOT, CONFIG), *TINY]
    cmd += ["MODEL.META_ARCHITECTURE", WARMUP_TOY, "SOLVER.IMS_PER_BATCH", "2"]
    cmd += ["SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "5", "OUTPUT_DIR", str(out)]
    env = dict(os.environ, FASTREID_DATASETS=rgbt, HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    expected = {
        "first": [irra_factor(e, total=3, warmup=2) for e in (1, 2, 3)],  # 0.1, 0.55, 1
        "second": [irra_factor(e, total=2, warmup=0) for e in (1, 2)],  # 1, 0.5
    }
    assert expected["first"] == pytest.approx([0.1, 0.55, 1.0])
    assert expected["second"] == pytest.approx([1.0, 0.5])
    for stage, factors in expected.items():
        names = [f"model_{e:04d}.pth" for e in range(len(factors) - 1)] + ["model_final.pth"]
        initial = set()
        for name, factor in zip(names, factors):
            state = torch.load(out / stage / name, map_location="cpu", weights_only=True)
            for g in state["optimizer"]["param_groups"]:
                assert close(g["lr"], g["initial_lr"] * factor), (stage, name, g["lr"])
                initial.add(g["initial_lr"])
        if stage == "first":  # the text tower's groups at half their rate
            base = build_config(os.path.join(ROOT, CONFIG)).SOLVER.BASE_LR
            assert any(close(v, base) for v in initial), (base, initial)
            assert any(close(v, base / 2) for v in initial), (base, initial)
