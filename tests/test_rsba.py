"""RSBA: its losses against hand-computed values and plain loops, the CVSC fusion, Table 4's
switches, the two learning rates, and training plus ``--eval-only`` through
``tools/train_net.py`` on SYSU-MM01- and RegDB-format sets with their caption files."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from plugins.data.datasets.vi_reid import build_vi_dataset  # noqa: E402
from plugins.engine import build_config  # noqa: E402
from plugins.engine.lr_schedule import build_epoch_lr_scheduler, uses_epoch_schedule  # noqa: E402
from plugins.engine.optimizer import build_plugin_optimizer  # noqa: E402
from projects.rsba.losses import (  # noqa: E402
    contrastive_alignment_loss,
    modality_shared_loss,
    similarity_consistency_loss,
)
from projects.rsba.model import CrossViewFusion, other_views  # noqa: E402
from tests.fixtures_model import ROOT  # noqa: E402
from tests.fixtures_vi import CLIP_VI_SHORT_RUN, write_synthetic_vi  # noqa: E402
from tests.fixtures_vi_methods import PIDS, build_vi_model, vi_batch  # noqa: E402
from tests.test_train_net import eval_only_reproduces, train_net  # noqa: E402

DEMO = "configs/Demo/regdb_rsba.yml"
REAL = [f"configs/{d}/rsba.yml" for d in ("SYSUMM01", "RegDB", "LLCM")]
ABLATION = [f"configs/SYSUMM01/rsba_ablation/{n}.yml" for n in
            ("0_baseline", "1_esfa", "2_esfa_csia", "3_esfa_cvsc")]  # fmt: skip


def build(config=DEMO, *opts):
    return build_vi_model(config, *opts)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.zeros(16, 77, dtype=torch.long)
    text[:, 0] = 49406
    text[:, 1:9] = torch.randint(1, 40000, (16, 8), generator=g)
    text[:, 9] = 49407
    return {**vi_batch(g), "text": text}  # images drawn after the tokens, as before


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def test_modality_shared_loss_by_hand():
    # One identity, 1-d features: visible 0, 2; infrared 1, 5.
    # vis 0: D_intra 2, D_across (1 + 5) / 2 = 3 -> 1;  vis 2: 2 vs (1 + 3) / 2 = 2 -> 0
    # ir 1: D_intra 4, D_across (1 + 1) / 2 = 1 -> 9;  ir 5: 4 vs (5 + 3) / 2 = 4 -> 0
    loss = modality_shared_loss(
        torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [5.0]]), torch.tensor([7, 7])
    )
    assert loss.item() == pytest.approx((1 + 0 + 9 + 0) / 4, abs=1e-5)


def _plain_mse(f_vis, f_ir, pids):
    feats = list(f_vis) + list(f_ir)
    mods = [0] * len(f_vis) + [1] * len(f_ir)
    labels = list(pids) * 2
    terms = []
    for i, f in enumerate(feats):
        intra = [torch.dist(f, feats[j]) for j in range(len(feats))
                 if j != i and labels[j] == labels[i] and mods[j] == mods[i]]  # fmt: skip
        across = [torch.dist(f, feats[j]) for j in range(len(feats))
                  if labels[j] == labels[i] and mods[j] != mods[i]]  # fmt: skip
        if intra and across:
            terms.append((sum(intra) / len(intra) - sum(across) / len(across)) ** 2)
    return sum(terms) / len(terms)


def test_modality_shared_loss_matches_a_plain_loop():
    torch.manual_seed(3)
    f_vis, f_ir = torch.randn(8, 5), torch.randn(8, 5)
    pids = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])  # identity 3: one per modality, no term
    assert modality_shared_loss(f_vis, f_ir, pids).item() == pytest.approx(
        _plain_mse(f_vis, f_ir, pids.tolist()).item(), rel=1e-5
    )
    # Nobody has a second same-modality sample: zero, still differentiable.
    f = torch.randn(2, 3, requires_grad=True)
    zero = modality_shared_loss(f, f + 1, torch.tensor([0, 1]))
    zero.backward()
    assert zero.item() == 0.0 and f.grad is not None


def test_similarity_consistency_loss_by_hand():
    r = 1 / math.sqrt(2)
    f_vis, t_vis = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    f_ir, t_ir = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 2.0]])
    # (s(f_vis, t_vis) - s(t_ir, t_vis))^2 = (r - r)^2; (s(f_ir, t_ir) - s(t_vis, t_ir))^2 = (1 - r)^2
    loss = similarity_consistency_loss(f_vis, t_vis, f_ir, t_ir)
    assert loss.item() == pytest.approx((1 - r) ** 2, abs=1e-6)
    # Eq. 14: the multi-view m_vis replaces t_vis in the visible term: (1 - 0)^2 + (1 - r)^2
    m_vis = torch.tensor([[3.0, 0.0]])
    loss = similarity_consistency_loss(f_vis, t_vis, f_ir, t_ir, m_vis=m_vis)
    assert loss.item() == pytest.approx(1 + (1 - r) ** 2, abs=1e-6)


def test_contrastive_alignment_loss_matches_a_plain_loop():
    torch.manual_seed(4)
    f_vis, t_vis, f_ir, t_ir = (torch.randn(5, 6) for _ in range(4))
    tau = 0.5

    def direction(a, b):  # -1/N sum_i log exp(s(a_i, b_i)/tau) / sum_j exp(s(a_i, b_j)/tau)
        total = 0.0
        for i in range(len(a)):
            sims = [F.cosine_similarity(a[i], b[j], dim=0) / tau for j in range(len(b))]
            total -= sims[i] - torch.logsumexp(torch.stack(sims), 0)
        return total / len(a)

    expected = (direction(f_vis, t_vis) + direction(f_ir, t_ir) + direction(t_vis, f_vis)
                + direction(t_ir, f_ir))  # fmt: skip
    got = contrastive_alignment_loss(f_vis, t_vis, f_ir, t_ir, tau)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_cross_view_fusion_equations():
    torch.manual_seed(5)
    fusion = CrossViewFusion(6)
    t, views = torch.randn(3, 6), torch.randn(3, 2, 6)
    # Eq. 9-10 written out for two views.
    logits = torch.stack([(fusion.q(t) * fusion.k(views[:, a])).sum(1) for a in range(2)], 1)
    a = (logits / math.sqrt(6)).softmax(1)
    mixed = a[:, :1] * fusion.v(views[:, 0]) + a[:, 1:] * fusion.v(views[:, 1])
    assert torch.allclose(fusion(t, views), t + fusion.a(mixed), atol=1e-6)
    # One view: the softmax weight is exactly 1, so W_q and W_k get no gradient.
    out = fusion(t, views[:, :1])
    assert torch.allclose(out, t + fusion.a(fusion.v(views[:, 0])), atol=1e-6)
    out.sum().backward()
    assert fusion.q.weight.grad.abs().max() == 0 and fusion.v.weight.grad.abs().max() > 0


def test_other_views_are_same_identity_and_never_the_item_itself():
    pids = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        picks = other_views(pids, 1, generator=g)
        assert picks.shape == (8, 1)
        assert torch.equal(pids[picks[:, 0]], pids)
        assert bool((picks[:, 0] != torch.arange(8)).all())
    two = other_views(torch.tensor([0, 0, 0, 1, 1, 1]), 2, generator=g)
    assert all(len(set(row.tolist()) | {i}) == 3 for i, row in enumerate(two))
    with pytest.raises(ValueError, match="NUM_INSTANCE above NUM_VIEWS"):
        other_views(torch.tensor([0, 0, 1]), 1)


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", REAL + ABLATION)
def test_real_configs_schedule_the_printed_epochs(path):
    """120 epochs at 3e-4, x0.1 at epochs 40 and 70 counted from the start (fast-reid's
    schedule counts them after its warm-up), no warm-up; an epoch as AGW's sampler counts it."""
    cfg = build_config(os.path.join(ROOT, path), ["MODEL.DEVICE", "cpu"])
    assert uses_epoch_schedule(cfg) and cfg.DATALOADER.VI_EPOCH == "sampler"
    assert cfg.SOLVER.WARMUP_EPOCHS == 0 and cfg.SOLVER.WARMUP_ITERS == 0
    param = torch.nn.Parameter(torch.zeros(1))
    schedule = build_epoch_lr_scheduler(cfg, torch.optim.Adam([param], lr=cfg.SOLVER.BASE_LR))
    lrs = [schedule["epoch_sched"].lrs_at(e)[0] for e in (0, 39, 40, 69, 70, 119)]
    assert lrs == pytest.approx([3e-4, 3e-4, 3e-5, 3e-5, 3e-6, 3e-6])
    # AGW's weight decay on every parameter, biases included (5e-4 said, not inherited).
    s = cfg.SOLVER
    assert s.WEIGHT_DECAY == s.WEIGHT_DECAY_NORM == s.WEIGHT_DECAY_BIAS == 5e-4


