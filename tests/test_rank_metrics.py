"""Tests of the exact chunked ranking metrics against an independent brute force."""

import math

import numpy as np
import pytest
import torch

from plugins.evaluation import metrics as metrics_module
from plugins.evaluation.metrics import rank_metrics
from tests.ranking_reference import assert_metrics_equal, quantised_features, rank_reference


@pytest.fixture(autouse=True)
def _both_backends(counting_backend):
    """Every test here runs with each way of the compiled counting pass and with torch."""


def quantised_case(seed, num_q, num_g, dim, levels, num_ids, extra_q_ids=0, dup_gallery=0):
    """Features on a coarse grid (many exact ties; float32 dot products are exact)."""
    rng = np.random.default_rng(seed)
    q, g = quantised_features(rng, num_q, num_g, dim, levels)
    if dup_gallery:
        src = rng.integers(0, num_g, size=dup_gallery)
        dst = rng.integers(0, num_g, size=dup_gallery)
        g[dst] = g[src]
    g_pids = rng.integers(0, num_ids, size=num_g)
    # Ids >= num_ids never occur in the gallery: those queries have no positive.
    q_pids = rng.integers(0, num_ids + extra_q_ids, size=num_q)
    return q, g, q_pids, g_pids


@pytest.mark.parametrize(
    "seed,num_q,num_g,dim,levels,num_ids,chunk,gchunk,topk",
    [
        (0, 7, 23, 4, 2, 5, 3, 5, (1, 5, 10)),
        (1, 20, 50, 8, 1, 6, 7, 11, (1, 5, 10)),
        (2, 13, 40, 3, 1, 4, 13, 40, (1, 2, 3, 50)),
        (3, 1, 30, 5, 2, 3, 1, 1, (1,)),
        (4, 30, 9, 6, 3, 4, 4, 2, (1, 5, 10)),
        (5, 45, 61, 2, 1, 12, 8, 16, (1, 5, 10)),
        (6, 17, 64, 1, 2, 3, 5, 9, (1, 3)),
        (7, 25, 33, 4, 2, 40, 6, 7, (1, 10)),
    ],
)
def test_matches_brute_force_with_ties(
    seed, num_q, num_g, dim, levels, num_ids, chunk, gchunk, topk
):
    q, g, q_pids, g_pids = quantised_case(
        seed, num_q, num_g, dim, levels, num_ids, extra_q_ids=2, dup_gallery=num_g // 3
    )
    got = rank_metrics(q, g, q_pids, g_pids, topk=topk, chunk_size=chunk, gallery_chunk=gchunk)
    assert_metrics_equal(got, rank_reference(q, g, q_pids, g_pids, topk))


def test_random_float_features_match_brute_force():
    rng = np.random.default_rng(11)
    q = rng.standard_normal((40, 16)).astype(np.float32)
    g = rng.standard_normal((90, 16)).astype(np.float32)
    q_pids = rng.integers(0, 12, size=40)
    g_pids = rng.integers(0, 10, size=90)
    expected = rank_reference(q, g, q_pids, g_pids, (1, 5, 10))
    for chunk, gchunk in [(1024, 8192), (7, 13), (40, 1), (1, 90)]:
        got = rank_metrics(q, g, q_pids, g_pids, chunk_size=chunk, gallery_chunk=gchunk)
        assert_metrics_equal(got, expected)


def test_hand_worked_example():
    # Scores 5, 4, 3, 2, 1 for gallery items 0..4; positives (pid 7) at ranks 2 and 4.
    q = np.array([[1.0]], dtype=np.float32)
    g = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]], dtype=np.float32)
    got = rank_metrics(q, g, [7], [1, 7, 2, 7, 3], topk=(1, 5))
    assert got == {"R1": 0.0, "R5": 100.0, "mAP": 50.0, "mINP": 50.0}


def test_hand_worked_example_shuffled_gallery():
    # Same ranking as above, gallery stored in a different order: ranks 2 and 4 again.
    q = np.array([[1.0]], dtype=np.float32)
    g = np.array([[2.0], [5.0], [1.0], [4.0], [3.0]], dtype=np.float32)
    got = rank_metrics(q, g, [7], [7, 1, 3, 7, 2], topk=(1, 2, 3))
    assert got == {"R1": 0.0, "R2": 100.0, "R3": 100.0, "mAP": 50.0, "mINP": 50.0}


