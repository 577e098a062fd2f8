"""TFLite's int8 activations as 256-entry tables, computed at compile time.

An int8 activation maps each of the 256 input values to one output value, so Ember computes
that map once, here, by running the integer arithmetic of TFLite's reference kernel on every
input, and the generated code only looks the result up (TflLookup, ops/qelementwise.py): no
arithmetic, and no floating point, at run time. The arithmetic is gemmlowp's fixed point
(fixedpoint.h) and TFLite's kernels (tensorflow/lite/kernels/internal/reference/...) written
out on Python ints, wrapping where the C wraps, so each table is bit-exact with the kernel:

  logistic   reference_integer_ops::Logistic: input to Q4.27, gemmlowp logistic, Q0.31 -> int8
  tanh       reference_integer_ops::Tanh: input to Q4.27, gemmlowp tanh, Q0.31 -> int8
  hard_swish reference_ops::HardSwish: int16 fixed point with the "reluish" multiplier
  relu       ReluQuantized: requantize (x - zin) to the output scale, clamp below at zout
  leaky_relu QuantizeLeakyRelu: one multiplier for x >= zin, another (alpha) below
  float_lut  LiteRT's LUTPopulate: the float function on each dequantized input, requantized
             (ai-edge-litert's reference LOGISTIC and TANH on int8 use it)
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ember.ops.quant import round_half_away

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT8_VALUES = range(-128, 128)


def wrap(x: int, bits: int) -> int:
    """x converted to a signed `bits`-bit integer, wrapping as C does on every Ember target."""
    half = 1 << (bits - 1)
    return ((x + half) % (1 << bits)) - half


def _cdiv(a: int, b: int) -> int:
    """C's integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


# -- gemmlowp fixed point on int32 --------------------------------------------------------------
def srdhm(a: int, b: int, bits: int = 32) -> int:
    """SaturatingRoundingDoublingHighMul on `bits`-bit integers."""
    lo = -(1 << (bits - 1))
    if a == lo and b == lo:
        return (1 << (bits - 1)) - 1
    ab = a * b
    nudge = (1 << (bits - 2)) if ab >= 0 else 1 - (1 << (bits - 2))
    return wrap(_cdiv(ab + nudge, 1 << (bits - 1)), bits)


def rdivpot(x: int, exponent: int, bits: int = 32) -> int:
    """RoundingDivideByPOT: x / 2**exponent rounded half away from zero; the mask is made in
    the integer type, as gemmlowp's template does (it wraps for int16 past 15 bits)."""
    mask = wrap((1 << exponent) - 1, bits)
    remainder = wrap(x & mask, bits)
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return wrap((x >> exponent) + (1 if remainder > threshold else 0), bits)


def sat_shl(x: int, exponent: int) -> int:
    """SaturatingRoundingMultiplyByPOT<exponent> on int32, exponent > 0."""
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return wrap(x << exponent, 32)


