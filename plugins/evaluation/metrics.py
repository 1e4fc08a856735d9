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

That is the torch implementation, used on a GPU. On the CPU the counting runs in one compiled
pass per block instead (``_rank_kernel.pyx`` / ``rank_kernel.h``, built by ``pip install -e .``;
without it the torch code runs, with a warning): for each row and each of its positives, one
vectorised branch-free scan counts the block entries ranked ahead of that positive ("score
>= p" left of the positive's index, "score > p" from it on, which is the tie rule), or, for a
row with many positives and few candidates, a binary search per candidate. Its cost does not
depend on how many items outrank the positives, so random features cost what easy ones do.

Cost: the float32 matmul (Q x G x D) plus, in torch, O(log P) work per candidate, or in the
compiled pass about P vector comparisons per block entry (P = the query's positives). A gallery
that fits in one block is scored in one block per query chunk, from which the positives' scores
are read; larger galleries are streamed and the positives' scores come from a small product
against the positive items first.

Positive scores are read back from the same blocks that are used for counting, so the counts are
exact with respect to the computed float32 similarities (BLAS may round the last bit of a dot
product differently for different matrix shapes; the blocks are the reference here).

The VI-ReID variant (:func:`vi_rank_metrics`) runs the same pass with two additions:

* Per-query gallery filtering. Every query gets a drop code and every gallery item one; an item
  is invisible to a query when the codes are equal. Dropped items are left out of the positive
  tables and their candidates are discarded before they are counted.
* Identity-once CMC. Gallery items that rank ahead of the query's first positive are exactly the
  candidates whose key exceeds the first positive's key; marking their identities in a
  (queries x identities) table gives, per query, the number of distinct identities that come
  before its own, hence the rank of its identity in the deduplicated list.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["rank_metrics", "vi_rank_metrics"]

logger = logging.getLogger(__name__)

_LOW_MASK = 0xFFFFFFFF
# Upper bound on the entries of the per-chunk padded (queries x positives) tables, and of the
# (queries x identities) table of the identity-once CMC.
_MAX_SLOTS = 1 << 22
# A gallery larger than one block is still scored in one block per query chunk when that leaves
# at least this many queries a chunk (the matmul stays efficient).
_MIN_WHOLE_GALLERY_ROWS = 128


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


def _query_chunks(
    num_pos: np.ndarray, chunk_size: int, min_width: int = 0
) -> list[tuple[int, int]]:
    """Balanced splits of queries sorted by ascending number of positives.

    A chunk with many positives per query is split further so that its padded tables hold at
    most ``_MAX_SLOTS`` entries; ``min_width`` is the row width of any further per-row table (the
    number of identities for the identity-once CMC).
    """
    out = []
    for start, stop in _balanced_splits(len(num_pos), chunk_size):
        width = max(_next_pow2(int(num_pos[stop - 1]) + 1), min_width)
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
    drop: tuple[torch.Tensor, torch.Tensor] | None = None,
    identities: tuple[torch.Tensor, int] | None = None,
    whole: torch.Tensor | None = None,
):
    """One pass over the gallery.

    Args:
        drop: ``(row_codes (n,), gallery_codes (G,))``; gallery item ``j`` is invisible to row
            ``r`` when ``row_codes[r] == gallery_codes[j]``. ``None``: every item is visible.
        identities: ``(gallery_ids (G,), num_ids)``, identity codes in ``[0, num_ids)``; when
            given, also count per row the distinct identities ranked ahead of its first positive.
        whole: the chunk's (n, G) scores against the whole gallery when they are already
            computed (one gallery split); ``None``: computed here block by block.

    Returns ``ahead`` of shape (n, width - 1): ``ahead[r, t]`` is the number of (visible) gallery
    items ranked ahead of the positive of row ``r`` with the t-th smallest key (columns from
    ``num_pos[r]`` on are padding); the positives' scores as found in the similarity blocks;
    and, with ``identities``, the (n,) number of distinct identities with a visible item ahead
    of each row's first positive (else ``None``).
    """
    kernel = _compiled_kernel() if qa.device.type == "cpu" else None
    count = _count_ahead_compiled if kernel is not None else _count_ahead_torch
    return count(qa, g, chunk, pos_scores, gallery_splits, drop, identities, whole)


def _similarity_blocks(qa, g, chunk, gallery_splits, block_scores, whole=None):
    """Yield ``(start, block)`` for each gallery split: the (n, stop - start) float32 scores,
    in a buffer reused from one split to the next (or ``whole`` as the one block); the
    positives' scores found in the blocks are written to ``block_scores``."""
    if whole is not None:
        block_scores.copy_(whole[chunk.row_of, chunk.cols])
        yield 0, whole
        return
    device = qa.device
    n = chunk.n
    bounds = torch.tensor([b for split in gallery_splits for b in split], device=device)
    pos_bounds = torch.searchsorted(chunk.sorted_cols, bounds).view(-1, 2).tolist()
    max_cols = max(stop - start for start, stop in gallery_splits)
    block_buf = torch.empty(n * max_cols, dtype=torch.float32, device=device)
    for (start, stop), (lo, hi) in zip(gallery_splits, pos_bounds):
        block = block_buf[: n * (stop - start)].view(n, stop - start)
        torch.matmul(qa, g[start:stop].T, out=block)
        if hi > lo:
            sel = chunk.col_order[lo:hi]
            block_scores[sel] = block[chunk.row_of[sel], chunk.cols[sel] - start]
        yield start, block


def _sorted_key_table(chunk: _QueryChunk, pos_scores: torch.Tensor) -> torch.Tensor:
    """(n * width,) each row's positive keys, ascending, padded with the largest int64."""
    n, width = chunk.n, chunk.width
    table = torch.full(
        (n * width,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=pos_scores.device
    )
    table[chunk.slot] = _order_key(pos_scores, chunk.cols)
    return torch.sort(table.view(n, width), dim=1)


def _count_ahead_torch(qa, g, chunk, pos_scores, gallery_splits, drop, identities, whole):
    """:func:`_count_ahead` in torch operations (any device): candidates, then a binary search
    per candidate in its row's key table and a per-row histogram."""
    device = qa.device
    n, width = chunk.n, chunk.width
    table = _sorted_key_table(chunk, pos_scores).values.reshape(-1)
    # Lowest positive score of each row: only items scoring at least this can rank ahead of one.
    threshold = torch.full((n,), float("inf"), dtype=torch.float32, device=device)
    threshold.scatter_reduce_(0, chunk.row_of, pos_scores, reduce="amin")
    threshold = threshold[:, None]
    steps = [width >> k for k in range(1, width.bit_length())]  # width/2, ..., 1
    if identities is not None:
        gallery_ids, num_ids = identities
        # Key of each row's first positive (its largest key).
        first_key = table.view(n, width).gather(1, (chunk.num_pos - 1)[:, None])[:, 0]
        seen = torch.zeros(n * num_ids, dtype=torch.bool, device=device)

    hist = torch.zeros(n * width, dtype=torch.int64, device=device)
    block_scores = torch.empty_like(pos_scores)
    max_cols = max(stop - start for start, stop in gallery_splits)
    mask_buf = torch.empty(n * max_cols, dtype=torch.bool, device=device)
    for start, block in _similarity_blocks(qa, g, chunk, gallery_splits, block_scores, whole):
        mask = mask_buf[: block.numel()].view(block.shape)
        torch.ge(block, threshold, out=mask)
        rows, cols = torch.nonzero(mask, as_tuple=True)
        if drop is not None and rows.numel():
            # Testing the candidates only (usually a small part of the block) is cheaper than
            # masking the whole block.
            visible = drop[0][rows] != drop[1][cols + start]
            rows, cols = rows[visible], cols[visible]
        if rows.numel() == 0:
            continue
        values = block[rows, cols]
        keys = _order_key(values, cols, start)
        if identities is not None:
            ahead = keys > first_key[rows]
            seen[rows[ahead] * num_ids + gallery_ids[cols[ahead] + start]] = True
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
    # hist[r, m]: items ahead of exactly the m lowest-keyed positives of row r, so the positive
    # with the t-th smallest key has sum(hist[r, t + 1:]) items ahead of it.
    hist = hist.view(n, width)
    ahead = torch.flip(torch.cumsum(torch.flip(hist, [1]), 1), [1])[:, 1:]
    ids_ahead = seen.view(n, num_ids).sum(1) if identities is not None else None
    return ahead, block_scores, ids_ahead


_KERNEL = None  # the compiled module once loaded; False when it is not built


def _compiled_kernel():
    """``plugins.evaluation._rank_kernel`` (built by ``pip install -e .``), or ``None``."""
    global _KERNEL
    if _KERNEL is None:
        try:
            from . import _rank_kernel

            _KERNEL = _rank_kernel
        except ImportError:
            logger.warning(
                "plugins.evaluation._rank_kernel is not built (pip install -e . compiles it): "
                "ranking metrics fall back to torch operations, several times slower on the CPU"
            )
            _KERNEL = False
    return _KERNEL or None


# How the compiled pass counts a row: 0 picks per row; 1 always scans, 2 always binary-searches
# (tests set it to reach both ways on any data).
_KERNEL_MODE = 0
_POOL = None


def _thread_pool(workers: int):
    """A shared pool for the kernel's row ranges (the kernel releases the GIL)."""
    global _POOL
    if _POOL is None or _POOL._max_workers != workers:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rank_metrics")
    return _POOL


def _count_ahead_compiled(qa, g, chunk, pos_scores, gallery_splits, drop, identities, whole):
    """:func:`_count_ahead` on the CPU with the compiled pass: one scan of each block, split by
    rows over ``torch.get_num_threads()`` threads."""
    kernel = _compiled_kernel()
    n, width = chunk.n, chunk.width
    # Each row's positives sorted by key (last-ranked first), padded.
    order = _sorted_key_table(chunk, pos_scores).indices
    pscore = torch.full((n * width,), float("inf"), dtype=torch.float32)
    pscore[chunk.slot] = pos_scores
    pindex = torch.zeros(n * width, dtype=torch.int64)
    pindex[chunk.slot] = chunk.cols
    pscore = pscore.view(n, width).gather(1, order).contiguous()
    pindex = pindex.view(n, width).gather(1, order).contiguous()
    num_pos = chunk.num_pos.contiguous()
    ahead = torch.zeros(n, width, dtype=torch.int64)
    row_drop = gal_drop = gal_ids = seen = None
    num_ids = 0
    if drop is not None:
        row_drop = drop[0].to(torch.int32).contiguous()
        gal_drop = drop[1].to(torch.int32).contiguous()
    if identities is not None:
        gal_ids = identities[0].contiguous()
        num_ids = identities[1]
        seen = torch.zeros(n, num_ids, dtype=torch.uint8)

    threads = max(1, min(torch.get_num_threads(), n))
    parts = _balanced_splits(n, math.ceil(n / threads))
    pool = _thread_pool(threads) if len(parts) > 1 else None
    block_scores = torch.empty_like(pos_scores)
    for start, block in _similarity_blocks(qa, g, chunk, gallery_splits, block_scores, whole):
        args = (
            block.data_ptr(),
            block.shape[1],
            block.shape[1],
            start,
            pscore.data_ptr(),
            pindex.data_ptr(),
            num_pos.data_ptr(),
            width,
            0 if row_drop is None else row_drop.data_ptr(),
            0 if gal_drop is None else gal_drop[start:].data_ptr(),
            0 if gal_ids is None else gal_ids[start:].data_ptr(),
            0 if seen is None else seen.data_ptr(),
            num_ids,
            ahead.data_ptr(),
        )
        if pool is None:
            kernel.count_rows(*args, 0, n, _KERNEL_MODE)
        else:
            jobs = [pool.submit(kernel.count_rows, *args, a, b, _KERNEL_MODE) for a, b in parts]
            for job in jobs:
                job.result()
    ids_ahead = seen.sum(1, dtype=torch.int64) if seen is not None else None
    return ahead[:, : width - 1], block_scores, ids_ahead


def _check_args(topk, chunk_size, gallery_chunk, q, g, q_ids, g_ids) -> list[int]:
    topk = [int(k) for k in topk]
    if any(k < 1 for k in topk):
        raise ValueError(f"topk values must be >= 1, got {topk}")
    if chunk_size < 1 or gallery_chunk < 1:
        raise ValueError("chunk_size and gallery_chunk must be >= 1")
    num_q, num_g = q.shape[0], g.shape[0]
    if len(q_ids) != num_q or len(g_ids) != num_g:
        raise ValueError("number of pids must match number of features")
    if num_q and num_g and q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dims differ: {q.shape[1]} vs {g.shape[1]}")
    if num_g >= 1 << 32:
        raise ValueError("gallery larger than 2**32 items is not supported")
    return topk


def _ranked_sums(
    q: torch.Tensor,
    g: torch.Tensor,
    q_ids: np.ndarray,
    g_ids: np.ndarray,
    topk: list[int],
    chunk_size: int,
    gallery_chunk: int,
    progress: bool,
    name: str,
    q_drop: np.ndarray | None = None,
    g_drop: np.ndarray | None = None,
    unique_ids: bool = False,
):
    """The streamed ranking shared by :func:`rank_metrics` and :func:`vi_rank_metrics`.

    Args:
        q_drop, g_drop: (Q,) and (G,) int64 drop codes, or ``None`` for no filtering. Gallery
            item ``j`` is invisible to query ``i`` when ``q_drop[i] == g_drop[j]``; ``g_drop`` is
            in ``[0, C)``, ``q_drop`` in ``[-1, C)`` (-1 drops nothing).
        unique_ids: CMC from the rank of the query's identity among the distinct identities of
            the (filtered) ranking instead of the rank of its first positive.

    Returns:
        ``(hits, sum_ap, sum_inp, num_active)``: per k the number of queries whose CMC rank is
        <= k, the sums of AP and INP, over the ``num_active`` queries with a visible positive.
    """
    device = q.device
    num_q, num_g = q.shape[0], g.shape[0]
    hits = dict.fromkeys(topk, 0)
    sum_ap = 0.0
    sum_inp = 0.0

    # Group gallery items by identity; positives of a query are one contiguous run of `order`.
    codes = np.unique(np.concatenate([q_ids, g_ids]), return_inverse=True)[1].reshape(-1)
    q_codes, g_codes = codes[:num_q], codes[num_q:]
    num_codes = int(codes.max()) + 1 if codes.size else 0
    order = np.argsort(g_codes, kind="stable")
    counts = np.bincount(g_codes, minlength=num_codes)
    starts = np.cumsum(counts) - counts
    num_pos_all = counts[q_codes] if num_q else np.zeros(0, dtype=np.int64)
    if q_drop is not None and num_q and num_g:
        # Subtract the dropped positives: gallery items sharing the query's (identity, drop code).
        width = int(g_drop.max()) + 1
        pairs, pair_counts = np.unique(g_codes * width + g_drop, return_counts=True)
        q_pairs = q_codes * width + q_drop
        at = np.minimum(np.searchsorted(pairs, q_pairs), len(pairs) - 1)
        found = (q_drop >= 0) & (pairs[at] == q_pairs)
        num_pos_all = num_pos_all - np.where(found, pair_counts[at], 0)
    active = np.flatnonzero(num_pos_all > 0)
    # Sorted by number of positives (tight padded tables), then by identity: queries of one
    # identity share their positives, which keeps `_positive_scores` small.
    active = active[np.lexsort((q_codes[active], num_pos_all[active]))]

    if q_drop is not None:
        q_drop_dev = torch.as_tensor(q_drop, dtype=torch.int64).to(device)
        g_drop_dev = torch.as_tensor(g_drop, dtype=torch.int64).to(device)
    identities = None
    if unique_ids:
        identities = (torch.as_tensor(g_codes, dtype=torch.int64).to(device), num_codes)

    budget = chunk_size * gallery_chunk
    if num_g and budget // num_g >= _MIN_WHOLE_GALLERY_ROWS:
        # The whole gallery fits in one block of the same size (more or fewer queries): one block
        # per query chunk, from which the positives' scores are read (no separate product).
        chunk_size, gallery_chunk = budget // num_g, num_g
    gallery_splits = _balanced_splits(num_g, gallery_chunk)
    min_width = num_codes if unique_ids else 0
    t0 = time.perf_counter()
    done = 0
    for a, b in _query_chunks(num_pos_all[active], chunk_size, min_width):
        qidx = active[a:b]
        num_pos = num_pos_all[qidx]
        # Every gallery item of the query's identity, then the dropped ones removed; the stable
        # order keeps each row's positives in ascending gallery index.
        num_same = counts[q_codes[qidx]]
        first = np.repeat(starts[q_codes[qidx]], num_same)
        row_start = np.repeat(np.cumsum(num_same) - num_same, num_same)
        pos_cols = order[first + np.arange(int(num_same.sum())) - row_start]
        if q_drop is not None:
            pos_cols = pos_cols[g_drop[pos_cols] != np.repeat(q_drop[qidx], num_same)]
        chunk = _QueryChunk(qidx, num_pos, pos_cols, device)
        qa = q[chunk.query_index]
        drop = None if q_drop is None else (q_drop_dev[chunk.query_index], g_drop_dev)

        if len(gallery_splits) == 1:
            whole = qa @ g.T
            scores = whole[chunk.row_of, chunk.cols]
            ahead, block_scores, ids_ahead = _count_ahead(
                qa, g, chunk, scores, gallery_splits, drop, identities, whole
            )
            del whole
        else:
            scores = _positive_scores(qa, g, chunk, gallery_chunk)
            ahead, block_scores, ids_ahead = _count_ahead(
                qa, g, chunk, scores, gallery_splits, drop, identities
            )
        if not torch.equal(block_scores, scores):
            # The separate matmul rounded some positive differently from the blocks: recount with
            # the block values, which are the ones every other gallery item is compared with.
            scores = block_scores
            ahead, block_scores, ids_ahead = _count_ahead(
                qa, g, chunk, scores, gallery_splits, drop, identities
            )
            if not torch.equal(block_scores, scores):
                raise RuntimeError("matmul is not deterministic; cannot rank exactly")

        # The positive with the t-th smallest key (t = 0, 1, ...) of row r has
        # rank = 1 + ahead[r, t] and is the (num_pos[r] - t)-th positive in the ranking.
        t = torch.arange(chunk.width - 1, device=device)
        npos = chunk.num_pos[:, None]
        valid = t < npos
        rank = (ahead + 1).double()
        ap = torch.where(valid, (npos - t).double() / rank, 0.0).sum(1) / chunk.num_pos.double()
        if unique_ids:
            cmc_rank = (ids_ahead + 1).double()
        else:
            cmc_rank = rank.gather(1, npos - 1)[:, 0]
        last_rank = rank[:, 0]
        sum_ap += float(ap.sum())
        sum_inp += float((chunk.num_pos.double() / last_rank).sum())
        for k in topk:
            hits[k] += int((cmc_rank <= k).sum())

        done += len(qidx)
        if progress:
            logger.info(
                "%s: %d/%d queries with positives done (%.1fs)",
                name,
                done,
                len(active),
                time.perf_counter() - t0,
            )
    return hits, sum_ap, sum_inp, len(active)


def _percent(hits, sum_ap, sum_inp, denom) -> dict[str, float]:
    denom = max(denom, 1)
    result = {f"R{k}": 100.0 * v / denom for k, v in hits.items()}
    result["mAP"] = 100.0 * sum_ap / denom
    result["mINP"] = 100.0 * sum_inp / denom
    return result


_CAMERA_RULES = ("none", "sysu", "same_cam_id")


def _drop_codes(camera_rule: str, q_ids, g_ids, q_cams, g_cams):
    """(Q,) and (G,) drop codes of a camera rule (see ``_ranked_sums``), or ``(None, None)``."""
    if camera_rule == "none":
        return None, None
    if camera_rule == "sysu":
        # Code 0 pairs a camera-3 query with every camera-2 item; other items get 1, which no
        # query carries.
        q_drop = np.where(q_cams == 3, 0, -1).astype(np.int64)
        g_drop = np.where(g_cams == 2, 0, 1).astype(np.int64)
        return q_drop, g_drop
    # same_cam_id: the code is the (identity, camera) pair.
    num_q = len(q_ids)
    keys = np.stack([np.concatenate([q_ids, g_ids]), np.concatenate([q_cams, g_cams])], axis=1)
    codes = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    q_drop, g_drop = codes[:num_q], codes[num_q:]
    # A query code that no gallery item carries must still stay below max(g_drop) + 1.
    q_drop = np.where(np.isin(q_drop, g_drop), q_drop, -1)
    return q_drop, g_drop


def _streamed_metrics(
    q_feats,
    g_feats,
    q_pids,
    g_pids,
    topk,
    vi=None,
    *,
    chunk_size: int = 1024,
    device=None,
    gallery_chunk: int = 8192,
    progress: bool = False,
) -> dict[str, float]:
    """The body of :func:`rank_metrics` (``vi`` None: every query counts) and of
    :func:`vi_rank_metrics` (``vi`` = ``(q_cams, g_cams, camera_rule, unique_ids)``: the camera
    rule filters the gallery and queries left without a positive are skipped). The keyword
    options are documented once, in :func:`rank_metrics`."""
    device = torch.device("cpu") if device is None else torch.device(device)
    q = _to_features(q_feats, device)
    g = _to_features(g_feats, device)
    q_ids = _to_numpy_ids(q_pids)
    g_ids = _to_numpy_ids(g_pids)
    topk = _check_args(topk, chunk_size, gallery_chunk, q, g, q_ids, g_ids)
    name, q_drop, g_drop, unique_ids = "rank_metrics", None, None, False
    if vi is not None:
        q_cams, g_cams, camera_rule, unique_ids = vi
        name, q_cam, g_cam = "vi_rank_metrics", _to_numpy_ids(q_cams), _to_numpy_ids(g_cams)
        if len(q_cam) != len(q_ids) or len(g_cam) != len(g_ids):
            raise ValueError("number of cameras must match number of features")
        q_drop, g_drop = _drop_codes(camera_rule, q_ids, g_ids, q_cam, g_cam)
    hits, sum_ap, sum_inp, num_active = _ranked_sums(
        q,
        g,
        q_ids,
        g_ids,
        topk,
        chunk_size,
        gallery_chunk,
        progress,
        name,
        q_drop=q_drop,
        g_drop=g_drop,
        unique_ids=unique_ids,
    )
    return _percent(hits, sum_ap, sum_inp, q.shape[0] if vi is None else num_active)


def rank_metrics(
    q_feats, g_feats, q_pids, g_pids, topk: Sequence[int] = (1, 5, 10), **options
) -> dict[str, float]:
    """Exact CMC (R@k), mAP and mINP of ranking ``g_feats`` by ``q_feats @ g_feats.T``, in percent.

    Args:
        q_feats: (Q, D) query features (tensor or array), used as given (not normalised here).
        g_feats: (G, D) gallery features. On ``device`` as float32 it is used in place (no copy).
        q_pids: (Q,) query identities (ints; tensor, array or list).
        g_pids: (G,) gallery identities; a gallery item is a positive of a query iff pids are equal.
        topk: ranks k reported as ``R{k}`` (percent of queries whose first positive has rank <= k).
        **options: the streaming's keyword options (shared with :func:`vi_rank_metrics`):

            - ``chunk_size`` (int, 1024): queries per similarity block. When a block of
              ``chunk_size * gallery_chunk`` scores holds at least 128 queries against the whole
              gallery, the queries per block are set so that it does (one block per chunk).
            - ``device``: torch device for the computation; CPU when ``None`` (the default).
            - ``gallery_chunk`` (int, 8192): gallery items per similarity block. A block holds
              ``chunk_size * gallery_chunk`` float32 scores (32 MB with the defaults); its
              candidates take up to ~70 bytes per block entry more in the worst case (every
              entry scoring above the row's lowest positive), typically far less.
            - ``progress`` (bool, False): log progress (``logging`` INFO) after each query chunk.

    Returns:
        dict of python floats ``{"R1": .., "R5": .., "R10": .., "mAP": .., "mINP": ..}``. The gallery
        is ranked by descending similarity with ties going to the lower gallery index; AP averages
        ``i / rank_i`` over all positives, INP is ``#positives / rank of the last positive``. Every
        query counts; a query without any positive scores 0 in every metric. Features must be
        finite.
    """
    return _streamed_metrics(q_feats, g_feats, q_pids, g_pids, topk, **options)


def vi_rank_metrics(
    q_feats,
    g_feats,
    q_pids,
    g_pids,
    q_cams,
    g_cams,
    camera_rule: str = "none",
    unique_ids: bool = True,
    topk: Sequence[int] = (1, 10, 20),
    **options,
) -> dict[str, float]:
    """Exact VI-ReID CMC (R@k), mAP and mINP with the protocols' camera rules, in percent.

    Same similarity (``q_feats @ g_feats.T``, features used as given), tie rule (lower gallery
    index first), streaming and memory bound as :func:`rank_metrics`.

    Args:
        q_feats: (Q, D) query features.
        g_feats: (G, D) gallery features (the caller's gallery draw for one trial).
        q_pids, g_pids: (Q,) and (G,) identities.
        q_cams, g_cams: (Q,) and (G,) camera numbers.
        camera_rule: which gallery items each query does not see:
            ``"none"``: none; ``"sysu"``: for a query from camera 3, every camera-2 item, whatever
            its identity (SYSU-MM01); ``"same_cam_id"``: items with the query's identity and
            camera (LLCM).
        unique_ids: ``True``: CMC over the ranked identities, each counted once at its first
            appearance (SYSU-MM01, LLCM): R@k is hit when the query's identity is among the
            first k distinct identities. ``False``: plain CMC, on the rank of the first positive
            (RegDB).
        topk: ranks k reported as ``R{k}``.
        **options: ``chunk_size``, ``device``, ``gallery_chunk``, ``progress``, as in
            :func:`rank_metrics`. With ``unique_ids`` a query chunk also holds a (chunk x
            identities) bool table, and is split so that it stays under 4M entries.

    Returns:
        dict of python floats ``{"R1", "R10", "R20", "mAP", "mINP"}`` (one ``R{k}`` per k). AP
        and INP are computed on the whole filtered ranking. Queries without a positive left
        after filtering are skipped: every figure averages over the other queries (all 0 when
        none is left).
    """
    if camera_rule not in _CAMERA_RULES:
        raise ValueError(f"camera_rule must be one of {_CAMERA_RULES}, got {camera_rule!r}")
    vi = (q_cams, g_cams, camera_rule, bool(unique_ids))
    return _streamed_metrics(q_feats, g_feats, q_pids, g_pids, topk, vi, **options)
