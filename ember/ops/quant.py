"""Quantization: ONNX QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, and the
fixed-point arithmetic of TFLite's integer kernels that ops/qconv.py and ops/qlayers.py share.

ONNX ops follow onnxruntime: y = saturate(round_half_even(x / scale) + zero_point), computed
in float; x = (q - zero_point) * scale. Scales and zero points are inputs (per tensor, per
axis, or per block from opset 21), read at run time.

TFLite numerics (the `Tfl*` ops) are integer only at run time: a real multiplier M (a ratio of
scales) becomes, at compile time, a Q31 `multiplier` and a power-of-two `shift` exactly as
TFLite's QuantizeMultiplier computes them (`quantize_multiplier`), and the kernels apply it
with `ember_mbqm` = TFLite's MultiplyByQuantizedMultiplier (SaturatingRoundingDoublingHighMul
then RoundingDivideByPOT: the double rounding TFLite Micro builds by default), or with
`ember_mbqm_single`, the single rounding of TFLITE_SINGLE_ROUNDING builds, which
ai-edge-litert 2.3's reference FULLY_CONNECTED uses (TflConvParams.single_rounding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.ops.registry import (OpDef, fail, normalize_axis, register_op, same_layout_inputs,
                                unsupported)
from ember.render.cwriter import c_float

#: C helpers, bit-exact with gemmlowp / TFLite (kernels/internal/common.h). Shifts of a negative
#: int32 are arithmetic on every compiler Ember targets; a left shift goes through uint32_t so
#: the wrap TFLite relies on is not undefined behaviour.
FIXED_POINT_C = r"""
static inline int32_t ember_srdhm(int32_t a, int32_t b) {
    /* SaturatingRoundingDoublingHighMul */
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : 1 - (INT64_C(1) << 30);
    return (int32_t)((ab + nudge) / (INT64_C(1) << 31));
}
static inline int32_t ember_rdivpot(int32_t x, int exponent) {
    /* RoundingDivideByPOT: x / 2^exponent, ties away from zero */
    int32_t mask = (int32_t)((INT64_C(1) << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}
static inline int32_t ember_shl(int32_t x, int n) {
    return (int32_t)((uint32_t)x << n);
}
static inline int32_t ember_mbqm(int32_t x, int32_t multiplier, int shift) {
    /* MultiplyByQuantizedMultiplier: x * multiplier * 2^(shift - 31), rounded twice */
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    return ember_rdivpot(ember_srdhm(ember_shl(x, left), multiplier), right);
}
static inline int32_t ember_mbqm_single(int32_t x, int32_t multiplier, int shift) {
    /* The same with one rounding (TFLITE_SINGLE_ROUNDING; shift <= 30) */
    const int total = 31 - shift;
    return (int32_t)(((int64_t)x * multiplier + (INT64_C(1) << (total - 1))) >> total);
}
static inline int32_t ember_clamp32(int32_t x, int32_t lo, int32_t hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}
"""

_QUANT_TYPES = (dt.I8, dt.U8, dt.I16, dt.U16, dt.I32)
_RANGES = {d: (int(np.iinfo(d.numpy).min), int(np.iinfo(d.numpy).max)) for d in _QUANT_TYPES}


def require_fixed_point(ctx) -> None:
    ctx.require("ember_fixed_point", FIXED_POINT_C)


def round_half_away(x: float) -> int:
    """std::round (TfLiteRound) on a double: ties away from zero, exactly."""
    a = abs(x)
    f = math.floor(a)
    r = f + (1 if a - f >= 0.5 else 0)
    return int(r if x >= 0 else -r)


def mbqm(single_rounding: bool) -> str:
    """The C function applying a (multiplier, shift) pair in the chosen rounding."""
    return "ember_mbqm_single" if single_rounding else "ember_mbqm"


def quantize_multiplier(real: float, single_rounding: bool = False) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: `real` == multiplier * 2**(shift - 31), multiplier a Q31
    in [2**30, 2**31) (0 for 0, or when the shift would drop every bit). Single rounding
    saturates shifts above 30."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    fixed = round_half_away(q * (1 << 31))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if single_rounding and shift > 30:
        return (1 << 31) - 1, 30
    return fixed, shift


def quantize_float(value: float, scale: float, zero_point: int) -> int:
    """zero_point + TfLiteRound(value / scale) in float32, as TFLite's activation ranges do."""
    return zero_point + round_half_away(float(np.float32(value) / np.float32(scale)))


# -- ONNX QuantizeLinear / DequantizeLinear -------------------------------------------------------
@dataclass(frozen=True)
class _Affine:
    """How scale/zero point index x: one value, one per index of `axis`, or per block."""
    outer: int           # product of x's dims before axis
    extent: int          # x's dim at axis (1 when per tensor)
    inner: int           # product of x's dims after axis
    per_axis: bool
    block: int           # 0: not blocked

    def param_index(self, o: str, a: str, i: str) -> str:
        if not self.per_axis:
            return "0"
        if not self.block:
            return a
        blocks = -(-self.extent // self.block)
        return f"(({o}) * {blocks} + ({a}) / {self.block}) * {self.inner} + ({i})"


def _one_value(t: TensorType) -> bool:
    return t.size == 1 and t.rank <= 1


def _affine(node: Node, x: TensorType, scale: TensorType, zp: TensorType | None) -> _Affine:
    if scale.dtype not in (dt.F32,):
        raise unsupported(node, f"scale of element type {scale.dtype} is not supported (f32 is)")
    # a scalar with a one-element vector is one parameter either way (onnxruntime accepts it;
    # quantize_static writes a bias's scale as [1] and its zero point as a scalar)
    if zp is not None and zp.shape != scale.shape and not (_one_value(zp) and _one_value(scale)):
        raise fail(node, f"zero point shape {list(zp.shape)} differs from scale shape "
                   f"{list(scale.shape)}")
    block = int(node.attrs.get("block_size", 0) or 0) if node.opset >= 21 else 0
    if block < 0:
        raise fail(node, f"block_size must be >= 0, got {block}")
    size = x.size
    if _one_value(scale) and not block:
        return _Affine(1, 1, size, False, 0)
    if node.opset < 13:
        raise fail(node, "scale must be a scalar before opset 13")
    axis = normalize_axis(node, int(node.attrs.get("axis", 1)), max(x.rank, 1)) if x.rank else 0
    if x.rank == 0:
        raise fail(node, f"a scalar input needs a scalar scale, got {list(scale.shape)}")
    outer, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1:])
    extent = x.shape[axis]
    if block:
        want = tuple(-(-d // block) if k == axis else d for k, d in enumerate(x.shape))
        if scale.shape != want:
            raise fail(node, f"blocked scale must have shape {list(want)}, got {list(scale.shape)}")
    elif scale.shape != (extent,):
        raise fail(node, f"per-axis scale must have shape [{extent}] (axis {axis}), got "
                   f"{list(scale.shape)}")
    return _Affine(outer, extent, inner, True, block)


def _emit_affine_loops(ctx, aff: _Affine, body) -> None:
    """Loops over x as (outer, axis, inner); `body(flat, param)` writes one element."""
    w = ctx.w
    with w.block(f"for (int64_t o = 0; o < {aff.outer}; ++o)"):
        with w.block(f"for (int64_t a = 0; a < {aff.extent}; ++a)"):
            if not aff.block:
                w.line(f"const int64_t p = {aff.param_index('o', 'a', '0')};")
            with w.block(f"for (int64_t i = 0; i < {aff.inner}; ++i)"):
                if aff.block:
                    w.line(f"const int64_t p = {aff.param_index('o', 'a', 'i')};")
                w.line(f"const int64_t e = (o * {aff.extent} + a) * {aff.inner} + i;")
                body("e", "p")


def _out_dtype(node: Node) -> dt.DType:
    zp = node.input(2)
    if zp is not None:
        return zp.type.dtype
    code = int(node.attrs.get("output_dtype", 0) or 0) if node.opset >= 21 else 0
    found = dt.from_onnx(code) if code else dt.U8
    if found is None:
        raise unsupported(node, f"output_dtype {code} is not supported")
    return found


def emit_quantize_value(value: str, lo: int, hi: int, zp: str, half_away: bool) -> str:
    """C expression: `value` (a float) rounded, plus zero point, saturated to [lo, hi].

    The clamp comes before the rounding as onnxruntime's MLAS does it (a NaN becomes lo)."""
    rnd = "roundf" if half_away else "nearbyintf"
    return (f"ember_clamp32((int32_t){rnd}(ember_fclamp({value}, (float){lo} - (float)({zp}), "
            f"(float){hi} - (float)({zp}))) + (int32_t)({zp}), {lo}, {hi})")


FCLAMP_C = r"""
static inline float ember_fclamp(float v, float lo, float hi) {
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
}
"""


@register_op("QuantizeLinear", "DequantizeLinear")
class QuantizeLinear(OpDef):
    def check(self, node: Node) -> list[str]:
        x, scale = node.input(0), node.input(1)
        quantize = node.op == "QuantizeLinear"
        problems = []
        if x is not None:
            allowed = (dt.F32, dt.I32) if quantize else _QUANT_TYPES
            if x.type.dtype not in allowed:
                problems.append(f"input of element type {x.type.dtype} is not supported")
        if quantize and node.input(2) is not None and node.inputs[2].type.dtype not in _QUANT_TYPES[:4]:
            problems.append(f"zero point of element type {node.inputs[2].type.dtype} is not supported")
        if scale is not None and scale.type.dtype != dt.F32:
            problems.append(f"scale of element type {scale.type.dtype} is not supported")
        if not quantize and node.opset >= 23 and int(node.attrs.get("output_dtype", 0) or 0) \
                not in (0, dt.F32.onnx):
            problems.append("output_dtype other than float32 is not supported")
        return problems

    def infer(self, node: Node) -> list[TensorType]:
        x, scale = node.input(0), node.input(1)
        if x is None or scale is None:
            raise fail(node, "needs inputs x and scale")
        zp = node.input(2)
        _affine(node, x.type, scale.type, zp.type if zp is not None else None)
        if node.op == "QuantizeLinear":
            return [TensorType(_out_dtype(node), x.type.shape)]
        if zp is not None and zp.type.dtype != x.type.dtype:
            raise fail(node, f"zero point is {zp.type.dtype}, the input {x.type.dtype}")
        return [TensorType(scale.type.dtype, x.type.shape)]

    def lower(self, node: Node, ctx) -> None:
        x, scale, zp = node.inputs[0], node.inputs[1], node.input(2)
        aff = _affine(node, x.type, scale.type, zp.type if zp is not None else None)
        x_, s_, z_, y_ = ctx.ins[0], ctx.ins[1], ctx.ins[2] if zp is not None else None, ctx.outs[0]
        zero = (lambda p: f"(int32_t){z_}[{p}]") if z_ else (lambda p: "0")
        if node.op == "DequantizeLinear":
            # onnxruntime: float(int32(x) - int32(zp)) * scale
            _emit_affine_loops(ctx, aff, lambda e, p: ctx.w.line(
                f"{y_}[{e}] = (float)((int32_t){x_}[{e}] - {zero(p)}) * {s_}[{p}];"))
            return
        lo, hi = _RANGES[node.outputs[0].type.dtype]
        ctx.require("ember_fixed_point", FIXED_POINT_C)
        ctx.require("ember_fclamp", FCLAMP_C)
        _emit_affine_loops(ctx, aff, lambda e, p: ctx.w.line(
            f"{y_}[{e}] = ({node.outputs[0].type.dtype.c})"
            + emit_quantize_value(f"(float){x_}[{e}] / {s_}[{p}]", lo, hi, zero(p), False) + ";"))


@register_op("DynamicQuantizeLinear")
class DynamicQuantizeLinear(OpDef):
    """uint8 quantization over x's own range (widened to hold 0), as onnxruntime computes it:
    scale = (max - min) / 255 (1 when max == min), zero point = rint(clamp(-min / scale))."""
    dtypes = (dt.F32,)

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        return [TensorType(dt.U8, x.shape), TensorType(dt.F32, ()), TensorType(dt.U8, ())]

    def lower(self, node: Node, ctx) -> None:
        n = node.inputs[0].type.size
        x, (y, s, z) = ctx.ins[0], ctx.outs
        ctx.require("ember_fixed_point", FIXED_POINT_C)
        ctx.require("ember_fclamp", FCLAMP_C)
        ctx.w.lines(f"""
float lo = 0.0f, hi = 0.0f;
for (int64_t i = 0; i < {n}; ++i) {{
    lo = {x}[i] < lo ? {x}[i] : lo;
    hi = {x}[i] > hi ? {x}[i] : hi;
}}
const float scale = hi == lo ? 1.0f : (hi - lo) / 255.0f;
const int32_t zp = (int32_t)nearbyintf(ember_fclamp(0.0f - lo / scale, 0.0f, 255.0f));
{s}[0] = scale;
{z}[0] = (uint8_t)zp;
for (int64_t i = 0; i < {n}; ++i)
    {y}[i] = (uint8_t){emit_quantize_value(f"{x}[i] / scale", 0, 255, "zp", False)};
""")


# -- TFLite QUANTIZE (float -> int, or int -> int requantization) --------------------------------
@dataclass(frozen=True)
class TflQuantizeParams:
    """float -> int: q = clamp(round_half_away(x / scale) + zero_point); int -> int:
    q = clamp(mbqm(x - input_zero_point, multiplier, shift) + zero_point)."""
    scale: float
    zero_point: int
    input_zero_point: int = 0
    multiplier: int = 0
    shift: int = 0


def tfl_params(node: Node, kind: type) -> object:
    """The `q` attribute of an Ember-internal TFLite op; refused unless the importer made it."""
    q = node.attrs.get("q")
    if not isinstance(q, kind):
        raise fail(node, f"{node.op} is internal to Ember (made by the TFLite importer)")
    return q


def tfl_check(node: Node, kind: type) -> list[str]:
    return [] if isinstance(node.attrs.get("q"), kind) else \
        [f"{node.op} is internal to Ember (made by the TFLite importer)"]


@register_op("TflQuantize")
class TflQuantize(OpDef):
    def check(self, node: Node) -> list[str]:
        return tfl_check(node, TflQuantizeParams)

    def infer(self, node: Node) -> list[TensorType]:
        tfl_params(node, TflQuantizeParams)
        to = dt.from_onnx(int(node.attrs.get("to", dt.I8.onnx)))
        if to not in (dt.I8, dt.U8, dt.I16):
            raise unsupported(node, f"quantizing to {to} is not supported")
        if node.inputs[0].type.dtype not in (dt.F32, dt.I8, dt.U8, dt.I16):
            raise unsupported(node, f"quantizing {node.inputs[0].type.dtype} is not supported")
        return [TensorType(to, node.inputs[0].type.shape)]

    def overwritable_inputs(self, node: Node) -> tuple[int, ...]:
        # y[i] from x[i] alone (requantizing int8 <-> uint8; wider inputs have other offsets)
        return same_layout_inputs(node)[:1]

    def lower(self, node: Node, ctx) -> None:
        q: TflQuantizeParams = tfl_params(node, TflQuantizeParams)
        out = node.outputs[0].type
        lo, hi = _RANGES[out.dtype]
        ctx.require("ember_fixed_point", FIXED_POINT_C)
        x, y = ctx.ins[0], ctx.outs[0]
        if node.inputs[0].type.dtype == dt.F32:
            # TFLite's AffineQuantize: float division, std::round, then the clamp.
            ctx.require("ember_fclamp", FCLAMP_C)
            value = emit_quantize_value(f"{x}[i] / {c_float(q.scale)}", lo, hi, str(q.zero_point),
                                        True)
        else:
            value = (f"ember_clamp32(ember_mbqm((int32_t){x}[i] - {q.input_zero_point}, "
                     f"{q.multiplier}, {q.shift}) + {q.zero_point}, {lo}, {hi})")
        with ctx.w.block(f"for (int64_t i = 0; i < {out.size}; ++i)"):
            ctx.w.line(f"{y}[i] = ({out.dtype.c}){value};")
