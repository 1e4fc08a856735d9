"""fast-reid's own Baseline (ResNet-18, BNNeck, CE + triplet) trains on synthetic VI-ReID sets
through ``tools/train_net.py`` with the two-modality sampler, reports every protocol mode, and
``--eval-only`` reproduces the metrics from the checkpoint."""

import json

import pytest

from plugins.synthetic import write_llcm, write_regdb, write_sysumm01
from tests.test_train_net import final_results, train_net

CONFIG = """
MODEL:
  META_ARCHITECTURE: Baseline
  DEVICE: cpu
  PIXEL_MEAN: [123.675, 116.28, 103.53]
  PIXEL_STD: [58.395, 57.12, 57.375]
  BACKBONE: {NAME: build_resnet_backbone, DEPTH: 18x, FEAT_DIM: 512, PRETRAIN: False,
             LAST_STRIDE: 1, NORM: BN}
  HEADS: {NAME: EmbeddingHead, NORM: BN, WITH_BNNECK: True, POOL_LAYER: GlobalAvgPool,
          NECK_FEAT: before, CLS_LAYER: Linear}
  LOSSES:
    NAME: ("CrossEntropyLoss", "TripletLoss")
    CE: {EPSILON: 0.1, SCALE: 1.0}
    TRI: {MARGIN: 0.3, HARD_MINING: True, SCALE: 1.0}
INPUT:
  SIZE_TRAIN: [64, 32]
  SIZE_TEST: [64, 32]
  REA: {ENABLED: False}
  PADDING: {ENABLED: True, SIZE: 4}
DATASETS:
  NAMES: ("{name}",)
  TESTS: ("{name}",)
DATALOADER: {SAMPLER_TRAIN: ModalityIdentitySampler, NUM_INSTANCE: 2, NUM_WORKERS: 0,
             TEST_NUM_WORKERS: 0}
SOLVER: {OPT: Adam, BASE_LR: 3.5e-4, MAX_EPOCH: 2, IMS_PER_BATCH: 8, WARMUP_ITERS: 0,
         CHECKPOINT_PERIOD: 1, LOG_PERIOD: 1}
TEST: {EVAL_PERIOD: 2, IMS_PER_BATCH: 32, VI_TRIALS: 3}
SEED: 0
"""

DATASETS = {
    "RegDB": (write_regdb, {"images_per_id": 4}, ("v2t", "t2v")),
    "LLCM": (write_llcm, {}, ("ir2vis", "vis2ir")),
    "SYSUMM01": (write_sysumm01, {}, ("all_single", "all_multi", "indoor_single", "indoor_multi")),
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_fastreid_baseline_trains_and_eval_only_reproduces(name, tmp_path):
    writer, options, modes = DATASETS[name]
    data = tmp_path / "data"
    writer(str(data), 12, seed=0, overwrite=True, **options)
    config = tmp_path / "baseline.yml"
    config.write_text(CONFIG.replace("{name}", name))
    out = tmp_path / "train"
    log = train_net(str(config), str(data), "OUTPUT_DIR", str(out))
    assert "loss_triplet" in log and "| mode" in log
    trained = json.loads((out / "results.json").read_text())[name]
    for mode in modes:
        assert {f"{mode}/R1", f"{mode}/mAP", f"{mode}/mINP", f"{mode}/R1_std"} <= set(trained)
        assert f"| {mode} " in log
    assert "ms per image" in log

    evaluated = train_net(
        str(config), str(data),
        "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"),
        eval_only=True,
    )  # fmt: skip
    assert final_results(evaluated, name) == final_results(log, name)
    again = json.loads((tmp_path / "eval" / "results.json").read_text())[name]
    assert again == pytest.approx(trained)


def test_selection_on_val_says_a_vi_dataset_is_tested_instead(tmp_path):
    data = tmp_path / "data"
    write_regdb(str(data), 8, seed=0, overwrite=True, images_per_id=4)
    config = tmp_path / "baseline.yml"
    config.write_text(CONFIG.replace("{name}", "RegDB"))
    log = train_net(
        str(config), str(data), "TEST.SELECT_ON", "val", "OUTPUT_DIR", str(tmp_path / "out")
    )
    assert "Evaluation results for RegDB (test, no val split): " in log
    assert "Evaluation results for RegDB (val)" not in log
