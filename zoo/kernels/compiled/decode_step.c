/* One decoding step of a zoo decoder (batch 1, one new token) as a straight-line program of
 * compiled ops, so that a token costs one call from Python instead of a few hundred torch ops.
 *
 * Why: at the zoo's decode widths the weights a token reads take tens of microseconds, and each
 * torch op around them (a norm, a rotary step, a cache write, a routing step) costs about as much
 * on this class of CPU; the overhead, not the arithmetic, decided the speed of every entry.
 *
 * The ops are the decoder's own: RMSNorm (Zhang & Sennrich 2019), the three projection kinds of
 * the inference form (dense fp32 or bf16; Q-Sparse top-K inputs, arXiv 2407.10969; BitNet b1.58 packed
 * ternary x int8, arXiv 2402.17764, through zoo_packed_linear), rotary embeddings (Su et al. 2021)
 * with grouped-query attention over the KV cache (Ainslie et al. 2023), the gated FFN activation,
 * residual adds, and a dropless top-k MoE for one token (MegaBlocks semantics: every chosen
 * expert runs, only its weights are read). The same formulas as the torch modules, in fp32; sums
 * run in another order, so results agree with the module path to fp32 rounding.
 */
#include "zoo_kernels.h" /* the ABI: checks this file's definitions against their declarations */
#include "zoo_cpu.h"

#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ZOO_X86 1
#endif

/* The structs (zoo_projection, zoo_op, zoo_scratch) and the op kinds are the ABI's: zoo_kernels.h. */

/* ---- dense GEMV, y[n] = sum_k w[n][k] x[k] (+ b[n]), one row after another -----------------
 * The weight is fp32 or bf16 (the top half of an fp32: widening is a 16-bit shift, exact), so a
 * bf16 checkpoint's embedding-sized LM head is read at half the bytes. Sums in fp32. */

static inline float weight_at(const void *w, int64_t i, int bf16) {
    if (!bf16) return ((const float *)w)[i];
    const uint32_t bits = (uint32_t)((const uint16_t *)w)[i] << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static float dot_scalar(const void *w, const float *x, int64_t k0, int64_t k, int bf16) {
    float acc = 0.0f;
    for (int64_t i = k0; i < k; ++i) acc += weight_at(w, i, bf16) * x[i];
    return acc;
}

/* Row n of a [n_out][k] weight of either type. */
static inline const void *weight_row(const void *w, int64_t n, int64_t k, int bf16) {
    return bf16 ? (const void *)((const uint16_t *)w + n * k) : (const void *)((const float *)w + n * k);
}

#ifdef ZOO_X86
__attribute__((target("avx2,fma"))) static float hsum_avx2(__m256 v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

/* One row at a time, four accumulators: the weight is then read as one sequential stream. Four
 * rows side by side (four streams, each crossing a page every few kilobytes) read the 128k-row
 * bf16 LM head at about half the rate (16.4 against 30 GB/s, 1 thread, 2B4T shape). */
__attribute__((target("avx2,fma"))) static void dense_rows_f32_avx2(const void *w, const float *x, int64_t k, int64_t n0, int64_t n1, float *y) {
    for (int64_t n = n0; n < n1; ++n) {
        const float *r = (const float *)w + n * k;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t i = 0;
        for (; i + 32 <= k; i += 32) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r + i), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r + i + 8), _mm256_loadu_ps(x + i + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(r + i + 16), _mm256_loadu_ps(x + i + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(r + i + 24), _mm256_loadu_ps(x + i + 24), a3);
        }
        for (; i + 8 <= k; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r + i), _mm256_loadu_ps(x + i), a0);
        y[n] = hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) + dot_scalar(r, x, i, k, 0);
    }
}

/* bf16 rows, one at a time, 32 channels a step: each 32-byte load widened by interleaving with
 * zeros (a bf16 is the top half of its fp32), which puts channels 0-3 and 8-11 in one vector and
 * 4-7, 12-15 in the other (the interleave works within 128-bit lanes); x is gathered into the same
 * order. Two instructions per 16 weights where widening 8 at a time takes four. */
