"""FMFA: A-SDM by hand and by a plain loop, every EFA step against loops, padding, memory,
the model against IRRA, configs, and train / --eval-only through tools/train_net.py."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401  (fastreid compatibility fixes, registration)

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import projects.fmfa  # noqa: E402, F401
from plugins.engine import build_config  # noqa: E402
from plugins.modeling.clip import eot_positions  # noqa: E402
from plugins.modeling.losses import sdm_loss  # noqa: E402
from projects.fmfa.losses import (  # noqa: E402
    a_sdm_loss,
    efa_loss,
    efa_losses,
    efa_ranking_loss,
    hard_similarity,
    language_grouped_embeddings,
    sparse_aggregation_weights,
    token_patch_similarity,
    weighted_sdm_loss,
)
from tests.fixtures_model import IRRA_HEADS, ROOT, SHORT_RUN, build_model_from, caption_batch  # noqa: E402
from tests.fixtures_text import write_cuhkpedes  # noqa: E402
from tests.test_train_net import final_results, train_net  # noqa: E402

FMFA_CONFIGS = [
    "configs/CUHKPEDES/fmfa.yml",
    "configs/ICFGPEDES/fmfa.yml",
    "configs/RSTPReid/fmfa.yml",
    "configs/CUHKPEDES/fmfa_authors_code.yml",
    "configs/CUHKPEDES/fmfa_authors_code_2025_08.yml",
    "configs/Demo/fmfa.yml",
]
MASKED = ["MODEL.IRR.GLOBAL_CAPTION", "masked"]


def build(config="configs/CUHKPEDES/fmfa.yml", *opts):
    return build_model_from(config, *IRRA_HEADS, *opts)[1]


# ------------------------------------------------------------------ plain-python references


def dot(u, v):
    return sum(a * b for a, b in zip(u, v))


def cosine(u, v):
    return dot(u, v) / math.sqrt(dot(u, u) * dot(v, v))


def softmax(xs):
    top = max(xs)
    ex = [math.exp(x - top) for x in xs]
    return [e / sum(ex) for e in ex]


def a_sdm_by_loop(img, txt, pids, scale, alpha, weight_from="probability", eps=1e-8):
    """Eq. 1-4 with python floats; img / txt are lists of vectors."""
    n = len(pids)
    cos = [[cosine(img[i], txt[j]) for j in range(n)] for i in range(n)]
    total = 0.0
    for rows in (cos, [list(col) for col in zip(*cos)]):  # image-to-text, then text-to-image
        acc = 0.0
        for i in range(n):
            p = softmax([scale * s for s in rows[i]])
            y = [1.0 if pids[i] == pids[j] else 0.0 for j in range(n)]
            q = [v / sum(y) for v in y]
            kl = sum(p[j] * (math.log(p[j]) - math.log(q[j] + eps)) for j in range(n))
            src = p if weight_from == "probability" else rows[i]
            acc += (alpha * (max(src) - src[i]) + 1.0) * kl
        total += acc / n
    return total


def aggregation_by_loop(text, patches, sigma):
    """Eq. 5-7 for one caption and its image: (L x D), (N x D) -> L rows of N weights."""
    out = []
    for f_t in text:
        s = [dot(f_t, f_v) for f_v in patches]
        lo, hi = min(s), max(s)
        normed = [(x - lo) / (hi - lo) for x in s]
        kept = [x if x >= sigma else 0.0 for x in normed]
        out.append([x / sum(kept) for x in kept])
    return out


def joint_by_loop(agg, patches):
    """Eq. 8: L rows of D."""
    dim = len(patches[0])
    return [
        [sum(row[j] * patches[j][d] for j in range(len(patches))) for d in range(dim)]
        for row in agg
    ]


def hard_by_loop(queries, q_valid, joints, j_valid, lam, rescale=True):
    """Eq. 9-10 for every (query item, joint item)."""
    n_q, n_e = len(queries), len(joints)
    out = [[0.0] * n_e for _ in range(n_q)]
    for b in range(n_q):
        for c in range(n_e):
            terms = []
            for i, q in enumerate(queries[b]):
                if not q_valid[b][i]:
                    continue
                best = max(
                    cosine(q, e) for j, e in enumerate(joints[c]) if j_valid[c][j]
                )  # Eq. 9: the one joint embedding with the highest cosine
                terms.append(math.exp(lam * best))
            pooled = math.log(sum(terms))
            out[b][c] = pooled / lam if rescale else pooled
    return out


def ranking_by_loop(hard, margin, tau, keep_positive=False):
    """Eq. 11 both ways."""
    n = len(hard)
    extra = 1.0 if keep_positive else 0.0
    rows = cols = 0.0
    for a in range(n):
        rows += math.log(
            extra
            + sum(math.exp((hard[a][c] - hard[a][a] + margin) / tau) for c in range(n) if c != a)
        )
        cols += math.log(
            extra
            + sum(math.exp((hard[b][a] - hard[a][a] + margin) / tau) for b in range(n) if b != a)
        )
    return rows / n, cols / n


def efa_by_loop(text, valid, patches, m_t, m_i, tau, lam, sigma_scale=1.0, rescale=True,
                normalize=False, keep_positive=False):  # fmt: skip
    """Eq. 5-12 end to end with python floats."""
    n = len(text)
    sigma = sigma_scale / len(patches[0])
    joints = [
        joint_by_loop(aggregation_by_loop(text[b], patches[b], sigma), patches[b]) for b in range(n)
    ]
    all_patches = [[True] * len(patches[b]) for b in range(n)]
    hard_t = hard_by_loop(text, valid, joints, valid, lam, rescale)
    hard_v = hard_by_loop(patches, all_patches, joints, valid, lam, rescale)
    if normalize:
        hard_t = [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in hard_t]
        hard_v = [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in hard_v]
    t2e, e2t = ranking_by_loop(hard_t, m_t, tau, keep_positive)
    i2e, e2i = ranking_by_loop(hard_v, m_i, tau, keep_positive)
    return {"t2e": t2e, "e2t": e2t, "i2e": i2e, "e2i": e2i}


def efa_inputs(seed=0, batch=3, length=5, patches=4, dim=6):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, length, dim, generator=g, dtype=torch.float64)
    image = torch.randn(batch, patches, dim, generator=g, dtype=torch.float64)
    valid = torch.ones(batch, length, dtype=torch.bool)
    valid[0, 3:] = False  # caption 0: three positions, then padding
    valid[2, 4:] = False
    return text, valid, image


# ------------------------------------------------------------------ A-SDM


def test_a_sdm_by_hand_two_pairs():
    # 2-D unit features given by angles; image 0 sits closer to text 1 than to its own text 0.
    a, b, scale, alpha, eps = [0.0, 1.0], [0.9, 0.2], 2.0, 10.0, 1e-8
    img = torch.tensor([[math.cos(x), math.sin(x)] for x in a], dtype=torch.float64)
    txt = torch.tensor([[3 * math.cos(x), 3 * math.sin(x)] for x in b], dtype=torch.float64)
    s = [[math.cos(ai - bj) for bj in b] for ai in a]  # s[i][j] = cos(image i, text j)

    def direction(rows):
        total = 0.0
        for i in range(2):
            e = [math.exp(scale * rows[i][0]), math.exp(scale * rows[i][1])]
            p = [e[0] / (e[0] + e[1]), e[1] / (e[0] + e[1])]
            # distinct identities: q is the identity matrix
            kl = p[i] * math.log(p[i] / (1 + eps)) + p[1 - i] * (math.log(p[1 - i]) - math.log(eps))
            w = alpha * (max(p) - p[i]) + 1
            total += w * kl
        return total / 2

    expected = direction(s) + direction([[s[0][0], s[1][0]], [s[0][1], s[1][1]]])
    pids = torch.tensor([4, 9])
    got = a_sdm_loss(img, txt, pids, logit_scale=scale, alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # The mismatched pair is up-weighted: A-SDM exceeds SDM here.
    assert got.item() > sdm_loss(img, txt, pids, scale).item() + 1.0


def test_a_sdm_three_pairs_with_a_shared_identity():
    img = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    txt = [[0.0, 1.0], [1.0, 0.2], [1.0, 1.0]]
    pids = [5, 5, 6]
    expected = a_sdm_by_loop(img, txt, pids, 3.0, 2.0)
    f64 = torch.float64
    got = a_sdm_loss(
        torch.tensor(img, dtype=f64), torch.tensor(txt, dtype=f64), torch.tensor(pids), 3.0, 2.0
    )
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_a_sdm_with_alpha_zero_is_sdm():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    pids = torch.tensor([0, 1, 1, 2, 3, 3])
    assert torch.equal(a_sdm_loss(img, txt, pids, 50.0, alpha=0.0), sdm_loss(img, txt, pids, 50.0))
    assert not torch.allclose(
        a_sdm_loss(img, txt, pids, 50.0, alpha=10.0), sdm_loss(img, txt, pids, 50.0)
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("weight_from", ["probability", "cosine"])
def test_a_sdm_against_a_plain_loop(seed, weight_from):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(7, 5, generator=g, dtype=torch.float64)
    txt = img + 0.8 * torch.randn(7, 5, generator=g, dtype=torch.float64)
    pids = torch.tensor([0, 1, 1, 2, 2, 2, 3])
    expected = a_sdm_by_loop(img.tolist(), txt.tolist(), pids.tolist(), 10.0, 3.0, weight_from)
    got = weighted_sdm_loss(img, txt, pids, 10.0, 3.0, weight_from)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    if weight_from == "probability":
        assert a_sdm_loss(img, txt, pids, 10.0, 3.0).item() == pytest.approx(expected, rel=1e-10)


def _grads(fn, img, txt):
    img = img.clone().requires_grad_()
    txt = txt.clone().requires_grad_()
    fn(img, txt).backward()
    return img.grad, txt.grad


def test_a_sdm_weights_carry_no_gradient():
    g = torch.Generator().manual_seed(3)
    img = torch.randn(6, 4, generator=g, dtype=torch.float64)
    txt = torch.randn(6, 4, generator=g, dtype=torch.float64)
    pids = torch.tensor([0, 1, 2, 2, 3, 4])
    scale, alpha = 5.0, 10.0

    # The same loss with the weights worked out beforehand and fed in as constants.
    with torch.no_grad():
        cos = F.normalize(img, dim=1) @ F.normalize(txt, dim=1).t()
        w = []
        for m in (cos, cos.t()):
            p = torch.softmax(scale * m, dim=1)
            w.append(alpha * (p.max(1).values - p.diagonal()) + 1)
    assert (w[0] > 1).any() and (w[1] > 1).any()
    y = (pids[:, None] == pids[None, :]).double()
    q = y / y.sum(1, keepdim=True)

    def constant_weights(i, t):
        logits = scale * F.normalize(i, dim=1) @ F.normalize(t, dim=1).t()
        total = 0.0
        for k, m in enumerate((logits, logits.t())):
            log_p = torch.log_softmax(m, dim=1)
            kl = (log_p.exp() * (log_p - torch.log(q + 1e-8))).sum(1)
            total = total + (w[k] * kl).mean()
        return total

    got = _grads(lambda i, t: a_sdm_loss(i, t, pids, scale, alpha), img, txt)
    want = _grads(constant_weights, img, txt)
    with_grad = _grads(
        lambda i, t: weighted_sdm_loss(i, t, pids, scale, alpha, weight_grad=True), img, txt
    )
    for a, b, c in zip(got, want, with_grad):
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c)  # the test can tell a weight in the graph


def test_a_sdm_gradients_are_finite():
    g = torch.Generator().manual_seed(4)
    img = torch.randn(8, 16, generator=g)
    txt = img + 1e-4 * torch.randn(8, 16, generator=g)  # near-identical pairs, sharp softmax
    img.requires_grad_()
    txt.requires_grad_()
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = a_sdm_loss(img, txt, pids, 50.0, 10.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(img.grad).all() and torch.isfinite(txt.grad).all()
    assert img.grad.abs().sum() > 0


def test_unknown_weight_source_is_an_error():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="weight_from"):
        weighted_sdm_loss(x, x, torch.tensor([0, 1]), 50.0, 10.0, weight_from="rank")


# ------------------------------------------------------------------ EFA, step by step


def test_sparse_aggregation_by_hand():
    sim = torch.tensor([[[2.0, 2.2, 3.0, 4.0], [1.0, -1.0, 0.0, -0.5]]], dtype=torch.float64)
    agg = sparse_aggregation_weights(sim)  # sigma = 1 / 4
    # Row 0: normalised [0, 0.1, 0.5, 1] -> keep [0.5, 1]; row 1: [1, 0, 0.5, 0.25] -> all but 0.
    expected = torch.tensor([[[0, 0, 0.5 / 1.5, 1 / 1.5], [1 / 1.75, 0, 0.5 / 1.75, 0.25 / 1.75]]])
    torch.testing.assert_close(agg, expected.double())
    # A higher threshold keeps fewer patches, but always the best one.
    torch.testing.assert_close(
        sparse_aggregation_weights(sim, sigma=0.9),
        torch.tensor([[[0.0, 0, 0, 1], [1, 0, 0, 0]]], dtype=torch.float64),
    )


def test_each_efa_step_against_loops():
    text, valid, image = efa_inputs(0)
    sim = token_patch_similarity(text, image)
    for b in range(3):
        for i in range(5):
            for j in range(4):
                assert sim[b, i, j].item() == pytest.approx(
                    dot(text[b, i].tolist(), image[b, j].tolist())
                )
    agg = sparse_aggregation_weights(sim, 0.3)
    joint = language_grouped_embeddings(agg, image)
    for b in range(3):
        want_agg = aggregation_by_loop(text[b].tolist(), image[b].tolist(), 0.3)
        torch.testing.assert_close(agg[b], torch.tensor(want_agg, dtype=torch.float64))
        want_joint = joint_by_loop(want_agg, image[b].tolist())
        torch.testing.assert_close(joint[b], torch.tensor(want_joint, dtype=torch.float64))
    assert (agg == 0).any() and torch.allclose(agg.sum(-1), torch.ones(3, 5, dtype=torch.float64))

    t_lists, j_lists, v_lists = text.tolist(), joint.tolist(), valid.tolist()
    for lam, rescale in ((1.0, True), (10.0, False), (0.5, True)):
        hard_t = hard_similarity(text, joint, valid, valid, lam, rescale)
        want = hard_by_loop(t_lists, v_lists, j_lists, v_lists, lam, rescale)
        torch.testing.assert_close(hard_t, torch.tensor(want, dtype=torch.float64))
        hard_v = hard_similarity(image, joint, valid, None, lam, rescale)
        all_valid = [[True] * 4 for _ in range(3)]
        want = hard_by_loop(image.tolist(), all_valid, j_lists, v_lists, lam, rescale)
        torch.testing.assert_close(hard_v, torch.tensor(want, dtype=torch.float64))


def test_hard_similarity_by_hand():
    # One query item of two tokens, one joint item of two embeddings (the second is padding).
    q = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]], dtype=torch.float64)
    e = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]], dtype=torch.float64)
    valid = torch.tensor([[True, False]])
    c = 1 / math.sqrt(2)  # both tokens' best (only) joint embedding is at 45 degrees
    expected = math.log(math.exp(2 * c) + math.exp(2 * c)) / 2
    assert hard_similarity(q, e, valid, lam=2.0).item() == pytest.approx(expected)
    # With the padding position taking part, token 1 matches it exactly (cosine 1).
    everything = torch.ones(1, 2, dtype=torch.bool)
    expected = math.log(math.exp(2 * c) + math.exp(2 * 1.0)) / 2
    assert hard_similarity(q, e, everything, lam=2.0).item() == pytest.approx(expected)


def test_ranking_loss_by_hand():
    hard = torch.tensor([[0.9, 0.5], [0.4, 0.7]], dtype=torch.float64)
    m, tau = 0.2, 0.5
    rows, cols = efa_ranking_loss(hard, m, tau)
    assert rows.item() == pytest.approx(((0.5 - 0.9 + m) / tau + (0.4 - 0.7 + m) / tau) / 2)
    assert cols.item() == pytest.approx(((0.4 - 0.9 + m) / tau + (0.5 - 0.7 + m) / tau) / 2)
    rows, _ = efa_ranking_loss(hard, m, tau, keep_positive=True)
    expected = (
        math.log(1 + math.exp((0.5 - 0.9 + m) / tau))
        + math.log(1 + math.exp((0.4 - 0.7 + m) / tau))
    ) / 2
    assert rows.item() == pytest.approx(expected)
    for h in (torch.rand(3, 3, dtype=torch.float64), torch.rand(4, 4, dtype=torch.float64)):
        for keep in (False, True):
            got = efa_ranking_loss(h, 0.3, 0.7, keep)
            want = ranking_by_loop(h.tolist(), 0.3, 0.7, keep)
            assert [x.item() for x in got] == pytest.approx(list(want))
    single = torch.ones(1, 1, requires_grad=True)
    assert [x.item() for x in efa_ranking_loss(single, 0.1)] == [0.0, 0.0]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"lam": 10.0, "rescale": False, "normalize": True, "keep_positive": True},
        {"sigma_scale": 2.0, "tau": 0.5},
    ],
)
def test_whole_efa_loss_against_a_loop(options):
    text, valid, image = efa_inputs(1)
    opts = dict(
        lam=1.0, rescale=True, normalize=False, keep_positive=False, sigma_scale=1.0, tau=1.0
    )
    opts.update(options)
    want = efa_by_loop(text.tolist(), valid.tolist(), image.tolist(), 0.2, 0.8, **opts)
    got = efa_losses(
        text, valid, image, 0.2, 0.8,
        tau=opts["tau"], lam=opts["lam"], sigma_scale=opts["sigma_scale"],
        lse_rescale=opts["rescale"], normalize_hard_sim=opts["normalize"],
        keep_positive=opts["keep_positive"],
    )  # fmt: skip
    for key in ("t2e", "e2t", "i2e", "e2i"):
        assert got[key].item() == pytest.approx(want[key], rel=1e-9), key
    total = efa_loss(text, valid, image, 0.2, 0.8, tau=opts["tau"], lam=opts["lam"],
                     sigma_scale=opts["sigma_scale"], lse_rescale=opts["rescale"],
                     normalize_hard_sim=opts["normalize"], keep_positive=opts["keep_positive"])  # fmt: skip
    assert total.item() == pytest.approx(sum(want.values()), rel=1e-9)


def test_padding_takes_no_part_in_efa():
    text, valid, image = efa_inputs(2)
    text.requires_grad_()
    loss = efa_loss(text, valid, image, 0.1, 0.1)
    loss.backward()
    assert text.grad[~valid].abs().max() == 0
    assert text.grad[valid].abs().sum() > 0
    noisy = text.detach().clone()
    noisy[~valid] = 50.0 * torch.randn(int((~valid).sum()), 6, dtype=torch.float64)
    torch.testing.assert_close(efa_loss(noisy, valid, image, 0.1, 0.1), loss.detach())
    # The same change at a position that takes part does change the loss.
    moved = text.detach().clone()
    moved[0, 1] += 3.0
    assert not torch.allclose(efa_loss(moved, valid, image, 0.1, 0.1), loss.detach())
    # With the padding taking part (the model's default: all L positions) they matter.
    everything = torch.ones_like(valid)
    assert not torch.allclose(
        efa_loss(noisy, everything, image, 0.1, 0.1),
        efa_loss(text.detach(), everything, image, 0.1, 0.1),
    )


def test_efa_gradients_are_finite_and_reach_both_sides():
    text, valid, image = efa_inputs(3, batch=4, length=6, patches=5, dim=8)
    text, image = text.float().requires_grad_(), image.float().requires_grad_()
    for opts in (
        {},
        {"lam": 10.0, "lse_rescale": False, "normalize_hard_sim": True, "keep_positive": True},
    ):
        text.grad = image.grad = None
        loss = efa_loss(text, valid, image, 1.0, 1.0, **opts)
        loss.backward()
        assert torch.isfinite(loss)
        for grad in (text.grad, image.grad):
            assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_efa_needs_a_valid_position_per_caption():
    text, valid, image = efa_inputs(0)
    valid[1] = False
    # an assertion on the device (RuntimeError), raised at once on the CPU
    with pytest.raises(RuntimeError, match="at least one position"):
        efa_loss(text, valid, image, 0.1, 0.1)


def test_hard_similarity_keeps_no_full_size_tensor_for_backward():
    bq, q_len, be, l_len, dim = 4, 6, 4, 5, 3
    queries = torch.randn(bq, q_len, dim, requires_grad=True)
    joint = torch.randn(be, l_len, dim, requires_grad=True)
    valid = torch.ones(be, l_len, dtype=torch.bool)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hard = hard_similarity(queries, joint, valid, lam=1.0)
    hard.sum().backward()
    assert saved and max(saved) < bq * q_len * be * l_len
    assert torch.isfinite(queries.grad).all() and queries.grad.abs().sum() > 0


# ------------------------------------------------------------------ model


def test_without_efa_and_alpha_zero_fmfa_is_irra():
    fmfa = build(
        "configs/CUHKPEDES/fmfa.yml", "MODEL.FMFA.EFA", "False", "MODEL.FMFA.ALPHA", "0.0"
    ).train()
    # configs/CUHKPEDES/irra.yml aligns the masked caption (IRRA's code), fmfa.yml the unmasked.
    irra = build("configs/CUHKPEDES/irra.yml", "MODEL.IRR.GLOBAL_CAPTION", "unmasked").train()
    irra.load_state_dict(fmfa.state_dict(), strict=True)
    batch = caption_batch()
    torch.manual_seed(1)
    a = fmfa(batch)
    torch.manual_seed(1)
    b = irra(batch)
    assert set(a) == {"loss_asdm", "loss_id", "loss_irr"}
    assert set(b) == {"loss_sdm", "loss_id", "loss_irr"}
    torch.testing.assert_close(a["loss_asdm"], b["loss_sdm"], rtol=0, atol=0)
    for key in ("loss_id", "loss_irr"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # A-SDM switched off gives IRRA's own term and name.
    plain = build(
        "configs/CUHKPEDES/fmfa.yml", "MODEL.FMFA.EFA", "False", "MODEL.FMFA.A_SDM", "False"
    )
    plain.load_state_dict(fmfa.state_dict())
    c = plain.train()(batch)
    assert set(c) == set(b)
    torch.testing.assert_close(c["loss_sdm"], b["loss_sdm"], rtol=0, atol=0)
    # And alpha > 0 changes the global term.
    weighted = build("configs/CUHKPEDES/fmfa.yml", "MODEL.FMFA.EFA", "False")
    weighted.load_state_dict(fmfa.state_dict())
    assert weighted.train()(batch)["loss_asdm"] >= b["loss_sdm"]


def test_full_model_losses_and_gradients():
    model = build().train()
    batch = caption_batch()
    out = model(batch)
    assert set(out) == {"loss_asdm", "loss_id", "loss_irr", "loss_efa"}
    assert all(torch.isfinite(v) for v in out.values())
    # The EFA term alone reaches both encoders, and nothing else.
    out["loss_efa"].backward()
    for prefix in ("image_encoder.", "text_encoder."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), prefix
        assert all(torch.isfinite(g).all() for g in grads if g is not None), prefix
    assert model.classifier.weight.grad is None
    assert all(p.grad is None for p in model.irr.parameters())

    # The model's EFA term is efa_loss of the unmasked caption's tokens at all L positions
    # and the patch tokens.
    feats = model.training_features(batch)
    everything = torch.ones_like(feats["text_padding"])
    want = efa_loss(feats["text_tokens"], everything, feats["image_tokens"][:, 1:], 0.1, 0.1)
    torch.testing.assert_close(model.losses_from(feats, batch)["loss_efa"], want)
    doubled = build("configs/CUHKPEDES/fmfa.yml", "MODEL.FMFA.EFA_WEIGHT", "2.0").train()
    doubled.load_state_dict(model.state_dict())
    torch.testing.assert_close(doubled.losses_from(feats, batch)["loss_efa"], 2 * want)

    model.eval()
    torch.testing.assert_close(model({"text": batch["text"]}), feats["text_global"])
    assert model({"images": batch["images"]}).shape == (4, model.embed_dim)


def test_masked_global_caption_feeds_a_sdm_id_and_efa():
    model = build("configs/CUHKPEDES/fmfa.yml", *MASKED).train()
    batch = caption_batch()
    out = model(batch)
    assert set(out) == {"loss_asdm", "loss_id", "loss_irr", "loss_efa"}
    # Scrambling the unmasked caption changes no loss: every one reads the masked caption.
    scrambled = model(dict(batch, text=batch["text"].flip(0)))
    for key in out:
        torch.testing.assert_close(scrambled[key], out[key], rtol=0, atol=0)
    # The global text feature and EFA's tokens are the encoding of the masked token ids.
    feats = model.training_features(batch)
    tokens, glob = model.text_tokens(batch["text_mlm"])
    torch.testing.assert_close(feats["text_global"], glob, rtol=0, atol=0)
    torch.testing.assert_close(feats["text_tokens"], tokens, rtol=0, atol=0)
    image = feats["image_tokens"]
    torch.testing.assert_close(out["loss_asdm"], a_sdm_loss(image[:, 0], glob, batch["targets"]))
    everything = torch.ones(tokens.shape[:2], dtype=torch.bool)
    torch.testing.assert_close(
        out["loss_efa"], efa_loss(tokens, everything, image[:, 1:], 0.1, 0.1)
    )
    # Evaluation encodes the unmasked caption.
    model.eval()
    torch.testing.assert_close(model({"text": batch["text"]}), model.text_tokens(batch["text"])[1])


def test_unmasked_global_caption_is_the_papers_configs():
    model = build().train()  # configs/CUHKPEDES/fmfa.yml
    assert model.global_caption == "unmasked"
    batch = caption_batch()
    out = model(batch)
    scrambled = model(dict(batch, text=batch["text"].flip(0)))
    for key in ("loss_asdm", "loss_id", "loss_efa"):
        assert not torch.allclose(scrambled[key], out[key]), key
    torch.testing.assert_close(scrambled["loss_irr"], out["loss_irr"], rtol=0, atol=0)
    glob = model.text_tokens(batch["text"])[1]
    torch.testing.assert_close(model.training_features(batch)["text_global"], glob)


def test_efa_default_uses_every_position():
    model = build().train()  # configs/CUHKPEDES/fmfa.yml, MODEL.FMFA.PADDING_TOKENS default
    assert model.padding_tokens and model.text_encoder.context_length == 77
    batch = caption_batch()
    feats = model.training_features(batch)
    assert feats["text_tokens"].shape[1] == 77 and feats["text_padding"].any()
    assert model.efa_text_mask(feats["text_padding"]).all()
    full = model(batch)
    # A batch trimmed to its longest caption is padded back: still all 77 positions.
    length = int(eot_positions(batch["text_mlm"]).max()) + 1
    assert length < 77
    trimmed = {k: v[:, :length] if k.startswith("text") else v for k, v in batch.items()}
    again = model(trimmed)
    for key in full:
        torch.testing.assert_close(again[key], full[key], rtol=0, atol=0)
    short = model.training_features(trimmed)
    assert not torch.allclose(model.losses_from(short, trimmed)["loss_efa"], full["loss_efa"])
    # The default is the paper's L positions; MODEL.FMFA.PADDING_TOKENS False keeps the words.
    words = build("configs/CUHKPEDES/fmfa.yml", "MODEL.FMFA.PADDING_TOKENS", "False").train()
    assert not torch.allclose(words(batch)["loss_efa"], full["loss_efa"])


@pytest.mark.parametrize(
    "config, alpha, lam, margins, lr",
    [
        ("configs/CUHKPEDES/fmfa_authors_code.yml", 10.0, 10.0, (0.1, 0.1), 1e-5),  # 8dfd532
        ("configs/CUHKPEDES/fmfa_authors_code_2025_08.yml", 0.1, 1.0, (0.1, 0.9), 5e-6),
    ],
)
def test_authors_code_configs_pin_one_commit(config, alpha, lam, margins, lr):
    cfg = build_config(str(ROOT / config))
    f = cfg.MODEL.FMFA
    assert cfg.MODEL.META_ARCHITECTURE == "FMFA" and cfg.MODEL.IRR.GLOBAL_CAPTION == "masked"
    assert (f.A_SDM, f.ALPHA, f.ALPHA_FROM, f.WEIGHT_GRAD) == (True, alpha, "cosine", True)
    assert (f.EFA, f.EFA_WEIGHT, f.TAU2, f.LSE_LAMBDA, f.LSE_RESCALE, f.SIGMA_SCALE) == (
        True, 1.0, 1.0, lam, False, 1.0,
    )  # fmt: skip
    assert (f.MARGIN_T2E, f.MARGIN_I2E) == margins
    assert (f.SPECIAL_TOKENS, f.PADDING_TOKENS, f.NORMALIZE_HARD_SIM, f.KEEP_POSITIVE_TERM) == (
        True, True, True, True,
    )  # fmt: skip
    assert cfg.SOLVER.BASE_LR == lr and cfg.SOLVER.IMS_PER_BATCH == 64
    assert cfg.SOLVER.MAX_EPOCH == 60 and cfg.SOLVER.OPT == "Adam"
    assert cfg.MODEL.RETRIEVAL.LOGIT_SCALE == 50.0 and list(cfg.INPUT.TEXT.VIEWS) == ["mlm"]
    assert cfg.MODEL.RETRIEVAL.ID_WEIGHT == 1.0 and cfg.MODEL.IRR.WEIGHT == 1.0
    assert cfg.INPUT.TEXT.CONTEXT_LENGTH == 77


def test_efa_text_mask_options():
    padding = torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
    default = build()
    assert default.efa_text_mask(padding).all()
    words = build("configs/CUHKPEDES/fmfa.yml", "MODEL.FMFA.PADDING_TOKENS", "False")
    assert torch.equal(words.efa_text_mask(padding), ~padding)
    no_ends = build(
        "configs/CUHKPEDES/fmfa.yml",
        "MODEL.FMFA.SPECIAL_TOKENS", "False",
        "MODEL.FMFA.PADDING_TOKENS", "False",
    )  # fmt: skip
    want = torch.tensor([[False, True, True, False, False, False], [False] + [True] * 4 + [False]])
    assert torch.equal(no_ends.efa_text_mask(padding), want)


def test_authors_code_options_reach_the_losses():
    base = build().train()
    batch = caption_batch()
    feats = base.training_features(batch)
    reference = base.losses_from(feats, batch)
    lam10 = ["MODEL.FMFA.LSE_LAMBDA", "10.0"]
    for opts, changed, baseline in (
        (["MODEL.FMFA.ALPHA_FROM", "cosine"], "loss_asdm", []),
        (["MODEL.FMFA.PADDING_TOKENS", "False"], "loss_efa", []),
        (lam10, "loss_efa", []),
        (lam10 + ["MODEL.FMFA.LSE_RESCALE", "False"], "loss_efa", lam10),
        (["MODEL.FMFA.NORMALIZE_HARD_SIM", "True"], "loss_efa", []),
        (["MODEL.FMFA.KEEP_POSITIVE_TERM", "True"], "loss_efa", []),
        (["MODEL.FMFA.MARGIN_I2E", "0.9"], "loss_efa", []),
    ):
        ref = reference
        if baseline:
            ref = build("configs/CUHKPEDES/fmfa.yml", *baseline).train().losses_from(feats, batch)
        out = build("configs/CUHKPEDES/fmfa.yml", *opts).train().losses_from(feats, batch)
        assert not torch.allclose(out[changed], ref[changed]), opts
        for other in set(out) - {changed}:
            torch.testing.assert_close(out[other], ref[other])


def test_training_only_parts_are_not_built_for_evaluation():
    model = build("configs/CUHKPEDES/fmfa.yml", "MODEL.TRAINING_HEADS", "False")
    names = [n for n, _ in model.named_parameters()]
    assert names and not [n for n in names if n.startswith(("classifier.", "irr."))]
    irra = build("configs/CUHKPEDES/irra.yml", "MODEL.TRAINING_HEADS", "False")
    assert model.state_dict().keys() == irra.state_dict().keys()
    # Training FMFA adds no parameter to IRRA's.
    assert build().state_dict().keys() == build("configs/CUHKPEDES/irra.yml").state_dict().keys()
    with pytest.raises(RuntimeError, match="TRAINING_HEADS"):
        model.train()(caption_batch())


def test_configuration_errors():
    with pytest.raises(ValueError, match="ALPHA_FROM"):
        build("configs/CUHKPEDES/fmfa.yml", "MODEL.FMFA.ALPHA_FROM", "rank")
    with pytest.raises(ValueError, match="LSE_LAMBDA"):
        build("configs/CUHKPEDES/fmfa.yml", "MODEL.FMFA.LSE_LAMBDA", "0.0")


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    "dataset, alpha, margins, epochs",
    [("CUHKPEDES", 10.0, (0.1, 0.1), 60), ("ICFGPEDES", 10.0, (0.2, 1.0), 100), ("RSTPReid", 1.0, (0.2, 0.8), 60)],
)  # fmt: skip
def test_dataset_configs_hold_the_papers_values(dataset, alpha, margins, epochs):
    cfg = build_config(str(ROOT / f"configs/{dataset}/fmfa.yml"))
    f = cfg.MODEL.FMFA
    assert cfg.MODEL.META_ARCHITECTURE == "FMFA"
    assert (f.A_SDM, f.EFA, f.ALPHA, f.ALPHA_FROM, f.WEIGHT_GRAD) == (
        True,
        True,
        alpha,
        "probability",
        False,
    )
    assert (f.MARGIN_T2E, f.MARGIN_I2E) == margins
    assert (f.TAU2, f.LSE_LAMBDA, f.LSE_RESCALE, f.SIGMA_SCALE, f.EFA_WEIGHT) == (
        1.0,
        1.0,
        True,
        1.0,
        1.0,
    )
    assert (f.SPECIAL_TOKENS, f.PADDING_TOKENS, f.NORMALIZE_HARD_SIM, f.KEEP_POSITIVE_TERM) == (
        True, True, False, False,
    )  # fmt: skip
    assert cfg.MODEL.IRR.GLOBAL_CAPTION == "unmasked"  # the paper's text
    assert cfg.MODEL.RETRIEVAL.LOGIT_SCALE == 50.0  # tau_1 = 0.02
    assert cfg.MODEL.RETRIEVAL.ID_WEIGHT == 1.0 and cfg.MODEL.IRR.WEIGHT == 1.0
    assert list(cfg.INPUT.TEXT.VIEWS) == ["mlm"]
    assert cfg.SOLVER.BASE_LR == 1e-5 and cfg.SOLVER.IMS_PER_BATCH == 64
    assert cfg.SOLVER.MAX_EPOCH == epochs and cfg.SOLVER.OPT == "Adam"
    assert tuple(cfg.INPUT.SIZE_TRAIN) == (384, 128) and cfg.INPUT.TEXT.CONTEXT_LENGTH == 77


@pytest.mark.parametrize("config", FMFA_CONFIGS)
def test_config_builds(config):
    model = build(config)
    assert type(model).__name__ == "FMFA"
    assert model.a_sdm and model.efa_weight == 1.0


def test_ablation_rows_are_overrides():
    base = "configs/CUHKPEDES/fmfa.yml"
    rows = {
        ("False", "False"): {"loss_sdm", "loss_id", "loss_irr"},
        ("True", "False"): {"loss_asdm", "loss_id", "loss_irr"},
        ("False", "True"): {"loss_sdm", "loss_id", "loss_irr", "loss_efa"},
        ("True", "True"): {"loss_asdm", "loss_id", "loss_irr", "loss_efa"},
    }
    batch = caption_batch()
    for (a_sdm, efa), keys in rows.items():
        model = build(base, "MODEL.FMFA.A_SDM", a_sdm, "MODEL.FMFA.EFA", efa).train()
        assert set(model(batch)) == keys


# ------------------------------------------------------------------ end to end


def test_train_then_eval_only(tmp_path):
    data = tmp_path / "data"
    write_cuhkpedes(str(data))
    out = tmp_path / "train"
    trained = train_net(
        "configs/CUHKPEDES/fmfa.yml",
        str(data),
        "MODEL.IRR.DEPTH", "1",
        *SHORT_RUN,
        "OUTPUT_DIR", str(out),
    )  # fmt: skip
    for key in ("loss_asdm", "loss_efa", "loss_irr", "loss_id"):
        assert key in trained, key
    assert "efa_t2e" in (out / "metrics.json").read_text()
    results = final_results(trained, "CUHKPEDES")
    weights = out / "model_final.pth"
    assert weights.is_file()
    evaluated = train_net(
        "configs/CUHKPEDES/fmfa.yml",
        str(data),
        "MODEL.IRR.DEPTH", "1",
        "MODEL.WEIGHTS", str(weights),
        "OUTPUT_DIR", str(tmp_path / "eval"),
        eval_only=True,
    )  # fmt: skip
    assert "Loading checkpoint from" in evaluated and "Starting training" not in evaluated
    assert final_results(evaluated, "CUHKPEDES") == results
    assert {"R1", "R5", "R10", "mAP"} <= set(results)
