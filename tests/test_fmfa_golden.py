"""Parity with FMFA's own code at its release (yinhao1102/FMFA 8dfd532): an FMFA checkpoint loads
here and, with ``configs/CUHKPEDES/fmfa_authors_code.yml``, gives FMFA's features and losses on
FMFA's masked training batch (golden files in ``tests/data/fmfa_golden``, made by running FMFA's
code; see the README there).

FMFA's checkpoint has IRRA's layout, and its encoders, dataset and masking are IRRA's: the weights
are those of the IRRA golden run (``tests/data/irra_golden``), regenerated from the seeded recipe
and loaded through ``MODEL.WEIGHTS``.

With the release's settings every loss term equals FMFA's: A-SDM, EFA, ID and IRR (MLM). Two
of those settings reproduce choices of the release code that the paper's text does not make,
and the batch (two captions of one identity) exercises both:

- A-SDM (``model/objectives.py``, ``compute_a_sdm``): the weight's labelled column is
  ``labels_distribute.argmax(dim=1)``, the first column of the row's identity
  (``MODEL.FMFA.LABELLED_COLUMN first_of_identity``; Eq. 2's reading is the row's own pair);
- EFA (``compute_infonce_loss_cosine``): ``cost_im`` subtracts row b's positive but sums over
  ``dim=0``, down a column (``MODEL.FMFA.EFA_QUERY_SUM column``; Eq. 11 sums along the row).

Each check can fail: either key at the paper's reading, or the paper's config, moves the losses
beyond the tolerance.
"""

import json

import plugins  # noqa: F401  (fastreid compatibility fixes, registration)

# isort: split
import pytest
import torch
from fastreid.modeling.meta_arch import build_model
from fastreid.utils.events import EventStorage

import projects.fmfa  # noqa: F401  (registers FMFA)
from plugins.config import inference_only
from plugins.engine import build_config
from plugins.engine.checkpoint import Checkpointer
from plugins.modeling.clip import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD
from plugins.modeling.irra_checkpoint import from_irra_token_ids, is_irra_checkpoint
from tests.fixtures_golden import content_sha256, golden_state_dict, read_layout
from tests.fixtures_model import ROOT
from tests.test_irra_golden import FEATURE_ATOL, LOSS_RTOL, OPTS, max_diff, plugin_features
from tests.test_irra_golden import REFERENCE as IRRA_REFERENCE

GOLDEN = ROOT / "tests" / "data" / "fmfa_golden"
CONFIG = "configs/CUHKPEDES/fmfa_authors_code.yml"
PAPER_CONFIG = "configs/CUHKPEDES/fmfa.yml"

with open(GOLDEN / "reference_results.json", encoding="utf-8") as _f:
    RESULTS = json.load(_f)
LOSSES = RESULTS["losses"]
SETTINGS = RESULTS["settings"]
REFERENCE = torch.load(GOLDEN / "reference_outputs.pt", map_location="cpu", weights_only=True)
# FMFA's loss names -> this project's.
# FMFA's loss names -> this project's.
TERMS = (
    ("loss_asdm", "a_sdm_loss"),
    ("loss_efa", "efa_loss"),
    ("loss_id", "id_loss"),
    ("loss_irr", "mlm_loss"),
)


def fmfa_state_dict():
    state = golden_state_dict(read_layout(GOLDEN / RESULTS["layout"]))
    assert content_sha256(state) == RESULTS["weights_sha256"]
    return state


@pytest.fixture(scope="module")
def fmfa_best(tmp_path_factory):
    """The regenerated model saved as FMFA's Checkpointer saves best.pth."""
    path = tmp_path_factory.mktemp("fmfa") / "best.pth"
    torch.save({"model": fmfa_state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 1}, path)
    return str(path)


def fmfa_batch():
    """FMFA's batch in this project's form: its images went through FMFA's test transform
    (normalised; the model here normalises 0-255 images itself), its mask token is IRRA's."""
    mean = torch.tensor(CLIP_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_PIXEL_STD).view(1, 3, 1, 1)
    return {
        "images": REFERENCE["batch_images"] * std + mean,
        "targets": REFERENCE["batch_pids"],
        "text": REFERENCE["batch_caption_ids"],
        "text_mlm": from_irra_token_ids(REFERENCE["batch_mlm_ids"]),
        "text_mlm_labels": REFERENCE["batch_mlm_labels"],
    }


def training_model(weights, config=CONFIG, *opts):
    cfg = build_config(
        str(ROOT / config),
        OPTS
        + ["MODEL.WEIGHTS", weights, "MODEL.HEADS.NUM_CLASSES", str(RESULTS["num_classes"])]
        + list(opts),
    )
    inference_only(cfg, weights)
    cfg.MODEL.TRAINING_HEADS = True
    model = build_model(cfg)
    Checkpointer(model).load(weights, strict=True)
    return cfg, model.train()


