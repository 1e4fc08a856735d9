"""Exact ranking metrics (CMC, mAP, mINP) computed in bounded memory.

The ranking of a query is the gallery sorted by descending similarity ``q @ g.T``, ties broken by
the lower gallery index first. No full row is ever sorted: the rank of a positive gallery item
``j`` is ``1 + #{g : s_g > s_j or (s_g == s_j and g < j)}``, and these counts are accumulated
block by block over (query chunk x gallery chunk) similarity blocks.

How one query chunk is processed:

* Every (score, gallery index) pair is mapped to one int64 key whose integer order is the ranking
  order (order-preserving bits of the float32 score in the high half, the complemented gallery
  index in the low half). "Item g ranks ahead of positive j" is then simply ``key_g > key_j``.
* Only block entries scoring at least the lowest positive of their row can rank ahead of a
  positive; those candidates are picked with one comparison per block entry.
* For each candidate, the number ``m`` of positives of its own row it ranks ahead of is found with
  two binary searches on flat arrays (the positives' keys are first compressed to their rank among
  all positive keys of the chunk, so that ``(row, rank)`` fits in one int64). A per-row histogram of
  ``m`` then gives, for every positive, how many gallery items rank ahead of it.

Positive scores are read back from the same blocks that are used for counting, so the counts are
exact with respect to the computed float32 similarities (BLAS may round the last bit of a dot
product differently for different matrix shapes; the blocks are the reference here).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["rank_metrics"]

logger = logging.getLogger(__name__)

_LOW_MASK = 0xFFFFFFFF


def _balanced_splits(n: int, chunk: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into ``ceil(n / chunk)`` contiguous parts whose sizes differ by <= 1."""
    if n <= 0:
        return []
    parts = max(1, math.ceil(n / chunk))
    base, rem = divmod(n, parts)
    splits, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < rem else 0)
        splits.append((start, stop))
        start = stop
    return splits


