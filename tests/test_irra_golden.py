"""Parity with IRRA's own code: its checkpoint loads here and gives its features, losses and
metrics (golden files in ``tests/data/irra_golden``, made by running anosorae/IRRA; see the
README there).

The checkpoint is regenerated from the seeded recipe of ``tests/fixtures_golden.py`` in IRRA's
layout and loaded through ``MODEL.WEIGHTS`` as a user's ``best.pth`` would be. Each parity check
also shows that it can fail: a dropped converted key, GELU in place of QuickGELU and IRRA's test
resize done bicubically each move the outputs far beyond the tolerance.
"""

import json
import os
import subprocess
import sys

import plugins  # noqa: F401  (fastreid compatibility fixes, registration)

# isort: split
import pytest
import torch
from fastreid.modeling.meta_arch import build_model
from fastreid.utils.events import EventStorage
from PIL import Image

from plugins.config import QUICKGELU_KEY, inference_only, read_model_record
from plugins.data.captions import tokenize
from plugins.data.transforms import PairTransform, read_image
from plugins.engine import build_config
from plugins.engine.checkpoint import Checkpointer
from plugins.modeling.clip import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD
from plugins.modeling.irra_checkpoint import (
    IRRACheckpointError,
    from_irra_token_ids,
    is_irra_checkpoint,
    to_irra_state_dict,
)
from tests.fixtures_golden import content_sha256, golden_state_dict, read_layout
from tests.fixtures_model import ROOT
from tests.test_train_net import TRAIN_NET

GOLDEN = ROOT / "tests" / "data" / "irra_golden"
CONFIG = "configs/CUHKPEDES/irra.yml"
OPTS = [
    "MODEL.CLIP.NAME", str(GOLDEN / "clip.json"),
    "MODEL.CLIP.STRIDE", "16",
    "MODEL.BACKBONE.PRETRAIN", "False",
    "MODEL.CLIP.WEIGHTS", "",
    "MODEL.DEVICE", "cpu",
    "MODEL.IRR.DEPTH", "2",
    "INPUT.SIZE_TRAIN", "[96, 32]",
    "INPUT.SIZE_TEST", "[96, 32]",
    "DATALOADER.NUM_WORKERS", "0",
    "DATALOADER.TEST_NUM_WORKERS", "0",
]  # fmt: skip
FEATURE_ATOL = 1e-5
LOSS_RTOL = 1e-5


def golden_json(name):
    with open(GOLDEN / name, encoding="utf-8") as f:
        return json.load(f)


RESULTS = golden_json("reference_results.json")
RECORDS = golden_json("inputs.json")["records"]
REFERENCE = torch.load(GOLDEN / "reference_outputs.pt", map_location="cpu", weights_only=True)


def irra_state_dict():
    state = golden_state_dict(read_layout(GOLDEN / "layout.json"))
    assert content_sha256(state) == RESULTS["weights_sha256"]
    return state


@pytest.fixture(scope="module")
def irra_best(tmp_path_factory):
    """The regenerated model saved as IRRA's Checkpointer saves best.pth (with its optimizer and
    scheduler states, which do not load here)."""
    path = tmp_path_factory.mktemp("irra") / "best.pth"
    torch.save({"model": irra_state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 1}, path)
    return str(path)


def evaluation_model(weights, *opts):
    cfg = build_config(str(ROOT / CONFIG), OPTS + ["MODEL.WEIGHTS", weights, *opts])
    inference_only(cfg, weights)
    model = build_model(cfg)
    Checkpointer(model).load(weights, strict=True, evaluation=True)
    return cfg, model.eval()


@torch.no_grad()
def plugin_features(cfg, model):
    transform = PairTransform.from_config(cfg, is_train=False)
    images = torch.stack([transform(read_image(str(GOLDEN / "imgs" / r["file"]))) for r in RECORDS])
    ids = torch.stack([tokenize(r["caption"], 77) for r in RECORDS])
    return model.encode_image({"images": images}), model.encode_text(ids), ids


