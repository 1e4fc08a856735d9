"""Plain-python references for the ranking metrics, and the shared test data helpers.

The references score every pair, sort every row by (-score, gallery index) and read the figures
off the sorted list, with none of the streaming, chunking or tie counting of
``plugins.evaluation.metrics``: they are slow and independent.
"""

import numpy as np
import pytest


def _reference(q, g, q_pids, g_pids, topk, visible, unique_ids, skip_without_positive):
    """Figures of ranking ``g`` for every row of ``q``; ``visible(qi, j)`` says whether query
    ``qi`` sees gallery item ``j``."""
    q = [[float(v) for v in row] for row in q]
    g = [[float(v) for v in row] for row in g]
    q_pids = [int(p) for p in q_pids]
    g_pids = [int(p) for p in g_pids]
    hits = dict.fromkeys(topk, 0)
    total_ap = total_inp = 0.0
    counted = 0
    for qi, qrow in enumerate(q):
        seen = [j for j in range(len(g)) if visible(qi, j)]
        scores = {j: sum(a * b for a, b in zip(qrow, g[j])) for j in seen}
        ranking = sorted(seen, key=lambda j: (-scores[j], j))
        ranks = [r + 1 for r, j in enumerate(ranking) if g_pids[j] == q_pids[qi]]
        if not ranks:
            # Counted with every figure 0 unless the protocol skips such queries.
            counted += not skip_without_positive
            continue
        counted += 1
        if unique_ids:
            identities = []
            for j in ranking:
                if g_pids[j] not in identities:
                    identities.append(g_pids[j])
            cmc_rank = identities.index(q_pids[qi]) + 1
        else:
            cmc_rank = ranks[0]
        for k in topk:
            hits[k] += cmc_rank <= k
        total_ap += sum((i + 1) / r for i, r in enumerate(ranks)) / len(ranks)
        total_inp += len(ranks) / ranks[-1]
    n = max(counted, 1)
    out = {f"R{k}": 100.0 * hits[k] / n for k in topk}
    out["mAP"] = 100.0 * total_ap / n
    out["mINP"] = 100.0 * total_inp / n
    return out


def rank_reference(q, g, q_pids, g_pids, topk):
    """``rank_metrics`` by brute force: every query counts, one without a positive scores 0."""
    return _reference(q, g, q_pids, g_pids, topk, lambda qi, j: True, False, False)


def vi_rank_reference(q, g, q_pids, g_pids, q_cams, g_cams, camera_rule, unique_ids, topk):
    """``vi_rank_metrics`` by brute force: each query's invisible items dropped, identities
    deduplicated explicitly, queries left without a positive skipped."""

    def visible(qi, j):
        if camera_rule == "sysu":
            return not (int(q_cams[qi]) == 3 and int(g_cams[j]) == 2)
        if camera_rule == "same_cam_id":
            same_id = int(g_pids[j]) == int(q_pids[qi])
            return not (same_id and int(g_cams[j]) == int(q_cams[qi]))
        return True

    return _reference(q, g, q_pids, g_pids, topk, visible, unique_ids, True)


def assert_metrics_equal(got, expected, tol=1e-9):
    """Same keys in the same order, python floats, equal values."""
    assert list(got) == list(expected)
    for key in expected:
        assert isinstance(got[key], float), key
        assert got[key] == pytest.approx(expected[key], abs=tol), (key, got, expected)


def quantised_features(rng, num_q, num_g, dim, levels):
    """(num_q, dim) and (num_g, dim) float32 features on a grid of step 0.5: dot products are
    exact in float32 and many of them tie."""
    q = rng.integers(-levels, levels + 1, size=(num_q, dim)).astype(np.float32) * 0.5
    g = rng.integers(-levels, levels + 1, size=(num_g, dim)).astype(np.float32) * 0.5
    return q, g