def _order_key(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered like (score ascending, gallery index descending).

    A larger key means "ranked earlier". ``scores`` is float32, ``index`` int64 in [0, 2**32).
    """
    # Adding +0.0 turns -0.0 into +0.0, so both zeros get the same key (they compare equal).
    bits = (scores + 0.0).contiguous().view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return ordered * (1 << 32) + (_LOW_MASK - index)


def _to_features(x, device: torch.device) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.float32)


def _to_numpy_ids(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr


class _QueryChunk:
    """Positives of one chunk of queries that all have at least one positive."""

    def __init__(self, query_index: np.ndarray, num_pos: np.ndarray, pos_cols: np.ndarray, device):
        n = len(query_index)
        self.n = n
        self.total = int(num_pos.sum())
        row_start = np.zeros(n, dtype=np.int64)
        np.cumsum(num_pos[:-1], out=row_start[1:])
        row_of = np.repeat(np.arange(n, dtype=np.int64), num_pos)

        def dev(a):
            return torch.as_tensor(a).to(device)

        self.query_index = dev(query_index.astype(np.int64))
        self.num_pos = dev(num_pos.astype(np.int64))
        self.row_start = dev(row_start)
        self.row_of = dev(row_of)
        # Gallery index of each positive; grouped by row, ascending inside a row.
        self.cols = dev(pos_cols.astype(np.int64))
        # Histogram bins: row r owns bins [offset[r], offset[r] + num_pos[r]].
        self.offset = self.row_start + torch.arange(n, device=device)
        self.col_order = torch.argsort(self.cols)
        self.sorted_cols = self.cols[self.col_order]


def _positive_scores(qa: torch.Tensor, g: torch.Tensor, chunk: _QueryChunk, gallery_chunk: int):
    """Scores of the chunk's positives from small matmuls against the gathered positive items."""
    uniq, inverse = torch.unique(chunk.cols, return_inverse=True)
    scores = torch.empty(chunk.total, dtype=torch.float32, device=qa.device)
    order = torch.argsort(inverse)
    sorted_inv = inverse[order]
    for start, stop in _balanced_splits(uniq.numel(), gallery_chunk):
        block = qa @ g[uniq[start:stop]].T
        lo, hi = torch.searchsorted(
            sorted_inv, torch.tensor([start, stop], device=qa.device)
        ).tolist()
        sel = order[lo:hi]
        scores[sel] = block[chunk.row_of[sel], inverse[sel] - start]
    return scores


def _count_ahead(
    qa: torch.Tensor,
    g: torch.Tensor,
    chunk: _QueryChunk,
    pos_scores: torch.Tensor,
    gallery_splits: list[tuple[int, int]],
):
    """One pass over the gallery.

    Returns the flat histogram (see ``_QueryChunk.offset``) of "number of positives of the row
    that a gallery item ranks ahead of", the position of each positive in its row's ascending key
    order, and the positives' scores as found in the blocks.
    """
    device = qa.device
    pos_keys = _order_key(pos_scores, chunk.cols)
    uniq_keys = torch.unique(pos_keys)  # sorted ascending
    stride = uniq_keys.numel() + 1
    row_rank = chunk.row_of * stride + torch.searchsorted(uniq_keys, pos_keys)
    sorted_row_rank = torch.sort(row_rank).values
    # Keys are distinct within a row (distinct gallery indices), so this is a true position.
    key_pos = torch.searchsorted(sorted_row_rank, row_rank) - chunk.row_start[chunk.row_of]
    threshold = torch.full((chunk.n,), float("inf"), dtype=torch.float32, device=device)
    threshold.scatter_reduce_(0, chunk.row_of, pos_scores, reduce="amin")
    threshold = threshold[:, None]

    hist = torch.zeros(chunk.total + chunk.n, dtype=torch.int64, device=device)
    block_scores = torch.empty_like(pos_scores)
    bounds = torch.tensor([b for split in gallery_splits for b in split], device=device)
    pos_bounds = torch.searchsorted(chunk.sorted_cols, bounds).view(-1, 2).tolist()
    for (start, stop), (lo, hi) in zip(gallery_splits, pos_bounds):
        block = qa @ g[start:stop].T
        if hi > lo:
            sel = chunk.col_order[lo:hi]
            block_scores[sel] = block[chunk.row_of[sel], chunk.cols[sel] - start]
        rows, cols = torch.nonzero(block >= threshold, as_tuple=True)
        if rows.numel() == 0:
            continue
        keys = _order_key(block[rows, cols], cols + start)
        compressed = rows * stride + torch.searchsorted(uniq_keys, keys)
        ahead = torch.searchsorted(sorted_row_rank, compressed) - chunk.row_start[rows]
        hist += torch.bincount(chunk.offset[rows] + ahead, minlength=hist.numel())
    return hist, key_pos, block_scores


def rank_metrics(
    q_feats,
    g_feats,
    q_pids,
    g_pids,
    topk: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    device=None,
    gallery_chunk: int = 8192,
    progress: bool = False,
) -> dict[str, float]:
    """Exact CMC (R@k), mAP and mINP of ranking ``g_feats`` by ``q_feats @ g_feats.T``, in percent.

    Args:
        q_feats: (Q, D) query features (tensor or array), used as given (not normalised here).
        g_feats: (G, D) gallery features. On ``device`` as float32 it is used in place (no copy).
        q_pids: (Q,) query identities (ints; tensor, array or list).
        g_pids: (G,) gallery identities; a gallery item is a positive of a query iff pids are equal.
        topk: ranks k reported as ``R{k}`` (percent of queries whose first positive has rank <= k).
        chunk_size: queries per similarity block.
        device: torch device for the computation; CPU when ``None``.
        gallery_chunk: gallery items per similarity block (a block holds
            ``chunk_size * gallery_chunk`` float32 scores; peak extra memory is a small multiple).
        progress: log progress (``logging`` INFO) after each query chunk.

    Returns:
        dict of python floats ``{"R1": .., "R5": .., "R10": .., "mAP": .., "mINP": ..}``. The gallery
        is ranked by descending similarity with ties going to the lower gallery index; AP averages
        ``i / rank_i`` over all positives, INP is ``#positives / rank of the last positive``. Every
        query counts; a query without any positive scores 0 in every metric.
    """
    topk = [int(k) for k in topk]
    if any(k < 1 for k in topk):
        raise ValueError(f"topk values must be >= 1, got {topk}")
    if chunk_size < 1 or gallery_chunk < 1:
        raise ValueError("chunk_size and gallery_chunk must be >= 1")
    device = torch.device("cpu") if device is None else torch.device(device)

    q = _to_features(q_feats, device)
    g = _to_features(g_feats, device)
    q_ids = _to_numpy_ids(q_pids)
    g_ids = _to_numpy_ids(g_pids)
    num_q, num_g = q.shape[0], g.shape[0]
    if len(q_ids) != num_q or len(g_ids) != num_g:
        raise ValueError("number of pids must match number of features")
    if num_q and num_g and q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dims differ: {q.shape[1]} vs {g.shape[1]}")
    if num_g >= 1 << 32:
        raise ValueError("gallery larger than 2**32 items is not supported")

    hits = dict.fromkeys(topk, 0)
    sum_ap = 0.0
    sum_inp = 0.0

    # Group gallery items by identity; positives of a query are one contiguous run of `order`.
    codes = np.unique(np.concatenate([q_ids, g_ids]), return_inverse=True)[1].reshape(-1)
    q_codes, g_codes = codes[:num_q], codes[num_q:]
    order = np.argsort(g_codes, kind="stable")
    counts = np.bincount(g_codes, minlength=int(codes.max()) + 1 if codes.size else 0)
    starts = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=starts[1:])
    num_pos_all = counts[q_codes] if num_q else np.zeros(0, dtype=np.int64)
    active = np.flatnonzero(num_pos_all > 0)

    gallery_splits = _balanced_splits(num_g, gallery_chunk)
    t0 = time.perf_counter()
    done = 0
    for a, b in _balanced_splits(len(active), chunk_size):
        qidx = active[a:b]
        num_pos = num_pos_all[qidx]
        first = np.repeat(starts[q_codes[qidx]], num_pos)
        row_start = np.repeat(np.cumsum(num_pos) - num_pos, num_pos)
        pos_cols = order[first + np.arange(int(num_pos.sum())) - row_start]
        chunk = _QueryChunk(qidx, num_pos, pos_cols, device)
        qa = q[chunk.query_index]

        scores = _positive_scores(qa, g, chunk, gallery_chunk)
        hist, key_pos, block_scores = _count_ahead(qa, g, chunk, scores, gallery_splits)
        if not torch.equal(block_scores, scores):
            # The separate matmul rounded some positive differently from the blocks: recount with
            # the block values, which are the ones every other gallery item is compared with.
            scores = block_scores
            hist, key_pos, block_scores = _count_ahead(qa, g, chunk, scores, gallery_splits)
            if not torch.equal(block_scores, scores):
                raise RuntimeError("matmul is not deterministic; cannot rank exactly")

        # A positive at position `key_pos` of its row's ascending key order has
        # rank = 1 + #(items ahead of it) = 1 + sum of the row's hist bins above `key_pos`.
        cum = torch.cumsum(hist, 0)
        base = chunk.offset[chunk.row_of]
        npos_flat = chunk.num_pos[chunk.row_of]
        rank = 1 + cum[base + npos_flat] - cum[base + key_pos]
        position = npos_flat - key_pos  # 1-based order of the positive in the ranking
        ap = torch.zeros(chunk.n, dtype=torch.float64, device=device)
        ap.index_add_(0, chunk.row_of, position.double() / rank.double())
        ap /= chunk.num_pos.double()
        first_rank = torch.full_like(chunk.num_pos, num_g + 1)
        first_rank.scatter_reduce_(0, chunk.row_of, rank, reduce="amin")
        last_rank = torch.zeros_like(chunk.num_pos)
        last_rank.scatter_reduce_(0, chunk.row_of, rank, reduce="amax")
        sum_ap += float(ap.sum())
        sum_inp += float((chunk.num_pos.double() / last_rank.double()).sum())
        for k in topk:
            hits[k] += int((first_rank <= k).sum())

        done += len(qidx)
        if progress:
            logger.info(
                "rank_metrics: %d/%d queries with positives done (%.1fs)",
                done,
                len(active),
                time.perf_counter() - t0,
            )

    denom = max(num_q, 1)
    result = {f"R{k}": 100.0 * hits[k] / denom for k in topk}
    result["mAP"] = 100.0 * sum_ap / denom
    result["mINP"] = 100.0 * sum_inp / denom
    return result
