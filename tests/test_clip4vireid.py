"""CLIP4VI-ReID: its losses against hand-computed values, what each stage trains (and that
nothing else gets a gradient or moves), the stored text features, and training plus
``--eval-only`` through ``tools/train_net.py`` on SYSU-MM01- and RegDB-format sets."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402

from plugins.engine import build_config  # noqa: E402
from plugins.engine.stages import freeze_for_stage, model_stages  # noqa: E402
from projects.clip4vireid.losses import (  # noqa: E402
    identity_contrastive_loss,
    text_bank_ce_loss,
)
from tests.fixtures_model import ROOT  # noqa: E402
from tests.fixtures_vi import CLIP_VI_SHORT_RUN, write_synthetic_vi  # noqa: E402
from tests.test_train_net import eval_only_reproduces, train_net  # noqa: E402

DEMO = "configs/Demo/regdb_clip4vireid.yml"
REAL = [f"configs/{d}/clip4vireid.yml" for d in ("SYSUMM01", "RegDB", "LLCM")]
PIDS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3] * 2)
CODES = torch.tensor([0] * 8 + [1] * 8)


def build(config=DEMO, *opts):
    cfg = build_config(
        os.path.join(ROOT, config), ["MODEL.HEADS.NUM_CLASSES", "4", "MODEL.DEVICE", "cpu", *opts]
    )
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def config(path, *opts):
    return build_config(os.path.join(ROOT, path), ["MODEL.DEVICE", "cpu", *opts])


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.rand(16, 3, 64, 32, generator=g) * 255,
        "targets": PIDS.clone(),
        "modalities": CODES.clone(),
    }


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def test_identity_contrastive_loss_by_hand():
    # Query 0 has two positive keys (identity 0), query 1 one; logits ln 2 x cosine.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keys = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    loss = identity_contrastive_loss(q, keys, torch.tensor([0, 1]), torch.tensor([0, 0, 1]),
                                     math.log(2))  # fmt: skip
    # q0: log(2 / (2 + 2 + 1)) for both positives; q1: log(2 / (1 + 1 + 2)).
    expected = -(math.log(2 / 5) + math.log(2 / 4)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="at least one key"):
        identity_contrastive_loss(q, keys, torch.tensor([0, 7]), torch.tensor([0, 0, 1]), 1.0)


def test_identity_contrastive_loss_averages_over_every_positive():
    # Two different positives: the mean of their log-probabilities, not the diagonal's.
    q = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    loss = identity_contrastive_loss(q, keys, torch.tensor([0]), torch.tensor([0, 0, 1]), 1.0)
    z = math.e + 1 + math.exp(-1)
    assert loss.item() == pytest.approx(-(math.log(math.e / z) + math.log(1 / z)) / 2, abs=1e-6)


def test_text_bank_cross_entropy_by_hand():
    image = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    loss = text_bank_ce_loss(image, bank, torch.tensor([0, 0]), math.log(3))
    # image 0: logits (ln 3, 0) -> -log(3/4); image 1: logits (0, ln 3), target 0 -> -log(1/4).
    assert loss.item() == pytest.approx((math.log(4 / 3) + math.log(4)) / 2, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------
def test_stages_follow_the_paper_schedules():
    cfg = config(REAL[0])
    stages = {s.name: s for s in model_stages(cfg)}
    assert list(stages) == ["tsg", "ife", "hsa"]
    opts = {name: dict(zip(s.opts[::2], s.opts[1::2])) for name, s in stages.items()}
    for name in ("tsg", "ife"):
        assert opts[name]["SOLVER.MAX_EPOCH"] == 120
        assert opts[name]["SOLVER.SCHED"] == "CosineAnnealingLR"
        assert opts[name]["SOLVER.BASE_LR"] == pytest.approx(3e-4)
        assert opts[name]["SOLVER.WARMUP_FACTOR"] == pytest.approx(1e-6 / 3e-4)
        assert stages[name].warmup_epochs == 5.0
    assert opts["hsa"]["SOLVER.MAX_EPOCH"] == 180
    assert opts["hsa"]["SOLVER.SCHED"] == "MultiStepLR"
    assert opts["hsa"]["SOLVER.STEPS"] == [60, 100]
    assert stages["hsa"].warmup_epochs == 10.0
    assert cfg.SOLVER.OPT == "Adam"
    sysu = cfg.SOLVER.IMS_PER_BATCH
    regdb = config(REAL[1]).SOLVER.IMS_PER_BATCH
    assert (sysu, regdb) == (32, 16)
    assert (cfg.MODEL.CLIP4VI.LAMBDA1, cfg.MODEL.CLIP4VI.LAMBDA2) == (0.05, 0.05)
    assert list(cfg.INPUT.SIZE_TRAIN) == [288, 144] and cfg.MODEL.CLIP.NAME == "RN50"


@pytest.mark.parametrize("stages", [["hsa", "tsg"], ["tsg", "tsg"], [], ["tsg", "xyz"]])
def test_bad_stage_lists_are_refused(stages):
    with pytest.raises(ValueError, match="MODEL.CLIP4VI.STAGES"):
        build(DEMO, "MODEL.CLIP4VI.STAGES", str(stages))


TRAINS = {
    "tsg": ("prompts",),
    "ife": ("visual.shared.",),
    "hsa": ("visual.visible.", "visual.infrared.", "text.", "prompts", "bottleneck.weight",
            "classifier."),
}  # fmt: skip


@pytest.mark.parametrize("name", list(TRAINS))
def test_each_stage_trains_its_parts_only(name):
    cfg, model = build()
    stage = next(s for s in model_stages(cfg) if s.name == name)
    freeze_for_stage(model, stage)
    model.enter_stage(stage)
    model.train()
    frozen_stats = {
        n: b.clone() for n, b in model.named_buffers() if "running_mean" in n and "shared" in n
    }
    losses = model(batch())
    expected = {
        "tsg": {"loss_v2t", "loss_t2v"},
        "ife": {"loss_r2t", "loss_t2r"},
        "hsa": {"loss_id", "loss_wrt", "loss_v2tce", "loss_r2tce"},
    }[name]
    assert set(losses) == expected
    sum(losses.values()).backward()
    for n, p in model.named_parameters():
        trains = n.startswith(TRAINS[name])
        assert p.requires_grad == trains, n
        if not trains:
            assert p.grad is None, n
    moved = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum()]
    for prefix in TRAINS[name]:
        assert any(n.startswith(prefix) for n in moved), prefix
    if name == "hsa":  # the shared encoder stays fixed, its batch norms too
        for n, before in frozen_stats.items():
            assert torch.equal(dict(model.named_buffers())[n], before), n


def test_ife_uses_the_text_features_tsg_left():
    cfg, model = build()
    stages = {s.name: s for s in model_stages(cfg)}
    model.enter_stage(stages["ife"])
    bank = model.stored_text_bank()
    assert bank.shape == (4, model.embed_dim) and not bank.requires_grad
    with torch.no_grad():
        direct = model.identity_text(torch.tensor([2, 0]))
    assert torch.allclose(bank[[2, 0]], direct, atol=1e-6)
    assert model.stored_text_bank() is bank  # stored once per stage
    model.enter_stage(stages["hsa"])
    assert model._text_bank is None


def test_prompt_slots_hold_each_identitys_tokens():
    _, model = build()
    with torch.no_grad():
        before = model.identity_text(torch.tensor([0, 1]))
        model.prompts[1].add_(1.0)
        after = model.identity_text(torch.tensor([0, 1]))
    assert torch.equal(before[0], after[0]) and not torch.allclose(before[1], after[1])
    ids = model.prompt_ids
    assert ids[model.prompt_slot : model.prompt_slot + 4].tolist() == [0, 0, 0, 0]


def test_inference_model_has_visual_encoders_only():
    cfg, model = build(DEMO, "MODEL.TRAINING_HEADS", "False")
    assert model.text is None and not hasattr(model, "prompts")
    assert not hasattr(model, "classifier")
    model.eval()
    feats = model({"images": torch.rand(3, 3, 64, 32) * 255, "modalities": torch.tensor([0, 1, 1])})
    assert feats.shape == (3, model.embed_dim)


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------
E2E = CLIP_VI_SHORT_RUN + [
    "MODEL.CLIP4VI.TSG.EPOCHS", "1",
    "MODEL.CLIP4VI.IFE.EPOCHS", "1",
    "MODEL.CLIP4VI.HSA.EPOCHS", "2",
    "MODEL.CLIP4VI.HSA.STEPS", "[1]",
    "MODEL.CLIP4VI.TSG.WARMUP_EPOCHS", "0.0",
    "MODEL.CLIP4VI.IFE.WARMUP_EPOCHS", "0.0",
    "MODEL.CLIP4VI.HSA.WARMUP_EPOCHS", "0.0",
]  # fmt: skip


@pytest.mark.parametrize(
    "name, config", [("SYSUMM01", "configs/SYSUMM01/clip4vireid.yml"), ("RegDB", DEMO)]
)
def test_trains_three_stages_and_eval_only_reproduces(name, config, tmp_path):
    data = tmp_path / "data"
    write_synthetic_vi(name, data)
    out = tmp_path / "train"
    opts = E2E + ["OUTPUT_DIR", str(out)]
    log = train_net(config, str(data), *opts)
    for stage in ("tsg", "ife", "hsa"):
        assert (out / stage / "model_final.pth").is_file(), stage
    for loss in ("loss_v2t", "loss_t2v", "loss_r2t", "loss_t2r", "loss_v2tce", "loss_wrt"):
        assert loss in log, loss
    evaluated = eval_only_reproduces(
        config, str(data), opts, out / "hsa" / "model_final.pth", tmp_path / "eval", name, log
    )
    assert "training-only entries" in evaluated
