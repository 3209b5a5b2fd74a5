/* Packed ternary x int8 GEMV for CPUs: BitNet b1.58 weights (arXiv 2402.17764) read only for the
 * input channels that Q-Sparse's top-K (arXiv 2407.10969) kept.
 *
 * Layout (zoo.kernels.pack): packed[k][j] holds outputs 4j..4j+3 of input channel k as codes
 * w + 1 in {0, 1, 2}, two bits each (output 4j+i in bits 2i). One byte row of nb = ceil(N/4)
 * bytes per input channel, so a zero input channel is one row never read.
 *
 * Result: acc[n] = sum_k x[k] * w[n][k], exact in int32 (the caller scales by alpha / x_scale).
 *
 * AVX2 path: two kept channels at a time. Their codes are interleaved byte by byte and multiplied
 * with the pair (x[k1], x[k2]) by one vpmaddubsw (unsigned codes x signed activations, summed in
 * pairs into int16), i.e. c1*x1 + c2*x2 per output. Since c = w + 1, the accumulator is
 * sum(w*x) + sum(x) over the kept channels; the constant sum(x) is subtracted once at the end.
 * The rows stream in order (pairs outside, 32-byte slices inside) into int16 accumulators
 * that stay in L1; those are flushed to int32 every 64 pairs (-512 <= c1*x1 + c2*x2 <= 508 for
 * codes in {0, 1, 2} and int8 x, and 64 such terms stay within [-32768, 32512]), so nothing
 * overflows.
 * The scalar path computes the same sums directly and serves other CPUs and the row tails.
 */
#include "zoo_kernels.h" /* the ABI: checks this file's definitions against their declarations */
#include "zoo_cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ZOO_X86 1
#endif

#define PAIRS_PER_FLUSH 64

static void gemv_scalar_bytes(const uint8_t *packed, int64_t nb, const int8_t *x, const int32_t *kept, int64_t n_kept,
                              int64_t j0, int64_t j1, int32_t *acc) {
    for (int64_t t = 0; t < n_kept; ++t) {
        const int32_t k = kept[t];
        const int32_t q = x[k];
        const uint8_t *row = packed + (int64_t)k * nb;
        for (int64_t j = j0; j < j1; ++j) {
            const uint8_t b = row[j];
            acc[4 * j + 0] += ((int32_t)(b & 3) - 1) * q;
            acc[4 * j + 1] += ((int32_t)((b >> 2) & 3) - 1) * q;
            acc[4 * j + 2] += ((int32_t)((b >> 4) & 3) - 1) * q;
            acc[4 * j + 3] += ((int32_t)((b >> 6) & 3) - 1) * q;
        }
    }
}

#ifdef ZOO_X86
/* One block of at most PAIRS_PER_FLUSH channel pairs over the slices [s0, s1) of 32 bytes (128
 * outputs each): pairs outside and slices inside, so the rows stream from memory in order
 * (decoding reads weights from L3, where that is what counts: measured 9.6 against 13.6 ms a
 * token for bitnet-small with registers kept across 128 rows read side by side). Two pairs (four
 * rows, four prefetchable streams) go through each slice together, so the int16 accumulators are
 * loaded and stored once per four rows; a pair's two rows are interleaved byte by byte before the
 * codes are cut out, so one shift and one mask serve both rows. The accumulators of all slices sit
 * in acc16 (256 bytes a slice, in L1) and are added to the int32 sums acc32 after the block
 * ("permuted" layout: slice s, vector r = 2*i + h for shift i and unpacklo/hi h, lane e). */
__attribute__((target("avx2"))) static inline void avx2_pair_codes(const uint8_t *ra, const uint8_t *rb, __m256i xq, __m256i sum[8]) {
    const __m256i low2 = _mm256_set1_epi8(3);
    const __m256i a = _mm256_loadu_si256((const __m256i *)ra);
    const __m256i b = _mm256_loadu_si256((const __m256i *)rb);
    const __m256i lo = _mm256_unpacklo_epi8(a, b), hi = _mm256_unpackhi_epi8(a, b);
    for (int i = 0; i < 4; ++i) { /* a 16-bit shift moves b's low bits into a's high ones: the mask drops them */
        sum[2 * i] = _mm256_add_epi16(sum[2 * i], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(lo, 2 * i), low2), xq));
        sum[2 * i + 1] = _mm256_add_epi16(sum[2 * i + 1], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(hi, 2 * i), low2), xq));
    }
}

