"""``TEST.SELECT_ON val``: evaluations during training on val, then the final model and the one
selected on val are both tested, and each equals ``--eval-only`` of its checkpoint."""

import json

import pytest

from tests.fixtures_text import write_cuhkpedes, write_icfgpedes
from tests.test_train_net import final_results, train_net

TRAIN = ["SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_EPOCH", "3", "TEST.EVAL_PERIOD", "1"]


def results_line(output, label):
    """The 'Evaluation results for <label>: ...' line as a dict."""
    marker = f"Evaluation results for {label}: "
    lines = [line.split(marker, 1)[1] for line in output.splitlines() if marker in line]
    assert lines, output[-3000:]
    return {k: float(v) for k, v in (p.split(" ") for p in lines[-1].split(", "))}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    write_cuhkpedes(str(root))
    write_icfgpedes(str(root))
    return str(root)


def test_final_and_val_selected_models_are_both_tested(data, tmp_path):
    out = tmp_path / "train"
    log = train_net(
        "configs/Demo/tipr_clip_sdm.yml", data, *TRAIN,
        "TEST.SELECT_ON", "val", "OUTPUT_DIR", str(out),
    )  # fmt: skip
    assert log.count("Evaluation results for CUHKPEDES (val): ") == 3  # one per epoch
    final = results_line(log, "CUHKPEDES")
    selected = [line for line in log.splitlines() if "model selected on val after epoch" in line]
    assert selected, log[-3000:]
    saved = json.loads((out / "results_val_selected.json").read_text())["CUHKPEDES"]
    written = json.loads((out / "results.json").read_text())["CUHKPEDES"]
    assert written["R1"] == pytest.approx(final["R1"], abs=0.01)

    for weights, expected in (("model_final.pth", final), ("model_best.pth", saved)):
        evaluated = train_net(
            "configs/Demo/tipr_clip_sdm.yml", data,
            "MODEL.WEIGHTS", str(out / weights), "OUTPUT_DIR", str(tmp_path / weights),
            eval_only=True,
        )  # fmt: skip
        got = final_results(evaluated, "CUHKPEDES")
        for key in ("R1", "mAP"):
            assert got[key] == pytest.approx(expected[key], abs=0.01), (weights, key)


def test_a_dataset_without_val_selects_on_test_and_says_so(data, tmp_path):
    log = train_net(
        "configs/Demo/tipr_clip_sdm.yml", data, *TRAIN,
        "DATASETS.NAMES", '("ICFGPEDES",)', "DATASETS.TESTS", '("ICFGPEDES",)',
        "TEST.SELECT_ON", "val", "OUTPUT_DIR", str(tmp_path / "icfg"),
    )  # fmt: skip
    assert "ICFGPEDES has no val split: selecting on its test split" in log
    assert "Evaluation results for ICFGPEDES (test, no val split): " in log
    assert "(val)" not in log
    assert "Evaluation results for ICFGPEDES (test, model selected on val after epoch" in log
