"""CoRL: losses against hand-worked values and plain loops, frozen parts, the feature cache,
inference scores, configs, and both stages end to end through tools/train_net.py."""

import inspect
import math
import os
import re
import shutil
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401  (fastreid compatibility fixes, registration)

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402

import projects.corl  # noqa: E402, F401
from plugins.data.build import build_text_train_loader  # noqa: E402
from plugins.engine import build_config  # noqa: E402
from plugins.engine.stages import freeze_for_stage, model_stages  # noqa: E402
from plugins.evaluation import rank_metrics  # noqa: E402
from plugins.modeling.prompts import prompt_token_ids  # noqa: E402
from projects.corl import losses as corl  # noqa: E402
from projects.corl.ves import Adapter  # noqa: E402
from tests.fixtures_model import ROOT, TINY_CLIP, build_model_from, caption_batch  # noqa: E402
from tests.fixtures_text import record, write_cuhkpedes  # noqa: E402

DEMO = "configs/Demo/corl.yml"
CORL_CONFIGS = [
    "configs/CUHKPEDES/corl.yml",
    "configs/ICFGPEDES/corl.yml",
    "configs/RSTPReid/corl.yml",
    "configs/CUHKPEDES/corl_ibm_star.yml",
    "configs/CUHKPEDES/corl_ablation/0_baseline.yml",
    "configs/CUHKPEDES/corl_ablation/1_ibm.yml",
    "configs/CUHKPEDES/corl_ablation/2_ves.yml",
    "configs/CUHKPEDES/corl_ablation/3_ves_cmc.yml",
    "configs/CUHKPEDES/corl_ablation/4_ibm_ves_cmc.yml",
    DEMO,
]


def softplus(x):
    return math.log1p(math.exp(x))


def unit(angle):
    return [math.cos(angle), math.sin(angle)]


# ------------------------------------------------------------------ IBM (Eq. 9)


def test_ibm_loss_by_hand():
    # Images at angles 0, 0.5, 2; texts at 0.2, 0.9, 2.1 (unit 2-D vectors, so s = cos(a - b)).
    # Ids 0, 0, 1: (0,0) (1,1) (2,2) strong; (0,1) (1,0) weak; the four cross-id pairs negative.
    a, b = [0.0, 0.5, 2.0], [0.2, 0.9, 2.1]
    img = torch.tensor([unit(x) for x in a], dtype=torch.float64) * 3.0  # norms do not matter
    txt = torch.tensor([unit(x) for x in b], dtype=torch.float64)
    pids = torch.tensor([0, 0, 1])
    s = [[math.cos(x - y) for y in b] for x in a]
    al, be = 0.6, 0.4
    sp = sum(softplus(-10 * (s[i][i] - al)) for i in range(3))
    wp = sum(
        softplus(-5 * (s[i][j] - be)) + softplus(5 * (s[i][j] - al)) for i, j in [(0, 1), (1, 0)]
    )
    neg = sum(softplus(40 * (s[i][j] - be)) for i, j in [(0, 2), (1, 2), (2, 0), (2, 1)])
    expected = (sp + wp + neg) / 3
    assert corl.ibm_loss(img, txt, pids).item() == pytest.approx(expected, rel=1e-10)
    assert corl.ibm_star_loss(img, txt, pids).item() == pytest.approx((sp + neg) / 3, rel=1e-10)
    # A concrete number, worked out once from the formula above.
    assert expected == pytest.approx(
        (softplus(-10 * (math.cos(-0.2) - 0.6)) + softplus(-10 * (math.cos(-0.4) - 0.6))
         + softplus(-10 * (math.cos(-0.1) - 0.6))
         + softplus(-5 * (math.cos(-0.9) - 0.4)) + softplus(5 * (math.cos(-0.9) - 0.6))
         + softplus(-5 * (math.cos(0.3) - 0.4)) + softplus(5 * (math.cos(0.3) - 0.6))
         + softplus(40 * (math.cos(-2.1) - 0.4)) + softplus(40 * (math.cos(-1.6) - 0.4))
         + softplus(40 * (math.cos(1.8) - 0.4)) + softplus(40 * (math.cos(1.1) - 0.4))) / 3
    )  # fmt: skip


def ibm_by_loop(img, txt, pids, image_ids, alpha, beta, tsp, twp, tn, weak=True):
    img = [x / x.norm() for x in img]
    txt = [x / x.norm() for x in txt]
    total = 0.0
    n = len(img)
    for i in range(n):
        for j in range(n):
            s = float(img[i] @ txt[j])
            if pids[i] != pids[j]:
                total += softplus(tn * (s - beta))
            elif image_ids[i] == image_ids[j]:
                total += softplus(-tsp * (s - alpha))
            elif weak:
                total += softplus(-twp * (s - beta)) + softplus(twp * (s - alpha))
    return total / n