def max_diff(a, b):
    return float((a - b).abs().max())


def test_the_recipe_and_the_layout_are_irras(irra_best):
    checkpoint = torch.load(irra_best, weights_only=True)
    assert is_irra_checkpoint(checkpoint)
    assert read_model_record(irra_best) == {QUICKGELU_KEY: True}  # IRRA's CLIP: QuickGELU


def test_features_equal_irras(irra_best):
    cfg, model = evaluation_model(irra_best)
    assert cfg.MODEL.CLIP.QUICKGELU is True
    image, text, ids = plugin_features(cfg, model)
    # IRRA's tokenizer and this project's give the same ids for these captions.
    assert torch.equal(ids, REFERENCE["caption_ids"])
    assert max_diff(image, REFERENCE["image_feats"]) < FEATURE_ATOL
    assert max_diff(text, REFERENCE["text_feats"]) < FEATURE_ATOL


def test_the_feature_check_fails_on_a_dropped_key_gelu_or_bicubic_resize(irra_best, tmp_path):
    state = irra_state_dict()
    del state["base_model.visual.transformer.resblocks.1.mlp.c_proj.bias"]
    del state["base_model.transformer.resblocks.1.mlp.c_proj.bias"]
    dropped = str(tmp_path / "dropped.pth")
    torch.save({"model": state}, dropped)
    cfg = build_config(str(ROOT / CONFIG), OPTS + ["MODEL.WEIGHTS", dropped])
    inference_only(cfg, dropped)
    model = build_model(cfg)
    # Loaded leniently, as a user's initialisation would be, the two biases keep random values.
    Checkpointer(model).load(dropped, strict=False, evaluation=True)
    image, text, _ = plugin_features(cfg, model.eval())
    assert max_diff(image, REFERENCE["image_feats"]) > 100 * FEATURE_ATOL
    assert max_diff(text, REFERENCE["text_feats"]) > 100 * FEATURE_ATOL

    cfg, model = evaluation_model(irra_best)
    gelu_cfg = build_config(str(ROOT / CONFIG), OPTS + ["MODEL.CLIP.QUICKGELU", "False"])
    inference_only(gelu_cfg, None)
    gelu = build_model(gelu_cfg)
    gelu.load_state_dict(model.state_dict())
    image, text, _ = plugin_features(gelu_cfg, gelu.eval())
    assert max_diff(image, REFERENCE["image_feats"]) > 100 * FEATURE_ATOL
    assert max_diff(text, REFERENCE["text_feats"]) > 100 * FEATURE_ATOL

    cfg, model = evaluation_model(irra_best, "INPUT.RESIZE_INTERPOLATION", "bicubic")
    image, _, _ = plugin_features(cfg, model)
    assert max_diff(image, REFERENCE["image_feats"]) > 100 * FEATURE_ATOL