__attribute__((target("avx2,fma"))) static void dense_rows_bf16_avx2(const void *w, const float *x, int64_t k, int64_t n0, int64_t n1, float *y) {
    const __m256i zero = _mm256_setzero_si256();
    for (int64_t n = n0; n < n1; ++n) {
        const uint16_t *r = (const uint16_t *)w + n * k;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t i = 0;
        for (; i + 32 <= k; i += 32) {
            const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
            const __m256 x2 = _mm256_loadu_ps(x + i + 16), x3 = _mm256_loadu_ps(x + i + 24);
            const __m256i v = _mm256_loadu_si256((const __m256i *)(r + i)), u = _mm256_loadu_si256((const __m256i *)(r + i + 16));
            a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v)), _mm256_permute2f128_ps(x0, x1, 0x20), a0);
            a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v)), _mm256_permute2f128_ps(x0, x1, 0x31), a1);
            a2 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, u)), _mm256_permute2f128_ps(x2, x3, 0x20), a2);
            a3 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, u)), _mm256_permute2f128_ps(x2, x3, 0x31), a3);
        }
        y[n] = hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) + dot_scalar(r, x, i, k, 1);
    }
}

/* bf16 rows with AVX-512 BF16: x rounded to bf16 once per call (as torch rounds it for a bf16
 * F.linear; round to nearest even), then one vdpbf16ps per 32 weights: a product pair summed into
 * each fp32 lane. Few enough instructions that the loop runs at the machine's read rate. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void dense_rows_bf16_avx512(const void *w, const uint16_t *xb, int64_t k,
                                                                                                   int64_t n0, int64_t n1, float *y) {
    for (int64_t n = n0; n < n1; ++n) {
        const uint16_t *r = (const uint16_t *)w + n * k;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        int64_t i = 0;
        for (; i + 64 <= k; i += 64) {
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(r + i), (__m512bh)_mm512_loadu_si512(xb + i));
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(r + i + 32), (__m512bh)_mm512_loadu_si512(xb + i + 32));
        }
        float tail = 0.0f;
        for (; i < k; ++i) tail += weight_at(r, i, 1) * weight_at(xb, i, 1);
        y[n] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + tail;
    }
}

/* x in bf16, rounded to nearest even (NaN kept a NaN), for dense_rows_bf16_avx512. */
static void round_to_bf16(const float *x, int64_t k, uint16_t *xb) {
    for (int64_t i = 0; i < k; ++i) {
        uint32_t bits;
        memcpy(&bits, x + i, sizeof bits);
        xb[i] = (bits & 0x7fffffff) > 0x7f800000 ? (uint16_t)((bits >> 16) | 0x40) : (uint16_t)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
    }
}
#endif

/* int8 rows (weight-only int8: x stays fp32), each dot product times its row's scale. */
static void dense_rows_int8_scalar(const int8_t *w, const float *row_scale, const float *x, int64_t k, int64_t n0, int64_t n1, float *y) {
    for (int64_t n = n0; n < n1; ++n) {
        const int8_t *r = w + n * k;
        float acc = 0.0f;
        for (int64_t i = 0; i < k; ++i) acc += (float)r[i] * x[i];
        y[n] = acc * row_scale[n];
    }
}

