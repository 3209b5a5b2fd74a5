/* Which instruction set the kernels of zoo.kernels.compiled run (the BitNet b1.58 GEMV, arXiv
 * 2402.17764, and Q-Sparse's top-K transforms, arXiv 2407.10969, among them), decided in one
 * place: the CPU's features, read once, under the one override zoo_force_isa.
 *
 * Why one place: every kernel has a vector path and a scalar one that must give the same result,
 * and a test can only prove that for the paths it can select. With one switch that every kernel's
 * dispatch asks, forcing the scalar path reaches the GEMV, the top-K selection, the fused
 * projections and the decode step alike, and zoo_isa() tells a test which path actually ran.
 */
#include "zoo_kernels.h" /* the ABI: checks this file's definitions against their declarations */
#include "zoo_cpu.h"

/* What this CPU runs: ZOO_ISA_AVX512 needs AVX2, FMA and AVX-512 F/BW/VL, ZOO_ISA_AVX2 AVX2 and FMA
 * (the float kernels fuse their products; every x86-64 CPU with AVX2 that the zoo targets has
 * both), else ZOO_ISA_SCALAR. Read once. */
static int cpu_isa(void) {
#if defined(__x86_64__) || defined(__i386__)
    static int cached = 0;
    if (!cached) {
        __builtin_cpu_init();
        const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
        cached = avx2 && avx512 ? ZOO_ISA_AVX512 : (avx2 ? ZOO_ISA_AVX2 : ZOO_ISA_SCALAR);
    }
    return cached;
#else
    return ZOO_ISA_SCALAR;
#endif
}

/* The cap set by zoo_force_isa (ZOO_ISA_AUTO: none). */
static int isa_cap = ZOO_ISA_AUTO;

int zoo_isa(void) {
    const int cpu = cpu_isa();
    return isa_cap != ZOO_ISA_AUTO && isa_cap < cpu ? isa_cap : cpu;
}

int zoo_force_isa(int isa) {
    if (isa != ZOO_ISA_AUTO && isa != ZOO_ISA_SCALAR && isa != ZOO_ISA_AVX2 && isa != ZOO_ISA_AVX512) return -1;
    isa_cap = isa;
    return zoo_isa();
}

int zoo_use_avx2(void) { return zoo_isa() >= ZOO_ISA_AVX2; }

int zoo_use_avx512(void) { return zoo_isa() >= ZOO_ISA_AVX512; }

int zoo_use_avx512_bf16(void) {
#if defined(__x86_64__) || defined(__i386__)
    static int has_bf16 = -1;
    if (has_bf16 < 0) has_bf16 = __builtin_cpu_supports("avx512bf16");
    return has_bf16 && zoo_use_avx512();
#else
    return 0;
#endif
}
