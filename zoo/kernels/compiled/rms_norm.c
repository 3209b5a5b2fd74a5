/* RMSNorm (Zhang & Sennrich, arXiv 1910.07467) forward and backward for training on CPUs: the
 * norm of Llama and of BitNet b1.58's sub-norms (arXiv 2402.17764).
 *
 * torch runs y = x * rsqrt(mean(x^2) + eps) * w as five elementwise passes forward and about ten
 * backward, each a full read and write of the activation; a sub-norm on the FFN's hidden width
 * made it a tenth of a BitNet training step. Here: one pass forward (saving 1/rms per row), one
 * backward. Sums of squares in double, so the result is at least as accurate as torch's fp32
 * reduction, in another order: equal to the reference within fp32 rounding, not bit for bit.
 */
#include <stdlib.h>

#include "zoo_kernels.h" /* the ABI: checks this file's definitions against their declarations */
#include "zoo_cpu.h"

/* y = x * r * w with r = 1 / sqrt(mean(x^2) + eps) per row of n; rstd[row] = r. */
void zoo_rms_norm_forward(const float *x, const float *w, int64_t rows, int64_t n, float eps, float *y, float *rstd, int threads) {
    if (threads < 1 || rows < 2 * threads) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        rstd[r] = zoo_rms_norm_row(x + r * n, n, w, eps, y + r * n);
    }
}

/* With h = x * r and gw = g * w: dx = r * (gw - h * mean(gw * h)) and dw = sum over rows of g * h.
 * dw is summed per thread into partial[thread][n] (threads * n floats), then added up. Returns 0,
 * or -1 when the partial sums could not be allocated. */
int zoo_rms_norm_backward(const float *x, const float *w, const float *rstd, const float *g, int64_t rows, int64_t n, float *dx, float *dw,
                          int threads) {
    if (threads < 1 || rows < 2 * threads) threads = 1;
    double *partial = calloc((size_t)threads * (size_t)n, sizeof(double));
    if (!partial) return -1;
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        double *mine = partial + (int64_t)omp_get_thread_num() * n;
#else
        double *mine = partial;
#endif
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const float *xr = x + r * n, *gr = g + r * n;
            float *dxr = dx + r * n;
            const float inv = rstd[r];
            double dot = 0.0;
            for (int64_t c = 0; c < n; ++c) {
                const float h = xr[c] * inv;
                dot += (double)(gr[c] * w[c]) * (double)h;
                mine[c] += (double)(gr[c] * h);
            }
            const float mean = (float)(dot / (double)n);
            for (int64_t c = 0; c < n; ++c) dxr[c] = inv * (gr[c] * w[c] - xr[c] * inv * mean);
        }
    }
    for (int64_t c = 0; c < n; ++c) {
        double sum = 0.0;
        for (int t = 0; t < threads; ++t) sum += partial[(int64_t)t * n + c];
        dw[c] = (float)sum;
    }
    free(partial);
    return 0;
}