def test_ibm_loss_equals_a_loop_on_random_data():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(10, 6, generator=g, dtype=torch.float64)
    txt = torch.randn(10, 6, generator=g, dtype=torch.float64)
    pids = torch.tensor([3, 3, 3, 3, 5, 5, 7, 7, 7, 9])
    image_ids = torch.tensor([0, 0, 1, 2, 3, 4, 5, 5, 6, 7])  # rows 0-1 and 6-7 share an image
    args = (0.55, 0.3, 8.0, 4.0, 30.0)
    got = corl.ibm_loss(img, txt, pids, image_ids, *args)
    assert got.item() == pytest.approx(ibm_by_loop(img, txt, pids, image_ids, *args), rel=1e-10)
    star = corl.ibm_star_loss(img, txt, pids, image_ids, alpha=0.55, beta=0.3, tau_sp=8.0,
                              tau_wp=4.0, tau_n=30.0)  # fmt: skip
    assert star.item() == pytest.approx(
        ibm_by_loop(img, txt, pids, image_ids, *args, weak=False), rel=1e-10
    )
    # Defaults are the paper's.
    assert corl.ibm_loss(img, txt, pids, image_ids).item() == pytest.approx(
        ibm_by_loop(img, txt, pids, image_ids, 0.6, 0.4, 10.0, 5.0, 40.0), rel=1e-10
    )


def test_ibm_bounds_are_the_defaults_of_both_losses_and_of_the_config():
    defaults = inspect.signature(corl.ibm_loss).parameters
    assert {k: defaults[k].default for k in corl.IBM_BOUNDS} == corl.IBM_BOUNDS
    assert corl.IBM_BOUNDS == {
        "alpha": 0.6,
        "beta": 0.4,
        "tau_sp": 10.0,
        "tau_wp": 5.0,
        "tau_n": 40.0,
    }
    with pytest.raises(TypeError, match="tau_p"):
        corl.ibm_star_loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), tau_p=1.0)
    # The model reads each bound from its own config key.
    model, _ = build(DEMO, "MODEL.CORL.BETA", "0.35", "MODEL.CORL.TAU_N", "30.0")
    assert model.bounds == {**corl.IBM_BOUNDS, "beta": 0.35, "tau_n": 30.0}


def test_ibm_image_ids_make_captions_of_one_image_strong_positives():
    g = torch.Generator().manual_seed(1)
    img = torch.randn(4, 5, generator=g, dtype=torch.float64)
    txt = torch.randn(4, 5, generator=g, dtype=torch.float64)
    pids = torch.tensor([0, 0, 1, 1])
    same = torch.tensor([0, 0, 1, 2])  # rows 0 and 1: two captions of one image
    none = corl.ibm_loss(img, txt, pids)
    assert none.item() == pytest.approx(corl.ibm_loss(img, txt, pids, torch.arange(4)).item())
    assert none.item() == pytest.approx(
        ibm_by_loop(img, txt, pids, [0, 1, 2, 3], 0.6, 0.4, 10, 5, 40)
    )
    with_ids = corl.ibm_loss(img, txt, pids, same)
    assert with_ids.item() == pytest.approx(ibm_by_loop(img, txt, pids, same, 0.6, 0.4, 10, 5, 40))
    assert with_ids.item() != pytest.approx(none.item())
    # An image id shared across identities does not make a positive.
    cross = torch.tensor([0, 1, 0, 1])
    assert corl.ibm_loss(img, txt, pids, cross).item() == pytest.approx(none.item())


def test_ibm_gradients_are_finite():
    g = torch.Generator().manual_seed(2)
    img = torch.randn(8, 16, generator=g, requires_grad=True)
    txt = torch.randn(8, 16, generator=g, requires_grad=True)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    corl.ibm_loss(img * 100, txt, pids, torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])).backward()
    assert torch.isfinite(img.grad).all() and torch.isfinite(txt.grad).all()
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0


# ------------------------------------------------------------------ alignment, CRCL


def nce_loop(q, k, tau):
    q = [x / x.norm() for x in q.detach()]
    k = [x / x.norm() for x in k.detach()]
    total = 0.0
    for i in range(len(q)):
        logits = [float(q[i] @ kj) / tau for kj in k]
        total -= logits[i] - math.log(sum(math.exp(v) for v in logits))
    return total / len(q)


def test_stage1_align_losses_equal_loops():
    g = torch.Generator().manual_seed(3)
    z_t = torch.randn(6, 4, generator=g, dtype=torch.float64)
    z_hat = torch.randn(6, 4, generator=g, dtype=torch.float64)
    # Eq. 2: both directions; Eq. 3: mean squared L2 distance of the raw features.
    want = nce_loop(z_t, z_hat, 0.5) + nce_loop(z_hat, z_t, 0.5)
    assert corl.symmetric_nce(z_t, z_hat, 0.5).item() == pytest.approx(want, rel=1e-10)
    mse = sum(float(((z_hat[i] - z_t[i]) ** 2).sum()) for i in range(6)) / 6
    assert corl.feature_mse(z_hat, z_t).item() == pytest.approx(mse, rel=1e-10)


