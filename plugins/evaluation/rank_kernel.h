/* One pass over a similarity block: for every positive of every row, the number of gallery
 * items of the block that rank ahead of it (see plugins/evaluation/metrics.py for the ranking).
 *
 * Item j ranks ahead of a positive with score p and gallery index i when s_j > p, or s_j == p
 * and j < i. Splitting the row at i turns this into two branch-free counting loops,
 * "s_j >= p" left of i and "s_j > p" from i on, that the compiler vectorises; a row is scanned
 * once per positive, which for the few positives of a retrieval query costs a fraction of the
 * block's matrix product whatever the scores are. A row with many positives and few items
 * scoring above its lowest positive takes a binary search per such item instead.
 */
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define RANK_KERNEL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RANK_KERNEL_CLONES
#endif

/* Up to this many positives a row is always scanned once per positive. Above it, the row's
 * candidates (items scoring at least its lowest positive) are counted first, and the cheaper of
 * the two ways is taken: one scan per positive costs about npos * n_cols vectorised comparisons,
 * a binary search about RK_SEARCH_COST(npos) of them per candidate (measured on AVX-512/AVX2:
 * one scalar step of ~3 cycles against ~12 vector lanes compared per cycle). */
#define RANK_KERNEL_LINEAR_MIN 8
#define RK_SEARCH_COST(npos) (12 * (3 * rk_log2_ceil(npos) + 10))

static inline int64_t rk_log2_ceil(int64_t x) {
    int64_t b = 0;
    while (((int64_t)1 << b) < x) b++;
    return b;
}

RANK_KERNEL_CLONES
static int64_t rk_count_ge(const float *s, int64_t n, float p) {
    int32_t c = 0;
    for (int64_t j = 0; j < n; j++) c += s[j] >= p;
    return c;
}

RANK_KERNEL_CLONES
static int64_t rk_count_gt(const float *s, int64_t n, float p) {
    int32_t c = 0;
    for (int64_t j = 0; j < n; j++) c += s[j] > p;
    return c;
}

/* The same counts over the items whose drop code differs from `code` (the visible ones). */
RANK_KERNEL_CLONES
static int64_t rk_count_ge_visible(const float *s, const int32_t *drop, int64_t n, float p,
                                   int32_t code) {
    int32_t c = 0;
    for (int64_t j = 0; j < n; j++) c += (s[j] >= p) & (drop[j] != code);
    return c;
}

RANK_KERNEL_CLONES
static int64_t rk_count_gt_visible(const float *s, const int32_t *drop, int64_t n, float p,
                                   int32_t code) {
    int32_t c = 0;
    for (int64_t j = 0; j < n; j++) c += (s[j] > p) & (drop[j] != code);
    return c;
}

/* Whether item (score s, index j) ranks ahead of the positive (p, i). */
static inline int rk_ahead(float s, int64_t j, float p, int64_t i) {
    return (s > p) | ((s == p) & (j < i));
}

/* Rows [row_begin, row_end) of an (n_rows x n_cols) block, row stride `ld`, whose column c is
 * gallery item col_offset + c.
 *
 * pscore, pindex: (n_rows x width) positives of each row sorted by ranking, last-ranked first
 *     (ascending score, descending index on ties), padded with +inf scores; width is a power
 *     of two above num_pos[r].
 * ahead: (n_rows x width) running counts, ahead[r][k] += items of this block ahead of positive k.
 * row_drop, gal_drop: NULL, or the row's drop code and the block's items' codes (gal_drop[c]);
 *     an item whose code equals its row's is invisible to that row. row_drop -1 drops nothing.
 * gal_ids, seen: NULL, or the block's items' identity codes and an (n_rows x num_ids) table in
 *     which every identity with a visible item ahead of the row's first positive is set to 1.
 * hist: scratch of width int64 for the binary-search path.
 * mode: 0 picks the way per row as above; 1 always scans, 2 always searches (for tests).
 */
static void rk_count_rows(const float *block, int64_t ld, int64_t n_cols, int64_t col_offset,
                          const float *pscore, const int64_t *pindex, const int64_t *num_pos,
                          int64_t width, const int32_t *row_drop, const int32_t *gal_drop,
                          const int64_t *gal_ids, uint8_t *seen, int64_t num_ids, int64_t *ahead,
                          int64_t row_begin, int64_t row_end, int64_t *hist, int mode) {
    for (int64_t r = row_begin; r < row_end; r++) {
        const float *s = block + r * ld;
        const float *ps = pscore + r * width;
        const int64_t *pi = pindex + r * width;
        int64_t *out = ahead + r * width;
        const int64_t npos = num_pos[r];
        const int32_t code = row_drop ? row_drop[r] : -1;
        const int filtered = code >= 0;
        int linear = mode == 1 || (mode == 0 && npos <= RANK_KERNEL_LINEAR_MIN);
        if (mode == 0 && !linear) {
            const int64_t candidates = rk_count_ge(s, n_cols, ps[0]);
            linear = npos * n_cols <= candidates * RK_SEARCH_COST(npos);
        }
        if (linear) {
            for (int64_t k = 0; k < npos; k++) {
                int64_t split = pi[k] - col_offset;
                split = split < 0 ? 0 : (split > n_cols ? n_cols : split);
                if (filtered) {
                    out[k] += rk_count_ge_visible(s, gal_drop, split, ps[k], code) +
                              rk_count_gt_visible(s + split, gal_drop + split, n_cols - split,
                                                  ps[k], code);
                } else {
                    out[k] += rk_count_ge(s, split, ps[k]) +
                              rk_count_gt(s + split, n_cols - split, ps[k]);
                }
            }
        } else {
            /* hist[m]: items ahead of exactly the m last-ranked positives. */
            memset(hist, 0, (size_t)width * sizeof(int64_t));
            const float lowest = ps[0];
            for (int64_t c = 0; c < n_cols; c++) {
                const float v = s[c];
                if (v < lowest || (filtered && gal_drop[c] == code)) continue;
                const int64_t j = col_offset + c;
                /* Fixed-step search over the padded table (the +inf padding is never passed). */
                int64_t m = 0;
                for (int64_t step = width >> 1; step > 0; step >>= 1) {
                    m += rk_ahead(v, j, ps[m + step - 1], pi[m + step - 1]) ? step : 0;
                }
                hist[m]++;
            }
            int64_t run = 0;
            for (int64_t k = npos - 1; k >= 0; k--) {
                run += hist[k + 1];
                out[k] += run;
            }
        }
        if (gal_ids) {
            const float pf = ps[npos - 1];
            const int64_t jf = pi[npos - 1];
            uint8_t *row_seen = seen + r * num_ids;
            for (int64_t c = 0; c < n_cols; c++) {
                if (s[c] < pf || (filtered && gal_drop[c] == code)) continue;
                if (rk_ahead(s[c], col_offset + c, pf, jf)) row_seen[gal_ids[c]] = 1;
            }
        }
    }
}
