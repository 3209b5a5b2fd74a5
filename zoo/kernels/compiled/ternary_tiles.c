/* Packed ternary x int8 GEMV for decoding, on a tiled copy of the packed weight: BitNet b1.58
 * weights (arXiv 2402.17764) read only for the input channels that Q-Sparse's top-K (arXiv
 * 2407.10969) kept, as one sequential stream.
 *
 * Why a second layout: zoo.kernels.pack stores one byte row per input channel ([K][nb], four
 * outputs a byte). A GEMV over it either keeps its sums in memory (a load and a store per 32
 * bytes of weights) or walks a hundred rows side by side, each a separate stream that the
 * hardware prefetcher loses track of; from DRAM it ran at a third of the machine's read rate.
 * Here the outputs are cut into tiles of 128 and each tile holds its 32 bytes of every input
 * channel back to back: [tiles][K][32]. A tile's int16 sums live in eight registers for the whole
 * pass over the kept channels, and the pass reads the tile front to back, skipping the 32-byte
 * pieces of channels that top-K dropped (or whose int8 input is zero).
 *
 * Inside a tile, output o sits at byte b(o) and bit pair i(o) = o / 32, chosen so that the AVX2
 * loop's sums come out in natural order: with h = (o / 16) % 2 and e = o % 16,
 * b = (e < 8 ? e : e + 8) + 8 h. Codes are w + 1 in {0, 1, 2}, as in the canonical layout;
 * outputs past N (the last tile's padding) hold code 1, a zero weight.
 *
 * AVX2: two kept channels at a time, their 32 bytes interleaved (unpacklo/hi) and multiplied by
 * the pair (x1, x2) with one vpmaddubsw per bit pair and half, c1*x1 + c2*x2 in int16. Since
 * |c1*x1 + c2*x2| <= 512, 64 pairs fit int16 before the sums are widened into int32. The constant
 * sum(x) (the codes are w + 1) is subtracted at the end. The scalar path computes the same sums.
 */
#include "zoo_kernels.h" /* the ABI: checks this file's definitions against their declarations */
#include "zoo_cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ZOO_X86 1
#endif

#define TILE 128 /* outputs per tile */
#define TILE_BYTES 32
#define PAIRS_PER_WIDEN 64
#ifndef PREFETCH_PAIRS
#define PREFETCH_PAIRS 128
#endif

/* Byte and bit pair of output o (0 <= o < 128) inside its tile's 32 bytes. */
static inline int tile_byte(int o) {
    const int h = (o / 16) % 2, e = o % 16;
    return (e < 8 ? e : e + 8) + 8 * h;
}

void zoo_ternary_tile(const uint8_t *packed, int64_t k_in, int64_t nb, uint8_t *tiles) {
    const int64_t n_tiles = (4 * nb + TILE - 1) / TILE;
    int byte_of[TILE];
    for (int o = 0; o < TILE; ++o) byte_of[o] = tile_byte(o);
    for (int64_t t = 0; t < n_tiles; ++t) {
        for (int64_t k = 0; k < k_in; ++k) {
            uint8_t *dst = tiles + (t * k_in + k) * TILE_BYTES;
            memset(dst, 0, TILE_BYTES);
            const uint8_t *row = packed + k * nb;
            for (int o = 0; o < TILE; ++o) {
                const int64_t n = t * TILE + o;
                const int code = n < 4 * nb ? (row[n / 4] >> (2 * (n % 4))) & 3 : 1;
                dst[byte_of[o]] |= (uint8_t)(code << (2 * (o / 32)));
            }
        }
    }
}

/* The kept channels of x as pairs: byte offsets of both channels within a tile and their two
 * inputs as the int16 (x2 << 8 | x1) that vpmaddubsw multiplies with. An odd last channel pairs
 * with itself and a zero input. Returns the number of pairs; *sum_x gets sum(x) over them. */
static int64_t kept_pairs(const int8_t *x, int64_t k_in, int32_t *pairs, int32_t *sum_x) {
    /* First the non-zero channels' indices, branch-free (whether an input is zero is a coin toss
     * under top-K), into the pair slots' tail: pairs has room for 3 * (k_in / 2 + 1) values. */
    int32_t *kept = pairs + 3 * (k_in / 2 + 1) - k_in;
    int64_t n_kept = 0;
    int32_t total = 0;
    for (int64_t k = 0; k < k_in; ++k) {
        kept[n_kept] = (int32_t)k;
        n_kept += x[k] != 0;
        total += x[k];
    }
    /* Then the pairs, front to back, over the same buffer: pair n writes slots 3n .. 3n + 2, below
     * the slot of kept index 2n + 2 (the tail starts at slot 3 (k_in / 2 + 1) - k_in > n), so
     * every index is read before it is overwritten. */
    int64_t n = 0;
    for (int64_t t = 0; t < n_kept; t += 2, ++n) {
        const int32_t k1 = kept[t], k2 = t + 1 < n_kept ? kept[t + 1] : k1;
        const uint8_t x1 = (uint8_t)x[k1], x2 = t + 1 < n_kept ? (uint8_t)x[k2] : 0; /* an odd channel pairs with a zero input */
        pairs[3 * n] = k1 * TILE_BYTES;
        pairs[3 * n + 1] = k2 * TILE_BYTES;
        pairs[3 * n + 2] = (int32_t)(uint16_t)(((uint16_t)x2 << 8) | x1);
    }
    *sum_x = total;
    return n;
}

