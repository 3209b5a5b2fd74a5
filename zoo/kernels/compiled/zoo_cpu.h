/* What the CPU kernels of zoo.kernels.compiled share inside the library (none of it is exported;
 * the ABI is zoo_kernels.h): Q-Sparse's top-K selection (arXiv 2407.10969) and BitNet b1.58's
 * per-token absmax int8 rule (arXiv 2402.17764), written once so that the training transform and
 * the fused inference projections cannot drift apart, and the dispatch's one question. */
#ifndef ZOO_CPU_H
#define ZOO_CPU_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "zoo_kernels.h"

/* Whether a kernel takes its AVX2 (and FMA) path now: the CPU runs it and zoo_force_isa allows it
 * (cpu_features.c). Every kernel's runtime dispatch asks this and nothing else. */
int zoo_use_avx2(void);

/* Whether a kernel with an AVX-512 path takes it now (implies zoo_use_avx2()). */
int zoo_use_avx512(void);

/* Whether the bf16 dot-product path (AVX-512 BF16, vdpbf16ps) is taken now: the CPU has it and
 * the AVX-512 paths are allowed. */
int zoo_use_avx512_bf16(void);

/* RMSNorm of one row of n into out (may be x): x / sqrt(mean(x^2) + eps) * w, the sum of squares
 * in double. Returns 1 / rms. The one formula of every compiled norm (training, fused projections,
 * decode step). */
static inline float zoo_rms_norm_row(const float *x, int64_t n, const float *w, float eps, float *out) {
    double squares = 0.0;
    for (int64_t c = 0; c < n; ++c) squares += (double)x[c] * (double)x[c];
    const float inv = 1.0f / sqrtf((float)(squares / (double)n) + eps);
    for (int64_t c = 0; c < n; ++c) out[c] = x[c] * inv * w[c];
    return inv;
}

/* Marks in keep[0..n) the n_keep largest |x| of x[0..n): those above the n_keep-th largest
 * magnitude, then ties in index order (the lower index wins, as zoo.kernels.topk does).
 * scratch holds 2n floats. */
void zoo_select_top(const float *x, int64_t n, int64_t n_keep, float *scratch, uint8_t *keep);

/* keep[0..n) for one row under rule (TOPK: of the row; BLOCK: of every block; NONE: untouched,
 * callers keep every channel). scratch holds 2n floats (or 2 * block_size). */
static inline void zoo_select_row(const float *x, int64_t n, const zoo_input_rule *rule, float *scratch, uint8_t *keep) {
    if (rule->sparsity == ZOO_SPARSITY_TOPK) zoo_select_top(x, n, rule->n_keep, scratch, keep);
    else if (rule->sparsity == ZOO_SPARSITY_BLOCK)
        for (int64_t b0 = 0; b0 < n; b0 += rule->block_size) zoo_select_top(x + b0, rule->block_size, rule->n_keep, scratch, keep + b0);
}

/* The int8 scale of a row whose largest magnitude is amax. torch evaluates the reference's
 * 127.0 / t as t.reciprocal() * 127: the same two roundings, so the scales agree bit for bit. */
static inline float zoo_int8_scale(float amax) { return (1.0f / fmaxf(amax, 1e-5f)) * 127.0f; }

/* round-half-even(v * scale) clamped to [-128, 127], as torch.round and clamp do in fp32. Adding
 * and subtracting 1.5 * 2^23 rounds to the nearest integer, ties to even, for |v * scale| < 2^22
 * (here |v * scale| <= 127 by the choice of scale), without a call to rintf. */
static inline float zoo_int8_value(float v, float scale) {
    const float magic = 12582912.0f;
    const float q = (v * scale + magic) - magic;
    return q < -128.0f ? -128.0f : (q > 127.0f ? 127.0f : q);
}

#endif
