"""CLIP4VI-ReID: its losses against hand-computed values, the stages' printed schedules, batches,
weight decay and lr factors, what each stage trains (and that nothing else gets a gradient or
moves), the shared encoder's batch norms in HSA, CLIP's temperature across stages and resumes,
the stored text features, and training plus ``--eval-only`` through ``tools/train_net.py`` on
SYSU-MM01- and RegDB-format sets."""

import logging
import math
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402

from plugins.data.samplers import ModalityIdentityBatchSampler, RandomBatchSampler  # noqa: E402
from plugins.data.vi_build import build_vi_train_loader  # noqa: E402
from plugins.engine import build_config  # noqa: E402
from plugins.engine.checkpoint import Checkpointer  # noqa: E402
from plugins.engine.lr_schedule import build_epoch_lr_scheduler, whole_epochs  # noqa: E402
from plugins.engine.optimizer import apply_lr_factors, build_plugin_optimizer  # noqa: E402
from plugins.engine.stages import freeze_for_stage, model_stages, stage_config  # noqa: E402
from plugins.modeling.clip import build_clip_model  # noqa: E402
from projects.clip4vireid.losses import (  # noqa: E402
    identity_contrastive_loss,
    text_bank_ce_loss,
)
from tests.fixtures_model import ROOT  # noqa: E402
from tests.fixtures_vi import CLIP_VI_SHORT_RUN, write_synthetic_vi  # noqa: E402
from tests.fixtures_vi_methods import build_vi_model, vi_batch  # noqa: E402
from tests.test_train_net import eval_only_reproduces, final_results, train_net  # noqa: E402

DEMO = "configs/Demo/regdb_clip4vireid.yml"
REAL = [f"configs/{d}/clip4vireid.yml" for d in ("SYSUMM01", "RegDB", "LLCM")]


def build(config=DEMO, *opts):
    return build_vi_model(config, *opts)


def config(path, *opts):
    return build_config(os.path.join(ROOT, path), ["MODEL.DEVICE", "cpu", *opts])


def batch(seed=0):
    return vi_batch(torch.Generator().manual_seed(seed))


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
def stage_configs(cfg):
    """name -> (Stage, its frozen config with the warm-up the stage engine sets)."""
    out = {}
    for stage in model_stages(cfg):
        scfg = stage_config(cfg, stage)
        scfg.defrost()
        scfg.SOLVER.WARMUP_EPOCHS = whole_epochs(stage.warmup_epochs, stage.name)
        scfg.freeze()
        out[stage.name] = (stage, scfg)
    return out


