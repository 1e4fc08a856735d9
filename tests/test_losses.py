"""Shared losses against hand-worked values and plain loop implementations."""

import math

import numpy as np
import pytest
import torch

from plugins.modeling.losses import (
    id_loss,
    info_nce,
    pairwise_euclidean,
    sdm_loss,
    sdm_row_kl,
    wrt_loss,
)


def _softplus(x):
    return math.log1p(math.exp(x))


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _random_batch(seed, n=12, d=8, num_ids=4):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, d, generator=g, dtype=torch.float64)
    pids = torch.randint(0, num_ids, (n,), generator=g)
    pids[1] = pids[0]  # at least one repeated identity
    return a, b, pids


# ---------------------------------------------------------------------- plain references


def ref_sdm(img, txt, pids, scale, eps):
    img, txt, pids = _unit_rows(np.asarray(img)), _unit_rows(np.asarray(txt)), list(pids)
    n = len(pids)

    def one_direction(a, b):
        total = 0.0
        for i in range(n):
            logits = [scale * float(np.dot(a[i], b[j])) for j in range(n)]
            z = sum(math.exp(v) for v in logits)
            positives = sum(1 for j in range(n) if pids[i] == pids[j])
            for j in range(n):
                p = math.exp(logits[j]) / z
                q = (1.0 if pids[i] == pids[j] else 0.0) / positives
                total += p * (math.log(p) - math.log(q + eps))
        return total / n

    return one_direction(img, txt) + one_direction(txt, img)


def ref_row_kl(logits, pids, eps):
    """KL(softmax(row) || q) of every row of a nested list; q spreads over same-pid columns."""
    out = []
    for i, row in enumerate(logits):
        z = sum(math.exp(v) for v in row)
        positives = sum(1 for p in pids if p == pids[i])
        total = 0.0
        for j, v in enumerate(row):
            p = math.exp(v) / z
            q = (1.0 if pids[j] == pids[i] else 0.0) / positives
            total += p * (math.log(p) - math.log(q + eps))
        out.append(total)
    return out


def ref_info_nce(query, keys, tau):
    query, keys = _unit_rows(np.asarray(query)), _unit_rows(np.asarray(keys))
    total = 0.0
    for i in range(len(query)):
        logits = [float(np.dot(query[i], k)) / tau for k in keys]
        total -= logits[i] - math.log(sum(math.exp(v) for v in logits))
    return total / len(query)


def ref_wrt(feats, pids):
    feats, pids = np.asarray(feats), list(pids)
    n = len(pids)
    total = 0.0
    for i in range(n):
        pos = [float(np.linalg.norm(feats[i] - feats[j])) for j in range(n) if pids[j] == pids[i]]
        neg = [float(np.linalg.norm(feats[i] - feats[k])) for k in range(n) if pids[k] != pids[i]]
        pos_term = sum(d * math.exp(d) for d in pos) / sum(math.exp(d) for d in pos)
        neg_term = (
            sum(d * math.exp(-d) for d in neg) / sum(math.exp(-d) for d in neg) if neg else 0.0
        )
        total += _softplus(pos_term - neg_term)
    return total / n


# ---------------------------------------------------------------------- SDM