def test_correlation_loss_equals_a_loop():
    g = torch.Generator().manual_seed(4)
    z_v = torch.randn(6, 4, generator=g, dtype=torch.float64)
    z_hat = torch.randn(6, 4, generator=g, dtype=torch.float64)
    pids = [0, 0, 1, 1, 1, 2]
    tau = 0.3
    zv = [x / x.norm() for x in z_v]
    zh = [x / x.norm() for x in z_hat]

    def direction(a, b):
        total = 0.0
        for i in range(6):
            keep = [j for j in range(6) if j == i or pids[j] != pids[i]]
            logits = {j: float(a[i] @ b[j]) / tau for j in keep}
            total -= logits[i] - math.log(sum(math.exp(v) for v in logits.values()))
        return total / 6

    want = direction(zv, zh) + direction(zh, zv)
    got = corl.correlation_loss(z_v, z_hat, torch.tensor(pids), tau)
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_stage2_align_loss_equals_a_loop_and_stops_text_gradients():
    g = torch.Generator().manual_seed(5)
    t_hat = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    want = 0.1 * (nce_loop(t, t_hat, 0.02) + nce_loop(t_hat, t, 0.02))
    want += sum(float(((t_hat[i] - t[i]) ** 2).sum().detach()) for i in range(5)) / 5
    loss = corl.align_loss(t_hat, t, 0.1, 0.02)
    assert loss.item() == pytest.approx(want, rel=1e-9)
    loss.backward()
    assert t.grad is None and torch.isfinite(t_hat.grad).all() and t_hat.grad.abs().sum() > 0


def crcl_loop(v, t, pids, tau, text=None):
    """Eq. 7 by loops; the textual prototypes from ``text`` (the captions' t) when given."""
    v = [x / x.norm() for x in v]
    t = [x / x.norm() for x in t]
    text = t if text is None else [x / x.norm() for x in text]
    ids = sorted(set(pids))

    def proto(feats):
        out = []
        for k in ids:
            m = sum(feats[i] for i in range(len(feats)) if pids[i] == k)
            out.append(m / m.norm())
        return out

    pv, pt = proto(v), proto(text)

    def dist(x, protos):
        logits = [float(x @ p) / tau for p in protos]
        z = sum(math.exp(a) for a in logits)
        return [math.exp(a) / z for a in logits]

    total = 0.0
    for i in range(len(v)):
        rv, rt = dist(v[i], pv), dist(t[i], pt)
        total += sum(a * math.log(a / b) for a, b in zip(rt, rv))
        total += sum(b * math.log(b / a) for a, b in zip(rt, rv))
    return total / (2 * len(v))