def epoch_lrs(scfg, epochs):
    """The lr of each 0-based epoch in ``epochs`` under the stage's per-epoch schedule."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=scfg.SOLVER.BASE_LR)
    schedule = build_epoch_lr_scheduler(scfg, optimizer)["epoch_sched"]
    return [schedule.lrs_at(e)[0] for e in epochs]


@pytest.mark.parametrize("path", REAL)
def test_stages_follow_the_paper_schedules(path):
    """Sec. IV-B2 as printed: stages 1-2, 120 epochs from 1e-5 to 3e-4 over 5 epochs, then
    cosine to 1e-6; stage 3, 180 epochs from 3e-6 to 3e-4 over 10, x0.1 at epochs 60 and 100
    counted from the start (fast-reid's schedule would decay at 70 and 110)."""
    cfg = config(path)
    stages = stage_configs(cfg)
    assert list(stages) == ["tsg", "ife", "hsa"]
    for name in ("tsg", "ife"):
        stage, scfg = stages[name]
        assert scfg.SOLVER.SCHED_UNIT == "epoch" and scfg.SOLVER.MAX_EPOCH == 120
        assert scfg.SOLVER.SCHED == "CosineAnnealingLR" and scfg.SOLVER.ETA_MIN_LR == 1e-6
        lrs = epoch_lrs(scfg, [0, 4, 5, 119, 120])
        assert lrs[0] == pytest.approx(1e-5) and lrs[2] == pytest.approx(3e-4)
        assert lrs[1] == pytest.approx(1e-5 + 0.8 * (3e-4 - 1e-5))
        assert 1e-6 < lrs[3] < 1.2e-6 and lrs[4] == pytest.approx(1e-6)  # ends at 1e-6
    _, hsa = stages["hsa"]
    assert hsa.SOLVER.SCHED_UNIT == "epoch" and hsa.SOLVER.MAX_EPOCH == 180
    lrs = epoch_lrs(hsa, [0, 10, 59, 60, 99, 100, 179])
    assert lrs == pytest.approx([3e-6, 3e-4, 3e-4, 3e-5, 3e-5, 3e-6, 3e-6])
    assert cfg.SOLVER.OPT == "Adam" and cfg.DATALOADER.VI_EPOCH == "sampler"
    assert (cfg.MODEL.CLIP4VI.LAMBDA1, cfg.MODEL.CLIP4VI.LAMBDA2) == (0.05, 0.05)
    assert list(cfg.INPUT.SIZE_TRAIN) == [288, 144] and cfg.MODEL.CLIP.NAME == "RN50"


@pytest.mark.parametrize("path", REAL)
def test_stage_batches_are_the_papers_batch_size(path):
    """ "Batch size 32 (SYSU-MM01) / 16 (RegDB)": TSG's visible features and IFE's infrared
    images in random batches of that size over the whole training set (CLIP-ReID's stage 1),
    HSA's P identities x (K visible + K infrared)."""
    stages = stage_configs(config(path))
    size = 16 if "RegDB" in path else 32
    for name, modality in (("tsg", "visible"), ("ife", "infrared")):
        stage, scfg = stages[name]
        assert scfg.SOLVER.IMS_PER_BATCH == size
        assert scfg.DATALOADER.SAMPLER_TRAIN == "RandomSampler"
        assert scfg.DATASETS.VI_TRAIN_MODALITY == modality
        assert stage.train_data == ("features" if name == "tsg" else "images")
    stage, hsa = stages["hsa"]
    assert hsa.SOLVER.IMS_PER_BATCH == size and hsa.DATASETS.VI_TRAIN_MODALITY == "both"
    assert hsa.DATALOADER.SAMPLER_TRAIN == "ModalityIdentitySampler"
    assert hsa.DATALOADER.NUM_INSTANCE == 4 and stage.train_data == "images"


def test_tsg_and_ife_draw_one_modality_over_every_identity(tmp_path, monkeypatch):
    write_synthetic_vi("SYSUMM01", tmp_path)
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    cfg = config(REAL[0], "SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_WORKERS", "0")
    stages = stage_configs(cfg)
    counts = {}
    for name, code in (("tsg", 0), ("ife", 1), ("hsa", None)):
        loader = build_vi_train_loader(stages[name][1])
        data = loader.dataset
        sampler = loader.batch_sampler.sampler
        modalities = [item.modality for item in data.img_items]
        counts[name] = len(data)
        if code is None:
            assert isinstance(sampler, ModalityIdentityBatchSampler)
            assert {"visible", "infrared"} == set(modalities)
            continue
        assert isinstance(sampler, RandomBatchSampler)
        assert set(modalities) == {("visible", "infrared")[code]}
        assert data.num_classes == 6  # every training identity keeps its label
        stream = iter(loader)
        batches = [next(stream) for _ in range(3)]
        assert all(b["modalities"].eq(code).all() for b in batches)
        # Random over all identities, not 2 identities x 4 images as a PK batch of 8 would be.
        assert max(len(set(b["targets"].tolist())) for b in batches) > 2
    assert counts["tsg"] + counts["ife"] == counts["hsa"]


def test_tsg_trains_on_cached_visible_features(tmp_path, caplog, monkeypatch):
    write_synthetic_vi("SYSUMM01", tmp_path / "data")
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path / "data"))
    cfg = config(DEMO, "DATASETS.NAMES", '("SYSUMM01",)', "DATASETS.TESTS", '("SYSUMM01",)',
                 "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out"),
                 "MODEL.HEADS.NUM_CLASSES", "6")  # fmt: skip
    stage, scfg = stage_configs(cfg)["tsg"]
    image_set = build_vi_train_loader(scfg).dataset
    torch.manual_seed(0)
    model = build_model(scfg)
    freeze_for_stage(model, stage)
    model.enter_stage(stage)
    train_set = model.stage_train_set(stage, scfg, image_set)
    assert len(train_set) == len(image_set) and train_set.num_classes == 6
    assert train_set.pids == [item.pid for item in image_set.img_items]
    feats = train_set.features["image_feats"]
    assert feats.shape == (len(image_set), model.embed_dim)
    assert torch.allclose(feats, model.extract_features(scfg, image_set.img_items), atol=1e-5)
    with caplog.at_level(logging.INFO):
        again = model.stage_train_set(stage, scfg, image_set)
    assert "Reusing the cached" in caplog.text
    assert torch.equal(again.features["image_feats"], feats)
    model.train()
    b = {"image_feats": feats[:8], "targets": torch.tensor(train_set.pids[:8])}
    losses = model(b)
    assert set(losses) == {"loss_v2t", "loss_t2v"}
    sum(losses.values()).backward()
    assert model.prompts.grad.abs().sum() > 0