def test_tie_goes_to_lower_gallery_index():
    q = np.array([[1.0]], dtype=np.float32)
    g = np.array([[3.0], [3.0], [3.0]], dtype=np.float32)
    # Negative at index 0 ties with the positive at index 1: the negative comes first.
    got = rank_metrics(q, g, [1], [0, 1, 0], topk=(1, 2))
    assert got == {"R1": 0.0, "R2": 100.0, "mAP": 50.0, "mINP": 50.0}
    # Positive at the lower index wins the tie instead.
    got = rank_metrics(q, g, [1], [1, 0, 0], topk=(1, 2))
    assert got == {"R1": 100.0, "R2": 100.0, "mAP": 100.0, "mINP": 100.0}
    # Two tied positives behind one tied negative: ranks 2 and 3.
    got = rank_metrics(q, g, [1], [0, 1, 1], topk=(1,))
    assert got["mAP"] == pytest.approx(100.0 * (1 / 2 + 2 / 3) / 2)
    assert got["mINP"] == pytest.approx(100.0 * 2 / 3)


def test_negative_and_positive_zero_scores_tie():
    # -0.0 and +0.0 compare equal, so the lower index must win.
    q = np.array([[1.0]], dtype=np.float32)
    g = np.array([[0.0], [-0.0], [-1.0]], dtype=np.float32)
    got = rank_metrics(q, g, [5], [5, 4, 4], topk=(1,))
    assert got["R1"] == 100.0
    g = np.array([[-0.0], [0.0], [-1.0]], dtype=np.float32)
    got = rank_metrics(q, g, [5], [4, 5, 4], topk=(1, 2))
    assert got["R1"] == 0.0 and got["R2"] == 100.0


def test_all_scores_equal_gives_index_order():
    q = np.zeros((3, 4), dtype=np.float32)
    g = np.zeros((6, 4), dtype=np.float32)
    g_pids = [0, 1, 2, 0, 1, 2]
    got = rank_metrics(q, g, [0, 1, 2], g_pids, topk=(1, 2), chunk_size=2, gallery_chunk=4)
    assert_metrics_equal(got, rank_reference(q, g, [0, 1, 2], g_pids, (1, 2)))
    assert got["R1"] == pytest.approx(100.0 / 3)


def test_queries_without_positives_count_as_zero():
    q = np.eye(3, dtype=np.float32)
    g = np.eye(3, dtype=np.float32)
    got = rank_metrics(q, g, [0, 1, 9], [0, 1, 2], topk=(1,))
    third = 100.0 * 2 / 3
    assert got["R1"] == pytest.approx(third)
    assert got["mAP"] == pytest.approx(third)
    assert got["mINP"] == pytest.approx(third)
    none = rank_metrics(q, g, [7, 8, 9], [0, 1, 2])
    assert none == {"R1": 0.0, "R5": 0.0, "R10": 0.0, "mAP": 0.0, "mINP": 0.0}