#ifdef ZOO_X86
/* One row at a time (one stream), 64 weights a step widened to fp32 in four registers. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void dense_rows_int8_avx512(const int8_t *w, const float *row_scale, const float *x,
                                                                                       int64_t k, int64_t n0, int64_t n1, float *y) {
    for (int64_t n = n0; n < n1; ++n) {
        const int8_t *r = w + n * k;
        __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        int64_t i = 0;
        for (; i + 64 <= k; i += 64)
            for (int j = 0; j < 4; ++j) {
                const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(r + i + 16 * j))));
                a[j] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x + i + 16 * j), a[j]);
            }
        float tail = 0.0f;
        for (; i < k; ++i) tail += (float)r[i] * x[i];
        y[n] = (_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]))) + tail) * row_scale[n];
    }
}

__attribute__((target("avx2,fma"))) static void dense_rows_int8_avx2(const int8_t *w, const float *row_scale, const float *x, int64_t k,
                                                                    int64_t n0, int64_t n1, float *y) {
    for (int64_t n = n0; n < n1; ++n) {
        const int8_t *r = w + n * k;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int64_t i = 0;
        for (; i + 16 <= k; i += 16) {
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(r + i)))), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(r + i + 8)))), _mm256_loadu_ps(x + i + 8),
                                 a1);
        }
        float tail = 0.0f;
        for (; i < k; ++i) tail += (float)r[i] * x[i];
        y[n] = (hsum_avx2(_mm256_add_ps(a0, a1)) + tail) * row_scale[n];
    }
}
#endif

static void dense_rows_int8(const int8_t *w, const float *row_scale, const float *x, int64_t k, int64_t n0, int64_t n1, float *y) {
#ifdef ZOO_X86
    if (zoo_use_avx512()) {
        dense_rows_int8_avx512(w, row_scale, x, k, n0, n1, y);
        return;
    }
    if (zoo_use_avx2()) {
        dense_rows_int8_avx2(w, row_scale, x, k, n0, n1, y);
        return;
    }
#endif
    dense_rows_int8_scalar(w, row_scale, x, k, n0, n1, y);
}

static void dense_rows(const void *w, int bf16, const float *x, int64_t k, int64_t n0, int64_t n1, float *y) {
#ifdef ZOO_X86
    if (zoo_use_avx2()) {
        if (bf16) dense_rows_bf16_avx2(w, x, k, n0, n1, y);
        else dense_rows_f32_avx2(w, x, k, n0, n1, y);
        return;
    }
#endif
    for (int64_t n = n0; n < n1; ++n) y[n] = dot_scalar(weight_row(w, n, k, bf16), x, 0, k, bf16);
}

static void dense_gemv(const void *w, int bf16, const float *row_scale, const float *x, int64_t k, int64_t n_out, const float *bias, float *y,
                       int threads) {
#ifdef ZOO_X86
    /* the AVX-512 BF16 path reads x as bf16, rounded once here for every thread */
    const int bf16_dot = bf16 && zoo_use_avx512_bf16();
    uint16_t *xb = bf16_dot ? malloc(sizeof(uint16_t) * k) : NULL;
    if (xb) round_to_bf16(x, k, xb);
#endif
    /* Threads only past about a megabyte of weights: below, the fork and join cost more than they save. */
    const int parallel = threads > 1 && n_out * k * (row_scale ? 1 : (bf16 ? 2 : 4)) >= (1 << 20);
#pragma omp parallel num_threads(threads) if (parallel)
    {
#ifdef _OPENMP
        const int64_t id = omp_get_thread_num(), count = omp_get_num_threads();
#else
        const int64_t id = 0, count = 1;
#endif
        const int64_t chunk = (n_out / count + 3) & ~(int64_t)3;
        const int64_t n0 = id * chunk < n_out ? id * chunk : n_out, n1 = id + 1 == count ? n_out : (n0 + chunk < n_out ? n0 + chunk : n_out);
        if (row_scale) dense_rows_int8((const int8_t *)w, row_scale, x, k, n0, n1, y);
#ifdef ZOO_X86
        else if (xb) dense_rows_bf16_avx512(w, xb, k, n0, n1, y);
#endif
        else dense_rows(w, bf16, x, k, n0, n1, y);
    }
#ifdef ZOO_X86
    free(xb);
#endif
    if (bias)
        for (int64_t n = 0; n < n_out; ++n) y[n] += bias[n];
}

/* ---- the ops ---------------------------------------------------------------------------------- */

