"""One converter per TFLite builtin operator: TFLite semantics -> Ember's ONNX-style nodes.

A converter reads its operator through an OpContext (inputs, constant inputs, options), adds
nodes with ctx.emit(...) and binds each output tensor with ctx.bind(...). TFLite tensors are
NHWC; convolutions and pools transpose their input to NCHW and their result back, and take
their weights transposed at import (OHWI -> OIHW, 1HWO -> O1HW).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ember.errors import ModelFormatError, UnsupportedError
from ember.frontend.tflite import OpContext
from ember.frontend.tflite_reader import TflTensor
from ember.graph import dtypes as dt
from ember.graph.ir import Value

NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]
_SAME, _VALID = 0, 1                  # tflite.Padding
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

CONVERTERS: dict[str, Callable[[OpContext], None]] = {}


def converts(*opcodes: str) -> Callable[[Callable[[OpContext], None]], Callable[[OpContext], None]]:
    def register(fn: Callable[[OpContext], None]) -> Callable[[OpContext], None]:
        for opcode in opcodes:
            CONVERTERS[opcode] = fn
        return fn
    return register


# -- shared pieces --------------------------------------------------------------------------
def activation(ctx: OpContext, y: Value, code: int) -> Value:
    """The operator's fused activation as its own node (fuse-epilogues folds it back in).

    TANH is applied as the schema says, although the TFLite interpreter's float conv, pool,
    add and fully-connected kernels only clamp and so ignore it; converters never fuse it there.
    """
    if code == 0:
        return y
    if code == 1:
        return ctx.emit("Relu", [y])
    if code in (2, 3):          # RELU_N1_TO_1, RELU6
        lo, hi = (-1.0, 1.0) if code == 2 else (0.0, 6.0)
        return ctx.emit("Clip", [y, ctx.constant(lo, y.type.dtype), ctx.constant(hi, y.type.dtype)])
    if code == 4:
        return ctx.emit("Tanh", [y])
    if code == 5:
        raise UnsupportedError("fused activation SIGN_BIT is not supported")
    raise ModelFormatError(f"fused activation {code} is not a valid ActivationFunctionType")


def nhwc_input(ctx: OpContext) -> Value:
    """Input 0, a 4-d NHWC tensor, transposed to NCHW."""
    x = ctx.input(0)
    if x.type.rank != 4:
        raise ctx.fail(f"input must be 4-d NHWC, got {x.type}")
    return ctx.emit("Transpose", [x], perm=NHWC_TO_NCHW)


def window(ctx: OpContext, options: dict, spatial: tuple[int, ...], kernel: tuple[int, int],
           dilated: bool = True) -> dict:
    """Strides, dilations and explicit pads of a 2-d window from TFLite options.

    SAME pads so that out = ceil(in / stride), the odd pad at the end (as TensorFlow does);
    VALID pads nothing.
    """
    strides = [options["StrideH"], options["StrideW"]]
    dilations = [options["DilationHFactor"], options["DilationWFactor"]] if dilated else [1, 1]
    if min(strides + dilations) < 1:
        raise ctx.fail(f"strides {strides} and dilations {dilations} must be >= 1")
    if min(kernel) < 1:
        raise ctx.fail(f"window {list(kernel)} must be at least 1x1")
    padding = options["Padding"]
    if padding not in (_SAME, _VALID):
        raise ModelFormatError(f"padding {padding} is neither SAME nor VALID")
    begin, end = [0, 0], [0, 0]
    if padding == _SAME:
        for i, size in enumerate(spatial):
            out = -(-size // strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
            begin[i], end[i] = total // 2, total - total // 2
    attrs = {"kernel_shape": list(kernel), "strides": strides, "pads": begin + end}
    if dilated:
        attrs["dilations"] = dilations
    return attrs


def weights(ctx: OpContext, k: int, rank: int) -> np.ndarray:
    w = ctx.const(k, "weights")
    if w.ndim != rank or w.dtype.kind != "f":
        raise ctx.fail(f"weights must be a {rank}-d float tensor, got {w.dtype}{list(w.shape)}")
    return w.astype(np.float32, copy=False)


def bias(ctx: OpContext, k: int, channels: int) -> Value | None:
    b = ctx.optional(k)
    if b is not None and b.type.shape != (channels,):
        raise ctx.fail(f"bias has shape {list(b.type.shape)}, expected [{channels}]")
    return b


def conv(ctx: OpContext, x: Value, w_oihw: np.ndarray, options: dict, group: int) -> None:
    """Conv on NCHW `x` with OIHW weights, bias input 2, fused activation; bind NHWC output."""
    attrs = window(ctx, options, x.type.shape[2:], w_oihw.shape[2:])
    b = bias(ctx, 2, w_oihw.shape[0])
    y = ctx.emit("Conv", [x, ctx.constant(w_oihw, dt.F32), b], group=group, **attrs)
    y = activation(ctx, y, options["FusedActivationFunction"])
    ctx.bind(ctx.emit("Transpose", [y], perm=NCHW_TO_NHWC))


# -- convolutions and pools -----------------------------------------------------------------
@converts("CONV_2D")
def conv_2d(ctx: OpContext) -> None:
    ctx.arity(2, 3)
    options = ctx.options("Conv2DOptions")
    x = nhwc_input(ctx)
    t = ctx.tensor(1)
    hybrid = t is not None and t.quantization is not None and t.data is not None
    w = t.data if hybrid else weights(ctx, 1, 4)          # [O, KH, KW, I]
    if w.ndim != 4:
        raise ctx.fail(f"weights must be 4-d [O, KH, KW, I], got {list(w.shape)}")
    channels, per_group = x.type.shape[1], w.shape[3]
    if per_group == 0 or channels % per_group or w.shape[0] % (channels // per_group or 1):
        raise ctx.fail(f"weights {list(w.shape)} do not fit {channels} input channels")
    if hybrid:
        return hybrid_conv(ctx, x, t, options, channels // per_group)
    conv(ctx, x, w.transpose(0, 3, 1, 2), options, channels // per_group)


def hybrid_conv(ctx: OpContext, x: Value, t: TflTensor, options: dict, group: int) -> None:
    """CONV_2D with int8 weights on float activations, computed as TFLite's hybrid kernel does.

    Each batch item is quantized symmetrically (q = round(x * 127 / max|x|), ties away from
    zero, clamped to +-127), convolved with the int8 weights (the sums are integers, exact in
    float up to 2**24), scaled back by max|x| / 127 * weight_scale, then the bias is added.
    """
    q = t.quantization
    if t.type_name != "INT8" or group != 1 or np.unique(q.scale).size != 1:
        raise UnsupportedError("int8 weights on float activations (a hybrid model) are only "
                               "supported for CONV_2D with one weight scale and no groups")
    f32 = lambda v: ctx.constant(np.float32(v), dt.F32)     # noqa: E731
    batch_axes = _shape(ctx, list(range(1, x.type.rank)))
    peak = ctx.emit("ReduceMax", [ctx.emit("Abs", [x]), batch_axes], keepdims=1)
    # max|x| == 0 quantizes everything to 0; a tiny floor keeps 127 / peak finite then.
    inv = ctx.emit("Div", [f32(127), ctx.emit("Max", [peak, f32(1e-30)])])
    v = ctx.emit("Mul", [x, inv])
    rounded = ctx.emit("Mul", [ctx.emit("Sign", [v]), ctx.emit("Floor", [
        ctx.emit("Add", [ctx.emit("Abs", [v]), f32(0.5)])])])
    xq = ctx.emit("Clip", [rounded, f32(-127), f32(127)])
    w = t.data.astype(np.float32).transpose(0, 3, 1, 2)
    acc = ctx.emit("Conv", [xq, ctx.constant(w, dt.F32)], group=1,
                   **window(ctx, options, x.type.shape[2:], w.shape[2:]))
    scale = ctx.emit("Mul", [ctx.emit("Div", [peak, f32(127)]), f32(q.scale[0])])
    y = ctx.emit("Mul", [acc, scale])
    b = bias(ctx, 2, w.shape[0])
    if b is not None:
        y = ctx.emit("Add", [y, ctx.emit("Reshape", [b, _shape(ctx, [w.shape[0], 1, 1])])])
    y = activation(ctx, y, options["FusedActivationFunction"])
    ctx.bind(ctx.emit("Transpose", [y], perm=NCHW_TO_NHWC))


@converts("DEPTHWISE_CONV_2D")
def depthwise_conv_2d(ctx: OpContext) -> None:
    ctx.arity(2, 3)
    options = ctx.options("DepthwiseConv2DOptions")
    x = nhwc_input(ctx)
    w = weights(ctx, 1, 4)                    # [1, KH, KW, C * multiplier]
    channels = x.type.shape[1]
    if w.shape[0] != 1 or channels == 0 or w.shape[3] % channels:
        raise ctx.fail(f"weights {list(w.shape)} do not fit {channels} input channels")
    # Output channel c*M + m reads input channel c: ONNX's grouped Conv with C groups.
    conv(ctx, x, w[0].transpose(2, 0, 1)[:, None], options, channels)


@converts("AVERAGE_POOL_2D", "MAX_POOL_2D")
def pool_2d(ctx: OpContext) -> None:
    ctx.arity(1)
    options = ctx.options("Pool2DOptions")
    x = nhwc_input(ctx)
    kernel = (options["FilterHeight"], options["FilterWidth"])
    op = "AveragePool" if ctx.op.opcode == "AVERAGE_POOL_2D" else "MaxPool"
    # TFLite averages over the taps inside the input: count_include_pad=0, ONNX's default.
    y = ctx.emit(op, [x], **window(ctx, options, x.type.shape[2:], kernel, dilated=False))
    y = activation(ctx, y, options["FusedActivationFunction"])
    ctx.bind(ctx.emit("Transpose", [y], perm=NCHW_TO_NHWC))


@converts("FULLY_CONNECTED")
def fully_connected(ctx: OpContext) -> None:
    ctx.arity(2, 3)
    options = ctx.options("FullyConnectedOptions")
    if options["WeightsFormat"] != 0:
        raise UnsupportedError("shuffled FULLY_CONNECTED weights are not supported")
    x = ctx.input(0)
    t = ctx.tensor(1)
    w = ctx.constant(weights(ctx, 1, 2), dt.F32) if t is not None and t.data is not None \
        else ctx.input(1)
    if w.type.rank != 2:
        raise ctx.fail(f"weights must be 2-d [units, inputs], got {w.type}")
    units, depth = w.type.shape
    if depth == 0 or x.type.size % depth:
        raise ctx.fail(f"input {x.type} does not split into rows of {depth}")
    rows = ctx.emit("Reshape", [x, _shape(ctx, [x.type.size // depth, depth])]) \
        if x.type.shape != (x.type.size // depth, depth) else x
    y = ctx.emit("Gemm", [rows, w, bias(ctx, 2, units)], transB=1)
    y = activation(ctx, y, options["FusedActivationFunction"])
    if options["KeepNumDims"] and x.type.shape[:-1] + (units,) != y.type.shape:
        y = ctx.emit("Reshape", [y, _shape(ctx, list(x.type.shape[:-1]) + [units])])
    ctx.bind(y)


# -- elementwise ----------------------------------------------------------------------------
_BINARY = {"ADD": ("Add", "AddOptions"), "SUB": ("Sub", "SubOptions"),
           "MUL": ("Mul", "MulOptions"), "DIV": ("Div", "DivOptions"),
           "MAXIMUM": ("Max", None), "MINIMUM": ("Min", None),
           "SQUARED_DIFFERENCE": ("Sub", None), "POW": ("Pow", None)}


@converts(*_BINARY)
def binary(ctx: OpContext) -> None:
    ctx.arity(2)
    op, kind = _BINARY[ctx.op.opcode]
    y = ctx.emit(op, [ctx.input(0), ctx.input(1)])
    if ctx.op.opcode == "SQUARED_DIFFERENCE":
        y = ctx.emit("Mul", [y, y])
    if kind is not None:
        y = activation(ctx, y, ctx.options(kind)["FusedActivationFunction"])
    ctx.bind(y)


_UNARY = {"LOGISTIC": "Sigmoid", "TANH": "Tanh", "RELU": "Relu", "HARD_SWISH": "HardSwish",
          "EXP": "Exp", "LOG": "Log", "SQRT": "Sqrt", "ABS": "Abs", "NEG": "Neg",
          "FLOOR": "Floor", "SIN": "Sin", "COS": "Cos"}


@converts(*_UNARY)
def unary(ctx: OpContext) -> None:
    ctx.arity(1)
    ctx.bind(ctx.emit(_UNARY[ctx.op.opcode], [ctx.input(0)]))


@converts("RELU6", "RELU_N1_TO_1", "RELU_0_TO_1")
def clipped_relu(ctx: OpContext) -> None:
    ctx.arity(1)
    x = ctx.input(0)
    lo, hi = {"RELU6": (0, 6), "RELU_N1_TO_1": (-1, 1), "RELU_0_TO_1": (0, 1)}[ctx.op.opcode]
    ctx.bind(ctx.emit("Clip", [x, ctx.constant(lo, x.type.dtype), ctx.constant(hi, x.type.dtype)]))


@converts("LEAKY_RELU")
def leaky_relu(ctx: OpContext) -> None:
    ctx.arity(1)
    alpha = ctx.options("LeakyReluOptions")["Alpha"]
    ctx.bind(ctx.emit("LeakyRelu", [ctx.input(0)], alpha=float(alpha)))


@converts("RSQRT")
def rsqrt(ctx: OpContext) -> None:
    ctx.arity(1)
    ctx.bind(ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.input(0)])]))


@converts("QUANTIZE", "DEQUANTIZE")
def requantize(ctx: OpContext) -> None:
    """Float-to-float (a no-op), float16 constants dequantized to float32, and quantized
    constants dequantized (operators on run-time quantized tensors are in tflite_qops.py)."""
    ctx.arity(1)
    src, out = ctx.tensor(0), ctx.out_tensor()
    if src is not None and src.quantization is not None and ctx.op.opcode == "DEQUANTIZE":
        from ember.frontend.tflite_qops import dequantize
        return dequantize(ctx)
    x = ctx.input(0)
    if src.type_name == "FLOAT16" and out.type_name == "FLOAT32":
        ctx.bind(ctx.constant(x.const.astype(np.float32), dt.F32) if x.is_const
                 else ctx.emit("Cast", [x], to=dt.F32.onnx))
    elif src.type_name == out.type_name and x.type.dtype.is_float:
        ctx.bind(ctx.emit("Identity", [x]))
    else:
        raise UnsupportedError(f"{ctx.op.opcode} from {src.type_name} to {out.type_name} "
                               "is not supported")


@converts("CAST")
def cast(ctx: OpContext) -> None:
    ctx.arity(1)
    out = ctx.out_tensor()
    to = dt.from_numpy(out.dtype) if out.dtype is not None else None
    if to is None:
        raise UnsupportedError(f"CAST to {out.type_name} is not supported")
    ctx.bind(ctx.emit("Cast", [ctx.input(0)], to=to.onnx))


@converts("SOFTMAX")
def softmax(ctx: OpContext) -> None:
    ctx.arity(1)
    beta = ctx.options("SoftmaxOptions")["Beta"]
    x = ctx.input(0)
    if beta != 1.0:
        x = ctx.emit("Mul", [x, ctx.constant(beta, x.type.dtype)])
    ctx.bind(ctx.emit("Softmax", [x], axis=-1))


@converts("CONCATENATION")
def concatenation(ctx: OpContext) -> None:
    if not ctx.op.inputs:
        raise ModelFormatError("has no inputs")
    options = ctx.options("ConcatenationOptions")
    inputs = [ctx.input(k) for k in range(len(ctx.op.inputs))]
    y = ctx.emit("Concat", inputs, axis=options["Axis"])
    ctx.bind(activation(ctx, y, options["FusedActivationFunction"]))


# -- reductions and shapes ------------------------------------------------------------------
_REDUCERS = {"MEAN": "ReduceMean", "SUM": "ReduceSum", "REDUCE_MAX": "ReduceMax",
             "REDUCE_MIN": "ReduceMin", "REDUCE_PROD": "ReduceProd"}


@converts(*_REDUCERS)
def reduce(ctx: OpContext) -> None:
    ctx.arity(2)
    keep = ctx.options("ReducerOptions")["KeepDims"]
    axes = ctx.ints(1, "axes")
    # TF reduces nothing for an empty axis list; ONNX would reduce everything.
    ctx.bind(ctx.emit(_REDUCERS[ctx.op.opcode], [ctx.input(0), _shape(ctx, axes)],
                      keepdims=int(bool(keep)), noop_with_empty_axes=int(not axes)))


@converts("RESHAPE")
def reshape(ctx: OpContext) -> None:
    ctx.arity(1, 2)
    x = ctx.input(0)
    t = ctx.tensor(1)
    if t is not None and len(t.shape) == 1:
        shape = ctx.ints(1, "shape")
    else:     # no shape vector: the options' new_shape, else the output's declared shape
        shape = ctx.options("ReshapeOptions").get("NewShape") or list(ctx.out_tensor().shape)
    if shape.count(-1) > 1 or any(d < -1 for d in shape):
        raise ctx.fail(f"shape {shape} may hold one -1 and no other negative value")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        if known == 0 or x.type.size % known:
            raise ctx.fail(f"cannot reshape {x.type} to {shape}")
        shape[shape.index(-1)] = x.type.size // known
    ctx.bind(ctx.emit("Reshape", [x, _shape(ctx, shape)], allowzero=1))


@converts("SQUEEZE")
def squeeze(ctx: OpContext) -> None:
    ctx.arity(1)
    axes = ctx.options("SqueezeOptions")["SqueezeDims"]
    ctx.bind(ctx.emit("Squeeze", [ctx.input(0), _shape(ctx, axes) if axes else None]))


@converts("EXPAND_DIMS")
def expand_dims(ctx: OpContext) -> None:
    ctx.arity(2)
    ctx.bind(ctx.emit("Unsqueeze", [ctx.input(0), _shape(ctx, ctx.ints(1, "axis"))]))


@converts("TRANSPOSE")
def transpose(ctx: OpContext) -> None:
    ctx.arity(2)
    ctx.bind(ctx.emit("Transpose", [ctx.input(0)], perm=ctx.ints(1, "perm")))


@converts("PAD", "PADV2")
def pad(ctx: OpContext) -> None:
    ctx.arity(2, 3 if ctx.op.opcode == "PADV2" else 2)
    x = ctx.input(0)
    pads = ctx.ints(1, "paddings")
    if len(pads) != 2 * x.type.rank or min(pads, default=0) < 0:
        raise ctx.fail(f"paddings {pads} must be [{x.type.rank}, 2] non-negative values")
    value = ctx.optional(2)
    if value is not None and value.type.size != 1:
        raise ctx.fail(f"the pad value must be a single value, got {value.type}")
    if value is not None and value.type.shape != ():
        value = ctx.emit("Reshape", [value, _shape(ctx, [])])
    ctx.bind(ctx.emit("Pad", [x, _shape(ctx, pads[0::2] + pads[1::2]), value]))


@converts("STRIDED_SLICE")
def strided_slice(ctx: OpContext) -> None:
    ctx.arity(4)
    o = ctx.options("StridedSliceOptions")
    x = ctx.input(0)
    begin, end, strides = (ctx.ints(k, what) for k, what in
                           ((1, "begin"), (2, "end"), (3, "strides")))
    if not len(begin) == len(end) == len(strides):
        raise ctx.fail(f"begin {begin}, end {end} and strides {strides} differ in length")
    spec = _dense_slice(ctx, x.type.shape, begin, end, strides, o)
    starts, ends, steps, shape = spec
    y = ctx.emit("Slice", [x, _shape(ctx, starts), _shape(ctx, ends),
                           _shape(ctx, list(range(x.type.rank))), _shape(ctx, steps)])
    if tuple(shape) != y.type.shape:
        y = ctx.emit("Reshape", [y, _shape(ctx, shape)], allowzero=1)
    ctx.bind(y)


def _dense_slice(ctx: OpContext, dims: tuple[int, ...], begin: list[int], end: list[int],
                 strides: list[int], o: dict) -> tuple[list[int], list[int], list[int], list[int]]:
    """TensorFlow's strided-slice spec (masks, ellipsis, new and shrunk axes) as ONNX Slice
    starts/ends/steps over every input axis, and the shape of the final result."""
    if o.get("Offset"):
        end = [b + e for b, e in zip(begin, end)]
    bit = lambda mask, i: bool((mask >> i) & 1)     # noqa: E731
    ellipsis, new_axis = o["EllipsisMask"], o["NewAxisMask"]
    if bin(ellipsis).count("1") > 1:
        raise ctx.fail("at most one ellipsis is allowed")
    n = len(begin)
    dense = n - sum(bit(new_axis, i) for i in range(n)) - bool(ellipsis)
    fill = len(dims) - dense if ellipsis else 0
    if dense > len(dims) or (not ellipsis and dense < 0):
        raise ctx.fail(f"the slice spec has {dense} axes; the input has only {len(dims)}")
    starts, ends, steps, shape = [], [], [], []
    axis = 0

    def full(count: int) -> None:
        nonlocal axis
        for _ in range(count):
            starts.append(0), ends.append(_INT64_MAX), steps.append(1), shape.append(dims[axis])
            axis += 1
    for i in range(n):
        if bit(ellipsis, i):
            full(fill)
        elif bit(new_axis, i):
            shape.append(1)
        else:
            size, step = dims[axis], strides[i]
            if step == 0:
                raise ctx.fail("strides must not be 0")
            if bit(o["ShrinkAxisMask"], i):
                b = begin[i] + size if begin[i] < 0 else begin[i]
                if not 0 <= b < size:
                    raise ctx.fail(f"index {begin[i]} is out of range for axis {axis} of size "
                                   f"{size}")
                starts.append(b), ends.append(b + 1), steps.append(1)
            else:
                lo, hi = (0, _INT64_MAX) if step > 0 else (_INT64_MAX, _INT64_MIN)
                s = lo if bit(o["BeginMask"], i) else begin[i]
                e = hi if bit(o["EndMask"], i) else end[i]
                starts.append(s), ends.append(e), steps.append(step)
                shape.append(len(range(*slice(s, e, step).indices(size))))
            axis += 1
    full(len(dims) - axis)
    return starts, ends, steps, shape


def _shape(ctx: OpContext, values: list[int]) -> Value:
    return ctx.constant(np.array(values, np.int64).reshape(-1), dt.I64)


# UNIDIRECTIONAL_SEQUENCE_LSTM's converter lives in its own module; importing it registers it.
from ember.frontend import tflite_lstm  # noqa: E402,F401