def test_losses_equal_irras_on_its_masked_batch(irra_best):
    cfg = build_config(
        str(ROOT / CONFIG),
        OPTS + ["MODEL.WEIGHTS", irra_best, "MODEL.HEADS.NUM_CLASSES", str(RESULTS["num_classes"])],
    )
    assert cfg.MODEL.IRR.GLOBAL_CAPTION == "masked" and cfg.MODEL.IRR.ATTEND_PADDING
    assert cfg.MODEL.RETRIEVAL.LOGIT_SCALE == RESULTS["logit_scale"]
    inference_only(cfg, irra_best)
    cfg.MODEL.TRAINING_HEADS = True
    model = build_model(cfg)
    Checkpointer(model).load(irra_best, strict=True)
    # IRRA's batch went through its test transform (normalised); the model here normalises
    # 0-255 images itself.
    mean = torch.tensor(CLIP_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_PIXEL_STD).view(1, 3, 1, 1)
    batch = {
        "images": REFERENCE["batch_images"] * std + mean,
        "targets": REFERENCE["batch_pids"],
        "text": REFERENCE["batch_caption_ids"],
        "text_mlm": from_irra_token_ids(REFERENCE["batch_mlm_ids"]),
        "text_mlm_labels": REFERENCE["batch_mlm_labels"],
    }
    model.train()
    with torch.no_grad(), EventStorage(0):
        losses = model(batch)
    expected = RESULTS["losses"]
    for ours, theirs in (
        ("loss_sdm", "sdm_loss"),
        ("loss_id", "id_loss"),
        ("loss_irr", "mlm_loss"),
    ):
        assert float(losses[ours]) == pytest.approx(expected[theirs], rel=LOSS_RTOL), ours

    # The unmasked caption (the papers' text) is another function: the check can fail.
    cfg.defrost()
    cfg.MODEL.IRR.GLOBAL_CAPTION = "unmasked"
    other = build_model(cfg)
    other.load_state_dict(model.state_dict())
    with torch.no_grad(), EventStorage(0):
        unmasked = other.train()(batch)
    for ours, theirs in (("loss_sdm", "sdm_loss"), ("loss_id", "id_loss")):
        assert float(unmasked[ours]) != pytest.approx(expected[theirs], rel=LOSS_RTOL), ours


def write_golden_cuhkpedes(root):
    """The golden images and captions in CUHK-PEDES's official layout (every split)."""
    folder = root / "CUHK-PEDES"
    (folder / "imgs" / "golden").mkdir(parents=True)
    entries = []
    for split in ("train", "val", "test"):
        for r in RECORDS:
            entries.append(
                {
                    "split": split,
                    "id": r["pid"] + 1,
                    "file_path": f"golden/{r['file']}",
                    "captions": [r["caption"]],
                    "processed_tokens": [],
                }
            )
    for r in RECORDS:
        Image.open(GOLDEN / "imgs" / r["file"]).save(folder / "imgs" / "golden" / r["file"])
    (folder / "reid_raw.json").write_text(json.dumps(entries))
    return str(root)