def test_real_configs_follow_the_paper():
    for path in REAL:
        cfg = build_config(os.path.join(ROOT, path), ["MODEL.DEVICE", "cpu"])
        r = cfg.MODEL.RSBA
        assert (r.ESFA, r.CSIA, r.CVSC, r.NUM_VIEWS) == (True, True, True, 1)
        assert (r.LAMBDA1, r.LAMBDA2, r.TEXT_LR, r.FUSION_LR) == (0.25, 0.2, 1e-6, 1e-6)
        s = cfg.SOLVER
        assert (s.BASE_LR, s.MAX_EPOCH, list(s.STEPS), s.GAMMA) == (3e-4, 120, [40, 70], 0.1)
        assert s.IMS_PER_BATCH == 64 and cfg.DATALOADER.NUM_INSTANCE == 4  # 8 x (4 + 4)
        assert cfg.DATALOADER.SAMPLER_TRAIN == "ModalityIdentitySampler"
        assert cfg.MODEL.CLIP.NAME == "RN50" and cfg.MODEL.CLIP.MODALITY_SPECIFIC == "stem"
        assert list(cfg.INPUT.SIZE_TRAIN) == [288, 144] and cfg.DATASETS.VI_CAPTIONS


@pytest.mark.parametrize(
    "path, expected",
    zip(ABLATION + [DEMO], [{"loss_id", "loss_mse"}, {"loss_id", "loss_mse", "loss_con"},
        {"loss_id", "loss_mse", "loss_con", "loss_sc"}, {"loss_id", "loss_mse", "loss_con"},
        {"loss_id", "loss_mse", "loss_con", "loss_sc"}]),
)  # fmt: skip
def test_table4_rows_train_their_terms(path, expected):
    tiny = [
        "MODEL.CLIP.NAME",
        "tiny-rn",
        "MODEL.BACKBONE.PRETRAIN",
        "False",
        "MODEL.CLIP.WEIGHTS",
        "",
    ]
    tiny += ["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]"]
    cfg, model = build(path, *tiny)
    model.train()
    losses = model(batch())
    assert set(losses) == expected
    sum(losses.values()).backward()
    assert model.visual.visible[0].conv1.weight.grad.abs().sum() > 0
    assert model.visual.infrared[0].conv1.weight.grad.abs().sum() > 0
    uses_text = "loss_con" in expected or "loss_sc" in expected
    assert (model.text is not None) == uses_text
    if uses_text:
        assert model.text.token_embedding.weight.grad.abs().sum() > 0
    assert hasattr(model, "fusion") == cfg.MODEL.RSBA.CVSC


