"""tools/benchmark_train.py on tiny configs (CPU), and the precision step runner it times."""

import copy
import math
import os
import re
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401  (fastreid compatibility fixes, registration)

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402
from fastreid.utils.events import EventStorage  # noqa: E402
from torch import nn  # noqa: E402

from plugins.engine.amp import PrecisionTrainer, StepPrecision, step_precision  # noqa: E402
from tests.fixtures_model import IRRA_HEADS, ROOT, build_model_from, caption_batch  # noqa: E402

ROW = re.compile(r"^\| (fp32|bf16) \| (.*) \|$")
COLUMNS = ("images_s", "step_ms", "peak_mb", "tflops", "mfu", "peak", "loss", "gallery", "texts")


def run_tool(config, *flags, data_root=None):
    cmd = [
        sys.executable,
        str(ROOT / "tools/benchmark_train.py"),
        "--config-file",
        str(ROOT / config),
    ]
    cmd += ["--steps", "2", "--warmup", "1", "--batch", "8", "--encode-batches", "1"]
    cmd += ["--num-classes", "4", *flags, "MODEL.DEVICE", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    if data_root is not None:
        env["FASTREID_DATASETS"] = data_root
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {}
    for line in proc.stdout.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = dict(zip(COLUMNS, m.group(2).split(" | ")))
    flops = re.search(r"FLOPs per training step .*: (\S+)", proc.stdout)
    return proc.stdout, rows, float(flops.group(1))


@pytest.mark.parametrize(
    "config, texts",
    [("configs/Demo/irra.yml", True), ("configs/Demo/regdb_rsba.yml", False)],
)
def test_tool_reports_both_precisions(config, texts):
    out, rows, flops = run_tool(config)
    assert set(rows) == {"fp32", "bf16"}
    assert flops > 0
    for r in rows.values():
        for key in ("images_s", "step_ms", "peak_mb", "tflops", "gallery"):
            value = float(r[key])
            assert math.isfinite(value) and value > 0, (key, r)
        # images/s is the batch over the step time
        assert float(r["images_s"]) == pytest.approx(8 / (float(r["step_ms"]) / 1e3), rel=0.02)
        assert r["mfu"] == "n/a" and r["peak"] == "n/a"  # no peak is known for a CPU
        assert (r["texts"] != "n/a") == texts
    assert "numerics: bf16 loss" in out and "(ok," in out
    fp32, bf16 = float(rows["fp32"]["loss"]), float(rows["bf16"]["loss"])
    assert fp32 != bf16 and abs(fp32 - bf16) <= 0.05 * abs(fp32)


def test_tool_counts_the_fused_attention_of_the_vit():
    out, _, _ = run_tool("configs/Demo/irra.yml", "--precision", "fp32")
    m = re.search(
        r"attention through fused scaled_dot_product_attention kernels .*: ([\d.]+)%", out
    )
    assert m and float(m.group(1)) > 0


def test_tool_times_the_real_training_loader(rgbt):
    out, rows, _ = run_tool(
        "configs/Demo/clip_sdm_add.yml",
        "--precision", "fp32", "--batch", "4", "--loader-batches", "3", "--workers", "0",
        data_root=rgbt,
    )  # fmt: skip
    m = re.search(
        r"training loader \(0 workers, 3 batches of 4 from RGBTPEDES\): ([\d.]+) images/s; "
        r"the fp32 step takes ([\d.]+) images/s: the loader (keeps up|is the bottleneck)",
        out,
    )
    assert m, out[-2000:]
    rate, step = float(m.group(1)), float(m.group(2))
    assert rate > 0 and step == pytest.approx(float(rows["fp32"]["images_s"]), abs=0.051)
    assert (m.group(3) == "keeps up") == (rate >= step)


def tiny_irra():
    return build_model_from("configs/Demo/irra.yml", *IRRA_HEADS)


def tiny_batch(cfg):
    return caption_batch(context_length=cfg.INPUT.TEXT.CONTEXT_LENGTH)


def test_bf16_step_on_cpu_trains():
    cfg, model = tiny_irra()
    precision = step_precision(cfg, enabled=True, dtype="bfloat16")
    assert precision == StepPrecision(True, torch.bfloat16, "cpu") and not precision.scaled
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    runner = PrecisionTrainer(model, [tiny_batch(cfg)], optimizer, precision=precision)
    seen = []
    forward = model.forward

    def spy(batch):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return forward(batch)

    model.forward = spy
    with EventStorage(0) as storage:
        runner.run_step()
    assert seen == [torch.bfloat16]
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "image_encoder.visual.conv1.weight" in changed
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    # log period 1: the step's losses reached the storage as floats, at iteration 0
    total, iteration = storage.latest()["total_loss"]
    assert iteration == 0 and math.isfinite(total)


def test_fp32_step_equals_a_hand_written_step():
    cfg, model = tiny_irra()
    reference = copy.deepcopy(model)
    batch = tiny_batch(cfg)
    opt_a = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt_b = torch.optim.Adam(reference.parameters(), lr=1e-3)
    runner = PrecisionTrainer(model, [batch], opt_a, precision=step_precision(cfg, enabled=False))

    torch.manual_seed(1)
    runner.run_step()
    torch.manual_seed(1)
    reference.train()
    loss = sum(reference(batch).values())
    opt_b.zero_grad()
    loss.backward()
    opt_b.step()
    got, want = model.state_dict(), reference.state_dict()
    for k in want:
        assert torch.equal(got[k], want[k]), k


class _Toy(nn.Module):
    """A loss dict from a linear layer, and a model scalar put as a tensor (no sync)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, batch):
        from plugins.modeling.retrieval import put_scalars

        out = self.lin(batch)
        put_scalars(acc=out.detach().mean())
        return {"loss_a": out.pow(2).mean(), "loss_b": out.abs().mean() * batch[0, 0]}


def test_metrics_are_written_per_step_at_the_log_period():
    model = _Toy()
    batches = [torch.ones(3, 2)] * 3
    runner = PrecisionTrainer(
        model, batches, torch.optim.SGD(model.parameters(), lr=0.0), log_period=3
    )
    with EventStorage(0) as storage:
        for i in range(2):
            storage.iter = runner.iter = i
            runner.run_step()
        assert "total_loss" not in storage.histories()  # nothing written before the period
        storage.iter = runner.iter = 2
        runner.run_step()
        hist = storage.histories()
        assert [it for _, it in hist["total_loss"].values()] == [0, 1, 2]
        assert [it for _, it in hist["acc"].values()] == [0, 1, 2]
        assert storage.iter == 2
    out = model.lin(torch.ones(1, 2)).item()
    assert hist["total_loss"].values()[0][0] == pytest.approx(out**2 + abs(out))


def test_a_nan_loss_is_reported_with_its_iteration():
    model = _Toy()
    runner = PrecisionTrainer(
        model, [torch.full((3, 2), float("nan"))], torch.optim.SGD(model.parameters(), lr=0.1)
    )
    with EventStorage(0), pytest.raises(FloatingPointError, match="iteration=0"):
        runner.run_step()


def test_float16_on_the_cpu_is_refused_with_a_fix():
    cfg, _ = tiny_irra()
    with pytest.raises(ValueError, match="bfloat16"):
        step_precision(cfg, enabled=True, dtype="float16")
    with pytest.raises(ValueError, match="SOLVER.AMP.DTYPE"):
        step_precision(cfg, enabled=True, dtype="fp8")