def test_crcl_equals_a_loop_and_reaches_both_branches():
    g = torch.Generator().manual_seed(6)
    v = torch.randn(8, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(8, 5, generator=g, dtype=torch.float64, requires_grad=True)
    pids = [4, 4, 9, 9, 9, 1, 1, 6]
    loss = corl.crcl_loss(v, t, torch.tensor(pids), 0.5)
    assert loss.item() == pytest.approx(crcl_loop(v.detach(), t.detach(), pids, 0.5), rel=1e-9)
    assert corl.crcl_loss(v, v, torch.tensor(pids), 0.5).item() == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


def test_crcl_with_caption_prototypes_equals_a_loop():
    g = torch.Generator().manual_seed(7)
    v, t_hat, t = (
        torch.randn(8, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)
    )
    pids = [4, 4, 9, 9, 9, 1, 1, 6]
    loss = corl.crcl_loss(v, t_hat, torch.tensor(pids), 0.5, text_feats=t)
    want = crcl_loop(v.detach(), t_hat.detach(), pids, 0.5, text=t.detach())
    assert loss.item() == pytest.approx(want, rel=1e-9)
    assert want != pytest.approx(crcl_loop(v.detach(), t_hat.detach(), pids, 0.5), rel=1e-3)
    loss.backward()
    assert all(x.grad.abs().sum() > 0 for x in (v, t_hat, t))  # the prototypes' too


# ------------------------------------------------------------------ model


def build(config=DEMO, *opts):
    cfg, model = build_model_from(config, "MODEL.HEADS.NUM_CLASSES", "5", *opts)
    return model, cfg


def test_prompt_ids_and_adapter_start():
    ids, slot = prompt_token_ids("a photo of a {} person.", 2)
    assert ids[0] == 49406 and ids[-1] == 49407 and ids[slot : slot + 2].tolist() == [0, 0]
    with pytest.raises(ValueError, match="exactly once"):
        prompt_token_ids("no slot", 1)
    x = torch.randn(3, 8)
    assert torch.equal(Adapter(8, 4)(x), x)  # starts as the identity


def test_virtual_tokens_go_through_the_shared_text_transformer():
    model, _ = build()
    enc = model.text_encoder
    ids, _ = prompt_token_ids("a photo of a {} person.", 1)
    z_v = torch.randn(2, model.embed_dim)
    tokens = model.ves.tokens(z_v)
    # Replacing the slot's word embedding by the virtual token in the ids path gives z_hat.
    with torch.no_grad():
        emb = enc.token_embedding(ids).unsqueeze(0).repeat(2, 1, 1)
        emb[:, model.ves.slot] = tokens[:, 0]
        want = enc.forward_embeddings(emb, torch.full((2,), len(ids) - 1))[0]
        assert torch.allclose(model.ves(z_v, enc), want, atol=1e-6)
    assert not any(n.startswith("ves.text") for n, _ in model.named_parameters())


def test_text_encoder_forward_embeddings_matches_the_ids_path():
    model, _ = build()
    enc = model.text_encoder
    from plugins.data.captions import tokenize
    from plugins.modeling.clip import eot_positions

    ids = torch.stack([tokenize("a man in a red coat", 48), tokenize("a woman", 48)])
    with torch.no_grad():
        # CLIP's text path written out: embeddings + positions, causal transformer, ln, proj.
        x = enc.token_embedding(ids) + enc.positional_embedding[:48]
        x = enc.transformer(x, attn_mask=enc.attn_mask[:48, :48])
        x = enc.ln_final(x) @ enc.text_projection
        eot = eot_positions(ids)
        want = x[torch.arange(2), eot]
        got, tokens = enc.forward_embeddings(enc.token_embedding(ids), eot)
        assert torch.allclose(got, want, atol=1e-6) and torch.allclose(tokens, x, atol=1e-6)
        assert torch.allclose(enc(ids)[0], want, atol=1e-6)
    with pytest.raises(ValueError, match="context length"):
        enc.forward_embeddings(torch.zeros(1, 80, enc.width), torch.tensor([79]))


def make_batch():
    # Unseeded, with captions 0 and 1 describing one image; the Demo context length.
    caps = ["a man in red", "a man in red coat", "a woman with a bag", "a girl in blue"]
    batch = caption_batch(seed=None, captions=caps, context_length=48)
    batch["image_ids"] = torch.tensor([0, 0, 1, 2])
    return batch


def grads(model):
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def model_in_stage(index):
    """The Demo model frozen and set up for its stage ``index`` (0: VES, 1: collaboration)."""
    model, cfg = build()
    stages = model_stages(cfg)
    assert [s.name for s in stages] == ["stage1", "stage2"]
    freeze_for_stage(model, stages[index])
    model.enter_stage(stages[index])
    return model.train()


def test_stage1_trains_only_the_fc_layer():
    model = model_in_stage(0)
    batch = {
        "image_embeds": torch.randn(4, model.embed_dim),
        "text_embeds": torch.randn(4, model.embed_dim),
        "targets": torch.tensor([0, 0, 1, 2]),
    }
    losses = model(batch)
    assert set(losses) == {"loss_nce_s1", "loss_mse_s1", "loss_cor_s1"}
    sum(losses.values()).backward()
    assert grads(model) == {"ves.fc.weight", "ves.fc.bias"}


def test_stage2_keeps_ves_frozen_and_trains_the_rest():
    model = model_in_stage(1)
    losses = model(make_batch())
    assert set(losses) == {"loss_ibm", "loss_id", "loss_align", "loss_crcl"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    got = grads(model)
    assert not any(n.startswith("ves.") for n in got)
    assert {"adapter.up.weight", "classifier.weight"} <= got
    assert any(n.startswith("image_encoder.") for n in got)
    assert any(n.startswith("text_encoder.") for n in got)
    # L_align^s2 alone reaches only the Adapter (sg on t; VES runs without gradient).
    model.zero_grad()
    losses = model(make_batch())
    losses["loss_align"].backward()
    assert grads(model) and all(n.startswith("adapter.") for n in grads(model))


def test_crcl_prototypes_come_from_the_caption_features_by_default():
    """The textual prototypes of Eq. 7 are the captions' t ("real", default): other captions
    for the same images change L_CRCL; with "virtual" (prototypes of t_hat) they cannot."""
    batch = make_batch()
    other = dict(batch)
    for key in ("text", "text_mlm"):
        other[key] = batch[key].flip(0)  # the same captions given to other identities
    for opts, changes in (((), True), (("MODEL.CORL.CRCL_TEXT", "virtual"), False)):
        model, cfg = build(DEMO, *opts)
        stage = model_stages(cfg)[1]
        freeze_for_stage(model, stage)
        model.enter_stage(stage)
        model.train()
        with torch.no_grad():
            a, b = model(batch)["loss_crcl"], model(other)["loss_crcl"]
        assert torch.isfinite(a) and (not torch.equal(a, b)) == changes, opts
    with pytest.raises(ValueError, match="CRCL_TEXT"):
        build(DEMO, "MODEL.CORL.CRCL_TEXT", "both")


def ves_embedding(model, batch):
    """z_hat = VES(z_v) of a batch's images, through the encoders VES reads (no Adapter)."""
    with torch.no_grad():
        v = model.image_tokens(batch)[2][:, 0]
        return model.ves(model.ves_image_embeds(batch, v), model.ves_text_encoder())


def test_frozen_ves_encoders_get_no_gradient_and_keep_their_start_weights():
    """VES_ENCODERS "frozen": copies of both encoders taken when stage 2 starts, out of the
    optimizer; after a training step VES gives what it gave at the start. "shared" follows the
    encoders it shares with the model."""
    torch.manual_seed(3)
    batch = make_batch()
    images = {"images": batch["images"]}
    for mode in ("frozen", "shared"):
        model, cfg = build(DEMO, "MODEL.CORL.VES_ENCODERS", mode)
        stage1, stage2 = model_stages(cfg)
        frozen = mode == "frozen"
        assert stage2.frozen == (("ves.", "ves_encoders.") if frozen else ("ves.",))
        assert hasattr(model, "ves_encoders") == frozen
        with torch.no_grad():  # the encoders as stage 1 left them (here: other weights)
            for p in list(model.image_encoder.parameters()) + list(model.text_encoder.parameters()):
                p.add_(0.01 * torch.randn_like(p))
        freeze_for_stage(model, stage2)
        model.enter_stage(stage2)
        model.train()
        if frozen:
            assert bool(model.ves_encoders_taken) and not model.ves_encoders.training
            for name, enc in (("image", model.image_encoder), ("text", model.text_encoder)):
                copy = model.ves_encoders[name].state_dict()
                assert all(torch.equal(copy[k], t) for k, t in enc.state_dict().items())
            start = {k: t.clone() for k, t in model.ves_encoders.state_dict().items()}
        before = ves_embedding(model, images)
        params = [p for p in model.parameters() if p.requires_grad]
        assert not any(p.requires_grad for p in model.ves.parameters())
        if frozen:
            assert not any(p.requires_grad for p in model.ves_encoders.parameters())
            assert sum(p.numel() for p in params) == sum(
                p.numel() for n, p in model.named_parameters() if not n.startswith("ves")
            )
        optimizer = torch.optim.SGD(params, lr=1.0)
        sum(model(batch).values()).backward()
        if frozen:
            assert all(p.grad is None for p in model.ves_encoders.parameters())
        optimizer.step()
        after = ves_embedding(model, images)
        if frozen:
            assert torch.equal(after, before)
            state = model.ves_encoders.state_dict()
            assert all(torch.equal(state[k], t) for k, t in start.items())
            # ... while the model's own encoders moved on.
            moved = model.image_encoder.state_dict()
            assert any(not torch.equal(moved[k], start[f"image.{k}"]) for k in moved)
        else:
            assert not torch.allclose(after, before)
    with pytest.raises(ValueError, match="VES_ENCODERS"):
        build(DEMO, "MODEL.CORL.VES_ENCODERS", "copied")


def test_frozen_ves_copies_survive_a_resume_and_serve_inference():
    model, cfg = build(DEMO, "MODEL.CORL.VES_ENCODERS", "frozen")
    stage1, stage2 = model_stages(cfg)
    model.enter_stage(stage1)  # stage 1: the copies follow the encoders, not yet taken
    assert not bool(model.ves_encoders_taken)
    model.enter_stage(stage2)
    with torch.no_grad():  # stage 2 trains the encoders away from the copies
        for p in model.image_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    saved = model.state_dict()
    assert saved["ves_encoders_taken"] and "ves_encoders.image.visual.conv1.weight" in saved
    # A resumed stage 2 (or --eval-only) loads the copies and does not take them again.
    resumed, _ = build(DEMO, "MODEL.CORL.VES_ENCODERS", "frozen", "MODEL.TRAINING_HEADS", "False")
    resumed.load_state_dict(saved, strict=False)
    resumed.enter_stage(stage2)
    state = resumed.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in state)
    # Inference: [norm(v); norm(t_hat)], v from the trained encoder, t_hat from the copies.
    resumed.eval()
    images = {"images": torch.rand(3, 3, 64, 32) * 255}
    with torch.no_grad():
        x = resumed.normalize(images["images"])
        v = resumed.image_encoder.forward_tokens(x)[:, 0]
        z_v = resumed.ves_encoders["image"].forward_tokens(x)[:, 0]
        t_hat = resumed.adapter(resumed.ves(z_v, resumed.ves_encoders["text"]))
        assert not torch.allclose(z_v, v, atol=1e-3)
    want = torch.cat([F.normalize(v, dim=1), F.normalize(t_hat, dim=1)], 1)
    assert torch.allclose(resumed.encode_image(images), want, atol=1e-6)


def test_count_params_counts_the_frozen_copies_apart_and_their_image_pass(capsys):
    from tools import count_params

    def counted(*opts):
        args = ["--config-file", str(ROOT / DEMO), "--num-classes", "5", "--flops"]
        counts = count_params.main(args + TINY_CLIP + list(opts))
        assert "inference multiply-adds:" in capsys.readouterr().out
        model, cfg = build(DEMO, "MODEL.TRAINING_HEADS", "False", *opts)
        return counts, count_params.inference_macs(cfg, model)

    (total, trainable, inference), (image, text) = counted()
    assert total == trainable
    (f_total, f_trainable, f_inference), (f_image, f_text) = counted(
        "MODEL.CORL.VES_ENCODERS", "frozen"
    )
    model, _ = build(DEMO, "MODEL.CORL.VES_ENCODERS", "frozen")
    copies = sum(p.numel() for p in model.ves_encoders.parameters())
    assert f_trainable == total and f_total == total + copies
    assert f_inference == inference + copies
    # The frozen reading runs the image through a second image encoder; captions cost the same.
    assert f_text == text > 0 and f_image > 1.8 * image > 0


def test_switches_pick_the_losses():
    model, _ = build(DEMO, "MODEL.CORL.MATCHING", "sdm", "MODEL.CORL.CMC", "False")
    model.train()
    assert set(model(make_batch())) == {"loss_sdm", "loss_id", "loss_align"}
    model, cfg = build(
        DEMO, "MODEL.CORL.VES_BRANCH", "False", "MODEL.CORL.CMC", "False",
        "MODEL.CORL.MATCHING", "ibm_star",
    )  # fmt: skip
    assert model_stages(cfg) == [] and not hasattr(model, "ves") and not hasattr(model, "adapter")
    model.train()
    assert set(model(make_batch())) == {"loss_ibm", "loss_id"}
    with pytest.raises(ValueError, match="CMC needs"):
        build(DEMO, "MODEL.CORL.VES_BRANCH", "False")
    with pytest.raises(ValueError, match="MATCHING"):
        build(DEMO, "MODEL.CORL.MATCHING", "triplet")


def test_inference_ranks_by_the_sum_of_both_similarities():
    model, _ = build()
    with torch.no_grad():
        model.adapter.up.weight.normal_(std=0.5)  # a trained-looking Adapter, not the identity
    model.eval()
    images = {"images": torch.rand(7, 3, 64, 32) * 255}
    ids = make_batch()["text"]
    g, q = model.encode_image(images), model.encode_text(ids)
    with torch.no_grad():
        v = model.image_tokens(images)[2][:, 0]
        t_hat = model.virtual_text(v)
        t = model.text_tokens(ids)[1]
    score = F.normalize(t, dim=1) @ F.normalize(v, dim=1).t()
    score += F.normalize(t, dim=1) @ F.normalize(t_hat, dim=1).t()
    assert torch.allclose(q @ g.t(), score, atol=1e-5)
    # The evaluator L2-normalises both sides: a constant factor, the same ranking.
    normed = F.normalize(q, dim=1) @ F.normalize(g, dim=1).t()
    assert torch.allclose(normed * 2, score, atol=1e-5)
    q_pids, g_pids = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    ours = rank_metrics(F.normalize(q, dim=1), F.normalize(g, dim=1), q_pids, g_pids)
    summed = rank_metrics(score, torch.eye(7), q_pids, g_pids)  # q @ I = the summed scores
    assert ours == pytest.approx(summed)


def test_eval_model_has_no_classifier_but_keeps_ves_and_adapter():
    model, _ = build(DEMO, "MODEL.TRAINING_HEADS", "False")
    assert not hasattr(model, "classifier")
    assert hasattr(model, "ves") and hasattr(model, "adapter")
    assert model.training_only_prefixes == ("classifier.",)


@pytest.mark.parametrize("config", CORL_CONFIGS)
def test_config_builds(config):
    cfg = build_config(str(ROOT / config), TINY_CLIP + ["MODEL.HEADS.NUM_CLASSES", "5"])
    assert cfg.MODEL.META_ARCHITECTURE == "CoRL"
    assert build_model(cfg) is not None
    stages = model_stages(cfg)
    assert [s.name for s in stages] == (["stage1", "stage2"] if cfg.MODEL.CORL.VES_BRANCH else [])


def test_paper_configs_hold_the_paper_settings():
    cfg = build_config(str(ROOT / "configs/CUHKPEDES/corl.yml"))
    c = cfg.MODEL.CORL
    assert (c.ALPHA, c.BETA, c.TAU_SP, c.TAU_WP, c.TAU_N) == (0.6, 0.4, 10.0, 5.0, 40.0)
    assert (c.VES.TAU_A, c.LAMBDA1, c.VES.EPOCHS, c.VES.BASE_LR) == (0.02, 0.1, 60, 1e-4)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.IMS_PER_BATCH) == (1e-5, 60, 128)
    assert cfg.DATALOADER.SAMPLER_TRAIN == "IdentitySampler" and cfg.DATALOADER.NUM_INSTANCE == 4
    assert cfg.SOLVER.BASE_LR * c.ADAPTER_LR_FACTOR == pytest.approx(5e-5)
    stage1, stage2 = model_stages(cfg)
    assert stage1.trainable == ("ves.",) and stage1.train_data == "features"
    assert stage2.frozen == ("ves.",) and stage1.warmup_epochs == stage2.warmup_epochs == 5.0
    assert c.CRCL_TEXT == "real" and c.VES_ENCODERS == "shared"
    star = build_config(str(ROOT / "configs/CUHKPEDES/corl_ibm_star.yml")).MODEL.CORL
    assert star.MATCHING == "ibm_star" and not star.VES_BRANCH


