"""tools/demo.py (what `make demo` runs), end to end on a small synthetic set and one epoch: the
zero-shot figure of the synthetic CLIP, the fine-tuned one, chance level and the picture."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def figure(log, label, metric):
    found = re.search(rf"\[demo\]\s+{label}\s+R1\s+([\d.]+)(?:\s+mAP\s+([\d.]+))?", log)
    assert found, f"no '{label}' line in:\n{log}"
    return float(found.group(1 if metric == "R1" else 2))


@pytest.mark.parametrize("cwd", ["repository", "elsewhere"])
def test_demo_fine_tunes_the_synthetic_clip_and_reports_zero_shot(tmp_path, cwd):
    out = tmp_path / "demo"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--ids", "40"]
    cmd += ["--data", str(tmp_path / "data"), "--output", str(out)]
    cmd += ["SOLVER.MAX_EPOCH", "1", "SOLVER.WARMUP_EPOCHS", "0", "TEST.EVAL_PERIOD", "1"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    # From another folder the config and the weights named relative to the repository are
    # still found.
    run_in = ROOT if cwd == "repository" else str(tmp_path)
    proc = subprocess.run(cmd, cwd=run_in, env=env, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "fine-tuned from weights/synthetic-clip/tiny-rn.safetensors" in log
    with open(out / "results_zero_shot.json") as f:
        zero_shot = json.load(f)
    zero_shot = zero_shot.get("RGBTPEDES", zero_shot)
    assert figure(log, "zero-shot", "R1") == pytest.approx(zero_shot["R1"], abs=0.01)
    assert figure(log, "zero-shot", "mAP") == pytest.approx(zero_shot["mAP"], abs=0.01)
    chance = figure(log, "chance", "R1")
    # The synthetic CLIP retrieves far above chance before any fine-tuning.
    assert figure(log, "zero-shot", "R1") > 3 * chance
    assert figure(log, "fine-tuned", "R1") >= 0
    assert (out / "ranked_lists.png").is_file() and (out / "model_final.pth").is_file()