def test_eval_only_gives_irras_metrics(irra_best, tmp_path):
    data = write_golden_cuhkpedes(tmp_path / "data")
    out = tmp_path / "eval"
    cmd = [sys.executable, TRAIN_NET, "--config-file", str(ROOT / CONFIG), "--eval-only"]
    cmd += OPTS + ["MODEL.WEIGHTS", irra_best, "OUTPUT_DIR", str(out), "TEST.IMS_PER_BATCH", "8"]
    env = dict(os.environ, FASTREID_DATASETS=data, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "IRRA's layout" in log and "QuickGELU" in log
    with open(out / "results.json") as f:
        ours = json.load(f)["CUHKPEDES"]
    for key, value in RESULTS["metrics"].items():
        assert ours[key] == pytest.approx(value, abs=1e-4), key


def test_convert_tool_round_trip(irra_best, tmp_path):
    tool = str(ROOT / "tools" / "convert_checkpoint.py")
    ours = tmp_path / "ours.pth"
    run = [sys.executable, tool]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")

    def call(*args):
        proc = subprocess.run(run + list(map(str, args)), env=env, capture_output=True, text=True)
        return proc.returncode, proc.stdout + proc.stderr

    status, out = call("--from", "irra", irra_best, ours)
    assert status == 0, out
    converted = torch.load(ours, weights_only=True)
    assert converted["model_record"] == {QUICKGELU_KEY: True}
    assert not is_irra_checkpoint(converted)
    # The converted file evaluates exactly as the original.
    cfg, a = evaluation_model(irra_best)
    _, b = evaluation_model(str(ours))
    for x, y in zip(plugin_features(cfg, a), plugin_features(cfg, b)):
        assert torch.equal(x, y)

    back = tmp_path / "irra_export"
    status, out = call("--to", "irra", "--config-file", ROOT / CONFIG, ours, back, *OPTS)
    assert status == 0, out
    exported = torch.load(back / "best.pth", weights_only=True)["model"]
    original = irra_state_dict()
    assert exported.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(exported[key], value), key
    import yaml

    arguments = yaml.safe_load((back / "configs.yaml").read_text())
    assert arguments["output_dir"] == str(back.resolve())
    assert arguments["loss_names"] == "sdm+mlm+id" and arguments["cmt_depth"] == 2
    assert arguments["img_size"] == [96, 32] and arguments["temperature"] == pytest.approx(0.02)

    status, out = call("--from", "irra", ours, tmp_path / "again.pth")
    assert status == 1 and "not in IRRA's layout" in out


def test_unknown_or_foreign_entries_are_errors(tmp_path):
    state = irra_state_dict()
    state["memory_bank.weight"] = torch.zeros(2, 2)
    path = tmp_path / "modified.pth"
    torch.save({"model": state}, path)
    cfg = build_config(str(ROOT / CONFIG), OPTS + ["MODEL.WEIGHTS", str(path)])
    inference_only(cfg, str(path))
    model = build_model(cfg)
    with pytest.raises(IRRACheckpointError, match="memory_bank.weight"):
        Checkpointer(model).load(str(path), strict=True, evaluation=True)
    with pytest.raises(IRRACheckpointError, match="no counterpart"):
        to_irra_state_dict({"fusion.weight": torch.zeros(1)})


def test_clip_retrieval_drops_the_irr_branch_and_classifier(irra_best, caplog):
    """CLIP + SDM evaluates an IRRA checkpoint: the IRR branch and classifier are known and
    unused, logged and not loaded; the features are IRRA's."""
    cfg = build_config(
        str(ROOT / "configs/CUHKPEDES/clip_sdm.yml"), OPTS + ["MODEL.WEIGHTS", irra_best]
    )
    inference_only(cfg, irra_best)
    model = build_model(cfg)
    with caplog.at_level("INFO"):
        Checkpointer(model).load(irra_best, strict=True, evaluation=True)
    assert "not used by this CLIPRetrieval model" in caplog.text
    image, text, _ = plugin_features(cfg, model.eval())
    assert max_diff(image, REFERENCE["image_feats"]) < FEATURE_ATOL
    assert max_diff(text, REFERENCE["text_feats"]) < FEATURE_ATOL


def test_search_index_and_onnx_export_read_irras_checkpoint(irra_best, tmp_path):
    """build_index (hence search.py and the search page) and export_onnx load IRRA's best.pth
    as it is, and encode as IRRA's code does."""
    from plugins.search import SearchIndex, build_index
    from plugins.search.onnx_encoders import OnnxEncoders, compare_with_torch
    from tests.test_onnx_export import TOL, export_onnx

    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for r in RECORDS:
        Image.open(GOLDEN / "imgs" / r["file"]).save(gallery / r["file"])
    index_dir = str(tmp_path / "index")
    opts = OPTS + ["MODEL.WEIGHTS", irra_best]
    build_index(str(ROOT / CONFIG), opts, str(gallery), index_dir, echo=lambda *a, **k: None)
    index = SearchIndex.load(index_dir)
    stored = torch.from_numpy(index.index.reconstruct_n(0, len(index)))
    order = [
        RECORDS.index(next(r for r in RECORDS if r["file"] in item.path)) for item in index.items
    ]
    expected = torch.nn.functional.normalize(REFERENCE["image_feats"][order], dim=1)
    assert max_diff(stored, expected) < FEATURE_ATOL

    out = tmp_path / "onnx"
    proc = export_onnx("--config-file", ROOT / CONFIG, *opts, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    _, model = evaluation_model(irra_best)
    stats = compare_with_torch(model, OnnxEncoders(str(out), device="cpu"))
    for side in ("image", "text"):
        assert stats[side]["max_abs_diff"] <= TOL * stats[side]["scale"], (side, stats)
