"""vi_rank_metrics against an independent brute force and hand-worked rankings."""

import math

import numpy as np
import pytest
import torch

from plugins.evaluation import metrics as metrics_module
from plugins.evaluation import vi_rank_metrics
from plugins.evaluation.metrics import rank_metrics
from tests.ranking_reference import assert_metrics_equal, quantised_features, vi_rank_reference


@pytest.fixture(autouse=True)
def _both_backends(counting_backend):
    """Every test here runs with each way of the compiled counting pass and with torch."""


RULES = ("none", "sysu", "same_cam_id")


def vi_case(seed, num_q, num_g, dim, levels, num_ids, num_cams=6, extra_q_ids=2):
    """Quantised features (exact float32 dot products, many ties), duplicated gallery rows,
    cameras 1..num_cams, and query ids that the gallery lacks."""
    rng = np.random.default_rng(seed)
    q, g = quantised_features(rng, num_q, num_g, dim, levels)
    g[rng.integers(0, num_g, size=num_g // 3)] = g[rng.integers(0, num_g, size=num_g // 3)]
    g_pids = rng.integers(0, num_ids, size=num_g)
    q_pids = rng.integers(0, num_ids + extra_q_ids, size=num_q)
    q_cams = rng.integers(1, num_cams + 1, size=num_q)
    g_cams = rng.integers(1, num_cams + 1, size=num_g)
    return q, g, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("camera_rule", RULES)
@pytest.mark.parametrize("unique_ids", [True, False])
@pytest.mark.parametrize(
    "seed,num_q,num_g,dim,levels,num_ids,chunk,gchunk,topk",
    [
        (0, 9, 31, 3, 1, 5, 4, 7, (1, 10, 20)),
        (1, 25, 60, 4, 2, 8, 7, 13, (1, 2, 3, 5)),
        (2, 16, 45, 2, 1, 3, 16, 45, (1, 2)),
        (3, 30, 12, 5, 2, 6, 1, 1, (1, 4)),
        (4, 12, 80, 1, 2, 20, 5, 16, (1, 3, 10)),
        # ~50 positives a query: the compiled pass's binary-search rows, with the rules
        (5, 10, 200, 3, 1, 4, 6, 70, (1, 5)),
    ],
)
def test_matches_brute_force_with_ties(
    camera_rule, unique_ids, seed, num_q, num_g, dim, levels, num_ids, chunk, gchunk, topk
):
    args = vi_case(seed, num_q, num_g, dim, levels, num_ids)
    got = vi_rank_metrics(
        *args,
        camera_rule=camera_rule,
        unique_ids=unique_ids,
        topk=topk,
        chunk_size=chunk,
        gallery_chunk=gchunk,
    )
    assert_metrics_equal(got, vi_rank_reference(*args, camera_rule, unique_ids, topk))


@pytest.mark.parametrize("camera_rule", RULES)
def test_float_features_and_chunk_invariance(camera_rule):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((40, 8)).astype(np.float32)
    g = rng.standard_normal((70, 8)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 12, size=40), rng.integers(0, 10, size=70)
    q_cams, g_cams = rng.integers(1, 4, size=40), rng.integers(1, 4, size=70)
    args = (q, g, q_pids, g_pids, q_cams, g_cams)
    expected = vi_rank_reference(*args, camera_rule, True, (1, 10, 20))
    for chunk, gchunk in [(1024, 8192), (3, 11), (40, 1), (1, 70)]:
        got = vi_rank_metrics(*args, camera_rule, chunk_size=chunk, gallery_chunk=gchunk)
        assert_metrics_equal(got, expected)
    as_torch = vi_rank_metrics(
        torch.from_numpy(q), torch.from_numpy(g), *map(torch.from_numpy, args[2:]), camera_rule
    )
    assert_metrics_equal(as_torch, expected)


def test_identity_table_splits_query_chunks(monkeypatch):
    # A tiny budget for the (queries x identities) table forces chunks of a few rows.
    monkeypatch.setattr(metrics_module, "_MAX_SLOTS", 64)
    args = vi_case(5, 40, 150, 3, 2, 30)
    got = vi_rank_metrics(*args, "sysu", chunk_size=40, gallery_chunk=33)
    assert_metrics_equal(got, vi_rank_reference(*args, "sysu", True, (1, 10, 20)))


def test_recount_keeps_identity_ranks_exact(monkeypatch):
    # The separate positive-score matmul pretends to round up: the recount must be exact too.
    original = metrics_module._positive_scores
    calls = []

    def perturbed(*args, **kwargs):
        calls.append(1)
        scores = original(*args, **kwargs)
        return torch.nextafter(scores, torch.full_like(scores, math.inf))

    monkeypatch.setattr(metrics_module, "_positive_scores", perturbed)
    args = vi_case(9, 20, 50, 3, 2, 6)
    for rule in RULES:
        got = vi_rank_metrics(*args, rule, chunk_size=6, gallery_chunk=10)
        assert_metrics_equal(got, vi_rank_reference(*args, rule, True, (1, 10, 20)))
    assert calls


def test_identity_once_cmc_by_hand():
    # Scores 5..1 for gallery items 0..4 with identities 2, 2, 3, 1, 1; the query is identity 1.
    # Plain ranking: positives at ranks 4 and 5 -> R1 = R3 = 0, R4 = 100.
    # Distinct identities in ranked order: 2, 3, 1 -> identity 1 is third: R1 = 0, R3 = R4 = 100.
    # AP = (1/4 + 2/5) / 2 = 0.325, INP = 2/5, for both CMC kinds.
    q = np.array([[1.0]], dtype=np.float32)
    g = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]], dtype=np.float32)
    args = (q, g, [1], [2, 2, 3, 1, 1], [3], [1, 1, 1, 1, 1])
    unique = vi_rank_metrics(*args, unique_ids=True, topk=(1, 3, 4))
    plain = vi_rank_metrics(*args, unique_ids=False, topk=(1, 3, 4))
    assert unique == pytest.approx({"R1": 0.0, "R3": 100.0, "R4": 100.0, "mAP": 32.5, "mINP": 40.0})
    assert plain == pytest.approx({"R1": 0.0, "R3": 0.0, "R4": 100.0, "mAP": 32.5, "mINP": 40.0})


