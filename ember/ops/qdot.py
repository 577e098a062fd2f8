"""The int8 inner loops of TFLite's convolutions and fully-connected layers (ops/qconv.py),
emitted once per model as support C (`require_dot`, `require_depthwise`).

One source serves every target: the compiler's own feature macros pick the path.

    __ARM_FEATURE_MVE (Cortex-M55, Helium)  16 int8 lanes: vmladavaq_s8 for the dot product,
                                            int16 lanes widened to int32 products for depthwise
    __ARM_FEATURE_DSP (Cortex-M4/M7/M33)    SMLAD on int16 pairs widened by SXTAB16, which adds
                                            the offset in the same instruction
    otherwise (and with -DEMBER_NO_SIMD)    portable C, which host compilers vectorize

Every path computes the same integers: sums of (x + x_offset) * (w + w_offset) accumulated
in int32 (exact in any order; TFLite's kernels assume the sum fits). The widened terms fit
int16: an int8 value plus an offset in [-127, 128] (an offset is minus an int8 zero point)
lies in [-255, 255]. The MVE dot product expands the product instead,
    sum (x + xo)(w + wo) = sum x*w + xo * sum w + wo * sum x + n * xo * wo,
all exact modulo 2^32, so it can multiply the int8 lanes themselves.
"""
from __future__ import annotations

from ember.ops.quant import require_fixed_point

#: `#if` choosing the vector paths; EMBER_NO_SIMD (the exported Makefile's SIMD=0) forces the
#: portable C everywhere.
_SELECT = """\
#if defined(__ARM_FEATURE_MVE) && !defined(EMBER_NO_SIMD)
#define EMBER_QDOT_MVE 1
#include <arm_mve.h>
#elif defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32) && !defined(EMBER_NO_SIMD)
#define EMBER_QDOT_DSP 1
#include <arm_acle.h>
#endif
"""

DOT_C = _SELECT + r"""
#if defined(EMBER_QDOT_DSP)
/* Four int8 values as one word: an unaligned LDR, which the cores with DSP allow. */
static inline int32_t ember_ld4(const int8_t *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}
/* SXTAB16 of the word rotated by 8 (bytes 1 and 3): GCC 12 does not fold the rotation into
   the instruction itself */
static inline int32_t ember_sxtab16_ror8(int32_t a, int32_t b) {
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
#endif

/* sum over i < n of (x[i] + xo) * (w[i] + wo) */
static int32_t ember_dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t xo,
                            int32_t wo) {
    int32_t i = 0;
#if defined(EMBER_QDOT_MVE)
    int32_t sxw = 0, sx = 0, sw = 0;
    for (; i < n; i += 16) {
        const mve_pred16_t p = vctp8q((uint32_t)(n - i));
        const int8x16_t xv = vldrbq_z_s8(x + i, p), wv = vldrbq_z_s8(w + i, p);
        sxw = vmladavaq_s8(sxw, xv, wv);        /* lanes past n load as 0 */
        sw = vaddvaq_s8(sw, wv);
        if (wo != 0) sx = vaddvaq_s8(sx, xv);
    }
    return (int32_t)((uint32_t)sxw + (uint32_t)xo * (uint32_t)sw + (uint32_t)wo * (uint32_t)sx
                     + (uint32_t)n * (uint32_t)xo * (uint32_t)wo);
#else
    int32_t acc = 0;
#if defined(EMBER_QDOT_DSP)
    /* the offsets in both int16 halves; SXTAB16 widens bytes 0 and 2 (1 and 3 after ROR 8)
       and adds them, so each SMLAD multiplies the same pairs of x and w */
    const int32_t xo2 = (int32_t)(((uint32_t)xo & 0xFFFFu) * 0x10001u);
    const int32_t wo2 = (int32_t)(((uint32_t)wo & 0xFFFFu) * 0x10001u);
    for (; i + 8 <= n; i += 8) {
        const int32_t xa = ember_ld4(x + i), wa = ember_ld4(w + i);
        const int32_t xb = ember_ld4(x + i + 4), wb = ember_ld4(w + i + 4);
        acc = __smlad(__sxtab16(xo2, xa), __sxtab16(wo2, wa), acc);
        acc = __smlad(ember_sxtab16_ror8(xo2, xa), ember_sxtab16_ror8(wo2, wa), acc);
        acc = __smlad(__sxtab16(xo2, xb), __sxtab16(wo2, wb), acc);
        acc = __smlad(ember_sxtab16_ror8(xo2, xb), ember_sxtab16_ror8(wo2, wb), acc);
    }
    if (i + 4 <= n) {
        const int32_t xa = ember_ld4(x + i), wa = ember_ld4(w + i);
        acc = __smlad(__sxtab16(xo2, xa), __sxtab16(wo2, wa), acc);
        acc = __smlad(ember_sxtab16_ror8(xo2, xa), ember_sxtab16_ror8(wo2, wa), acc);
        i += 4;
    }
#endif
    for (; i < n; ++i)
        acc += ((int32_t)x[i] + xo) * ((int32_t)w[i] + wo);
    return acc;
#endif
}
"""

