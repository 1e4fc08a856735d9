# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled counting pass of :mod:`plugins.evaluation.metrics` (C in ``rank_kernel.h``).

``count_rows`` releases the GIL, so several Python threads can count disjoint row ranges of
one block at the same time.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc


cdef extern from "rank_kernel.h" nogil:
    void rk_count_rows(const float *block, int64_t ld, int64_t n_cols, int64_t col_offset,
                       const float *pscore, const int64_t *pindex, const int64_t *num_pos,
                       int64_t width, const int32_t *row_drop, const int32_t *gal_drop,
                       const int64_t *gal_ids, uint8_t *seen, int64_t num_ids,
                       int64_t *ahead, int64_t row_begin, int64_t row_end, int64_t *hist,
                       int mode)


def count_rows(
    size_t block, int64_t ld, int64_t n_cols, int64_t col_offset,
    size_t pscore, size_t pindex, size_t num_pos, int64_t width,
    size_t row_drop, size_t gal_drop, size_t gal_ids, size_t seen, int64_t num_ids,
    size_t ahead, int64_t row_begin, int64_t row_end, int mode=0,
):
    """Count rows ``[row_begin, row_end)`` of one block; the arguments are data pointers of
    contiguous CPU tensors (0 for an absent optional array), laid out as ``rk_count_rows``
    documents; ``mode`` 0 picks scan or search per row, 1 / 2 force one (tests). The caller keeps
    the tensors alive and checks dtypes and shapes."""
    cdef int64_t *hist = <int64_t *> malloc(width * sizeof(int64_t))
    if hist == NULL:
        raise MemoryError()
    with nogil:
        rk_count_rows(
            <const float *> block, ld, n_cols, col_offset,
            <const float *> pscore, <const int64_t *> pindex, <const int64_t *> num_pos,
            width, <const int32_t *> row_drop, <const int32_t *> gal_drop,
            <const int64_t *> gal_ids, <uint8_t *> seen, num_ids,
            <int64_t *> ahead, row_begin, row_end, hist, mode,
        )
    free(hist)