def mbqm(x: int, multiplier: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier as TFLite Micro builds it (two roundings)."""
    left, right = max(shift, 0), max(-shift, 0)
    return rdivpot(srdhm(wrap(x << left, 32), multiplier), right)


def _exp_quarter(a: int) -> int:
    """exp on [-1/4, 0) in Q0.31 (exp_on_interval_between_negative_one_quarter_and_0_excl)."""
    constant_term, one_third = 1895147668, 715827883
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    poly = rdivpot(srdhm(rdivpot(x4, 2) + x3, one_third) + x2, 1)
    return constant_term + srdhm(constant_term, x + poly)


_EXP_FACTORS = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)


def exp_on_negative_values(a: int, integer_bits: int) -> int:
    """exp(a) for a <= 0 given with `integer_bits` integer bits; Q0.31 result."""
    fractional = 31 - integer_bits
    quarter = 1 << (fractional - 2)
    a_mod = (a & (quarter - 1)) - quarter
    result = _exp_quarter(sat_shl(a_mod, integer_bits))
    remainder = wrap(a_mod - a, 32)
    for k, factor in enumerate(_EXP_FACTORS):       # exp(-2**e), e = k - 2
        if integer_bits > k - 2 and remainder & (1 << (fractional + k - 2)):
            result = srdhm(result, factor)
    return INT32_MAX if a == 0 else result


def _newton_reciprocal(a: int) -> int:
    """The Q2.29 Newton-Raphson iterate of 1 / (1 + a) shared by the two divisions below."""
    total = a + INT32_MAX
    half_denominator = _cdiv(total + (1 if total >= 0 else -1), 2)
    x = 1515870810 + srdhm(half_denominator, -1010580540)
    for _ in range(3):
        one_minus = (1 << 29) - srdhm(half_denominator, x)
        x = x + sat_shl(srdhm(x, one_minus), 2)
    return x


def one_over_one_plus_x(a: int) -> int:
    return sat_shl(_newton_reciprocal(a), 1)


def one_minus_x_over_one_plus_x(a: int) -> int:
    return sat_shl(_newton_reciprocal(a) - (1 << 29), 2)


def fixed_logistic(a: int) -> int:
    """gemmlowp logistic of a Q4.27 value; Q0.31 result."""
    if a == 0:
        return 1 << 30
    positive = one_over_one_plus_x(exp_on_negative_values(-abs(a), 4))
    return positive if a > 0 else INT32_MAX - positive


def fixed_tanh(a: int) -> int:
    """gemmlowp tanh of a Q4.27 value (exp of 2a: the raw value read as Q5.26); Q0.31."""
    if a == 0:
        return 0
    t = one_minus_x_over_one_plus_x(exp_on_negative_values(-abs(a), 5))
    return -t if a < 0 else t


# -- the tables -----------------------------------------------------------------------------
def _table(fn: Callable[[int], int]) -> np.ndarray:
    """int8[256] indexed by the input's bits as uint8 (x & 255)."""
    out = np.empty(256, np.int8)
    for x in INT8_VALUES:
        out[x & 255] = max(-128, min(127, fn(x)))
    return out


def sigmoid_input_scaling(scale: float) -> tuple[int, int, int] | None:
    """(multiplier, left shift, radius) of Logistic/Tanh's input in Q4.27, as their Prepare
    computes them (frexp of scale * 2**27, the mantissa rounded to Q31); None when the
    mantissa rounds up to 2**31, which TFLite would cast to int32 undefined."""
    q, shift = math.frexp(scale * (1 << 27))
    multiplier = round_half_away(q * (1 << 31))
    if multiplier >= 1 << 31:
        return None
    radius = math.floor(15 * (1 << 27) / 2.0 ** shift)       # CalculateInputRadius(4, shift)
    return multiplier, shift, radius


def _sigmoid_like(zero: int, scaling: tuple[int, int, int], fn: Callable[[int], int],
                  out_bits: int, out_zero: int) -> np.ndarray:
    multiplier, shift, radius = scaling

    def one(x: int) -> int:
        v = x - zero
        if v <= -radius:
            return -128
        if v >= radius:
            return 127
        return rdivpot(fn(mbqm(v, multiplier, shift)), 31 - out_bits) + out_zero
    return _table(one)


def logistic_table(zero: int, scaling: tuple[int, int, int]) -> np.ndarray:
    """Output scale 1/256, zero point -128 (the only output TFLite's int8 LOGISTIC takes)."""
    return _sigmoid_like(zero, scaling, fixed_logistic, 8, -128)


def tanh_table(zero: int, scaling: tuple[int, int, int]) -> np.ndarray:
    """Output scale 1/128, zero point 0."""
    return _sigmoid_like(zero, scaling, fixed_tanh, 7, 0)


def relu_table(in_zero: int, multiplier: int, shift: int, out_zero: int, lo: int,
               hi: int) -> np.ndarray:
    return _table(lambda x: max(lo, min(hi, out_zero + mbqm(x - in_zero, multiplier, shift))))


def clamp_table(lo: int, hi: int) -> np.ndarray:
    """TFLite Micro's int8 RELU6: the input clamped in its own quantization."""
    return _table(lambda x: max(lo, min(hi, x)))


def leaky_relu_table(in_zero: int, identity: tuple[int, int], alpha: tuple[int, int],
                     out_zero: int) -> np.ndarray:
    """QuantizeLeakyRelu; a negative alpha multiplier is applied to its magnitude and the
    product negated (MultiplyByQuantizedMultiplier wants a multiplier >= 0)."""
    def one(x: int) -> int:
        v = x - in_zero
        if v >= 0:
            return out_zero + mbqm(v, *identity)
        m, s = alpha
        return out_zero + (-mbqm(v, -m, s) if m < 0 else mbqm(v, m, s))
    return _table(one)


def downscale_to_int16(multiplier: int) -> int:
    """DownScaleInt32ToInt16Multiplier: a Q31 multiplier rounded to Q15."""
    if multiplier >= INT32_MAX - (1 << 15):
        return INT16_MAX
    return (multiplier + (1 << 15)) >> 16


def _sat_shl16(x: int, amount: int) -> int:
    return max(INT16_MIN, min(INT16_MAX, x * (1 << amount)))


def hard_swish_table(in_zero: int, out_zero: int, out_m16: int, out_exp: int,
                     relu_m16: int, relu_exp: int) -> np.ndarray:
    """reference_ops::HardSwish on int16 fixed point (out_exp <= 0)."""
    def one(x: int) -> int:
        hires = wrap((x - in_zero) * 128, 16)
        preshift = srdhm(hires, out_m16, 16)
        reluish = hires
        if relu_exp > 0:
            reluish = _sat_shl16(reluish, relu_exp - 1)
        reluish = srdhm(reluish, relu_m16, 16)
        if relu_exp > 0:
            reluish = _sat_shl16(reluish, 1)
        if relu_exp < 0:
            reluish = rdivpot(reluish, -relu_exp, 16)
        reluish = (reluish + (1 << 15)) >> 1
        # SaturatingDoublingHighMul: rounds toward zero, not to nearest
        product = INT16_MAX if reluish == preshift == INT16_MIN else \
            wrap(_cdiv(reluish * preshift, 1 << 15), 16)
        return wrap(rdivpot(product, -out_exp, 16) + out_zero, 16)
    return _table(one)


def float_lut(in_scale: float, in_zero: int, out_scale: float, out_zero: int,
              fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """LiteRT's LUTPopulate<int8_t>: float32 throughout, rounded half away from zero."""
    inverse = np.float32(1) / np.float32(out_scale)
    x = np.arange(-128, 128)
    dequantized = np.float32(in_scale) * (x - in_zero).astype(np.float32)
    with np.errstate(over="ignore"):           # exp overflows to inf, as in C: 1 / inf = 0
        scaled = (fn(dequantized).astype(np.float32) * inverse).astype(np.float32)
    out = np.empty(256, np.int8)
    for v, s in zip(x, scaled):
        out[v & 255] = max(-128, min(127, round_half_away(float(s)) + out_zero))
    return out