DEPTHWISE_C = _SELECT + r"""
/* One output position of a depthwise conv over channels c < n (x and w advance by 1 per
   channel): acc[c] = sum over rows r < rows, cols k < cols of
   (x[r * x_row + k * x_col + c] + xo) * (w[r * w_row + k * w_col + c] + wo).
   acc holds n rounded up to a multiple of 8 values (the MVE path stores whole vectors). */
static void ember_dw_s8(int32_t *acc, const int8_t *x, const int8_t *w, int32_t n,
                        int32_t rows, int32_t cols, int32_t x_row, int32_t x_col,
                        int32_t w_row, int32_t w_col, int32_t xo, int32_t wo) {
    int32_t c, r, k;
#if defined(EMBER_QDOT_MVE)
    /* 8 channels per vector in int16 lanes; even and odd lanes widen to int32 products */
    for (c = 0; c < n; c += 8) {
        const mve_pred16_t p = vctp16q((uint32_t)(n - c));
        int32x4x2_t a;
        a.val[0] = vdupq_n_s32(0);
        a.val[1] = vdupq_n_s32(0);
        for (r = 0; r < rows; ++r) {
            const int8_t *xr = x + r * x_row + c, *wr = w + r * w_row + c;
            for (k = 0; k < cols; ++k) {
                const int16x8_t xv = vaddq_n_s16(vldrbq_z_s16(xr + k * x_col, p), (int16_t)xo);
                const int16x8_t wv = vaddq_n_s16(vldrbq_z_s16(wr + k * w_col, p), (int16_t)wo);
                a.val[0] = vaddq_s32(a.val[0], vmullbq_int_s16(xv, wv));
                a.val[1] = vaddq_s32(a.val[1], vmulltq_int_s16(xv, wv));
            }
        }
        vst2q_s32(acc + c, a);                 /* interleaves even and odd lanes back */
    }
#else
    for (c = 0; c < n; ++c)
        acc[c] = 0;
    for (r = 0; r < rows; ++r) {
        for (k = 0; k < cols; ++k) {
            const int8_t *xk = x + r * x_row + k * x_col, *wk = w + r * w_row + k * w_col;
            for (c = 0; c < n; ++c)
                acc[c] += ((int32_t)xk[c] + xo) * ((int32_t)wk[c] + wo);
        }
    }
#endif
}
"""

REQUANT_C = _SELECT + r"""
/* y[c] = clamp(mbqm(acc[c] + bias[c], mult[c], shift[c]) + out_offset, lo, hi) for c < n
   (bias may be null): TFLite's per-channel requantization rounding twice. MVE's
   VQRDMULH is SaturatingRoundingDoublingHighMul, and VRSHL after adding -1 to negative
   values is RoundingDivideByPOT (gemmlowp's NEON code does the same). */
static void ember_requant_s8(int8_t *y, const int32_t *acc, const int32_t *bias,
                             const int32_t *mult, const int32_t *shift, int32_t n,
                             int32_t out_offset, int32_t lo, int32_t hi) {
    int32_t c;
#if defined(EMBER_QDOT_MVE)
    const int32x4_t zero = vdupq_n_s32(0);
    for (c = 0; c < n; c += 4) {
        const mve_pred16_t p = vctp32q((uint32_t)(n - c));
        const int32x4_t s = vldrwq_z_s32(shift + c, p);
        const int32x4_t right = vminq_s32(s, zero);
        int32x4_t a = vldrwq_z_s32(acc + c, p);
        if (bias) a = vaddq_s32(a, vldrwq_z_s32(bias + c, p));
        a = vqrdmulhq_s32(vshlq_s32(a, vmaxq_s32(s, zero)), vldrwq_z_s32(mult + c, p));
        a = vrshlq_s32(vqaddq_s32(a, vshrq_n_s32(vandq_s32(a, right), 31)), right);
        a = vminq_s32(vmaxq_s32(vaddq_n_s32(a, out_offset), vdupq_n_s32(lo)), vdupq_n_s32(hi));
        vstrbq_p_s32(y + c, a, p);
    }
#else
    for (c = 0; c < n; ++c)
        y[c] = (int8_t)ember_clamp32(ember_mbqm(acc[c] + (bias ? bias[c] : 0), mult[c],
                                                (int)shift[c]) + out_offset, lo, hi);
#endif
}
"""


def require_requant(ctx) -> str:
    """Make ember_requant_s8 (and the fixed-point helpers it calls) available; its name."""
    require_fixed_point(ctx)
    ctx.require("ember_requant_s8", REQUANT_C)
    return "ember_requant_s8"


def require_dot(ctx) -> str:
    """Make ember_dot_s8 available to the kernel; returns its name."""
    ctx.require("ember_dot_s8", DOT_C)
    return "ember_dot_s8"


def require_depthwise(ctx) -> str:
    """Make ember_dw_s8 available to the kernel; returns its name."""
    ctx.require("ember_dw_s8", DEPTHWISE_C)
    return "ember_dw_s8"


#: channels whose sums a conv or fully-connected kernel holds at once (a multiple of 8)
ACC_BLOCK = 64


def depthwise_acc_len(channels: int) -> int:
    """How many int32 ember_dw_s8's acc must hold for `channels` channels."""
    return -(-channels // 8) * 8
