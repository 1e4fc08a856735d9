"""Exact ranking metrics (CMC, mAP, mINP) computed in bounded memory.

The ranking of a query is the gallery sorted by descending similarity ``q @ g.T``, ties broken by
the lower gallery index first. No row is ever sorted: the rank of a positive gallery item ``j`` is
``1 + #{g : s_g > s_j or (s_g == s_j and g < j)}``, and these counts are accumulated block by block
over (query chunk x gallery chunk) similarity blocks. Memory is bounded by the block size, not by
queries x gallery.

How one query chunk is processed:

* Every (score, gallery index) pair is mapped to one int64 key whose integer order is the ranking
  order (order-preserving bits of the float32 score in the high half, the complemented gallery
  index in the low half). "Item g ranks ahead of positive j" is then simply ``key_g > key_j``,
  which settles exact ties by index.
* Each row's positive keys are sorted into a small padded table (width: a power of two above the
  row's number of positives).
* Only block entries scoring at least the lowest positive of their row can rank ahead of a
  positive; those candidates are picked with one comparison per block entry. For each candidate a
  vectorised branchless binary search in its row's table gives the number ``m`` of positives it
  ranks ahead of; a per-row histogram of ``m`` then gives, for every positive, how many gallery
  items rank ahead of it, hence its rank.

Cost: the float32 matmul (Q x G x D) plus O(log P) work per candidate, where P is the number of
positives of the query.

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
# Upper bound on the entries of the per-chunk padded (queries x positives) tables.
_MAX_SLOTS = 1 << 22


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


def _order_key(scores: torch.Tensor, index: torch.Tensor, index_offset: int = 0) -> torch.Tensor:
    """int64 keys ordered like (score ascending, gallery index descending).

    A larger key means "ranked earlier". ``scores`` is float32; the gallery index is
    ``index + index_offset`` (int64, in [0, 2**32)).
    """
    # Adding +0.0 turns -0.0 into +0.0, so both zeros get the same key (they compare equal).
    bits = (scores + 0.0).view(torch.int32)
    # Negative floats: flip every bit but the sign, which reverses their order.
    key32 = bits >> 31
    key32 &= 0x7FFFFFFF
    key32 ^= bits
    key = key32.to(torch.int64)
    key <<= 32
    key -= index
    key += _LOW_MASK - index_offset
    return key


def _to_features(x, device: torch.device) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
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


def _next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


class _QueryChunk:
    """Positives of one chunk of queries that all have at least one positive.

    Row ``r`` of the chunk owns ``width`` slots (a power of two > its number of positives) in the
    padded per-row tables of positive keys and of the histogram.
    """

    def __init__(self, query_index: np.ndarray, num_pos: np.ndarray, pos_cols: np.ndarray, device):
        n = len(query_index)
        self.n = n
        self.total = int(num_pos.sum())
        self.width = _next_pow2(int(num_pos.max()) + 1)
        row_start = np.cumsum(num_pos) - num_pos
        row_of = np.repeat(np.arange(n, dtype=np.int64), num_pos)

        def dev(a):
            return torch.as_tensor(a).to(device)

        self.query_index = dev(query_index.astype(np.int64))
        self.num_pos = dev(num_pos.astype(np.int64))
        self.row_of = dev(row_of)
        # Flat slot of each positive in the padded (n, width) tables, in gallery-index order.
        self.slot = dev(row_of * self.width + np.arange(self.total) - row_start[row_of])
        # Gallery index of each positive; grouped by row, ascending inside a row.
        self.cols = dev(pos_cols.astype(np.int64))
        self.col_order = torch.argsort(self.cols)
        self.sorted_cols = self.cols[self.col_order]


def _query_chunks(num_pos: np.ndarray, chunk_size: int) -> list[tuple[int, int]]:
    """Balanced splits of queries sorted by ascending number of positives.

    A chunk with many positives per query is split further so that its padded tables hold at
    most ``_MAX_SLOTS`` entries.
    """
    out = []
    for start, stop in _balanced_splits(len(num_pos), chunk_size):
        width = _next_pow2(int(num_pos[stop - 1]) + 1)
        rows = max(1, _MAX_SLOTS // width)
        out.extend((start + a, start + b) for a, b in _balanced_splits(stop - start, rows))
    return out


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

    Returns ``hist`` of shape (n, width): ``hist[r, m]`` is the number of gallery items that rank
    ahead of exactly the ``m`` lowest-keyed positives of row ``r``; and the positives' scores as
    found in the similarity blocks.
    """
    device = qa.device
    n, width = chunk.n, chunk.width
    # Each row's positive keys, ascending, padded with the largest int64 (never below any key).
    table = torch.full((n * width,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)
    table[chunk.slot] = _order_key(pos_scores, chunk.cols)
    table = torch.sort(table.view(n, width), dim=1).values.view(-1)
    # Lowest positive score of each row: only items scoring at least this can rank ahead of one.
    threshold = torch.full((n,), float("inf"), dtype=torch.float32, device=device)
    threshold.scatter_reduce_(0, chunk.row_of, pos_scores, reduce="amin")
    threshold = threshold[:, None]
    steps = [width >> k for k in range(1, width.bit_length())]  # width/2, ..., 1

    hist = torch.zeros(n * width, dtype=torch.int64, device=device)
    block_scores = torch.empty_like(pos_scores)
    bounds = torch.tensor([b for split in gallery_splits for b in split], device=device)
    pos_bounds = torch.searchsorted(chunk.sorted_cols, bounds).view(-1, 2).tolist()
    # Reused buffers for the similarity block and its candidate mask.
    max_cols = max(stop - start for start, stop in gallery_splits)
    block_buf = torch.empty(n * max_cols, dtype=torch.float32, device=device)
    mask_buf = torch.empty(n * max_cols, dtype=torch.bool, device=device)
    for (start, stop), (lo, hi) in zip(gallery_splits, pos_bounds):
        cols_in_block = stop - start
        block = block_buf[: n * cols_in_block].view(n, cols_in_block)
        torch.matmul(qa, g[start:stop].T, out=block)
        if hi > lo:
            sel = chunk.col_order[lo:hi]
            block_scores[sel] = block[chunk.row_of[sel], chunk.cols[sel] - start]
        mask = mask_buf[: n * cols_in_block].view(n, cols_in_block)
        torch.ge(block, threshold, out=mask)
        rows, cols = torch.nonzero(mask, as_tuple=True)
        if rows.numel() == 0:
            continue
        values = block[rows, cols]
        keys = _order_key(values, cols, start)
        # Branchless binary search in the row's padded table: afterwards `slot + 1` is
        # r * width + (number of the row's positive keys below the item's key).
        slot = rows * width
        slot -= 1
        probe_at = torch.empty_like(slot)
        probe = torch.empty_like(keys)
        below = torch.empty_like(slot)  # 0/1 as int64: adding it is faster than adding a bool
        for step in steps:
            torch.add(slot, step, out=probe_at)
            torch.index_select(table, 0, probe_at, out=probe)
            torch.lt(probe, keys, out=below)
            slot.add_(below, alpha=step)
        slot += 1
        hist += torch.bincount(slot, minlength=hist.numel())
    hist = hist.view(n, width)
    return hist, block_scores


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
        gallery_chunk: gallery items per similarity block. A block holds
            ``chunk_size * gallery_chunk`` float32 scores (32 MB with the defaults); its
            candidates take up to ~70 bytes per block entry more in the worst case (every entry
            scoring above the row's lowest positive), typically far less.
        progress: log progress (``logging`` INFO) after each query chunk.

    Returns:
        dict of python floats ``{"R1": .., "R5": .., "R10": .., "mAP": .., "mINP": ..}``. The gallery
        is ranked by descending similarity with ties going to the lower gallery index; AP averages
        ``i / rank_i`` over all positives, INP is ``#positives / rank of the last positive``. Every
        query counts; a query without any positive scores 0 in every metric. Features must be
        finite.
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
    starts = np.cumsum(counts) - counts
    num_pos_all = counts[q_codes] if num_q else np.zeros(0, dtype=np.int64)
    active = np.flatnonzero(num_pos_all > 0)
    # Sorted by number of positives (tight padded tables), then by identity: queries of one
    # identity share their positives, which keeps `_positive_scores` small.
    active = active[np.lexsort((q_codes[active], num_pos_all[active]))]

    gallery_splits = _balanced_splits(num_g, gallery_chunk)
    t0 = time.perf_counter()
    done = 0
    for a, b in _query_chunks(num_pos_all[active], chunk_size):
        qidx = active[a:b]
        num_pos = num_pos_all[qidx]
        first = np.repeat(starts[q_codes[qidx]], num_pos)
        row_start = np.repeat(np.cumsum(num_pos) - num_pos, num_pos)
        pos_cols = order[first + np.arange(int(num_pos.sum())) - row_start]
        chunk = _QueryChunk(qidx, num_pos, pos_cols, device)
        qa = q[chunk.query_index]

        scores = _positive_scores(qa, g, chunk, gallery_chunk)
        hist, block_scores = _count_ahead(qa, g, chunk, scores, gallery_splits)
        if not torch.equal(block_scores, scores):
            # The separate matmul rounded some positive differently from the blocks: recount with
            # the block values, which are the ones every other gallery item is compared with.
            scores = block_scores
            hist, block_scores = _count_ahead(qa, g, chunk, scores, gallery_splits)
            if not torch.equal(block_scores, scores):
                raise RuntimeError("matmul is not deterministic; cannot rank exactly")

        # The positive with the t-th smallest key (t = 0, 1, ...) of row r has
        # rank = 1 + #(items ahead of it) = 1 + sum(hist[r, t + 1:]), and is the
        # (num_pos[r] - t)-th positive in the ranking.
        ahead = torch.flip(torch.cumsum(torch.flip(hist, [1]), 1), [1])[:, 1:]
        t = torch.arange(chunk.width - 1, device=device)
        npos = chunk.num_pos[:, None]
        valid = t < npos
        rank = (ahead + 1).double()
        ap = torch.where(valid, (npos - t).double() / rank, 0.0).sum(1) / chunk.num_pos.double()
        first_rank = rank.gather(1, npos - 1)[:, 0]
        last_rank = rank[:, 0]
        sum_ap += float(ap.sum())
        sum_inp += float((chunk.num_pos.double() / last_rank).sum())
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
