/* The ABI of zoo.kernels' CPU kernel library: every exported function and every struct that
 * crosses it, in one place. The kernels compute BitNet b1.58 (arXiv 2402.17764) packed ternary
 * GEMVs with int8 activations, Q-Sparse (arXiv 2407.10969) top-K input transforms, RMSNorm and a
 * whole decoding step; zoo/kernels/compiled/abi.py mirrors this file for ctypes, and a test
 * compiles a probe of this header to check that both agree on every size and offset.
 *
 * Why one header: each .c file includes it, so the compiler checks every definition against its
 * declaration, and the library is built with -fvisibility=hidden, so what this file marks
 * ZOO_API is exactly what the library exports (a test compares the two lists).
 *
 * Conventions: fp32 row-major tensors; an int64_t count is a count of elements; `threads` is the
 * OpenMP thread count a call may use (1: none); pointers documented "or NULL" are optional.
 */
#ifndef ZOO_KERNELS_H
#define ZOO_KERNELS_H

#include <stdint.h>

#define ZOO_API __attribute__((visibility("default")))

/* ---- the instruction set (cpu_features.c) --------------------------------------------------- */

/* What a kernel's runtime dispatch may use: each kernel has a scalar path and, on x86-64, a vector
 * one. ZOO_ISA_AVX2 means AVX2 and FMA (the float loops fuse their products); ZOO_ISA_AVX512 adds
 * AVX-512 F, BW and VL, which the ternary GEMV uses (every other kernel keeps its AVX2 path). */
enum zoo_isa { ZOO_ISA_AUTO = 0, ZOO_ISA_SCALAR = 1, ZOO_ISA_AVX2 = 2, ZOO_ISA_AVX512 = 3 };

/* The instruction set every kernel dispatches to now (ZOO_ISA_SCALAR, ZOO_ISA_AVX2 or ZOO_ISA_AVX512). */
ZOO_API int zoo_isa(void);

/* The one override of the dispatch, for tests and benchmarks: caps every kernel at `isa`
 * (ZOO_ISA_SCALAR forces the scalar path everywhere; ZOO_ISA_AUTO lifts the cap). A cap above
 * what the CPU runs changes nothing. Process-wide, not per thread. Returns zoo_isa() after, or -1
 * (nothing changed) for an unknown value. */
ZOO_API int zoo_force_isa(int isa);

/* ---- structs ------------------------------------------------------------------------------- */

/* Which input channels of a projection are kept (Q-Sparse) and whether the kept ones are int8
 * (BitNet b1.58's per-token absmax rule). The two 32-bit fields come first: no padding. */
enum zoo_sparsity { ZOO_SPARSITY_NONE = 0, ZOO_SPARSITY_TOPK = 1, ZOO_SPARSITY_BLOCK = 2 };

typedef struct {
    int32_t sparsity;   /* zoo_sparsity: keep all, the n_keep largest |x| of a row, or of every block */
    int32_t int8;       /* 1: quantise the kept values to int8, per row */
    int64_t n_keep;     /* TOPK: per row; BLOCK: per block */
    int64_t block_size; /* BLOCK: channels per block, dividing the row */
} zoo_input_rule;

/* One projection y = f(x) of the inference form. */
enum zoo_projection_kind { ZOO_PROJ_DENSE = 0, ZOO_PROJ_SPARSE_INPUT = 1, ZOO_PROJ_PACKED = 2 };

typedef struct {
    int32_t kind;        /* zoo_projection_kind */
    int32_t w_bf16;      /* DENSE, SPARSE_INPUT: the weight is bf16 (else fp32) */
    zoo_input_rule rule; /* SPARSE_INPUT: int8 = 0; PACKED: int8 = 1; DENSE: unused */
    int64_t k_in, n_out;
    int64_t nb;          /* PACKED: bytes per input channel, ceil(n_out / 4) */
    const void *weight;  /* DENSE: [n_out][k_in]; SPARSE_INPUT: [k_in][n_out]; PACKED: zoo_ternary_tile's [ceil(nb/32)][k_in][32] */
    const float *bias;   /* [n_out], or NULL */
    const float *norm_w; /* the RMSNorm in front, fused: its gain [k_in], or NULL for none */
    float alpha;         /* PACKED: the ternary weight's scale */
    float norm_eps;
    const float *row_scale; /* DENSE: set when the weight is int8, one scale per output row (w_bf16 = 0);
                               PACKED: one scale per output row in place of alpha; else NULL */
} zoo_projection;

/* The work buffers of every kernel that needs some, owned by the caller and reused across calls
 * (an allocation costs as much as a small GEMV). Sizes for a projection of k_in inputs and nb
 * packed bytes per channel; a call reads only the buffers its kind uses (the others may be NULL). */
typedef struct {
    float *magnitudes; /* 2 * k_in: the top-K selection's values and candidates */
    uint8_t *keep;     /* k_in (the decode step: also one flag per expert) */
    int8_t *q;         /* k_in: PACKED's int8 inputs */
    int32_t *acc;      /* 128 * ceil(nb / 32): PACKED's integer sums */
    int32_t *kept;     /* k_in: indices of the kept channels */
    int16_t *acc16;    /* 128 * max(1, nb / 32): the AVX2 GEMV's block sums */
    int32_t *acc32;    /* as acc16 */
    float *values;     /* k_in: SPARSE_INPUT's kept values */
    float *normed;     /* k_in: the fused RMSNorm's output */
    float *scores;     /* decode step: max(positions, 2 * experts) attention scores or router logits */
    float *query;      /* decode step: one rotated query head */
    float *expert_a, *expert_b, *expert_c; /* decode step: an expert's widest output, each */
    int32_t *pairs;    /* 3 * (k_in / 2 + 1): the tiled GEMV's channel pairs (two offsets, two inputs) */
} zoo_scratch;

