"""Converters for TFLite operators on quantized (int8) tensors -> Ember's TFLite-numerics ops.

The quantization parameters of each tensor become, here at compile time, the integers the
kernels use (offsets, Q31 multipliers and shifts, activation bounds), each computed as
TFLite's Prepare functions compute it (in double from the float32 scales), so the kernels in
ops/qconv.py and ops/qlayers.py reproduce TFLite's reference kernels bit for bit. Tensors stay
NHWC: the integer conv and pool kernels read that layout, so no Transpose is needed.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ember.errors import UnsupportedError
from ember.frontend.tflite import OpContext
from ember.frontend.tflite_ops import (_shape, concatenation, expand_dims, reshape, squeeze,
                                       strided_slice, transpose, window)
from ember.frontend.tflite_reader import TflTensor
from ember.graph import dtypes as dt
from ember.graph.ir import Value
from ember.ops.qconv import TflConvParams
from ember.ops import qtables
from ember.ops.qelementwise import TflLookupParams, TflMulParams
from ember.ops.qlayers import TflAddParams, TflMeanParams, TflPoolParams, TflSoftmaxParams
from ember.ops.quant import TflQuantizeParams, quantize_float, quantize_multiplier

QUANT_CONVERTERS: dict[str, Callable[[OpContext], None]] = {}
_INT8_RANGE = (-128, 127)


def qconverts(*opcodes: str) -> Callable[[Callable[[OpContext], None]], Callable[[OpContext], None]]:
    def register(fn: Callable[[OpContext], None]) -> Callable[[OpContext], None]:
        for opcode in opcodes:
            QUANT_CONVERTERS[opcode] = fn
        return fn
    return register


# -- quantization parameters ----------------------------------------------------------------
def scales(ctx: OpContext, t: TflTensor) -> tuple[np.ndarray, np.ndarray]:
    """A tensor's scales (float32, > 0) and zero points (one per scale)."""
    q = t.quantization
    if q is None:
        raise UnsupportedError(f"{t.describe()} mixes float and quantized tensors")
    if not np.all(np.isfinite(q.scale)) or np.any(q.scale <= 0):
        raise ctx.fail(f"{t.describe()}: quantization scales must be finite and > 0")
    zero = q.zero_point if q.zero_point.size else np.zeros(q.scale.size, np.int64)
    if zero.size != q.scale.size:
        raise ctx.fail(f"{t.describe()}: {q.scale.size} scales but {zero.size} zero points")
    return q.scale, zero


def per_tensor(ctx: OpContext, t: TflTensor) -> tuple[float, int]:
    """(scale, zero point) of a tensor quantized as a whole."""
    scale, zero = scales(ctx, t)
    if scale.size != 1:
        raise UnsupportedError(f"{t.describe()}: per-channel quantization is not supported here")
    lo, hi = _INT8_RANGE if t.type_name == "INT8" else (0, 255)
    if not lo <= zero[0] <= hi:
        raise ctx.fail(f"{t.describe()}: zero point {int(zero[0])} is out of range")
    return float(scale[0]), int(zero[0])


def int8_input(ctx: OpContext, k: int) -> tuple[Value, float, int]:
    """Run-time input k, which must be int8, with its scale and zero point."""
    t = ctx.tensor(k)
    x = ctx.input(k)
    if x.type.dtype != dt.I8:
        raise UnsupportedError(f"quantized {t.type_name if t else '?'} tensors are not "
                               "supported (int8 is)")
    return (x, *per_tensor(ctx, t))


def int8_output(ctx: OpContext, k: int = 0) -> tuple[float, int]:
    t = ctx.out_tensor(k)
    if t.type_name != "INT8":
        raise UnsupportedError(f"quantized {t.type_name} outputs are not supported (int8 is)")
    return per_tensor(ctx, t)