__attribute__((target("avx2"))) static void avx2_block(const uint8_t *const *ra, const uint8_t *const *rb, const __m256i *xq,
                                                                 int pairs, int64_t s0, int64_t s1, int16_t *acc16, int32_t *acc32) {
    memset(acc16 + 128 * s0, 0, sizeof(int16_t) * 128 * (s1 - s0));
    for (int p = 0; p < pairs; p += 2) {
        const int two = p + 1 < pairs;
        for (int64_t s = s0; s < s1; ++s) {
            __m256i *acc = (__m256i *)(acc16 + 128 * s);
            __m256i sum[8];
            for (int r = 0; r < 8; ++r) sum[r] = _mm256_loadu_si256(acc + r);
            avx2_pair_codes(ra[p] + 32 * s, rb[p] + 32 * s, xq[p], sum);
            if (two) avx2_pair_codes(ra[p + 1] + 32 * s, rb[p + 1] + 32 * s, xq[p + 1], sum);
            for (int r = 0; r < 8; ++r) _mm256_storeu_si256(acc + r, sum[r]);
        }
    }
    for (int64_t n = 128 * s0; n < 128 * s1; n += 8) {
        __m256i *dst = (__m256i *)(acc32 + n);
        _mm256_storeu_si256(dst, _mm256_add_epi32(_mm256_loadu_si256(dst), _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(acc16 + n)))));
    }
}

/* Every kept pair over slices [s0, s1), PAIRS_PER_FLUSH pairs a block (int16 sums cannot
 * overflow within one), then the results un-permuted into out (natural order, minus sum(x):
 * the codes are w + 1). */
__attribute__((target("avx2"))) static void avx2_slices(const uint8_t *packed, int64_t nb, const int8_t *x, const int32_t *kept, int64_t n_kept,
                                                        int32_t sum_x, int64_t s0, int64_t s1, int16_t *acc16, int32_t *acc32, int32_t *out) {
    memset(acc32 + 128 * s0, 0, sizeof(int32_t) * 128 * (s1 - s0));
    const uint8_t *ra[PAIRS_PER_FLUSH], *rb[PAIRS_PER_FLUSH];
    __m256i xq[PAIRS_PER_FLUSH];
    for (int64_t t0 = 0; t0 < n_kept; t0 += 2 * PAIRS_PER_FLUSH) {
        int pairs = 0;
        for (int64_t t = t0; t < n_kept && t < t0 + 2 * PAIRS_PER_FLUSH; t += 2, ++pairs) {
            const int32_t k1 = kept[t];
            const int has_pair = t + 1 < n_kept;
            const int32_t k2 = has_pair ? kept[t + 1] : k1;
            const int8_t q1 = x[k1];
            const int8_t q2 = has_pair ? x[k2] : 0; /* an odd channel pairs with a zero activation */
            xq[pairs] = _mm256_set1_epi16((int16_t)(((uint16_t)(uint8_t)q2 << 8) | (uint8_t)q1));
            ra[pairs] = packed + (int64_t)k1 * nb;
            rb[pairs] = packed + (int64_t)k2 * nb;
        }
        avx2_block(ra, rb, xq, pairs, s0, s1, acc16, acc32);
    }
    /* Within a 128-bit lane, unpacklo took bytes 0..7 and unpackhi bytes 8..15 of that lane. */
    for (int64_t s = s0; s < s1; ++s) {
        for (int r = 0; r < 8; ++r) {
            const int i = r / 2, h = r % 2;
            const int32_t *v = acc32 + 128 * s + 16 * r;
            for (int e = 0; e < 16; ++e) {
                const int64_t byte = 32 * s + (e < 8 ? e : e + 8) + 8 * h;
                out[4 * byte + i] = v[e] - sum_x;
            }
        }
    }
}
#endif