def test_weight_decay_and_text_lr_per_stage():
    """CLIP-ReID's weight decay per stage (1e-4 in stage 1, 5e-4 later), biases and norms
    included, and the text encoder's lr factor in HSA."""
    cfg, model = build(DEMO, "MODEL.CLIP4VI.HSA.TEXT_LR_FACTOR", "0.01")
    names = {id(p): n for n, p in model.named_parameters()}
    for name, decay in (("tsg", 1e-4), ("ife", 5e-4), ("hsa", 5e-4)):
        stage, scfg = stage_configs(cfg)[name]
        freeze_for_stage(model, stage)
        optimizer, _ = build_plugin_optimizer(scfg, model)
        apply_lr_factors(optimizer, model, stage.lr_factors)
        groups = {names[id(g["params"][0])]: g for g in optimizer.param_groups}
        assert {g["weight_decay"] for g in groups.values()} == {decay}, name
        if name == "hsa":
            assert "visual.visible.0.bn1.bias" in groups and "text.ln_final.bias" in groups
            base = scfg.SOLVER.BASE_LR
            assert groups["text.ln_final.weight"]["lr"] == pytest.approx(0.01 * base)
            assert groups["visual.visible.0.conv1.weight"]["lr"] == pytest.approx(base)
    assert config(REAL[0]).MODEL.CLIP4VI.HSA.TEXT_LR_FACTOR == 1.0  # the paper's one lr


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


def shared_norms(model):
    return {n: m for n, m in model.named_modules() if n.startswith("visual.shared.") and "bn" in n}


@pytest.mark.parametrize("mode", ["train", "frozen"])
def test_shared_encoder_batch_norms_in_hsa(mode):
    """After IFE E_s's statistics are infrared-only: in HSA ("train", the default) its batch
    norms take HSA's mixed batches (its parameters stay fixed); "frozen" keeps IFE's."""
    cfg, model = build(DEMO, "MODEL.CLIP4VI.HSA.SHARED_BN", mode)
    stages = {s.name: s for s in model_stages(cfg)}
    freeze_for_stage(model, stages["ife"])
    model.enter_stage(stages["ife"])
    model.train()
    assert all(m.training for m in shared_norms(model).values())  # E_s trains in IFE
    assert not model.visual.infrared[0].bn1.training  # E_r is frozen there
    freeze_for_stage(model, stages["hsa"])
    model.enter_stage(stages["hsa"])
    model.eval()
    model.train()  # as the trainer switches back after an evaluation
    norms = shared_norms(model)
    assert norms and all(m.training == (mode == "train") for m in norms.values())
    assert model.visual.visible[0].bn1.training  # E_v trains in HSA
    before = {n: (m.running_mean.clone(), m.weight.clone()) for n, m in norms.items()}
    sum(model(batch()).values()).backward()
    for n, m in norms.items():
        assert m.weight.grad is None and torch.equal(m.weight, before[n][1]), n
        assert torch.equal(m.running_mean, before[n][0]) == (mode == "frozen"), n
    assert config(REAL[0]).MODEL.CLIP4VI.HSA.SHARED_BN == "train"


def clip_weights(path, scale=100.0):
    """A tiny-rn CLIP state dict whose learned temperature is ``scale`` (OpenAI's RN50: 100),
    not open_clip's initial 1 / 0.07."""
    clip = build_clip_model("tiny-rn", image_size=(64, 32), resnet_last_stride=1)
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(scale))
    torch.save(clip.state_dict(), path)
    return str(path)


