"""tools/benchmark_train.py runs on the CPU with tiny configs and reports sane figures."""

import os
import re
import subprocess
import sys

import pytest

from tests.fixtures_model import ROOT, TINY_CLIP


@pytest.mark.parametrize("config", ["configs/Demo/irra.yml", "configs/Demo/mganet.yml"])
def test_benchmark_train_prints_both_precisions(config):
    cmd = [
        sys.executable,
        str(ROOT / "tools/benchmark_train.py"),
        "--config-file",
        str(ROOT / config),
    ]
    cmd += ["--steps", "2", "--warmup", "1", "--batch", "4", "--encode-batches", "1", *TINY_CLIP]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"\| (fp32|bf16) \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2).split(" | ")
    assert set(rows) == {"fp32", "bf16"}
    for cells in rows.values():
        images_s, ms, peak, gflop, tflops, mfu, loss, encode = cells
        assert float(images_s) > 0 and float(ms) > 0 and float(peak) > 0
        assert float(gflop) > 0 and float(encode) > 0
        assert mfu == "n/a"  # no peak is known for a CPU
    # bf16 autocast is numerically close to fp32 on the first step (same weights and batch).
    fp32_loss, bf16_loss = float(rows["fp32"][6]), float(rows["bf16"][6])
    assert abs(fp32_loss - bf16_loss) <= 0.05 * abs(fp32_loss)
    # The FLOP count does not depend on the precision.
    assert rows["fp32"][3] == rows["bf16"][3]