static void project(const zoo_projection *p, const float *x, float *y, const zoo_scratch *work, int threads) {
    if (p->kind == ZOO_PROJ_PACKED) {
        zoo_packed_linear(p, x, 1, y, work, threads);
    } else if (p->kind == ZOO_PROJ_SPARSE_INPUT) {
        zoo_sparse_linear(p, x, 1, y, work, threads);
    } else {
        const float *in = x;
        if (p->norm_w) {
            zoo_rms_norm_row(x, p->k_in, p->norm_w, p->norm_eps, work->normed);
            in = work->normed;
        }
        dense_gemv(p->weight, p->w_bf16, p->row_scale, in, p->k_in, p->n_out, p->bias, y, threads);
    }
}

/* Rotates channel pairs (2j, 2j+1) by the table's (cos, sin) at one position, as a complex product. */
static void rope(float *v, const float *table, int64_t head_dim) {
    for (int64_t j = 0; j < head_dim / 2; ++j) {
        const float a = v[2 * j], b = v[2 * j + 1], c = table[2 * j], d = table[2 * j + 1];
        v[2 * j] = a * c - b * d;
        v[2 * j + 1] = a * d + b * c;
    }
}

/* qkv = [q heads | k heads | v heads] of the new token at position pos: k and v go into the cache,
 * then each query head attends over positions 0..pos of its key/value head (softmax(q·k/sqrt(d))). */
static void attend(const zoo_op *op, const float *qkv, float *out, const zoo_scratch *work, int64_t pos) {
    const int64_t hd = op->head_dim, n_heads = op->n_heads, n_kv = op->n_kv_heads, group = n_heads / n_kv;
    const float *table = (const float *)op->weight + pos * hd;
    for (int64_t g = 0; g < n_kv; ++g) {
        float *k = op->k_cache + (g * op->max_len + pos) * hd, *v = op->v_cache + (g * op->max_len + pos) * hd;
        memcpy(k, qkv + (n_heads + g) * hd, sizeof(float) * hd);
        memcpy(v, qkv + (n_heads + n_kv + g) * hd, sizeof(float) * hd);
        rope(k, table, hd);
    }
    const float scale = 1.0f / sqrtf((float)hd);
    float *q = work->query, *scores = work->scores;
    for (int64_t h = 0; h < n_heads; ++h) {
        memcpy(q, qkv + h * hd, sizeof(float) * hd);
        rope(q, table, hd);
        const float *keys = op->k_cache + (h / group) * op->max_len * hd, *values = op->v_cache + (h / group) * op->max_len * hd;
        float top = -INFINITY;
        for (int64_t t = 0; t <= pos; ++t) {
            float s = 0.0f;
            for (int64_t i = 0; i < hd; ++i) s += q[i] * keys[t * hd + i];
            scores[t] = s * scale;
            top = fmaxf(top, scores[t]);
        }
        float total = 0.0f;
        for (int64_t t = 0; t <= pos; ++t) total += (scores[t] = expf(scores[t] - top));
        float *o = out + h * hd;
        memset(o, 0, sizeof(float) * hd);
        for (int64_t t = 0; t <= pos; ++t) {
            const float p = scores[t] / total;
            for (int64_t i = 0; i < hd; ++i) o[i] += p * values[t * hd + i];
        }
    }
}

/* h = act(gate) * up for gu = [gate | up] of width 2 * width. */
static void glu(const float *gu, int64_t width, int act, float *h) {
    for (int64_t i = 0; i < width; ++i) {
        const float g = gu[i], u = gu[width + i];
        if (act == ZOO_ACT_RELU2) {
            const float r = g > 0.0f ? g : 0.0f;
            h[i] = r * r * u;
        } else {
            h[i] = g / (1.0f + expf(-g)) * u;
        }
    }
}

/* One token through a dropless top-k MoE FFN: fp32 router, softmax, top-k of the (biased)
 * logits or of the probabilities (ties to the lower expert), optional renormalisation, then the
 * chosen experts in order of rank, their outputs weighted and summed. */