def test_weights_and_identity_loss_of_eq15():
    cfg, model = build()
    model.train()
    b = batch()
    losses = model(b)
    torch.manual_seed(0)
    for key, switch in (("loss_con", "MODEL.RSBA.LAMBDA1"), ("loss_sc", "MODEL.RSBA.LAMBDA2")):
        _, doubled = build(DEMO, switch, str(2 * cfg.MODEL.RSBA[switch.split(".")[-1]]))
        doubled.train()
        torch.manual_seed(1)
        other = doubled(b)
        torch.manual_seed(1)
        again = model(b)
        assert other[key].item() == pytest.approx(2 * again[key].item(), rel=1e-5)
    # Eq. 1: the visible and the infrared mean cross-entropies, summed.
    with torch.no_grad():
        logits = model.identity_logits(model.image_features(b))
    expected = F.cross_entropy(logits[:8], PIDS[:8]) + F.cross_entropy(logits[8:], PIDS[8:])
    assert losses["loss_id"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_missing_captions_and_unpaired_batches_fail_clearly():
    _, model = build()
    model.train()
    b = batch()
    del b["text"]
    with pytest.raises(KeyError, match="DATASETS.VI_CAPTIONS"):
        model(b)
    b = batch()
    b["targets"] = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3] + [1, 1, 0, 0, 2, 2, 3, 3])
    with pytest.raises(ValueError, match="not paired"):
        model(b)
    with pytest.raises(ValueError, match="CVSC compensates"):
        build(DEMO, "MODEL.RSBA.ESFA", "False", "MODEL.RSBA.CSIA", "False")