/* This OpenMP thread's share [lo, hi) of total units, in thread order (the whole range outside a parallel region). */
static void thread_share(int64_t total, int64_t *lo, int64_t *hi) {
#ifdef _OPENMP
    const int64_t id = omp_get_thread_num(), count = omp_get_num_threads();
#else
    const int64_t id = 0, count = 1;
#endif
    *lo = total * id / count;
    *hi = total * (id + 1) / count;
}

/* acc[rows][4*nb] = x[rows][K] (int8) times the packed ternary weight, for each row reading only
 * the byte rows of its nonzero channels. acc is overwritten. scratch->kept holds K int32,
 * acc16 / acc32 hold 128 * (nb / 32) int16 / int32 (the vector path's block sums). threads > 1
 * splits the output slices over OpenMP threads. */
void zoo_ternary_gemv(const uint8_t *packed, int64_t k_in, int64_t nb, const int8_t *x, int64_t rows, int32_t *acc,
                      const zoo_scratch *scratch, int threads) {
    const int avx2 = zoo_use_avx2();
    int32_t *kept_scratch = scratch->kept;
    int16_t *acc16 = scratch->acc16;
    int32_t *acc32 = scratch->acc32;
    for (int64_t r = 0; r < rows; ++r) {
        const int8_t *xr = x + r * k_in;
        int32_t *out = acc + r * 4 * nb;
        int64_t n_kept = 0;
        int32_t sum_x = 0;
        for (int64_t k = 0; k < k_in; ++k) {
            if (xr[k]) {
                kept_scratch[n_kept++] = (int32_t)k;
                sum_x += xr[k];
            }
        }
        int64_t tail_start = 0;
#ifdef ZOO_X86
        if (avx2) {
            const int64_t slices = nb / 32;
            tail_start = 32 * slices;
            /* Threads only pay off past about a megabyte of packed rows: below, the fork and join
             * cost more than the split saves (measured on decoding's 0.1-0.6 MB projections). */
            if (threads > 1 && slices >= 2 * threads && n_kept * nb >= (1 << 20)) {
#pragma omp parallel num_threads(threads)
                {
                    int64_t s0, s1;
                    thread_share(slices, &s0, &s1);
                    avx2_slices(packed, nb, xr, kept_scratch, n_kept, sum_x, s0, s1, acc16, acc32, out);
                }
            } else if (slices) {
                avx2_slices(packed, nb, xr, kept_scratch, n_kept, sum_x, 0, slices, acc16, acc32, out);
            }
        }
#endif
        if (tail_start < nb) {
            memset(out + 4 * tail_start, 0, sizeof(int32_t) * 4 * (nb - tail_start));
            gemv_scalar_bytes(packed, nb, xr, kept_scratch, n_kept, tail_start, nb, out);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * The whole packed projection in one call, for decoding: y = W_q·alpha applied to S(Q(x)), the
 * weight in zoo_ternary_tile's layout (ternary_tiles.c), which reads as one stream.
 * Per row of x (fp32): keep the rule's channels (zoo_input_rule: the n_keep largest |x| of the row
 * or of every block of block_size channels, or all; ties go to the lower index, as
 * zoo.kernels.topk does), scale s = (1 / max(max|x|, 1e-5)) * 127 and q = round-half-even(x * s)
 * clamped to [-128, 127] (as zoo.kernels.quant does, in fp32), then y = acc * (alpha / s) (+ bias)
 * with acc the exact integer GEMV above. Returns the number of non-zero q over all rows
 * (Q-Sparse's zero count). With norm_w, each row is first RMS-normalised with that gain (the norm
 * in front of the projection, fused so that decoding pays one call per site).
 */

/* RMSNorm of one row into out (fp32; the sum of squares in double): x / sqrt(mean(x^2) + eps) * w. */
static const float *rms_normed(const float *x, int64_t n, const float *w, float eps, float *out) {
    if (!w) return x;
    zoo_rms_norm_row(x, n, w, eps, out);
    return out;
}

/* The largest |x| of a row, from the magnitudes' bits read as integers: they order like the floats,
 * and an integer maximum vectorises (fmaxf is a libm call per channel without -ffast-math). */
static inline __attribute__((always_inline)) float row_amax(const float *x, int64_t n) {
    int32_t top = 0;
    for (int64_t c = 0; c < n; ++c) {
        int32_t bits;
        memcpy(&bits, x + c, sizeof bits);
        bits &= 0x7fffffff;
        top = bits > top ? bits : top;
    }
    float amax;
    memcpy(&amax, &top, sizeof amax);
    return amax;
}

/* q = the int8 of each kept channel (keep NULL: every channel), 0 elsewhere; returns the non-zero count. */
static inline __attribute__((always_inline)) int64_t quantize_kept(const float *x, int64_t n, const uint8_t *keep, float scale, int8_t *q) {
    int32_t nonzero = 0;
    for (int64_t c = 0; c < n; ++c) {
        const int8_t v = (int8_t)zoo_int8_value(x[c], scale);
        q[c] = keep && !keep[c] ? 0 : v;
        nonzero += q[c] != 0;
    }
    return nonzero;
}

#ifdef ZOO_X86
__attribute__((target("avx2"))) static float row_amax_avx2(const float *x, int64_t n) { return row_amax(x, n); /* eight lanes wide */ }

__attribute__((target("avx2"))) static int64_t quantize_kept_avx2(const float *x, int64_t n, const uint8_t *keep, float scale, int8_t *q) {
    return quantize_kept(x, n, keep, scale, q); /* the same loop, eight lanes wide */
}
#endif

int64_t zoo_packed_linear(const zoo_projection *p, const float *x, int64_t rows, float *y, const zoo_scratch *scratch, int threads) {
    if (p->kind != ZOO_PROJ_PACKED || !p->rule.int8) return -1;
    const int64_t k_in = p->k_in, n_out = p->n_out;
    const uint8_t *keep = p->rule.sparsity == ZOO_SPARSITY_NONE ? NULL : scratch->keep;
    int8_t *q = scratch->q;
    int64_t nonzero = 0;
#ifdef ZOO_X86
    const int avx2 = zoo_use_avx2();
#endif
    for (int64_t r = 0; r < rows; ++r) {
        const float *xr = rms_normed(x + r * k_in, k_in, p->norm_w, p->norm_eps, scratch->normed);
#ifdef ZOO_X86
        const float scale = zoo_int8_scale(avx2 ? row_amax_avx2(xr, k_in) : row_amax(xr, k_in));
#else
        const float scale = zoo_int8_scale(row_amax(xr, k_in));
#endif
        zoo_select_row(xr, k_in, &p->rule, scratch->magnitudes, scratch->keep);
#ifdef ZOO_X86
        nonzero += avx2 ? quantize_kept_avx2(xr, k_in, keep, scale, q) : quantize_kept(xr, k_in, keep, scale, q);
#else
        nonzero += quantize_kept(xr, k_in, keep, scale, q);
#endif
        zoo_ternary_gemv_tiled((const uint8_t *)p->weight, k_in, (p->nb + 31) / 32, q, 1, scratch->acc, scratch, threads);
        const float factor = p->alpha / scale;
        float *yr = y + r * n_out;
        if (p->row_scale) /* one scale per output row (a checkpoint that quantised fused segments apart) */
            for (int64_t n = 0; n < n_out; ++n) yr[n] = (float)scratch->acc[n] * (p->row_scale[n] / scale) + (p->bias ? p->bias[n] : 0.0f);
        else
            for (int64_t n = 0; n < n_out; ++n) yr[n] = (float)scratch->acc[n] * factor + (p->bias ? p->bias[n] : 0.0f);
    }
    return nonzero;
}

/* ---------------------------------------------------------------------------------------------
 * Full-precision Q-Sparse projection for decoding: y = S(x) · Wt (+ bias), with Wt the transposed
 * weight [k_in][n_out] (fp32, or bf16 when w_bf16) so that each input channel is one contiguous
 * row: the rows of channels that top-K zeroed (or that are zero) are never read. Returns the
 * number of non-zero inputs kept. Sums run in fp32, four channels per pass over y.
 */
static void axpy4_scalar(float *y, const float *w[4], const uint16_t *wb[4], const float xs[4], int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
        float acc = y[n];
        for (int j = 0; j < 4; ++j) {
            if (!xs[j]) continue;
            float wv;
            if (wb[j]) {
                const uint32_t bits = (uint32_t)wb[j][n] << 16;
                memcpy(&wv, &bits, sizeof wv);
            } else {
                wv = w[j][n];
            }
            acc += xs[j] * wv;
        }
        y[n] = acc;
    }
}

#ifdef ZOO_X86
__attribute__((target("avx2,fma"))) static void axpy4_avx2(float *y, const float *w[4], const uint16_t *wb[4], const float xs[4], int64_t n0,
                                                           int64_t n1) {
    const __m256 x0 = _mm256_set1_ps(xs[0]), x1 = _mm256_set1_ps(xs[1]), x2 = _mm256_set1_ps(xs[2]), x3 = _mm256_set1_ps(xs[3]);
    int64_t n = n0;
    if (wb[0]) {
#define ZOO_BF16(p) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
        for (; n + 8 <= n1; n += 8) {
            __m256 acc = _mm256_loadu_ps(y + n);
            acc = _mm256_fmadd_ps(x0, ZOO_BF16(wb[0] + n), acc);
            acc = _mm256_fmadd_ps(x1, ZOO_BF16(wb[1] + n), acc);
            acc = _mm256_fmadd_ps(x2, ZOO_BF16(wb[2] + n), acc);
            acc = _mm256_fmadd_ps(x3, ZOO_BF16(wb[3] + n), acc);
            _mm256_storeu_ps(y + n, acc);
        }
#undef ZOO_BF16
    } else {
        for (; n + 8 <= n1; n += 8) {
            __m256 acc = _mm256_loadu_ps(y + n);
            acc = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w[0] + n), acc);
            acc = _mm256_fmadd_ps(x1, _mm256_loadu_ps(w[1] + n), acc);
            acc = _mm256_fmadd_ps(x2, _mm256_loadu_ps(w[2] + n), acc);
            acc = _mm256_fmadd_ps(x3, _mm256_loadu_ps(w[3] + n), acc);
            _mm256_storeu_ps(y + n, acc);
        }
    }
    axpy4_scalar(y, w, wb, xs, n, n1);
}
#endif