def activation_range(ctx: OpContext, code: int, scale: float, zero: int) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for int8. Like TFLite, a fused activation
    other than the clamps (TANH, SIGN_BIT) leaves the full range."""
    lo, hi = _INT8_RANGE
    if code == 1:
        return max(lo, quantize_float(0.0, scale, zero)), hi
    if code == 2:
        return max(lo, quantize_float(-1.0, scale, zero)), min(hi, quantize_float(1.0, scale, zero))
    if code == 3:
        return max(lo, quantize_float(0.0, scale, zero)), min(hi, quantize_float(6.0, scale, zero))
    if code not in (0, 4, 5):
        raise ctx.fail(f"unknown fused activation {code}")
    return lo, hi


def int8_weights(ctx: OpContext, k: int, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Constant int8 weights with their scales and zero points."""
    t = ctx.tensor(k)
    if t is None or t.data is None:
        raise UnsupportedError("weights computed at run time are not supported")
    if t.type_name != "INT8" or t.data.ndim != rank:
        raise ctx.fail(f"weights must be a {rank}-d int8 tensor, got {t.describe()}")
    scale, zero = scales(ctx, t)
    return t.data, scale, zero


def int32_bias(ctx: OpContext, k: int, channels: int) -> Value | None:
    t = ctx.tensor(k)
    if t is None:
        return None
    b = ctx.input(k)
    if b.type.dtype != dt.I32 or b.type.shape != (channels,):
        raise UnsupportedError(f"bias {t.describe()} is not supported (int32[{channels}] is)")
    return b


def conv_params(ctx: OpContext, in_scale: float, in_zero: int, w_scale: np.ndarray,
                filter_offset: int, out_scale: float, out_zero: int, code: int,
                single: bool = False) -> TflConvParams:
    """Per-channel multipliers from input_scale * filter_scale / output_scale, in double;
    `single`: applied with one rounding."""
    found = [quantize_multiplier(in_scale * float(s) / out_scale, single) for s in w_scale]
    lo, hi = activation_range(ctx, code, out_scale, out_zero)
    return TflConvParams(-in_zero, filter_offset, out_zero, tuple(m for m, _ in found),
                         tuple(s for _, s in found), lo, hi, single)


