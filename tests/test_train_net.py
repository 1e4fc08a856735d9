"""End to end through ``tools/train_net.py``: train, checkpoint, ``--eval-only``, reproducibility."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from tests.fixtures_reid import write_market1501

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")

TINY = [
    "MODEL.CLIP.NAME", "tiny-vit",
    "MODEL.CLIP.STRIDE", "8",
    "MODEL.BACKBONE.PRETRAIN", "False",
    "MODEL.CLIP.WEIGHTS", "",
    "INPUT.SIZE_TRAIN", "[64, 32]",
    "INPUT.SIZE_TEST", "[64, 32]",
    "INPUT.PADDING.SIZE", "2",
    "DATALOADER.NUM_WORKERS", "0",
    "DATALOADER.TEST_NUM_WORKERS", "0",
    "SOLVER.WARMUP_ITERS", "0",
    "SEED", "0",
]  # fmt: skip


def train_net(config, data_root, *opts, eval_only=False, resume=False):
    """Run tools/train_net.py; returns its combined output (fails the test on a non-zero exit)."""
    cmd = [sys.executable, TRAIN_NET, "--config-file", os.path.join(ROOT, config)]
    if eval_only:
        cmd.append("--eval-only")
    if resume:
        cmd.append("--resume")
    env = dict(os.environ, FASTREID_DATASETS=data_root, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        cmd + TINY + list(opts), env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def final_results(output, dataset):
    """The last 'Evaluation results for <dataset>: k v, ...' line as a dict."""
    lines = re.findall(rf"Evaluation results for {dataset}: (.*)", output)
    assert lines, output[-3000:]
    return {k: float(v) for k, v in re.findall(r"([\w/-]+) ([-\d.]+)", lines[-1])}


def eval_only_reproduces(config, data_root, opts, weights, out_dir, dataset, train_log):
    """``--eval-only`` of ``weights`` prints the training run's last results line for ``dataset``
    and writes the same ``results.json``; returns its output."""
    evaluated = train_net(
        config, data_root, *opts, "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out_dir),
        eval_only=True,
    )  # fmt: skip
    assert final_results(evaluated, dataset) == final_results(train_log, dataset)
    trained_dir = next(opts[i + 1] for i in range(len(opts) - 1, -1, -1) if opts[i] == "OUTPUT_DIR")
    with open(os.path.join(trained_dir, "results.json")) as f:
        trained = json.load(f)[dataset]
    with open(os.path.join(str(out_dir), "results.json")) as f:
        assert json.load(f)[dataset] == pytest.approx(trained)
    return evaluated


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("market")
    write_market1501(str(root), num_train_ids=8, images_per_id=5)
    return str(root)


def test_stock_baseline_with_clip_backbone_trains_and_evaluates(market, tmp_path):
    out_dir = str(tmp_path / "out")
    # 40 training images / batch 8 = 5 iterations per epoch, 4 epochs = 20 iterations.
    common = ["MODEL.BACKBONE.FEAT_DIM", "64", "DATALOADER.NUM_INSTANCE", "2"]
    common += ["SOLVER.IMS_PER_BATCH", "8", "TEST.IMS_PER_BATCH", "16", "OUTPUT_DIR", out_dir]
    train_out = train_net(
        "configs/Market1501/clip_baseline.yml",
        market,
        *common,
        "SOLVER.MAX_EPOCH", "4",
        "TEST.EVAL_PERIOD", "4",
        "SOLVER.BASE_LR", "1e-3",
    )  # fmt: skip
    assert "epoch/iter: 3/19" in train_out  # the 20th iteration (index 19) ran and was logged
    checkpoint = os.path.join(out_dir, "model_final.pth")
    assert os.path.isfile(checkpoint)
    trained = final_results(train_out, "Market1501")
    eval_out = train_net(
        "configs/Market1501/clip_baseline.yml",
        market,
        *common,
        "MODEL.WEIGHTS",
        checkpoint,
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
        eval_only=True,
    )
    assert final_results(eval_out, "Market1501") == trained
    assert {"Rank-1", "mAP", "mINP"} <= set(trained)


def test_caption_pipeline_trains_evaluates_and_is_reproducible(rgbt, tmp_path):
    def run(name, *extra, eval_only=False):
        return train_net(
            "configs/Demo/clip_sdm_add.yml",
            rgbt,
            "SOLVER.IMS_PER_BATCH", "4",
            "SOLVER.MAX_EPOCH", "3",
            "TEST.EVAL_PERIOD", "3",
            "OUTPUT_DIR", str(tmp_path / name),
            *extra,
            eval_only=eval_only,
        )  # fmt: skip

    first = run("a")
    second = run("b")
    state_a = torch.load(tmp_path / "a" / "model_final.pth", map_location="cpu")["model"]
    state_b = torch.load(tmp_path / "b" / "model_final.pth", map_location="cpu")["model"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), f"{key} differs between seeded runs"
    trained = final_results(first, "RGBTPEDES")
    assert trained == final_results(second, "RGBTPEDES")
    assert {"R1", "R5", "R10", "mAP", "mINP", "RSum", "metric"} <= set(trained)

    evaluated = run(
        "eval", "MODEL.WEIGHTS", str(tmp_path / "a" / "model_final.pth"), eval_only=True
    )
    assert final_results(evaluated, "RGBTPEDES") == trained
    assert "| subset" in evaluated and "RSum" in evaluated  # the metrics table is printed


def test_eval_only_without_weights_is_a_clear_error(rgbt, tmp_path):
    cmd = [sys.executable, TRAIN_NET, "--config-file", "configs/Demo/clip_sdm_add.yml"]
    cmd += ["--eval-only", "OUTPUT_DIR", str(tmp_path)] + TINY
    env = dict(os.environ, FASTREID_DATASETS=rgbt, HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0
    assert "--eval-only needs a trained checkpoint" in proc.stderr


def test_bf16_autocast_training_through_train_net(rgbt, tmp_path):
    """``SOLVER.AMP.ENABLED`` trains in bf16 autocast on the CPU (fast-reid's AMP would fall
    back to fp32), its weights differ from the fp32 run's, the logged losses reach metrics.json although
    the step defers them, the weights stay fp32, and ``--eval-only`` reproduces the results."""
    out_dir = tmp_path / "bf16"
    opts = ["SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_EPOCH", "2", "TEST.EVAL_PERIOD", "2"]
    opts += ["SOLVER.LOG_PERIOD", "3", "SOLVER.AMP.ENABLED", "True", "OUTPUT_DIR", str(out_dir)]
    out = train_net("configs/Demo/clip_sdm_add.yml", rgbt, *opts)
    assert "Training step in bf16 autocast on cpu" in out
    assert "training in fp32" not in out

    with open(out_dir / "metrics.json") as f:
        records = [json.loads(line) for line in f if line.strip()]
    with_loss = [r for r in records if "total_loss" in r]
    assert with_loss and all(torch.isfinite(torch.tensor(r["total_loss"])) for r in with_loss)
    final = torch.load(out_dir / "model_final.pth", map_location="cpu")
    max_iter = final["iteration"]
    # written at the log period and at each epoch's end, each record at its own iteration
    assert with_loss[-1]["iteration"] == max_iter - 1
    floats = [v for v in final["model"].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 for v in floats)  # master weights stay fp32

    # The same seeded run in fp32 ends elsewhere: the autocast really changed the arithmetic.
    fp32_opts = opts[:-3] + ["False", "OUTPUT_DIR", str(tmp_path / "fp32")]
    train_net("configs/Demo/clip_sdm_add.yml", rgbt, *fp32_opts)
    fp32 = torch.load(tmp_path / "fp32" / "model_final.pth", map_location="cpu")["model"]
    key = "image_encoder.visual.conv1.weight"
    assert not torch.equal(fp32[key], final["model"][key])
    assert torch.allclose(fp32[key], final["model"][key], atol=0.05)

    eval_only_reproduces(
        "configs/Demo/clip_sdm_add.yml", rgbt, opts, out_dir / "model_final.pth",
        tmp_path / "eval", "RGBTPEDES", out,
    )  # fmt: skip
