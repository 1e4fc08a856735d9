"""tools/benchmark_synthetic.py on a small synthetic set and one epoch: the zero-shot rows, the
mean and spread over seeds with the per-seed values, for a text and a VI-ReID config."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def benchmark(tmp_path, configs, ids, seeds, opts):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "benchmark_synthetic.py"), *configs]
    cmd += ["--ids", str(ids), "--seeds", *map(str, seeds)]
    cmd += ["--data", str(tmp_path / "data"), "--output", str(tmp_path / "bench")]
    cmd += ["--opts", *opts]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open(tmp_path / "bench" / "summary.json") as f:
        return proc.stdout, json.load(f)


def table_row(stdout, name):
    row = re.search(rf"^\| {re.escape(name)} \|(.*)\|$", stdout, re.M)
    assert row, stdout
    return [cell.strip() for cell in row.group(1).split("|")]


def test_text_configs_over_seeds_with_zero_shot(tmp_path):
    short = ["SOLVER.MAX_EPOCH", "1", "SOLVER.WARMUP_EPOCHS", "0", "TEST.EVAL_PERIOD", "1"]
    stdout, summary = benchmark(tmp_path, ["configs/Demo/clip_sdm_add.yml"], 40, [0, 1], short)
    runs = summary["clip_sdm_add"]
    assert len(runs) == 2
    zero_shot = summary["zero_shot"]["tiny-rn.safetensors, RGB + T added"]
    assert zero_shot["R1"] > 0
    cells = table_row(stdout, "clip_sdm_add")
    mean, spread = (float(v) for v in cells[0].split("+-"))
    r1 = [run["R1"] for run in runs]
    assert mean == pytest.approx(sum(r1) / 2, abs=0.01)
    assert spread == pytest.approx(abs(r1[0] - r1[1]) / 2**0.5, abs=0.01)
    assert cells[-1] == ", ".join(f"{v:.2f}" for v in r1)  # the per-seed values
    assert table_row(stdout, "chance (random ranking)")[0]
    zs_cells = table_row(stdout, "zero-shot (tiny-rn.safetensors, RGB + T added)")
    assert float(zs_cells[0]) == pytest.approx(zero_shot["R1"], abs=0.01)


def test_vi_configs_with_the_zero_shot_row_of_the_clip_one(tmp_path):
    short = ["SOLVER.MAX_EPOCH", "1", "SOLVER.STEPS", "[1]", "TEST.EVAL_PERIOD", "1"]
    short += ["TEST.VI_TRIALS", "2"]
    configs = ["configs/Demo/regdb_bagtricks.yml", "configs/Demo/regdb_rsba.yml"]
    stdout, summary = benchmark(tmp_path, configs, 20, [0], short)
    label = "tiny-rn.safetensors, RSBA's visual streams"
    assert list(summary["zero_shot"]) == [label]  # Bag of Tricks has no CLIP to start from
    zero_shot = summary["zero_shot"][label]
    assert {"R1", "v2t/R1", "t2v/R1"} <= set(zero_shot)
    header = re.search(r"^\| config \| R1 all \|(.*)\|$", stdout, re.M).group(1)
    assert "R1 t2v" in header and "R1 v2t" in header
    assert len(table_row(stdout, "regdb_rsba")) == 4  # all, t2v, v2t, per seed
