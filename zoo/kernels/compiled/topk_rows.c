/* Q-Sparse's input transform for training on CPUs (arXiv 2407.10969): per token, keep the K
 * largest magnitudes of the row (or of every block of M channels, the N:M variant), optionally
 * fake-quantised to int8 per token as BitNet b1.58 does (arXiv 2402.17764).
 *
 * torch's reference spends most of this transform in kthvalue, a cumsum for the ties and five
 * elementwise passes; here each row is one selection (Hoare's, O(D) expected) and one pass, rows
 * split over OpenMP threads. Exactly the reference's values: the same threshold, the same tie
 * rule, the same fp32 roundings (see zoo_cpu.h).
 */
#include <stdlib.h>

#include "zoo_kernels.h" /* the ABI: checks this file's definitions against their declarations */
#include "zoo_cpu.h"

/* |v| as bits: non-negative floats order exactly like their bit patterns read as integers. */
static inline int32_t magnitude_bits(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return (int32_t)(bits & 0x7fffffffu);
}

/* int32 counts (rows are far below 2^31 channels), so a vector holds eight of them */
static inline __attribute__((always_inline)) int64_t count_at_least(const int32_t *bits, int64_t n, int32_t t) {
    int32_t count = 0;
    for (int32_t i = 0; i < (int32_t)n; ++i) count += bits[i] >= t;
    return count;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static int64_t count_at_least_avx2(const int32_t *bits, int64_t n, int32_t t) {
    return count_at_least(bits, n, t); /* the same loop, vectorised eight lanes wide */
}
#endif

/* The k-th largest (1 <= k <= n) of bits[0..n) (each >= 0): the largest t with at least k values
 * >= t, found bit by bit from the top. Each step is one branch-free count, vectorised (a
 * comparison-based selection spends its time in mispredicted branches instead). Every eight bits
 * the values are narrowed to those sharing t's prefix so far (the ones above it only lower k),
 * so most steps count a small fraction of the row. cand holds n values. */
static int32_t kth_largest_bits(const int32_t *bits, int64_t n, int64_t k, int32_t *cand) {
#if defined(__x86_64__)
    const int avx2 = zoo_use_avx2();
#endif
    const int32_t *src = bits;
    int32_t t = 0;
    for (int b = 30; b >= 0; --b) {
        const int32_t candidate = t | (1 << b);
#if defined(__x86_64__)
        const int64_t count = avx2 ? count_at_least_avx2(src, n, candidate) : count_at_least(src, n, candidate);
#else
        const int64_t count = count_at_least(src, n, candidate);
#endif
        if (count >= k) t = candidate;
        if (b == 23 || b == 15 || b == 7) {
            const int32_t prefix = t >> b;
            int64_t kept = 0, above = 0;
            for (int64_t i = 0; i < n; ++i) {
                const int32_t p = src[i] >> b;
                cand[kept] = src[i]; /* kept <= i: safe when src is cand */
                kept += p == prefix;
                above += p > prefix;
            }
            src = cand;
            n = kept;
            k -= above;
        }
    }
    return t;
}

/* Short rows (N:M blocks, n <= 64): the rank of each channel, counted directly, kept if fewer than
 * n_keep channels outrank it (the lower index wins ties). n² compares, in a loop over c that
 * vectorises without horizontal sums: faster than n passes of a threshold search at this size. */
static inline __attribute__((always_inline)) void rank_select_generic(const int32_t *bits, int32_t n, int32_t n_keep, uint8_t *keep) {
    int32_t rank[64];
    for (int32_t c = 0; c < n; ++c) rank[c] = 0;
    for (int32_t o = 0; o < n; ++o) {
        const int32_t other = bits[o];
        for (int32_t c = 0; c < n; ++c) rank[c] += (other > bits[c]) | ((other == bits[c]) & (o < c));
    }
    for (int32_t c = 0; c < n; ++c) keep[c] = rank[c] < n_keep;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static void rank_select_avx2(const int32_t *bits, int32_t n, int32_t n_keep, uint8_t *keep) {
    rank_select_generic(bits, n, n_keep, keep); /* the same loops, eight lanes wide */
}
#endif

static void rank_select(const int32_t *bits, int32_t n, int32_t n_keep, uint8_t *keep) {
#if defined(__x86_64__)
    if (zoo_use_avx2()) {
        rank_select_avx2(bits, n, n_keep, keep);
        return;
    }
#endif
    rank_select_generic(bits, n, n_keep, keep);
}

void zoo_select_top(const float *x, int64_t n, int64_t n_keep, float *scratch, uint8_t *keep) {
    if (n_keep >= n) {
        memset(keep, 1, (size_t)n);
        return;
    }
    int32_t *bits = (int32_t *)scratch; /* n values, then n candidates of the selection */
    for (int64_t c = 0; c < n; ++c) bits[c] = magnitude_bits(x[c]);
    if (n <= 64) {
        rank_select(bits, (int32_t)n, (int32_t)n_keep, keep);
        return;
    }
    const int32_t threshold = kth_largest_bits(bits, n, n_keep, bits + n);
    int64_t above = 0;
    for (int64_t c = 0; c < n; ++c) {
        keep[c] = bits[c] > threshold; /* branch-free: which side a channel falls is a coin toss */
        above += keep[c];
    }
    /* the slots left go to channels equal to the threshold, lower index first (rarely more than one) */
    for (int64_t c = 0, ties_left = n_keep - above; c < n && ties_left > 0; ++c) {
        if (bits[c] == threshold) {
            keep[c] = 1;
            --ties_left;
        }
    }
}

/* The kept values of one row (bits masked: x where kept, +0 elsewhere, branch-free), int8 fake
 * quantised when quant; returns how many are non-zero. The row maximum is taken over the
 * magnitudes' bits as integers, which order like the floats and vectorise exactly. */
static inline __attribute__((always_inline)) int64_t masked_row(const float *xr, const uint8_t *keep, int64_t k_in, int quant, float *yr) {
    float scale = 1.0f;
    if (quant) {
        int32_t amax_bits = 0;
        for (int64_t c = 0; c < k_in; ++c) {
            const int32_t m = magnitude_bits(xr[c]);
            amax_bits = m > amax_bits ? m : amax_bits;
        }
        float amax;
        memcpy(&amax, &amax_bits, sizeof amax);
        scale = zoo_int8_scale(amax);
    }
    int32_t nonzero = 0;
    for (int64_t c = 0; c < k_in; ++c) {
        uint32_t bits;
        memcpy(&bits, xr + c, sizeof bits);
        bits &= 0u - (uint32_t)keep[c];
        float v;
        memcpy(&v, &bits, sizeof v);
        if (quant) v = zoo_int8_value(v, scale) / scale;
        yr[c] = v;
        nonzero += v != 0.0f;
    }
    return nonzero;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static int64_t masked_row_avx2(const float *xr, const uint8_t *keep, int64_t k_in, int quant, float *yr) {
    return masked_row(xr, keep, k_in, quant, yr); /* the same loops, eight lanes wide */
}
#endif

/* out[r] = S(x[r]), or with rule->int8 the int8 fake quantisation q / s of it, for rows of k_in
 * fp32, S the rule's selection. Returns the number of non-zero outputs (Q-Sparse's zero count),
 * or -1 if memory ran out. */
int64_t zoo_topk_rows(const float *x, int64_t rows, int64_t k_in, const zoo_input_rule *rule, float *out, int threads) {
    int64_t nonzero = 0;
    int failed = 0;
    const int quant = rule->int8 != 0;
    if (threads < 1 || rows < 2 * threads) threads = 1;
#if defined(__x86_64__)
    const int avx2 = zoo_use_avx2();
#endif
#pragma omp parallel num_threads(threads) reduction(+ : nonzero) reduction(| : failed)
    {
        float *magnitudes = malloc(sizeof(float) * 2 * (size_t)k_in);
        uint8_t *keep = malloc((size_t)k_in);
        if (!magnitudes || !keep) failed = 1;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            if (failed) continue;
            const float *xr = x + r * k_in;
            float *yr = out + r * k_in;
            if (rule->sparsity == ZOO_SPARSITY_TOPK || rule->sparsity == ZOO_SPARSITY_BLOCK) zoo_select_row(xr, k_in, rule, magnitudes, keep);
            else memset(keep, 1, (size_t)k_in);
#if defined(__x86_64__)
            nonzero += avx2 ? masked_row_avx2(xr, keep, k_in, quant, yr) : masked_row(xr, keep, k_in, quant, yr);
#else
            nonzero += masked_row(xr, keep, k_in, quant, yr);
#endif
        }
        free(magnitudes);
        free(keep);
    }
    return failed ? -1 : nonzero;
}