@torch.no_grad()
def training_losses(model, batch):
    """The loss dict and the event-storage scalars of one training step's forward."""
    with EventStorage(0) as storage:
        losses = {k: float(v) for k, v in model(batch).items()}
        scalars = {k: float(v.latest()) for k, v in storage.histories().items()}
    return losses, scalars


@pytest.fixture(scope="module")
def ours(fmfa_best):
    cfg, model = training_model(fmfa_best)
    batch = fmfa_batch()
    losses, scalars = training_losses(model, batch)
    with torch.no_grad():
        feats = model.training_features(batch)
    return cfg, model, losses, scalars, feats


def test_the_checkpoint_is_irras_layout_and_encodes_as_fmfa(fmfa_best):
    assert RESULTS["commit"].startswith("8dfd532")
    assert is_irra_checkpoint(torch.load(fmfa_best, weights_only=True))
    cfg = build_config(str(ROOT / CONFIG), OPTS + ["MODEL.WEIGHTS", fmfa_best])
    inference_only(cfg, fmfa_best)
    model = build_model(cfg)
    Checkpointer(model).load(fmfa_best, strict=True, evaluation=True)
    image, text, _ = plugin_features(cfg, model.eval())
    # FMFA's encode_image / encode_text gave exactly IRRA's golden features (checked by the run
    # that made the golden files).
    assert max_diff(image, IRRA_REFERENCE["image_feats"]) < FEATURE_ATOL
    assert max_diff(text, IRRA_REFERENCE["text_feats"]) < FEATURE_ATOL


def test_the_config_has_fmfas_release_settings(ours):
    cfg = ours[0]
    assert cfg.MODEL.META_ARCHITECTURE == "FMFA"
    assert cfg.MODEL.IRR.GLOBAL_CAPTION == "masked"  # its dataset masks caption_ids in place
    assert cfg.MODEL.RETRIEVAL.LOGIT_SCALE == SETTINGS["logit_scale"]
    assert cfg.MODEL.FMFA.A_SDM and cfg.MODEL.FMFA.EFA
    assert cfg.MODEL.FMFA.ALPHA == SETTINGS["alpha_i2t"] == SETTINGS["alpha_t2i"]
    assert cfg.MODEL.FMFA.MARGIN_T2E == SETTINGS["margin_t2e"]
    assert cfg.MODEL.FMFA.MARGIN_I2E == SETTINGS["margin_i2e"]
    assert cfg.MODEL.FMFA.EFA_WEIGHT == SETTINGS["efa_loss_weight"]
    assert cfg.MODEL.RETRIEVAL.ID_WEIGHT == SETTINGS["id_loss_weight"]
    assert cfg.MODEL.IRR.WEIGHT == SETTINGS["mlm_loss_weight"]
    assert cfg.MODEL.IRR.DEPTH == SETTINGS["cmt_depth"]


def test_every_loss_equals_fmfas(ours):
    cfg, _, losses, _, _ = ours
    assert cfg.MODEL.FMFA.LABELLED_COLUMN == "first_of_identity"
    assert cfg.MODEL.FMFA.EFA_QUERY_SUM == "column"
    assert set(losses) == {name for name, _ in TERMS}
    for name, theirs in TERMS:
        assert losses[name] == pytest.approx(LOSSES[theirs], rel=LOSS_RTOL), name


@pytest.mark.parametrize(
    "key, value, moved",
    [
        ("MODEL.FMFA.LABELLED_COLUMN", "pair", "loss_asdm"),
        ("MODEL.FMFA.EFA_QUERY_SUM", "row", "loss_efa"),
    ],
)
def test_each_release_choice_is_needed(fmfa_best, key, value, moved):
    _, model = training_model(fmfa_best, CONFIG, key, value)
    losses, _ = training_losses(model, fmfa_batch())
    for name, theirs in TERMS:
        if name == moved:
            assert losses[name] != pytest.approx(LOSSES[theirs], rel=LOSS_RTOL), name
        else:
            assert losses[name] == pytest.approx(LOSSES[theirs], rel=LOSS_RTOL), name


def test_the_paper_config_gives_other_losses(fmfa_best):
    """The paper's reading (unmasked caption, A-SDM weights from p against the pair, lambda 1
    with 1 / lambda, no Hard_S normalisation, negatives only, Eq. 11's row sums): A-SDM, ID and
    EFA move far beyond the tolerance; IRR, which sees the masked caption in both, does not."""
    _, model = training_model(fmfa_best, PAPER_CONFIG)
    losses, _ = training_losses(model, fmfa_batch())
    for name, theirs in (("loss_asdm", "a_sdm_loss"), ("loss_id", "id_loss")):
        assert losses[name] != pytest.approx(LOSSES[theirs], rel=100 * LOSS_RTOL), name
    assert losses["loss_efa"] != pytest.approx(LOSSES["efa_loss"], rel=100 * LOSS_RTOL)
    assert losses["loss_irr"] == pytest.approx(LOSSES["mlm_loss"], rel=LOSS_RTOL)