# -- layers ---------------------------------------------------------------------------------
@qconverts("CONV_2D", "DEPTHWISE_CONV_2D")
def conv_2d(ctx: OpContext) -> None:
    ctx.arity(2, 3)
    depthwise = ctx.op.opcode == "DEPTHWISE_CONV_2D"
    options = ctx.options("DepthwiseConv2DOptions" if depthwise else "Conv2DOptions")
    x, in_scale, in_zero = int8_input(ctx, 0)
    out_scale, out_zero = int8_output(ctx)
    w, w_scale, w_zero = int8_weights(ctx, 1, 4)
    if x.type.rank != 4:
        raise ctx.fail(f"input must be 4-d NHWC, got {x.type}")
    channels = x.type.shape[3]
    if depthwise:       # [1, KH, KW, C*M] -> [C*M, KH, KW, 1]: a conv with one group per channel
        if w.shape[0] != 1 or channels == 0 or w.shape[3] % channels:
            raise ctx.fail(f"weights {list(w.shape)} do not fit {channels} input channels")
        w, group = w[0].transpose(2, 0, 1)[..., None], channels
    else:
        if w.shape[3] == 0 or channels % w.shape[3] or w.shape[0] % (channels // w.shape[3]):
            raise ctx.fail(f"weights {list(w.shape)} do not fit {channels} input channels")
        group = channels // w.shape[3]
    if np.any(w_zero != 0):
        raise UnsupportedError("int8 weights with a nonzero zero point are not supported")
    if w_scale.size not in (1, w.shape[0]):
        raise ctx.fail(f"{w_scale.size} weight scales do not fit {w.shape[0]} output channels")
    q = conv_params(ctx, in_scale, in_zero, w_scale, 0, out_scale, out_zero,
                    options["FusedActivationFunction"])
    attrs = window(ctx, options, x.type.shape[1:3], w.shape[1:3])
    y = ctx.emit("TflConv2D", [x, ctx.constant(np.ascontiguousarray(w), dt.I8),
                               int32_bias(ctx, 2, w.shape[0])], group=group, q=q, **attrs)
    ctx.bind(y)


@qconverts("FULLY_CONNECTED")
def fully_connected(ctx: OpContext) -> None:
    ctx.arity(2, 3)
    options = ctx.options("FullyConnectedOptions")
    if options["WeightsFormat"] != 0:
        raise UnsupportedError("shuffled FULLY_CONNECTED weights are not supported")
    x, in_scale, in_zero = int8_input(ctx, 0)
    out_scale, out_zero = int8_output(ctx)
    w, w_scale, w_zero = int8_weights(ctx, 1, 2)
    units, depth = w.shape
    if depth == 0 or x.type.size % depth:
        raise ctx.fail(f"input {x.type} does not split into rows of {depth}")
    if w_scale.size not in (1, units) or np.any(w_zero != w_zero[0]):
        raise UnsupportedError("these FULLY_CONNECTED weight quantization parameters are not "
                               "supported")
    # ai-edge-litert 2.3's reference FULLY_CONNECTED rounds once (TFLITE_SINGLE_ROUNDING),
    # unlike its conv, requantize (and TFLite Micro's kernels): found by testing, see
    # tests/frontend/test_tflite_int8.py.
    q = conv_params(ctx, in_scale, in_zero, w_scale, -int(w_zero[0]), out_scale, out_zero,
                    options["FusedActivationFunction"], ctx.conv.litert_numerics)
    rows = ctx.emit("Reshape", [x, _shape(ctx, [x.type.size // depth, depth])]) \
        if x.type.shape != (x.type.size // depth, depth) else x
    y = ctx.emit("TflFullyConnected", [rows, ctx.constant(w, dt.I8), int32_bias(ctx, 2, units)],
                 q=q)
    if options["KeepNumDims"] and x.type.shape[:-1] + (units,) != y.type.shape:
        y = ctx.emit("Reshape", [y, _shape(ctx, list(x.type.shape[:-1]) + [units])])
    ctx.bind(y)


@qconverts("ADD", "SUB")
def add_sub(ctx: OpContext) -> None:
    """TFLite's int8 ADD and SUB: both inputs brought to twice the larger input scale, with 20
    bits of headroom, then to the output scale (add.cc, sub.cc: PrepareGeneralSubOp)."""
    ctx.arity(2)
    a, a_scale, a_zero = int8_input(ctx, 0)
    b, b_scale, b_zero = int8_input(ctx, 1)
    out_scale, out_zero = int8_output(ctx)
    subtract = ctx.op.opcode == "SUB"
    left_shift = 20
    twice_max = float(np.float32(2) * np.float32(max(a_scale, b_scale)))
    m1, s1 = quantize_multiplier(a_scale / twice_max)
    m2, s2 = quantize_multiplier(b_scale / twice_max)
    mo, so = quantize_multiplier(twice_max / float(np.float32(1 << left_shift)
                                                   * np.float32(out_scale)))
    options = ctx.options("SubOptions" if subtract else "AddOptions")
    lo, hi = activation_range(ctx, options["FusedActivationFunction"], out_scale, out_zero)
    q = TflAddParams(-a_zero, -b_zero, left_shift, m1, s1, m2, s2, mo, so, out_zero, lo, hi,
                     subtract)
    ctx.bind(ctx.emit("TflAdd", [a, b], q=q))


@qconverts("MUL")
def mul(ctx: OpContext) -> None:
    """One multiplier, input1_scale * input2_scale / output_scale in double (mul.cc)."""
    ctx.arity(2)
    a, a_scale, a_zero = int8_input(ctx, 0)
    b, b_scale, b_zero = int8_input(ctx, 1)
    out_scale, out_zero = int8_output(ctx)
    multiplier, shift = quantize_multiplier(a_scale * b_scale / out_scale)
    lo, hi = activation_range(ctx, ctx.options("MulOptions")["FusedActivationFunction"],
                              out_scale, out_zero)
    q = TflMulParams(-a_zero, -b_zero, multiplier, shift, out_zero, lo, hi)
    ctx.bind(ctx.emit("TflMul", [a, b], q=q))


@qconverts("MAXIMUM", "MINIMUM")
def maximum_minimum(ctx: OpContext) -> None:
    """The raw int8 values compared (TFLite's kernels do not requantize): only when both
    inputs and the output share one quantization."""
    ctx.arity(2)
    (a, *qa), (b, *qb) = int8_input(ctx, 0), int8_input(ctx, 1)
    if not qa == qb == list(int8_output(ctx)):
        raise UnsupportedError(f"int8 {ctx.op.opcode} with inputs and output quantized "
                               "differently is not supported")
    ctx.bind(ctx.emit("Max" if ctx.op.opcode == "MAXIMUM" else "Min", [a, b]))


@qconverts("AVERAGE_POOL_2D", "MAX_POOL_2D")
def pool_2d(ctx: OpContext) -> None:
    ctx.arity(1)
    options = ctx.options("Pool2DOptions")
    x, in_scale, in_zero = int8_input(ctx, 0)
    out_scale, out_zero = int8_output(ctx)
    if (in_scale, in_zero) != (out_scale, out_zero):
        raise UnsupportedError("int8 pooling that changes the quantization is not supported")
    if x.type.rank != 4:
        raise ctx.fail(f"input must be 4-d NHWC, got {x.type}")
    kernel = (options["FilterHeight"], options["FilterWidth"])
    lo, hi = activation_range(ctx, options["FusedActivationFunction"], out_scale, out_zero)
    q = TflPoolParams(ctx.op.opcode == "AVERAGE_POOL_2D", lo, hi)
    ctx.bind(ctx.emit("TflPool2D", [x], q=q,
                      **window(ctx, options, x.type.shape[1:3], kernel, dilated=False)))


@qconverts("SOFTMAX")
def softmax(ctx: OpContext) -> None:
    """Input scaling as TFLite's PreprocessSoftmaxScaling (Q5.26 differences) and the input
    radius that bounds the differences worth computing (CalculateInputRadius)."""
    ctx.arity(1)
    x, in_scale, _ = int8_input(ctx, 0)
    out_scale, out_zero = int8_output(ctx)
    if (out_scale, out_zero) != (1 / 256, -128):
        raise UnsupportedError("int8 SOFTMAX needs output scale 1/256 and zero point -128")
    beta = float(np.float32(ctx.options("SoftmaxOptions")["Beta"]))
    integer_bits = 5
    real = min(beta * in_scale * (1 << (31 - integer_bits)), (1 << 31) - 1.0)
    if not real > 1.0:
        raise UnsupportedError(f"int8 SOFTMAX with beta * input scale = {beta * in_scale:g} "
                               "is not supported")
    multiplier, left_shift = quantize_multiplier(real)
    radius = math.floor(((1 << integer_bits) - 1) * (1 << (31 - integer_bits))
                        / (1 << left_shift))
    q = TflSoftmaxParams(multiplier, left_shift, -radius)
    ctx.bind(ctx.emit("TflSoftmax", [x], q=q))


@qconverts("MEAN")
def mean(ctx: OpContext) -> None:
    """The sum over the axes, requantized as the oracle's kernel does (TflMeanParams): TFLite
    Micro folds 1/n into the multiplier (QuantizedMeanOrSum); ai-edge-litert does too, except
    over axes [1, 2] of a 4-d input with keep_dims, the axes as written (not normalized)."""
    ctx.arity(2)
    x, in_scale, in_zero = int8_input(ctx, 0)
    out_scale, out_zero = int8_output(ctx)
    keep = bool(ctx.options("ReducerOptions")["KeepDims"])
    written = ctx.ints(1, "axes")
    rank = x.type.rank
    if any(not -rank <= a < rank for a in written):
        raise ctx.fail(f"axes {written} are out of range for rank {rank}")
    axes = tuple(sorted({a % rank for a in written}))
    n = math.prod(x.type.shape[a] for a in axes)
    multiplier, shift = quantize_multiplier(in_scale / out_scale)
    if ctx.conv.litert_numerics and keep and rank == 4 and written in ([1, 2], [2, 1]):
        q = TflMeanParams(axes, keep, "rounded", in_zero, multiplier, shift, out_zero)
    else:
        if n > 0:       # 1/n folded into the multiplier, at most 32 bits of it
            fold = min(n.bit_length() - 1, 32, 31 + shift)
            multiplier, shift = (multiplier << fold) // n, shift - fold
        q = TflMeanParams(axes, keep, "scaled", in_zero, multiplier, shift, out_zero)
    ctx.bind(ctx.emit("TflMean", [x], q=q))


# -- activations: a table of the 256 results (ops/qtables.py) -------------------------------------
def lookup(ctx: OpContext, x: Value, table: np.ndarray) -> None:
    ctx.bind(ctx.emit("TflLookup", [x, ctx.constant(table, dt.I8)],
                      q=TflLookupParams(ctx.op.opcode)))


_SIGMOID_OUTPUT = {"LOGISTIC": ((1 / 256, -128), lambda v: 1 / (1 + np.exp(-v))),
                   "TANH": ((1 / 128, 0), np.tanh)}


@qconverts("LOGISTIC", "TANH")
def logistic_tanh(ctx: OpContext) -> None:
    """gemmlowp's fixed-point logistic / tanh on the input in Q4.27; the output quantization
    is fixed (scale 1/256, zero point -128; tanh 1/128, 0)."""
    ctx.arity(1)
    x, scale, zero = int8_input(ctx, 0)
    (out_scale, out_zero), fn = _SIGMOID_OUTPUT[ctx.op.opcode]
    if int8_output(ctx) != (out_scale, out_zero):
        raise UnsupportedError(f"int8 {ctx.op.opcode} needs output scale {out_scale:g} and "
                               f"zero point {out_zero}")
    if ctx.conv.litert_numerics:
        return lookup(ctx, x, qtables.float_lut(scale, zero, out_scale, out_zero, fn))
    scaling = qtables.sigmoid_input_scaling(scale)
    if scaling is None:
        raise UnsupportedError(f"int8 {ctx.op.opcode} with input scale {scale!r} is not "
                               "supported (its Q31 multiplier overflows in TFLite)")
    make = qtables.logistic_table if ctx.op.opcode == "LOGISTIC" else qtables.tanh_table
    lookup(ctx, x, make(zero, scaling))


@qconverts("RELU", "RELU6")
def relu(ctx: OpContext) -> None:
    """RELU requantizes to the output scale, clamped below at the output's zero. TFLite
    Micro's RELU6 clamps the input to [zero, six] in the input's own quantization (the
    output's is not read); ai-edge-litert's requantizes as RELU does, clamped at 6 too."""
    ctx.arity(1)
    x, in_scale, in_zero = int8_input(ctx, 0)
    out_scale, out_zero = int8_output(ctx)
    relu6 = ctx.op.opcode == "RELU6"
    if relu6 and not ctx.conv.litert_numerics:
        return lookup(ctx, x, qtables.clamp_table(in_zero, min(127, max(
            -128, quantize_float(6.0, in_scale, in_zero)))))
    lo, hi = activation_range(ctx, 3 if relu6 else 1, out_scale, out_zero)
    multiplier, shift = quantize_multiplier(in_scale / out_scale)
    lookup(ctx, x, qtables.relu_table(in_zero, multiplier, shift, out_zero, lo, hi))


@qconverts("LEAKY_RELU")
def leaky_relu(ctx: OpContext) -> None:
    """Two multipliers, each a float32 ratio (leaky_relu.cc computes them in float)."""
    ctx.arity(1)
    x, in_scale, in_zero = int8_input(ctx, 0)
    out_scale, out_zero = int8_output(ctx)
    alpha = np.float32(ctx.options("LeakyReluOptions")["Alpha"])
    f32_in, f32_out = np.float32(in_scale), np.float32(out_scale)
    identity = quantize_multiplier(float(f32_in / f32_out))
    scaled_alpha = quantize_multiplier(float(f32_in * alpha / f32_out))
    lookup(ctx, x, qtables.leaky_relu_table(in_zero, identity, scaled_alpha, out_zero))


@qconverts("HARD_SWISH")
def hard_swish(ctx: OpContext) -> None:
    """The multipliers of hard_swish.cc's Prepare, from float32 ratios, rounded to Q15."""
    ctx.arity(1)
    x, in_scale, in_zero = int8_input(ctx, 0)
    out_scale, out_zero = int8_output(ctx)
    hires = np.float32(1 / 128) * np.float32(in_scale)
    out_m, out_exp = quantize_multiplier(float(hires / np.float32(out_scale)))
    relu_m, relu_exp = quantize_multiplier(float(hires / np.float32(3 / 32768)))
    if out_exp > 0:
        raise UnsupportedError("int8 HARD_SWISH with output scale below input scale / 128 "
                               "is not supported")
    lookup(ctx, x, qtables.hard_swish_table(in_zero, out_zero, qtables.downscale_to_int16(out_m),
                                            out_exp, qtables.downscale_to_int16(relu_m),
                                            relu_exp))


# -- quantize and dequantize ----------------------------------------------------------------
@qconverts("QUANTIZE")
def quantize(ctx: OpContext) -> None:
    ctx.arity(1)
    src, out = ctx.tensor(0), ctx.out_tensor()
    x = ctx.input(0)
    if out.type_name not in ("INT8", "UINT8"):
        raise UnsupportedError(f"QUANTIZE to {out.type_name} is not supported (int8, uint8 are)")
    scale, zero = per_tensor(ctx, out)
    to = dt.I8 if out.type_name == "INT8" else dt.U8
    if x.type.dtype == dt.F32:
        q = TflQuantizeParams(scale, zero)
    elif x.type.dtype in (dt.I8, dt.U8):
        in_scale, in_zero = per_tensor(ctx, src)
        multiplier, shift = quantize_multiplier(in_scale / scale)
        q = TflQuantizeParams(scale, zero, in_zero, multiplier, shift)
    else:
        raise UnsupportedError(f"QUANTIZE from {src.type_name} is not supported")
    ctx.bind(ctx.emit("TflQuantize", [x], q=q, to=to.onnx))


@qconverts("DEQUANTIZE")
def dequantize(ctx: OpContext) -> None:
    """(q - zero_point) * scale: TFLite computes it in double and rounds to float once, which
    gives the float product DequantizeLinear computes (both round the exact product)."""
    ctx.arity(1)
    src = ctx.tensor(0)
    x = ctx.input(0)
    if x.type.dtype not in (dt.I8, dt.U8) or ctx.out_tensor().type_name != "FLOAT32":
        raise UnsupportedError(f"DEQUANTIZE from {src.type_name} to "
                               f"{ctx.out_tensor().type_name} is not supported")
    scale, zero = scales(ctx, src)
    attrs = {}
    if scale.size > 1:
        if x.type.rank == 0 or not 0 <= src.quantization.dimension < x.type.rank \
                or x.type.shape[src.quantization.dimension] != scale.size:
            raise ctx.fail(f"{scale.size} scales do not fit {src.describe()}")
        attrs["axis"] = src.quantization.dimension
    shape = [scale.size] if scale.size > 1 else []
    y = ctx.emit("DequantizeLinear", [x, ctx.constant(scale.reshape(shape), dt.F32),
                                      ctx.constant(zero.reshape(shape), x.type.dtype)], **attrs)
    ctx.bind(y)


# -- layout ops: the quantization passes through unchanged ---------------------------------------
def _same_quantization(convert: Callable[[OpContext], None]) -> Callable[[OpContext], None]:
    def checked(ctx: OpContext) -> None:
        want = per_tensor(ctx, ctx.out_tensor())
        for k in range(len(ctx.op.inputs)):
            t = ctx.tensor(k)
            if t is not None and t.data is None and per_tensor(ctx, t) != want:
                raise UnsupportedError(f"{ctx.op.opcode} changing the quantization of an int8 "
                                       "tensor is not supported")
        convert(ctx)
    return checked


for _opcode, _convert in (("RESHAPE", reshape), ("SQUEEZE", squeeze),
                          ("EXPAND_DIMS", expand_dims), ("TRANSPOSE", transpose),
                          ("STRIDED_SLICE", strided_slice), ("CONCATENATION", concatenation)):
    QUANT_CONVERTERS[_opcode] = _same_quantization(_convert)


@qconverts("PAD", "PADV2")
def pad(ctx: OpContext) -> None:
    """Pads with the output's zero point (the quantized 0.0), or PADV2's value."""
    ctx.arity(2, 3 if ctx.op.opcode == "PADV2" else 2)
    x, scale, zero = int8_input(ctx, 0)
    if int8_output(ctx) != (scale, zero):
        raise UnsupportedError("int8 PAD changing the quantization is not supported")
    pads = ctx.ints(1, "paddings")
    if len(pads) != 2 * x.type.rank or min(pads, default=0) < 0:
        raise ctx.fail(f"paddings {pads} must be [{x.type.rank}, 2] non-negative values")
    value = ctx.const(2, "pad value").reshape(-1)[:1] if ctx.tensor(2) is not None \
        else np.array([zero])
    if value.size != 1:
        raise ctx.fail("the pad value must be a single value")
    ctx.bind(ctx.emit("Pad", [x, _shape(ctx, pads[0::2] + pads[1::2]),
                              ctx.constant(value.reshape(()), dt.I8)]))