# ------------------------------------------------------------------ the feature cache


def write_fixture(root, num_ids=6, extra=()):
    records = []
    for pid in range(num_ids):
        for view in range(2):
            caps = [f"person {pid} seen from side {view}", f"someone number {pid} in view {view}"]
            records.append(record("train", 100 + pid, f"train/{pid:03d}_{view}.png", caps))
    for pid in range(3):
        for view in range(2):
            caps = [f"test person {pid} view {view}", f"another caption {pid} {view}"]
            records.append(record("test", 200 + pid, f"test/{pid:03d}_{view}.png", caps))
        records.append(record("val", 300 + pid, f"val/{pid:03d}.png", [f"val {pid}"]))
    records.extend(extra)
    return write_cuhkpedes(str(root), records)


def test_feature_cache_is_reused_and_rebuilt(tmp_path, monkeypatch):
    write_fixture(tmp_path / "data")
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path / "data"))
    opts = ["OUTPUT_DIR", str(tmp_path / "out"), "DATALOADER.NUM_WORKERS", "0"]
    opts += ["DATALOADER.TEST_NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "8"]
    model, cfg = build(DEMO, *opts)
    stage1, _ = model_stages(cfg)
    calls = []
    real = model.extract_embeddings

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(model, "extract_embeddings", counting)
    image_set = build_text_train_loader(cfg).dataset
    first = model.stage_train_set(stage1, cfg, image_set)
    assert len(calls) == 1 and (tmp_path / "out" / "features.pth").is_file()
    assert len(first) == 24 and first.features["image_embeds"].shape[0] == 12  # 12 images
    item = first[3]
    assert item["targets"] == image_set.img_items[3].pid
    # Two captions of one image share its embedding row.
    rows = first.index["image_embeds"]
    assert rows[0] == rows[1] and rows[1] != rows[2]

    again = model.stage_train_set(stage1, cfg, image_set)
    assert len(calls) == 1
    assert torch.equal(again.features["text_embeds"], first.features["text_embeds"])

    with torch.no_grad():  # other weights: rebuilt
        model.text_encoder.ln_final.weight.add_(0.1)
    model.stage_train_set(stage1, cfg, image_set)
    assert len(calls) == 2

    extra = [record("train", 999, "train/extra.png", ["one more person"])]  # other data: rebuilt
    write_fixture(tmp_path / "data", extra=extra)
    other = model.stage_train_set(stage1, cfg, build_text_train_loader(cfg).dataset)
    assert len(calls) == 3 and len(other) == 25


# ------------------------------------------------------------------ end to end


def train_net(data, *opts, resume=False, eval_only=False):
    cmd = [sys.executable, "tools/train_net.py", "--config-file", DEMO]
    cmd += ["--resume"] if resume else []
    cmd += ["--eval-only"] if eval_only else []
    cmd += TINY_CLIP + ["DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST_NUM_WORKERS", "0"]
    cmd += ["SOLVER.IMS_PER_BATCH", "8", "SOLVER.CHECKPOINT_PERIOD", "1", "SEED", "0"]
    env = dict(os.environ, FASTREID_DATASETS=str(data), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        cmd + list(opts), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def results(log):
    lines = re.findall(r"Evaluation results for CUHKPEDES: (.*)", log)
    assert lines, log[-3000:]
    return lines[-1]


def state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def same_state(a, b):
    a, b = state(a), state(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_stages_from_one_command_resume_and_eval_only(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    write_fixture(data)
    run = ["OUTPUT_DIR", str(out), "MODEL.CORL.VES.EPOCHS", "2", "SOLVER.MAX_EPOCH", "2"]
    run += ["TEST.EVAL_PERIOD", "2"]
    log = train_net(data, *run)
    s1, s2 = out / "stage1", out / "stage2"
    assert "Stage 1/2 'stage1': training" in log and "Stage 2/2 'stage2': training" in log
    assert "Extracting stage-1 embeddings" in log
    assert re.search(r"loss_nce_s1: [0-9.]+", log) and re.search(r"loss_crcl: [0-9.]+", log)
    for name in ("model_final.pth", "model_0000.pth", "features.pth", "stage.json"):
        assert (s1 / name).is_file(), name
    assert (s2 / "model_final.pth").is_file() and (s2 / "model_0000.pth").is_file()
    trained = results(log)
    keep = tmp_path / "keep"
    keep.mkdir()
    shutil.copy(s1 / "model_final.pth", keep / "s1.pth")
    shutil.copy(s2 / "model_final.pth", keep / "s2.pth")

    # Stage 2 interrupted after its first epoch: --resume reuses stage 1, resumes stage 2.
    (s2 / "model_final.pth").unlink()
    (s2 / "last_checkpoint").write_text("model_0000.pth")
    log = train_net(data, *run, resume=True)
    assert "Stage 1/2 'stage1': reusing its finished output" in log
    assert "Stage 2/2 'stage2': resuming its interrupted run" in log
    assert "Starting training from epoch 1" in log and "Extracting" not in log
    assert same_state(keep / "s2.pth", s2 / "model_final.pth")
    assert results(log) == trained

    # Stage 1 interrupted after its first epoch: it resumes on its cached features, then
    # stage 2 trains from the resumed stage 1.
    shutil.rmtree(s2)
    (s1 / "model_final.pth").unlink()
    (s1 / "last_checkpoint").write_text("model_0000.pth")
    log = train_net(data, *run, resume=True)
    assert "Stage 1/2 'stage1': resuming its interrupted run" in log
    assert "Reusing the cached stage-1 embeddings" in log and "Extracting" not in log
    assert "Stage 2/2 'stage2': training, starting from the previous stage's" in log
    assert same_state(keep / "s1.pth", s1 / "model_final.pth")
    assert same_state(keep / "s2.pth", s2 / "model_final.pth")

    # The final model evaluates on its own, without the identity classifier.
    log = train_net(
        data, "MODEL.WEIGHTS", str(s2 / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "ev"),
        eval_only=True,
    )  # fmt: skip
    assert "Not loading 2 training-only entries (classifier.bias, classifier.weight)" in log
    assert "Starting training" not in log and results(log) == trained

    # tools/probe_corl.py: its "CoRL's sum" is the evaluation's score, and the two halves rank
    # by the image feature and the virtual text alone.
    cmd = [sys.executable, "tools/probe_corl.py", "--config-file", DEMO]
    cmd += ["--weights", str(s2 / "model_final.pth"), *TINY_CLIP]
    env = dict(os.environ, FASTREID_DATASETS=str(data), HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    probe = dict(re.findall(r"^(.*?)\s+R1\s+([\d.]+)", proc.stdout, re.M))
    assert set(probe) == {"v alone", "t_hat alone", "CoRL's sum"}, proc.stdout
    r1 = float(re.search(r"R1 ([\d.]+)", trained).group(1))
    assert float(probe["CoRL's sum"]) == pytest.approx(r1, abs=0.01)

    # --gradients: which stage-2 terms reach the encoders. L_align^s2's text target is
    # stop-gradient and VES reads z_v without gradient, so it reaches neither encoder; L_CRCL
    # reaches the text encoder only through real-text prototypes (MODEL.CORL.CRCL_TEXT real).
    def gradient_norms(*opts):
        grad_cmd = [*cmd[: -len(TINY_CLIP)], "--gradients", "1", *TINY_CLIP, *opts]
        grad_cmd += ["SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_WORKERS", "0"]
        proc = subprocess.run(
            grad_cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        rows = re.findall(r"^(loss_\w+)\s+(\S+)\s+(\S+)$", proc.stdout, re.M)
        return {term: (float(image), float(text)) for term, image, text in rows}

    norms = gradient_norms()
    assert set(norms) == {"loss_ibm", "loss_id", "loss_align", "loss_crcl"}, norms
    assert norms["loss_align"] == (0.0, 0.0)
    assert min(norms["loss_ibm"]) > 0 and min(norms["loss_crcl"]) > 0
    virtual = gradient_norms("MODEL.CORL.CRCL_TEXT", "virtual")
    assert virtual["loss_crcl"][0] > 0 and virtual["loss_crcl"][1] == 0.0


def test_frozen_ves_end_to_end_takes_its_copies_once(tmp_path):
    """VES_ENCODERS "frozen" through tools/train_net.py: stage 2's copies are the encoders
    stage 1 ended with, a resumed stage 2 keeps them, and --eval-only scores the same."""
    data, out = tmp_path / "data", tmp_path / "out"
    write_fixture(data)
    run = ["OUTPUT_DIR", str(out), "MODEL.CORL.VES.EPOCHS", "1", "SOLVER.MAX_EPOCH", "2"]
    run += ["TEST.EVAL_PERIOD", "2", "MODEL.CORL.VES_ENCODERS", "frozen"]
    log = train_net(data, *run)
    s1, s2 = state(out / "stage1" / "model_final.pth"), state(out / "stage2" / "model_final.pth")
    assert not s1["ves_encoders_taken"] and s2["ves_encoders_taken"]
    for name in ("image", "text"):
        prefix = f"{name}_encoder."
        own = {k[len(prefix) :]: t for k, t in s1.items() if k.startswith(prefix)}
        assert own and all(torch.equal(s2[f"ves_encoders.{name}.{k}"], t) for k, t in own.items())
    moved = [k for k in s1 if k.startswith("image_encoder.") and not torch.equal(s1[k], s2[k])]
    assert moved  # stage 2 trained the image encoder, not its copy
    trained = results(log)
    keep = tmp_path / "s2.pth"
    shutil.copy(out / "stage2" / "model_final.pth", keep)

    (out / "stage2" / "model_final.pth").unlink()
    (out / "stage2" / "last_checkpoint").write_text("model_0000.pth")
    log = train_net(data, *run, resume=True)
    assert "Stage 2/2 'stage2': resuming its interrupted run" in log
    assert same_state(keep, out / "stage2" / "model_final.pth") and results(log) == trained

    log = train_net(
        data, "MODEL.WEIGHTS", str(keep), "OUTPUT_DIR", str(tmp_path / "ev"),
        "MODEL.CORL.VES_ENCODERS", "frozen", eval_only=True,
    )  # fmt: skip
    assert results(log) == trained