def test_sysu_rule_by_hand():
    # Gallery (score, cam, pid): (5, 2, 2), (4, 2, 1), (3, 1, 1), (2, 4, 3), (1, 1, 1).
    # Query pid 1 from camera 3: both cam-2 items go, the wrong identity and the right one.
    #   Ranking: (3, pid 1), (2, pid 3), (1, pid 1): positives at 1 and 3.
    #   R1 = 100, AP = (1/1 + 2/3) / 2 = 5/6, INP = 2/3.
    # Query pid 1 from camera 6: nothing dropped. Ranking pid 2, 1, 1, 3, 1: positives 2, 3, 5.
    #   Identities 2, 1, ...: identity rank 2 -> R1 = 0, R2 = 100.
    #   AP = (1/2 + 2/3 + 3/5) / 3, INP = 3/5.
    g = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]], dtype=np.float32)
    g_pids, g_cams = [2, 1, 1, 3, 1], [2, 2, 1, 4, 1]
    q = np.array([[1.0]], dtype=np.float32)
    cam3 = vi_rank_metrics(q, g, [1], g_pids, [3], g_cams, "sysu", topk=(1, 2))
    assert cam3 == pytest.approx(
        {"R1": 100.0, "R2": 100.0, "mAP": 100 * 5 / 6, "mINP": 100 * 2 / 3}
    )
    cam6 = vi_rank_metrics(q, g, [1], g_pids, [6], g_cams, "sysu", topk=(1, 2))
    ap6 = 100 * (1 / 2 + 2 / 3 + 3 / 5) / 3
    assert cam6 == pytest.approx({"R1": 0.0, "R2": 100.0, "mAP": ap6, "mINP": 60.0})
    # Without the rule the camera-3 query sees the same list as the camera-6 one.
    assert vi_rank_metrics(q, g, [1], g_pids, [3], g_cams, "none", topk=(1, 2)) == cam6
    # Both queries at once: the means of the two.
    both = vi_rank_metrics(
        np.ones((2, 1), dtype=np.float32), g, [1, 1], g_pids, [3, 6], g_cams, "sysu", topk=(1,)
    )
    assert both["R1"] == pytest.approx(50.0)
    assert both["mAP"] == pytest.approx((100 * 5 / 6 + ap6) / 2)