/* One tile's sums (code-weighted, before subtracting sum(x)) into acc[0..128), natural order. */
static void tile_scalar(const uint8_t *tile, const int32_t *pairs, int64_t n_pairs, int32_t *acc) {
    int byte_of[TILE];
    for (int o = 0; o < TILE; ++o) byte_of[o] = tile_byte(o), acc[o] = 0;
    for (int64_t p = 0; p < n_pairs; ++p) {
        const uint8_t *a = tile + pairs[3 * p], *b = tile + pairs[3 * p + 1];
        const int32_t x1 = (int8_t)(pairs[3 * p + 2] & 0xff), x2 = (int8_t)((pairs[3 * p + 2] >> 8) & 0xff);
        for (int o = 0; o < TILE; ++o) {
            const int shift = 2 * (o / 32);
            acc[o] += ((a[byte_of[o]] >> shift) & 3) * x1 + ((b[byte_of[o]] >> shift) & 3) * x2;
        }
    }
}

#ifdef ZOO_X86
/* Adds the eight int16 sums to acc's int32 (sum r covers outputs 16 r .. 16 r + 15) and clears them. */
__attribute__((target("avx2"))) static inline void widen(__m256i sum[8], int32_t *acc) {
    for (int r = 0; r < 8; ++r) {
        __m256i *lo = (__m256i *)(acc + 16 * r), *hi = lo + 1;
        _mm256_storeu_si256(lo, _mm256_add_epi32(_mm256_loadu_si256(lo), _mm256_cvtepi16_epi32(_mm256_castsi256_si128(sum[r]))));
        _mm256_storeu_si256(hi, _mm256_add_epi32(_mm256_loadu_si256(hi), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(sum[r], 1))));
        sum[r] = _mm256_setzero_si256();
    }
}

/* The two kept channels' 32-byte pieces of a pair, with the pieces PREFETCH_PAIRS pairs ahead
 * fetched by address when there are any (the hardware prefetcher loses long runs of dropped
 * channels: they were 3.9x slower without). */
__attribute__((target("avx2"), always_inline)) static inline void load_pair(const uint8_t *tile, const int32_t *pair, int ahead, __m256i *a,
                                                                            __m256i *b) {
    if (ahead) {
        _mm_prefetch((const char *)(tile + pair[3 * PREFETCH_PAIRS]), _MM_HINT_T0);
        _mm_prefetch((const char *)(tile + pair[3 * PREFETCH_PAIRS + 1]), _MM_HINT_T0);
    }
    *a = _mm256_loadu_si256((const __m256i *)(tile + pair[0]));
    *b = _mm256_loadu_si256((const __m256i *)(tile + pair[1]));
}

__attribute__((target("avx2"))) static void tile_avx2(const uint8_t *tile, const int32_t *pairs, int64_t n_pairs, int32_t *acc) {
    const __m256i low2 = _mm256_set1_epi8(3);
    __m256i sum[8];
    for (int r = 0; r < 8; ++r) sum[r] = _mm256_setzero_si256();
    memset(acc, 0, sizeof(int32_t) * TILE);
    int since_widen = 0;
    for (int64_t p = 0; p < n_pairs; ++p) {
        const int32_t *pair = pairs + 3 * p;
        __m256i a, b;
        load_pair(tile, pair, p + PREFETCH_PAIRS < n_pairs, &a, &b);
        const __m256i xq = _mm256_set1_epi16((int16_t)pair[2]);
        const __m256i lo = _mm256_unpacklo_epi8(a, b), hi = _mm256_unpackhi_epi8(a, b);
        /* a 16-bit shift moves the second channel's low bits into the first's high ones: the mask drops them */
        sum[0] = _mm256_add_epi16(sum[0], _mm256_maddubs_epi16(_mm256_and_si256(lo, low2), xq));
        sum[1] = _mm256_add_epi16(sum[1], _mm256_maddubs_epi16(_mm256_and_si256(hi, low2), xq));
        sum[2] = _mm256_add_epi16(sum[2], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(lo, 2), low2), xq));
        sum[3] = _mm256_add_epi16(sum[3], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(hi, 2), low2), xq));
        sum[4] = _mm256_add_epi16(sum[4], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(lo, 4), low2), xq));
        sum[5] = _mm256_add_epi16(sum[5], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(hi, 4), low2), xq));
        sum[6] = _mm256_add_epi16(sum[6], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(lo, 6), low2), xq));
        sum[7] = _mm256_add_epi16(sum[7], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(hi, 6), low2), xq));
        if (++since_widen == PAIRS_PER_WIDEN) {
            widen(sum, acc);
            since_widen = 0;
        }
    }
    widen(sum, acc);
}

