"""C source of the integer GEMM tile behind ONNX's ConvInteger and QLinearConv (ops/qconv_gemm.py).

Operands are int16: activations minus their zero point, weights minus theirs, each in
[-255, 255], so a product of two fits 17 bits and a sum of two products (VPMADDWD) is exact in
int32, as onnxruntime's sums are (no saturation, unlike VPMADDUBSW on raw 8-bit values).

    x  an int16 map in NHWC with its channels paired: input channels (2i, 2i+1) of a pixel are
       one 32-bit word, read at x + xo[j] + toff[t] + 2i for position j and tap t.
    w  the weights of IGEMM_NR output channels, per tap and channel pair: IGEMM_NR pairs
       (w[o][2i], w[o][2i+1]) interleaved, 2 * IGEMM_NR int16 per step, steps tap-major.

A tile is mr <= IGEMM_MR positions x IGEMM_NR output channels of int32 sums, tile[j * NR + o].
On AVX2 the accumulators are 2 x mr vectors of 8 int32 (VPMADDWD of a broadcast pair with a
vector of weight pairs); elsewhere a plain loop over the output channels that compilers
vectorize as they can (the same integers: exact sums in any order).
"""
from __future__ import annotations

#: positions per tile (the broadcast operand) and output channels per tile (the vector lanes)
IGEMM_MR = 4
IGEMM_NR = 16

_BODY = r"""
#if defined(__AVX2__) && !defined(EMBER_NO_SIMD)
#include <immintrin.h>
#define EMBER_IGEMM_AVX2 1
#endif

/* tile[j * 16 + o] = sum over taps t < ntaps and channel pairs i < npairs of
   x[xo[j] + toff[t] + 2i] * w[s][2o] + x[xo[j] + toff[t] + 2i + 1] * w[s][2o + 1],
   w[s] = w + 32 * (t * npairs + i): see ember/kernels/igemm.py for the layouts. */
static inline __attribute__((always_inline)) void ember_igemm_body(
        const int mr, int32_t *restrict tile, const int16_t *restrict x,
        const int32_t *restrict xo, const int32_t *restrict toff, int32_t ntaps,
        int32_t npairs, const int16_t *restrict w) {
#if defined(EMBER_IGEMM_AVX2)
    __m256i acc[4][2];
    for (int j = 0; j < mr; ++j)
        acc[j][0] = acc[j][1] = _mm256_setzero_si256();
    for (int32_t t = 0; t < ntaps; ++t) {
        const int16_t *xt[4];
        for (int j = 0; j < mr; ++j)
            xt[j] = x + xo[j] + toff[t];
        for (int32_t i = 0; i < npairs; ++i, w += 32) {
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)w);
            const __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + 16));
            for (int j = 0; j < mr; ++j) {
                int32_t pair;
                __builtin_memcpy(&pair, xt[j] + 2 * i, 4);
                const __m256i b = _mm256_set1_epi32(pair);
                acc[j][0] = _mm256_add_epi32(acc[j][0], _mm256_madd_epi16(b, w0));
                acc[j][1] = _mm256_add_epi32(acc[j][1], _mm256_madd_epi16(b, w1));
            }
        }
    }
    for (int j = 0; j < mr; ++j) {
        _mm256_storeu_si256((__m256i *)(tile + 16 * j), acc[j][0]);
        _mm256_storeu_si256((__m256i *)(tile + 16 * j + 8), acc[j][1]);
    }
#else
    int32_t acc[4][16];
    for (int j = 0; j < mr; ++j)
        for (int o = 0; o < 16; ++o)
            acc[j][o] = 0;
    for (int32_t t = 0; t < ntaps; ++t) {
        for (int32_t i = 0; i < npairs; ++i, w += 32) {
            for (int j = 0; j < mr; ++j) {
                const int16_t *xp = x + xo[j] + toff[t] + 2 * i;
                const int32_t x0 = xp[0], x1 = xp[1];
                for (int o = 0; o < 16; ++o)
                    acc[j][o] += x0 * w[2 * o] + x1 * w[2 * o + 1];
            }
        }
    }
    for (int j = 0; j < mr; ++j)
        for (int o = 0; o < 16; ++o)
            tile[16 * j + o] = acc[j][o];
#endif
}
"""


def igemm_support_c() -> str:
    """The tile routine body and one wrapper per row count, `ember_igemm{mr}` for
    mr = 1..IGEMM_MR: never inlined, so each is compiled with mr constant and keeps its
    accumulators in registers; marked unused, as a model calls only some."""
    assert IGEMM_NR == 16 and IGEMM_MR <= 4      # what the C above is written for
    wrappers = "\n".join(
        f"static __attribute__((noinline, unused)) void ember_igemm{mr}(int32_t *restrict tile, "
        f"const int16_t *restrict x, const int32_t *restrict xo, const int32_t *restrict toff, "
        f"int32_t ntaps, int32_t npairs, const int16_t *restrict w) "
        f"{{ ember_igemm_body({mr}, tile, x, xo, toff, ntaps, npairs, w); }}"
        for mr in range(1, IGEMM_MR + 1))
    return _BODY + wrappers + "\n"