def test_later_stages_take_clips_temperature_from_the_checkpoint(tmp_path, caplog):
    weights = clip_weights(tmp_path / "clip.pt")
    opts = ["MODEL.CLIP4VI.LOGIT_SCALE", "0.0", "MODEL.BACKBONE.PRETRAIN", "True"]
    cfg, tsg_model = build(DEMO, *opts, "MODEL.CLIP.WEIGHTS", weights)
    assert float(tsg_model.logit_scale) == pytest.approx(100.0)
    Checkpointer(tsg_model, str(tmp_path)).save("model_final")
    saved = str(tmp_path / "model_final.pth")
    assert "clip_logit_scale" in torch.load(saved, weights_only=True)["model"]
    for stage in model_stages(cfg)[1:]:
        scfg = stage_config(cfg, stage, saved)  # built without the CLIP weights
        assert not scfg.MODEL.BACKBONE.PRETRAIN and not scfg.MODEL.CLIP.WEIGHTS
        model = build_model(scfg)
        assert float(model.logit_scale) == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's
        Checkpointer(model).load(saved, checkpointables=[], strict=True)
        with caplog.at_level(logging.INFO):
            model.enter_stage(stage)
        assert float(model.logit_scale) == pytest.approx(100.0), stage.name
        assert f"Stage '{stage.name}': similarity scale 100.00" in caplog.text


def test_checkpoint_without_temperature_loads_with_a_warning(tmp_path, caplog):
    cfg, model = build(DEMO, "MODEL.CLIP4VI.LOGIT_SCALE", "0.0")
    old = {k: v for k, v in model.state_dict().items() if k != "clip_logit_scale"}
    with torch.no_grad():
        model.clip_logit_scale.fill_(33.0)
    with caplog.at_level(logging.WARNING):
        model.load_state_dict(old, strict=True)
    assert "no CLIP temperature" in caplog.text and "MODEL.CLIP4VI.LOGIT_SCALE" in caplog.text
    assert float(model.logit_scale) == 33.0  # kept
    path = tmp_path / "old.pth"
    torch.save({"model": old}, path)
    _, inference = build(DEMO, "MODEL.TRAINING_HEADS", "False")
    Checkpointer(inference).load(str(path), strict=True, evaluation=True)  # --eval-only
    # A strict training load (the next stage, --resume) keeps the built value too.
    _, training = build(DEMO, "MODEL.CLIP4VI.LOGIT_SCALE", "0.0")
    with torch.no_grad():
        training.clip_logit_scale.fill_(21.0)
    Checkpointer(training).load(str(path), strict=True)
    assert float(training.logit_scale) == 21.0
    # Models that do not use it (RSBA) keep not saving it.
    rsba = build_config(os.path.join(ROOT, "configs/Demo/regdb_rsba.yml"),
                        ["MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_CLASSES", "4"])  # fmt: skip
    assert "clip_logit_scale" not in build_model(rsba).state_dict()


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
    scale = "14.29"  # train_net's TINY options: random weights, whose temperature is 1 / 0.07
    if name == "SYSUMM01":  # from CLIP weights whose temperature is 100, as OpenAI's RN50
        weights = clip_weights(tmp_path / "clip.pt")
        opts += ["MODEL.BACKBONE.PRETRAIN", "True", "MODEL.CLIP.WEIGHTS", weights]
        scale = "100.00"
    log = train_net(config, str(data), *opts)
    for stage in ("tsg", "ife", "hsa"):
        assert (out / stage / "model_final.pth").is_file(), stage
        assert f"Stage '{stage}': similarity scale {scale}" in log, stage
    for loss in ("loss_v2t", "loss_t2v", "loss_r2t", "loss_t2r", "loss_v2tce", "loss_wrt"):
        assert loss in log, loss
    assert "Stage 'tsg' trains on" in log and "cached feature items" in log
    evaluated = eval_only_reproduces(
        config, str(data), opts, out / "hsa" / "model_final.pth", tmp_path / "eval", name, log
    )
    assert "training-only entries" in evaluated
    if name != "SYSUMM01":
        return
    # HSA interrupted after its first epoch: --resume rebuilds it from that checkpoint, without
    # the CLIP weights, and must score with the weights' temperature again.
    (out / "hsa" / "model_final.pth").unlink()
    (out / "hsa" / "last_checkpoint").write_text("model_0000.pth")
    resumed = train_net(config, str(data), *opts, resume=True)
    assert re.search(r"Stage 3/3 'hsa': resuming", resumed)
    assert "Stage 'hsa': similarity scale 100.00" in resumed
    assert final_results(resumed, name) == final_results(log, name)