static void moe(const zoo_op *op, const float *x, float *y, const zoo_scratch *work, int threads) {
    const int64_t n_experts = op->n_experts, dim = op->proj->k_in;
    float *logits = work->scores, *probs = work->scores + n_experts;
    project(op->proj, x, logits, work, threads);
    float top = -INFINITY, total = 0.0f;
    for (int64_t e = 0; e < n_experts; ++e) top = fmaxf(top, logits[e]);
    for (int64_t e = 0; e < n_experts; ++e) total += (probs[e] = expf(logits[e] - top));
    for (int64_t e = 0; e < n_experts; ++e) probs[e] /= total;
    int64_t chosen[64];
    float weights[64], weight_sum = 0.0f;
    uint8_t *taken = work->keep;
    memset(taken, 0, (size_t)n_experts);
    for (int64_t r = 0; r < op->top_k; ++r) {
        int64_t best = -1;
        float best_score = 0.0f;
        for (int64_t e = 0; e < n_experts; ++e) {
            const float score = op->selection_bias ? logits[e] + op->selection_bias[e] : probs[e];
            if (!taken[e] && (best < 0 || score > best_score)) best = e, best_score = score;
        }
        taken[best] = 1;
        chosen[r] = best;
        weights[r] = probs[best];
        weight_sum += weights[r];
    }
    for (int64_t r = 0; r < op->top_k; ++r) {
        const float w = op->renormalize ? weights[r] / weight_sum : weights[r];
        project(&op->gate_up[chosen[r]], x, work->expert_a, work, threads);
        glu(work->expert_a, op->hidden, op->act, work->expert_b);
        project(&op->down[chosen[r]], work->expert_b, work->expert_c, work, threads);
        for (int64_t c = 0; c < dim; ++c) y[c] = r == 0 ? work->expert_c[c] * w : y[c] + work->expert_c[c] * w;
    }
}

/* Runs ops[0..n_ops) for token id `token` at position `pos` (the caches hold positions < pos).
 * slots[i] are the caller's fp32 buffers, out the program's output. Returns 0, or -1 - i when op
 * i has an unknown kind or would run past a cache or the MoE's fixed top-k bound. */
int64_t zoo_run_program(const zoo_op *ops, int64_t n_ops, float *const *slots, float *out, const zoo_scratch *work, int64_t token, int64_t pos,
                        int threads) {
    for (int64_t i = 0; i < n_ops; ++i) {
        const zoo_op *op = &ops[i];
        const float *src = op->src >= 0 ? slots[op->src] : NULL;
        float *dst = op->dst >= 0 ? slots[op->dst] : out;
        switch (op->kind) {
        case ZOO_OP_EMBED:
            if (op->row_scale)
                for (int64_t c = 0; c < op->width; ++c) dst[c] = (float)((const int8_t *)op->weight)[token * op->width + c] * op->row_scale[token];
            else if (op->bf16)
                for (int64_t c = 0; c < op->width; ++c) dst[c] = weight_at(op->weight, token * op->width + c, 1);
            else
                memcpy(dst, (const float *)op->weight + token * op->width, sizeof(float) * op->width);
            break;
        case ZOO_OP_NORM:
            zoo_rms_norm_row(src, op->width, (const float *)op->weight, op->eps, dst);
            break;
        case ZOO_OP_PROJECT:
            project(op->proj, src, dst, work, threads);
            break;
        case ZOO_OP_ATTEND:
            if (pos >= op->max_len) return -1 - i;
            attend(op, src, dst, work, pos);
            break;
        case ZOO_OP_GLU:
            glu(src, op->width, op->act, dst);
            break;
        case ZOO_OP_ADD:
            for (int64_t c = 0; c < op->width; ++c) dst[c] += src[c];
            break;
        case ZOO_OP_MOE:
            if (op->top_k > 64 || op->top_k > op->n_experts) return -1 - i;
            moe(op, src, dst, work, threads);
            break;
        default:
            return -1 - i;
        }
    }
    return 0;
}