def test_same_cam_id_rule_and_skipped_query_by_hand():
    # Gallery (score, pid, cam): (5, 1, 1), (4, 2, 1), (3, 1, 2), (2, 3, 1).
    # Query A: pid 1, cam 1: item 0 (same id and camera) goes; ranking pid 2, pid 1 ->
    #   rank 2: R1 = 0, R2 = 100, AP = 1/2, INP = 1/2.
    # Query B: pid 3, cam 1: its only positive (item 3) has its camera: no positive is left,
    #   so it is skipped and the figures are query A's alone (not halved).
    # Items of another identity from the query's camera stay (item 1 is ranked for A).
    q = np.array([[1.0], [1.0]], dtype=np.float32)
    g = np.array([[5.0], [4.0], [3.0], [2.0]], dtype=np.float32)
    args = (q, g, [1, 3], [1, 2, 1, 3], [1, 1], [1, 1, 2, 1])
    got = vi_rank_metrics(*args, "same_cam_id", topk=(1, 2))
    assert got == pytest.approx({"R1": 0.0, "R2": 100.0, "mAP": 50.0, "mINP": 50.0})
    # No rule: A's positives are at ranks 1 and 3, AP = (1 + 2/3) / 2 = 5/6, INP = 2/3; B
    # finds item 3 at rank 4 (identities 1, 2, 3 -> identity rank 3), AP = INP = 1/4.
    # Means: R1 = R2 = 50, R3 = 100, mAP = (5/6 + 1/4) / 2 = 13/24, mINP = (2/3 + 1/4) / 2.
    none = vi_rank_metrics(*args, "none", topk=(1, 2, 3))
    assert none == pytest.approx(
        {"R1": 50.0, "R2": 50.0, "R3": 100.0, "mAP": 100 * 13 / 24, "mINP": 100 * 11 / 24}
    )


def test_ties_go_to_lower_gallery_index_in_both_cmc_kinds():
    # All scores equal: the ranking is the gallery order, identities 2, 1, 2, 1.
    q = np.zeros((1, 2), dtype=np.float32)
    g = np.zeros((4, 2), dtype=np.float32)
    args = (q, g, [1], [2, 1, 2, 1], [1], [1, 1, 1, 1])
    for unique in (True, False):
        got = vi_rank_metrics(*args, unique_ids=unique, topk=(1, 2))
        # Positives at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 1/2, INP = 2/4.
        assert got == pytest.approx({"R1": 0.0, "R2": 100.0, "mAP": 50.0, "mINP": 50.0})
    # Identities 2, 2, 3, 1 at equal score: plain rank 4, identity rank 3.
    g = np.zeros((5, 2), dtype=np.float32)
    args = (q, g, [1], [2, 2, 3, 1, 1], [1], [1] * 5)
    assert vi_rank_metrics(*args, unique_ids=True, topk=(3,))["R3"] == 100.0
    assert vi_rank_metrics(*args, unique_ids=False, topk=(3,))["R3"] == 0.0


def test_plain_cmc_without_rule_equals_rank_metrics_on_queries_with_positives():
    q, g, q_pids, g_pids, q_cams, g_cams = vi_case(11, 30, 70, 3, 2, 7, extra_q_ids=0)
    q_pids[:5] = 99  # no positive: skipped by vi_rank_metrics, scored 0 by rank_metrics
    vi = vi_rank_metrics(q, g, q_pids, g_pids, q_cams, g_cams, "none", False, topk=(1, 5, 10))
    plain = rank_metrics(q[5:], g, q_pids[5:], g_pids)
    assert_metrics_equal(vi, plain)
    scaled = {k: v * 25 / 30 for k, v in plain.items()}
    assert_metrics_equal(rank_metrics(q, g, q_pids, g_pids), scaled)


def test_every_query_skipped_and_invalid_arguments():
    q = np.ones((2, 1), dtype=np.float32)
    g = np.ones((2, 1), dtype=np.float32)
    got = vi_rank_metrics(q, g, [5, 6], [1, 2], [1, 1], [1, 1])
    assert got == {"R1": 0.0, "R10": 0.0, "R20": 0.0, "mAP": 0.0, "mINP": 0.0}
    with pytest.raises(ValueError, match="camera_rule"):
        vi_rank_metrics(q, g, [1, 2], [1, 2], [1, 1], [1, 1], camera_rule="regdb")
    with pytest.raises(ValueError, match="cameras"):
        vi_rank_metrics(q, g, [1, 2], [1, 2], [1], [1, 1])
    with pytest.raises(ValueError):
        vi_rank_metrics(q, g, [1, 2], [1, 2], [1, 1], [1, 1], topk=(0,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    args = vi_case(3, 64, 300, 6, 2, 20)
    for rule in RULES:
        cpu = vi_rank_metrics(*args, rule, chunk_size=17, gallery_chunk=50)
        gpu = vi_rank_metrics(*args, rule, chunk_size=17, gallery_chunk=50, device="cuda")
        assert_metrics_equal(gpu, cpu)