def test_features_are_not_normalised():
    # Cosine would prefer gallery 0; the raw dot product prefers the longer gallery 1.
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    g = np.array([[1.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    assert rank_metrics(q, g, [1], [1, 0], topk=(1,))["R1"] == 0.0
    assert rank_metrics(q, g, [0], [1, 0], topk=(1,))["R1"] == 100.0


def test_input_types_and_chunk_invariance():
    q, g, q_pids, g_pids = quantised_case(21, 150, 400, 6, 2, 30, extra_q_ids=5, dup_gallery=80)
    expected = rank_metrics(q, g, q_pids, g_pids)
    variants = [
        dict(chunk_size=1, gallery_chunk=1000),
        dict(chunk_size=37, gallery_chunk=53),
        dict(chunk_size=149, gallery_chunk=399),
        dict(chunk_size=1000, gallery_chunk=1),
    ]
    for kwargs in variants:
        assert_metrics_equal(rank_metrics(q, g, q_pids, g_pids, **kwargs), expected)
    as_torch = rank_metrics(
        torch.from_numpy(q).double().requires_grad_(),
        torch.from_numpy(g),
        torch.from_numpy(q_pids),
        torch.from_numpy(g_pids).int(),
        chunk_size=64,
    )
    assert_metrics_equal(as_torch, expected)
    as_lists = rank_metrics(q.tolist(), g.tolist(), q_pids.tolist(), g_pids.tolist())
    assert_metrics_equal(as_lists, expected)
    assert_metrics_equal(expected, rank_reference(q, g, q_pids, g_pids, (1, 5, 10)))


def test_many_positives_per_query():
    # Few identities: hundreds of positives per query, with ties across chunk boundaries.
    q, g, q_pids, g_pids = quantised_case(5, 12, 600, 3, 1, 2)
    got = rank_metrics(q, g, q_pids, g_pids, topk=(1, 5), chunk_size=5, gallery_chunk=97)
    assert_metrics_equal(got, rank_reference(q, g, q_pids, g_pids, (1, 5)))


def test_many_positives_with_row_chunks_split(monkeypatch):
    # A tiny slot budget forces query chunks to be split by their number of positives.
    monkeypatch.setattr(metrics_module, "_MAX_SLOTS", 64)
    q, g, q_pids, g_pids = quantised_case(8, 30, 300, 3, 2, 4, extra_q_ids=1, dup_gallery=40)
    got = rank_metrics(q, g, q_pids, g_pids, topk=(1, 5), chunk_size=16, gallery_chunk=70)
    assert_metrics_equal(got, rank_reference(q, g, q_pids, g_pids, (1, 5)))


def test_recount_when_positive_scores_disagree_with_blocks(monkeypatch):
    # Pretend the separate positive-score matmul rounded differently from the blocks; the result
    # must still be exact (the positives are recounted with the block values).
    original = metrics_module._positive_scores
    calls = []

    def perturbed(*args, **kwargs):
        scores = original(*args, **kwargs)
        calls.append(1)
        return torch.nextafter(scores, torch.full_like(scores, math.inf))

    monkeypatch.setattr(metrics_module, "_positive_scores", perturbed)
    q, g, q_pids, g_pids = quantised_case(9, 20, 45, 4, 2, 6, extra_q_ids=2, dup_gallery=10)
    got = rank_metrics(q, g, q_pids, g_pids, chunk_size=6, gallery_chunk=10)
    assert calls
    assert_metrics_equal(got, rank_reference(q, g, q_pids, g_pids, (1, 5, 10)))


def test_empty_and_invalid_inputs():
    g = np.ones((4, 2), dtype=np.float32)
    empty = rank_metrics(np.zeros((0, 2), dtype=np.float32), g, [], [0, 1, 2, 3])
    assert empty == {"R1": 0.0, "R5": 0.0, "R10": 0.0, "mAP": 0.0, "mINP": 0.0}
    with pytest.raises(ValueError):
        rank_metrics(np.ones((2, 3), dtype=np.float32), g, [0, 1], [0, 1, 2, 3])
    with pytest.raises(ValueError):
        rank_metrics(np.ones((2, 2), dtype=np.float32), g, [0], [0, 1, 2, 3])
    with pytest.raises(ValueError):
        rank_metrics(np.ones((2, 2), dtype=np.float32), g, [0, 1], [0, 1, 2, 3], topk=(0,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    q, g, q_pids, g_pids = quantised_case(3, 64, 300, 8, 2, 20, extra_q_ids=3, dup_gallery=50)
    cpu = rank_metrics(q, g, q_pids, g_pids, chunk_size=17, gallery_chunk=50)
    gpu = rank_metrics(q, g, q_pids, g_pids, chunk_size=17, gallery_chunk=50, device="cuda")
    assert_metrics_equal(gpu, cpu)


@pytest.mark.parametrize("positives", [8, 9, 25, 60])
@pytest.mark.parametrize("spread", [1, 3])
def test_rows_either_side_of_the_binary_search_threshold(positives, spread):
    # The compiled pass scans once per positive up to RANK_KERNEL_LINEAR_MIN (8) positives and
    # above picks a scan or a binary search per candidate by the row's number of candidates:
    # coarse scores (spread 1) give many candidates and ties, finer ones (3) fewer.
    rng = np.random.default_rng(positives)
    q, g = quantised_features(rng, 9, 400, 3, spread)
    g_pids = np.repeat(np.arange(400 // positives + 1), positives)[:400]
    g_pids = rng.permutation(g_pids)
    q_pids = g_pids[rng.integers(0, 400, size=9)]
    got = rank_metrics(q, g, q_pids, g_pids, chunk_size=4, gallery_chunk=57)
    assert_metrics_equal(got, rank_reference(q, g, q_pids, g_pids, (1, 5, 10)))


def test_threads_split_rows(monkeypatch):
    # Rows counted by several threads at once give the same figures as one thread.
    q, g, q_pids, g_pids = quantised_case(12, 50, 120, 4, 2, 9, extra_q_ids=2, dup_gallery=30)
    expected = rank_reference(q, g, q_pids, g_pids, (1, 5, 10))
    for threads in (1, 3):
        monkeypatch.setattr(torch, "get_num_threads", lambda t=threads: t)
        got = rank_metrics(q, g, q_pids, g_pids, chunk_size=17, gallery_chunk=50)
        assert_metrics_equal(got, expected)