def test_text_encoder_and_fusion_train_at_their_own_lr():
    cfg, model = build(REAL[0], "MODEL.CLIP.NAME", "tiny-rn", "MODEL.BACKBONE.PRETRAIN", "False",
                       "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]")  # fmt: skip
    optimizer, _ = build_plugin_optimizer(cfg, model)
    names = {id(p): n for n, p in model.named_parameters()}
    lr = {names[id(g["params"][0])]: g["lr"] for g in optimizer.param_groups}
    assert lr["text.transformer.resblocks.0.mlp.c_fc.weight"] == pytest.approx(1e-6)
    assert lr["fusion.q.weight"] == pytest.approx(1e-6)
    assert lr["visual.visible.0.conv1.weight"] == pytest.approx(3e-4)
    assert lr["classifier.weight"] == pytest.approx(3e-4)
    assert "bottleneck.bias" not in lr  # BNNeck: no shift


def test_inference_needs_no_caption():
    _, model = build(DEMO, "MODEL.TRAINING_HEADS", "False")
    assert model.text is None and not hasattr(model, "fusion")
    model.eval()
    images = torch.rand(4, 3, 64, 32) * 255
    feats = model({"images": images, "modalities": torch.tensor([0, 1, 0, 1])})
    assert feats.shape == (4, model.embed_dim)


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------
E2E = CLIP_VI_SHORT_RUN + [
    "SOLVER.MAX_EPOCH", "2",
    "SOLVER.STEPS", "[1]",
    "DATASETS.VI_CAPTIONS", "captions_synthetic.json",
]  # fmt: skip


@pytest.mark.parametrize(
    "name, config", [("SYSUMM01", "configs/SYSUMM01/rsba.yml"), ("RegDB", DEMO)]
)
def test_trains_with_captions_and_eval_only_reproduces(name, config, tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_synthetic_vi(name, data)
    out = tmp_path / "train"
    opts = E2E + ["OUTPUT_DIR", str(out)]
    log = train_net(config, str(data), *opts)
    for loss in ("loss_id", "loss_mse", "loss_con", "loss_sc"):
        assert loss in log, loss
    # Two epochs of AGW's two-modality sampler: int(max(n_vis, n_ir) / (P K)) + 1 batches each,
    # P K = 8 / 2, not fast-reid's (n_vis + n_ir) // 8.
    monkeypatch.setenv("FASTREID_DATASETS", str(data))
    train = build_vi_dataset(build_config(os.path.join(ROOT, config)), name).train
    n_vis = sum(item.modality == "visible" for item in train)
    per_epoch = max(n_vis, len(train) - n_vis) // 4 + 1
    assert per_epoch != len(train) // 8
    assert f"iteration 0 of {2 * per_epoch}" in log
    evaluated = eval_only_reproduces(
        config, str(data), opts, out / "model_final.pth", tmp_path / "eval", name, log
    )
    assert "training-only entries" in evaluated