#ifndef SPARSE_PREFETCH
#define SPARSE_PREFETCH 1024
#endif

/* Eight kept channels' rows into y, 16 outputs a step, with AVX-512: y is loaded and stored once
 * per eight rows instead of once per four, and a bf16 row widens with one instruction per 16
 * weights. The fused products are added in the same order as axpy4_avx2's, so the sums are the same. */
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline void axpy8_avx512(float *y, const void *const rows[8],
                                                                                                   const float xs[8], int64_t n0, int64_t n1,
                                                                                                   int bf16) {
    __m512 xv[8];
    for (int j = 0; j < 8; ++j) xv[j] = _mm512_set1_ps(xs[j]);
    int64_t n = n0;
    for (; n + 16 <= n1; n += 16) {
        __m512 acc = _mm512_loadu_ps(y + n);
        for (int j = 0; j < 8; ++j) {
            /* eight streams at once lose the hardware prefetcher: fetch each row SPARSE_PREFETCH bytes ahead */
            _mm_prefetch((const char *)rows[j] + (n << (bf16 ? 1 : 2)) + SPARSE_PREFETCH, _MM_HINT_T0);
            const __m512 w = bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(
                                        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)rows[j] + n))), 16))
                                  : _mm512_loadu_ps((const float *)rows[j] + n);
            acc = _mm512_fmadd_ps(xv[j], w, acc);
        }
        _mm512_storeu_ps(y + n, acc);
    }
    for (int half = 0; half < 2; ++half) { /* the last outputs, four channels at a time */
        const float *w[4] = {0, 0, 0, 0};
        const uint16_t *wb[4] = {0, 0, 0, 0};
        for (int j = 0; j < 4; ++j) {
            if (bf16) wb[j] = (const uint16_t *)rows[4 * half + j];
            else w[j] = (const float *)rows[4 * half + j];
        }
        axpy4_scalar(y, w, wb, xs + 4 * half, n, n1);
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static void axpy8_f32_avx512(float *y, const void *const rows[8], const float xs[8],
                                                                                  int64_t n0, int64_t n1) {
    axpy8_avx512(y, rows, xs, n0, n1, 0);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static void axpy8_bf16_avx512(float *y, const void *const rows[8], const float xs[8],
                                                                                   int64_t n0, int64_t n1) {
    axpy8_avx512(y, rows, xs, n0, n1, 1);
}

/* Rows of kept channels [t0, t1) of kept[] into y[n0, n1). A missing fourth channel reads row
 * kept[t0] with a zero weight, so every pass does four. */
static void sparse_columns(const void *wt, int w_bf16, int64_t n_out, const int32_t *kept, const float *xk, int64_t n_kept, float *y,
                           int64_t n0, int64_t n1, int vector) {
    int64_t t = 0;
#ifdef ZOO_X86
    if (vector && zoo_use_avx512()) { /* eight at a time; a missing channel reads the group's first row with a zero weight */
        for (; t < n_kept; t += 8) {
            const void *rows[8];
            float xs[8];
            for (int j = 0; j < 8; ++j) {
                const int64_t idx = t + j < n_kept ? t + j : t;
                xs[j] = t + j < n_kept ? xk[idx] : 0.0f;
                rows[j] = w_bf16 ? (const void *)((const uint16_t *)wt + (int64_t)kept[idx] * n_out)
                                 : (const void *)((const float *)wt + (int64_t)kept[idx] * n_out);
            }
            if (w_bf16) axpy8_bf16_avx512(y, rows, xs, n0, n1);
            else axpy8_f32_avx512(y, rows, xs, n0, n1);
        }
    }
#endif
    for (; t < n_kept; t += 4) {
        const float *w[4] = {0, 0, 0, 0};
        const uint16_t *wb[4] = {0, 0, 0, 0};
        float xs[4];
        for (int j = 0; j < 4; ++j) {
            const int64_t idx = t + j < n_kept ? t + j : t;
            xs[j] = t + j < n_kept ? xk[idx] : 0.0f;
            if (w_bf16) wb[j] = (const uint16_t *)wt + (int64_t)kept[idx] * n_out;
            else w[j] = (const float *)wt + (int64_t)kept[idx] * n_out;
        }
#ifdef ZOO_X86
        if (vector) {
            axpy4_avx2(y, w, wb, xs, n0, n1);
            continue;
        }
#endif
        axpy4_scalar(y, w, wb, xs, n0, n1);
    }
}

int64_t zoo_sparse_linear(const zoo_projection *p, const float *x, int64_t rows, float *y, const zoo_scratch *scratch, int threads) {
    if (p->kind != ZOO_PROJ_SPARSE_INPUT || p->rule.int8) return -1;
    const int64_t k_in = p->k_in, n_out = p->n_out;
    const int keep_all = p->rule.sparsity == ZOO_SPARSITY_NONE, vector = zoo_use_avx2();
    int32_t *kept = scratch->kept;
    float *xk = scratch->values;
    int64_t nonzero = 0;
    for (int64_t r = 0; r < rows; ++r) {
        const float *xr = rms_normed(x + r * k_in, k_in, p->norm_w, p->norm_eps, scratch->normed);
        float *yr = y + r * n_out;
        zoo_select_row(xr, k_in, &p->rule, scratch->magnitudes, scratch->keep);
        int64_t n_kept = 0;
        for (int64_t c = 0; c < k_in; ++c) {
            if ((keep_all || scratch->keep[c]) && xr[c] != 0.0f) {
                kept[n_kept] = (int32_t)c;
                xk[n_kept++] = xr[c];
            }
        }
        nonzero += n_kept;
        for (int64_t n = 0; n < n_out; ++n) yr[n] = p->bias ? p->bias[n] : 0.0f;
        const int64_t chunks = n_out / 64;
        if (threads > 1 && chunks >= 2 * threads && n_kept * n_out * (p->w_bf16 ? 2 : 4) >= (1 << 20)) {
#pragma omp parallel num_threads(threads)
            {
                int64_t c0, c1;
                thread_share(chunks, &c0, &c1);
                const int64_t n1 = c1 == chunks ? n_out : 64 * c1; /* the last share takes the tail */
                sparse_columns(p->weight, p->w_bf16, n_out, kept, xk, n_kept, yr, 64 * c0, n1, vector);
            }
        } else {
            sparse_columns(p->weight, p->w_bf16, n_out, kept, xk, n_kept, yr, 0, n_out, vector);
        }
    }
    return nonzero;
}
