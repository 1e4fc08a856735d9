"""A resumed seeded CPU run equals the uninterrupted run tensor for tensor; unfillable batches
stop before training with a message."""

import os
import shutil
import subprocess
import sys

import torch

from tests.test_train_net import ROOT, TINY, TRAIN_NET, train_net

RUN = [
    "SOLVER.IMS_PER_BATCH", "4",
    "SOLVER.MAX_EPOCH", "4",
    "SOLVER.CHECKPOINT_PERIOD", "1",
    "TEST.EVAL_PERIOD", "2",
    "MODEL.CLIP.NAME", "tiny-vit",
]  # fmt: skip


def load_model(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_resumed_run_equals_the_uninterrupted_one(rgbt, tmp_path):
    # MGANet: dropout in ATF, random caption masking, flip / crop: every source of randomness.
    full_dir = tmp_path / "full"
    train_net("configs/Demo/mganet.yml", rgbt, *RUN, "OUTPUT_DIR", str(full_dir))
    checkpoints = sorted(p.name for p in full_dir.glob("model_000*.pth"))
    assert len(checkpoints) >= 3, checkpoints

    # An interrupted run: its directory holds what the full run had after epoch 2 (the
    # evaluation of epoch 2 included).
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(full_dir / "model_0001.pth", resumed_dir / "model_0001.pth")
    (resumed_dir / "last_checkpoint").write_text("model_0001.pth")
    out = train_net(
        "configs/Demo/mganet.yml",
        rgbt,
        *RUN,
        "OUTPUT_DIR", str(resumed_dir),
        # Worker processes must not change the stream: augmentation comes from sample seeds.
        "DATALOADER.NUM_WORKERS", "2",
        resume=True,
    )  # fmt: skip
    assert "from epoch 2" in out
    full = load_model(full_dir / "model_final.pth")
    resumed = load_model(resumed_dir / "model_final.pth")
    assert full.keys() == resumed.keys()
    different = [k for k in full if not torch.equal(full[k], resumed[k])]
    assert not different, f"{len(different)} of {len(full)} tensors differ: {different[:5]}"


def test_batch_that_can_never_be_filled_stops_before_training(rgbt, tmp_path):
    cmd = [sys.executable, TRAIN_NET, "--config-file", "configs/Demo/clip_sdm_rgb.yml"]
    cmd += TINY + ["OUTPUT_DIR", str(tmp_path), "DATALOADER.SAMPLER_TRAIN", "IdentitySampler"]
    cmd += ["SOLVER.IMS_PER_BATCH", "31", "DATALOADER.NUM_INSTANCE", "2"]
    env = dict(os.environ, FASTREID_DATASETS=rgbt, HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0
    assert "multiple of DATALOADER.NUM_INSTANCE" in proc.stderr
    assert "Starting training" not in proc.stdout + proc.stderr