/* The same sums, 512 bits wide: each pair's two 256-bit halves (the interleaved bytes of outputs
 * 0-15, 32-47, ... and 16-31, 48-63, ...) side by side in one register, so that one shift, mask
 * and vpmaddubsw per bit pair covers 32 outputs; the four int16 sums come out in natural order
 * (sum i covers outputs 32 i .. 32 i + 31). About half the instructions of the AVX2 loop. */
__attribute__((target("avx2,avx512f,avx512bw,avx512vl"))) static void tile_avx512(const uint8_t *tile, const int32_t *pairs, int64_t n_pairs,
                                                                                  int32_t *acc) {
    const __m512i low2 = _mm512_set1_epi8(3);
    __m512i sum[4];
    for (int r = 0; r < 4; ++r) sum[r] = _mm512_setzero_si512();
    memset(acc, 0, sizeof(int32_t) * TILE);
    int since_widen = 0;
    for (int64_t p = 0; p < n_pairs; ++p) {
        const int32_t *pair = pairs + 3 * p;
        __m256i a, b;
        load_pair(tile, pair, p + PREFETCH_PAIRS < n_pairs, &a, &b);
        const __m512i ab = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_unpacklo_epi8(a, b)), _mm256_unpackhi_epi8(a, b), 1);
        const __m512i xq = _mm512_set1_epi16((int16_t)pair[2]);
        sum[0] = _mm512_add_epi16(sum[0], _mm512_maddubs_epi16(_mm512_and_si512(ab, low2), xq));
        sum[1] = _mm512_add_epi16(sum[1], _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(ab, 2), low2), xq));
        sum[2] = _mm512_add_epi16(sum[2], _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(ab, 4), low2), xq));
        sum[3] = _mm512_add_epi16(sum[3], _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(ab, 6), low2), xq));
        if (++since_widen == PAIRS_PER_WIDEN || p + 1 == n_pairs) {
            for (int r = 0; r < 4; ++r) {
                __m512i *lo = (__m512i *)(acc + 32 * r), *hi = lo + 1;
                _mm512_storeu_si512(lo, _mm512_add_epi32(_mm512_loadu_si512(lo), _mm512_cvtepi16_epi32(_mm512_castsi512_si256(sum[r]))));
                _mm512_storeu_si512(hi, _mm512_add_epi32(_mm512_loadu_si512(hi), _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(sum[r], 1))));
                sum[r] = _mm512_setzero_si512();
            }
            since_widen = 0;
        }
    }
}
#endif

/* Tiles [t0, t1) of one row: out[128 t + o] = the exact sum over kept channels of w * x. */
static void tiles_range(const uint8_t *tiles, int64_t k_in, const int32_t *pairs, int64_t n_pairs, int32_t sum_x, int64_t t0, int64_t t1,
                        int isa, int32_t *out) {
    for (int64_t t = t0; t < t1; ++t) {
        const uint8_t *tile = tiles + t * k_in * TILE_BYTES;
        int32_t *acc = out + t * TILE;
#ifdef ZOO_X86
        if (isa >= ZOO_ISA_AVX512) tile_avx512(tile, pairs, n_pairs, acc);
        else if (isa >= ZOO_ISA_AVX2) tile_avx2(tile, pairs, n_pairs, acc);
        else tile_scalar(tile, pairs, n_pairs, acc);
#else
        (void)isa;
        tile_scalar(tile, pairs, n_pairs, acc);
#endif
        for (int o = 0; o < TILE; ++o) acc[o] -= sum_x;
    }
}

void zoo_ternary_gemv_tiled(const uint8_t *tiles, int64_t k_in, int64_t n_tiles, const int8_t *x, int64_t rows, int32_t *acc,
                            const zoo_scratch *scratch, int threads) {
    const int isa = zoo_isa();
    for (int64_t r = 0; r < rows; ++r) {
        int32_t sum_x;
        const int64_t n_pairs = kept_pairs(x + r * k_in, k_in, scratch->pairs, &sum_x);
        int32_t *out = acc + r * n_tiles * TILE;
        /* Threads only pay off past about a megabyte of weights read: below, the fork and join
         * cost more than the split saves. Each thread takes whole tiles: one stream each. */
        if (threads > 1 && n_tiles >= 2 * threads && n_pairs * n_tiles * 2 * TILE_BYTES >= (1 << 20)) {
#pragma omp parallel num_threads(threads)
            {
#ifdef _OPENMP
                const int64_t id = omp_get_thread_num(), count = omp_get_num_threads();
#else
                const int64_t id = 0, count = 1;
#endif
                tiles_range(tiles, k_in, scratch->pairs, n_pairs, sum_x, n_tiles * id / count, n_tiles * (id + 1) / count, isa, out);
            }
        } else {
            tiles_range(tiles, k_in, scratch->pairs, n_pairs, sum_x, 0, n_tiles, isa, out);
        }
    }
}