def test_sdm_hand_value_distinct_ids():
    # Features are scaled to check the normalisation; S = I, logit_scale 1.
    img = torch.tensor([[3.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    txt = torch.tensor([[0.5, 0.0], [0.0, 4.0]], dtype=torch.float64)
    eps = 1e-8
    e = math.e
    p_hit, p_miss = e / (e + 1), 1 / (e + 1)
    row = p_hit * (math.log(p_hit) - math.log(1 + eps)) + p_miss * (
        math.log(p_miss) - math.log(eps)
    )
    expected = 2 * row  # both rows equal, both directions equal
    got = sdm_loss(img, txt, torch.tensor([0, 1]), logit_scale=1.0, eps=eps)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_sdm_hand_value_shared_id():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    txt = img.clone()
    eps = 1e-8
    e2 = math.exp(2.0)
    p_hit, p_miss = e2 / (e2 + 1), 1 / (e2 + 1)
    row = p_hit * (math.log(p_hit) - math.log(0.5 + eps)) + p_miss * (
        math.log(p_miss) - math.log(0.5 + eps)
    )
    got = sdm_loss(img, txt, torch.tensor([7, 7]), logit_scale=2.0, eps=eps)
    assert got.item() == pytest.approx(2 * row, rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sdm_matches_loop_reference(seed):
    img, txt, pids = _random_batch(seed)
    got = sdm_loss(img, txt, pids, logit_scale=7.0, eps=1e-8)
    assert got.item() == pytest.approx(ref_sdm(img, txt, pids.tolist(), 7.0, 1e-8), rel=1e-9)


def test_sdm_row_kl_by_hand():
    # Distinct ids: q is one-hot; row [2, 0] has p = (e^2, 1) / (e^2 + 1) and column [2, 1]
    # has p = (e, 1) / (e + 1) for the text-to-image direction.
    eps = 1e-8
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    i2t, t2i = sdm_row_kl(logits, torch.tensor([0, 1]), eps)

    def row(hit, miss):  # the positive's logit, the negative's logit
        p_hit = math.exp(hit) / (math.exp(hit) + math.exp(miss))
        p_miss = 1 - p_hit
        return p_hit * (math.log(p_hit) - math.log(1 + eps)) + p_miss * (
            math.log(p_miss) - math.log(eps)
        )

    assert i2t.tolist() == pytest.approx([row(2, 0), row(0, 1)], rel=1e-10)
    assert t2i.tolist() == pytest.approx([row(2, 1), row(0, 0)], rel=1e-10)


@pytest.mark.parametrize("seed", [0, 5])
def test_sdm_row_kl_matches_loop_reference_per_row(seed):
    g = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(6, 6, generator=g, dtype=torch.float64)  # not symmetric
    pids = [2, 2, 0, 5, 0, 2]
    i2t, t2i = sdm_row_kl(logits, torch.tensor(pids), 1e-8)
    assert i2t.shape == t2i.shape == (6,)
    assert i2t.tolist() == pytest.approx(ref_row_kl(logits.tolist(), pids, 1e-8), rel=1e-10)
    assert t2i.tolist() == pytest.approx(ref_row_kl(logits.t().tolist(), pids, 1e-8), rel=1e-10)


def test_sdm_symmetric_in_image_and_text():
    img, txt, pids = _random_batch(3)
    a = sdm_loss(img, txt, pids)
    b = sdm_loss(txt, img, pids)
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    assert a.item() > 0


def test_sdm_accepts_tensor_scale_and_is_stable_at_large_scale():
    img, txt, pids = _random_batch(4)
    scale = torch.tensor(50.0, dtype=torch.float64, requires_grad=True)
    img = img.clone().requires_grad_(True)
    loss = sdm_loss(img, txt, pids, logit_scale=scale)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0
    assert scale.grad is not None and torch.isfinite(scale.grad)
    expected = ref_sdm(img.detach(), txt, pids.tolist(), 50.0, 1e-8)
    assert loss.item() == pytest.approx(expected, rel=1e-8)


# ---------------------------------------------------------------------- InfoNCE


def test_info_nce_hand_value():
    q = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0))
    assert info_nce(q, k, 0.5).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("m", [12, 20])
def test_info_nce_matches_loop_reference(m):
    g = torch.Generator().manual_seed(m)
    q = torch.randn(12, 6, generator=g, dtype=torch.float64)
    k = torch.randn(m, 6, generator=g, dtype=torch.float64)
    assert info_nce(q, k, 0.07).item() == pytest.approx(ref_info_nce(q, k, 0.07), rel=1e-9)


def test_info_nce_is_one_directional():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(6, 4, generator=g, dtype=torch.float64)
    k = torch.randn(6, 4, generator=g, dtype=torch.float64)
    assert info_nce(q, k, 0.1).item() != pytest.approx(info_nce(k, q, 0.1).item(), rel=1e-6)
    assert info_nce(k, q, 0.1).item() == pytest.approx(ref_info_nce(k, q, 0.1), rel=1e-9)


def test_info_nce_gradient_reaches_both_arguments():
    g = torch.Generator().manual_seed(6)
    q = torch.randn(5, 4, generator=g, requires_grad=True)
    k = torch.randn(5, 4, generator=g, requires_grad=True)
    info_nce(q, k, 0.2).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is not None and k.grad.abs().sum() > 0


def test_info_nce_rejects_fewer_keys_than_queries():
    with pytest.raises(ValueError):
        info_nce(torch.randn(4, 3), torch.randn(3, 3), 0.1)


# ---------------------------------------------------------------------- WRT


def test_wrt_hand_value():
    # Points on a line: 0 and 1 share an identity, 3 is another one.
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    pids = torch.tensor([0, 0, 1])
    e = math.e
    pos01 = (0 * 1 + 1 * e) / (1 + e)  # positives at distances 0 (self) and 1
    neg2 = (3 * math.exp(-3) + 2 * math.exp(-2)) / (math.exp(-3) + math.exp(-2))
    expected = (_softplus(pos01 - 3.0) + _softplus(pos01 - 2.0) + _softplus(0.0 - neg2)) / 3
    assert wrt_loss(feats, pids).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wrt_matches_loop_reference(seed):
    feats, _, pids = _random_batch(seed)
    feats = feats * 0.3  # keep distances moderate so every weight matters
    assert wrt_loss(feats, pids).item() == pytest.approx(ref_wrt(feats, pids.tolist()), rel=1e-9)


def test_wrt_single_identity_has_zero_negative_term():
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    loss = wrt_loss(feats, torch.tensor([4, 4]))
    pos = math.e / (1 + math.e)
    assert loss.item() == pytest.approx(_softplus(pos), rel=1e-10)
    loss.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0


def test_wrt_gradient_finite_with_duplicate_features():
    feats = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    loss = wrt_loss(feats, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()


def test_wrt_huge_distances_do_not_overflow():
    feats = torch.tensor([[0.0], [500.0], [1000.0], [1400.0]], requires_grad=True)
    loss = wrt_loss(feats, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()
    # The weights become one-hot: only anchor 1 (hardest positive 500, nearest negative 500)
    # contributes, softplus(0) = ln 2; the other anchors give softplus(<= -100) ~ 0.
    assert loss.item() == pytest.approx(math.log(2.0) / 4, abs=1e-6)


def test_pairwise_euclidean_exact_zero_diagonal():
    x = torch.randn(5, 3, dtype=torch.float64)
    d = pairwise_euclidean(x)
    assert torch.equal(torch.diagonal(d), torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(d, torch.cdist(x, x), atol=1e-6)
    y = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(pairwise_euclidean(x, y), torch.cdist(x, y), atol=1e-6)


# ---------------------------------------------------------------------- ID


def test_id_loss_hand_values():
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    target = torch.tensor([1])
    assert id_loss(logits, target).item() == pytest.approx(-math.log(0.75), rel=1e-10)
    # Smoothed: (1 - eps) * CE + eps * mean_c(-log p_c).
    smooth = 0.2
    expected = (1 - smooth) * -math.log(0.75) + smooth * (-math.log(0.25) - math.log(0.75)) / 2
    got = id_loss(logits, target, label_smoothing=smooth)
    assert got.item() == pytest.approx(expected, rel=1e-10)