/* One op of a decode program. Slots index the caller's fp32 buffers; -1 as dst is the output. */
enum zoo_op_kind { ZOO_OP_EMBED = 0, ZOO_OP_NORM = 1, ZOO_OP_PROJECT = 2, ZOO_OP_ATTEND = 3, ZOO_OP_GLU = 4, ZOO_OP_ADD = 5, ZOO_OP_MOE = 6 };
enum zoo_activation { ZOO_ACT_SWIGLU = 0, ZOO_ACT_RELU2 = 1 };

typedef struct {
    int32_t kind, src, dst, act; /* zoo_op_kind; act: zoo_activation of GLU and MOE */
    int64_t width;
    float eps;
    int32_t bf16; /* EMBED: the table is bf16 (else fp32) */
    const void *weight;                             /* EMBED: table [vocab][width]; NORM: gain; ATTEND: rope (cos, sin) [max_seq][head_dim/2][2] */
    const zoo_projection *proj;                     /* PROJECT; MOE: the router */
    const zoo_projection *gate_up, *down;           /* MOE: one per expert */
    const float *selection_bias;                    /* MOE: shifts the logits for selection only, or NULL */
    int64_t n_experts, top_k, renormalize, hidden;  /* MOE */
    float *k_cache, *v_cache;                       /* ATTEND: [n_kv_heads][max_len][head_dim] */
    int64_t n_heads, n_kv_heads, head_dim, max_len; /* ATTEND */
    const float *row_scale;                         /* EMBED: set when the table is int8, one scale per row; else NULL */
} zoo_op;

/* ---- kernels ------------------------------------------------------------------------------- */

/* ternary_gemv.c: acc[rows][4*nb] = x[rows][k_in] (int8) times the packed ternary weight (uint8
 * [k_in][nb], layout of zoo.kernels.pack), exact in int32, reading only the byte rows of each
 * row's non-zero channels. Uses scratch kept, acc16, acc32. */
ZOO_API void zoo_ternary_gemv(const uint8_t *packed, int64_t k_in, int64_t nb, const int8_t *x, int64_t rows, int32_t *acc,
                              const zoo_scratch *scratch, int threads);

/* ternary_tiles.c: the packed weight (uint8 [k_in][nb], zoo.kernels.pack's layout) re-cut into
 * tiles of 128 outputs, each holding its 32 bytes of every input channel in turn:
 * tiles[ceil(nb/32)][k_in][32]. Output o of a tile is bit pair o / 32 of byte
 * (e < 8 ? e : e + 8) + 8 h (h = (o / 16) % 2, e = o % 16); outputs past 4 * nb hold a zero weight. */
ZOO_API void zoo_ternary_tile(const uint8_t *packed, int64_t k_in, int64_t nb, uint8_t *tiles);

/* ternary_tiles.c: acc[rows][128 * n_tiles] = x[rows][k_in] (int8) times the tiled ternary weight,
 * exact in int32, reading only the 32-byte pieces of each row's non-zero channels, one tile after
 * another. Uses scratch pairs. */
ZOO_API void zoo_ternary_gemv_tiled(const uint8_t *tiles, int64_t k_in, int64_t n_tiles, const int8_t *x, int64_t rows, int32_t *acc,
                                    const zoo_scratch *scratch, int threads);

/* ternary_gemv.c: y[rows][n_out] = the PACKED projection p of x[rows][k_in] ([RMSNorm,] the rule's
 * selection, int8, GEMV, scale, bias). Returns the number of non-zero int8 inputs, or -1 when p
 * is not a PACKED projection with int8 inputs. */
ZOO_API int64_t zoo_packed_linear(const zoo_projection *p, const float *x, int64_t rows, float *y, const zoo_scratch *scratch, int threads);

/* ternary_gemv.c: y = the SPARSE_INPUT projection p of x: only the weight rows of kept, non-zero
 * channels read. Returns the number of those channels, or -1 when p is not a SPARSE_INPUT
 * projection with fp inputs. */
ZOO_API int64_t zoo_sparse_linear(const zoo_projection *p, const float *x, int64_t rows, float *y, const zoo_scratch *scratch, int threads);

/* topk_rows.c: out = S(x) per row of k_in (or with rule->int8 its int8 fake quantisation q / s).
 * Returns the number of non-zero outputs, or -1 if memory ran out. */
ZOO_API int64_t zoo_topk_rows(const float *x, int64_t rows, int64_t k_in, const zoo_input_rule *rule, float *out, int threads);

/* rms_norm.c: y = x / sqrt(mean(x^2) + eps) * w per row of n, rstd[row] = that 1 / rms. */
ZOO_API void zoo_rms_norm_forward(const float *x, const float *w, int64_t rows, int64_t n, float eps, float *y, float *rstd, int threads);

/* rms_norm.c: (dx, dw) of zoo_rms_norm_forward for the output gradient g. Returns 0, or -1 when
 * its partial sums could not be allocated. */
ZOO_API int zoo_rms_norm_backward(const float *x, const float *w, const float *rstd, const float *g, int64_t rows, int64_t n, float *dx,
                                  float *dw, int threads);

/* decode_step.c: runs ops[0..n_ops) for token id `token` at position `pos` (the caches hold
 * positions < pos) over the caller's slots, writing out. Returns 0, or -1 - i when op i has an
 * unknown kind or would run past a cache or the MoE's top-k bound (64). */
ZOO_API int64_t zoo_run_program(const zoo_op *ops, int64_t n_ops, float *const *slots, float *out, const zoo_scratch *scratch, int64_t token,
                                int64_t pos, int threads);

#endif
