"""TFLite's int8 layers other than convolutions, bit-exact with its reference kernels: the
Ember-internal ops TflAdd, TflPool2D (average or max, NHWC), TflSoftmax and TflMean, all
integer only.

TflAdd       each input: (x + offset) << left_shift, scaled by its own fixed-point multiplier
             to a common scale; the sum (or for SUB the difference) scaled by the output
             multiplier, + zero point, clamped (TFLite's AddElementwise / BroadcastAdd4DSlow,
             SubElementwise / BroadcastQuantSubSlow). Inputs broadcast.
TflPool2D    max, or the average over the taps inside the input rounded half away from zero
             (integer division), clamped to the fused activation's range.
TflSoftmax   gemmlowp's fixed-point exp and reciprocal over the last axis, as TFLite's
             reference Softmax (and TFLite Micro's) computes it: differences from the row
             maximum, scaled by beta * input_scale into Q5.26, exp in Q0.31, summed in Q12.19.
TflMean      the int32 sum over the reduced axes, then one of the two ways TFLite's kernels
             turn it into the mean (TflMeanParams).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import broadcast_shape, broadcast_strides, offset_expr, strides
from ember.ops.quant import FIXED_POINT_C, tfl_check, tfl_params
from ember.ops.registry import OpDef, fail, register_op, same_layout_inputs
from ember.ops.window import sliding_window

_INT8 = (dt.I8,)


@dataclass(frozen=True)
class TflAddParams:
    input1_offset: int
    input2_offset: int
    left_shift: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int
    output_offset: int
    act_min: int
    act_max: int
    subtract: bool = False     # SUB: the second scaled input is subtracted


@register_op("TflAdd")
class TflAdd(OpDef):
    def check(self, node: Node) -> list[str]:
        return tfl_check(node, TflAddParams)

    def infer(self, node: Node) -> list[TensorType]:
        tfl_params(node, TflAddParams)
        a, b = node.inputs[0].type, node.inputs[1].type
        if a.dtype not in _INT8 or b.dtype != a.dtype:
            raise fail(node, f"inputs must both be int8, got {a.dtype} and {b.dtype}")
        shape = broadcast_shape(a.shape, b.shape)
        if shape is None:
            raise fail(node, f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast")
        return [TensorType(a.dtype, shape)]

    def overwritable_inputs(self, node: Node) -> tuple[int, ...]:
        # each iteration reads a's and b's element, then writes the output's (a residual
        # Add's output takes the dying operand's buffer)
        return same_layout_inputs(node)

    def lower(self, node: Node, ctx) -> None:
        q: TflAddParams = tfl_params(node, TflAddParams)
        ctx.require("ember_fixed_point", FIXED_POINT_C)
        shape = node.outputs[0].type.shape
        sa, sb = (broadcast_strides(v.type.shape, shape) for v in node.inputs[:2])
        a, b = ctx.ins[:2]
        w = ctx.w
        f = "ember_mbqm"
        with w.loops(shape) as iv:
            w.line(f"const int32_t x1 = ember_shl((int32_t){a}[{offset_expr(iv, sa)}] + "
                   f"{q.input1_offset}, {q.left_shift});")
            w.line(f"const int32_t x2 = ember_shl((int32_t){b}[{offset_expr(iv, sb)}] + "
                   f"{q.input2_offset}, {q.left_shift});")
            w.line(f"const int32_t sum = {f}(x1, {q.input1_multiplier}, {q.input1_shift})"
                   f" {'-' if q.subtract else '+'} {f}(x2, {q.input2_multiplier}, "
                   f"{q.input2_shift});")
            w.line(f"{ctx.outs[0]}[{offset_expr(iv, strides(shape))}] = (int8_t)ember_clamp32("
                   f"{f}(sum, {q.output_multiplier}, {q.output_shift}) + "
                   f"{q.output_offset}, {q.act_min}, {q.act_max});")


@dataclass(frozen=True)
class TflPoolParams:
    average: bool          # else max
    act_min: int
    act_max: int


@register_op("TflPool2D")
class TflPool2D(OpDef):
    """NHWC pooling; attributes kernel_shape, strides and pads as ONNX's (no dilation)."""

    def check(self, node: Node) -> list[str]:
        return tfl_check(node, TflPoolParams)

    def _window(self, node: Node):
        x = node.inputs[0].type
        if x.rank != 4 or x.dtype not in _INT8:
            raise fail(node, f"input must be int8 NHWC, got {x}")
        kernel = tuple(int(k) for k in node.attrs.get("kernel_shape", ()))
        if len(kernel) != 2 or min(kernel) < 1:
            raise fail(node, f"kernel_shape {list(kernel)} must be two sizes >= 1")
        return sliding_window(node, x.shape[1:3], kernel)

    def infer(self, node: Node) -> list[TensorType]:
        tfl_params(node, TflPoolParams)
        x = node.inputs[0].type
        win = self._window(node)
        return [TensorType(x.dtype, (x.shape[0], *win.out, x.shape[3]))]

    def lower(self, node: Node, ctx) -> None:
        q: TflPoolParams = tfl_params(node, TflPoolParams)
        win = self._window(node)
        n, h, wd, c = node.inputs[0].type.shape
        (kh, kw), (sh, sw), (ph, pw) = win.kernel, win.strides, win.pads_begin
        x, y = ctx.ins[0], ctx.outs[0]
        ctx.require("ember_fixed_point", FIXED_POINT_C)
        w = ctx.w
        with w.loops((n, *win.out, c)) as (b, oh, ow, ch):
            w.line(f"int32_t acc = {0 if q.average else -128}, count = 0;")
            w.line(f"const int64_t h0 = {oh} * {sh} - {ph}, w0 = {ow} * {sw} - {pw};")
            with w.block(f"for (int64_t i = h0 < 0 ? 0 : h0; i < h0 + {kh} && i < {h}; ++i)"):
                with w.block(f"for (int64_t j = w0 < 0 ? 0 : w0; j < w0 + {kw} && j < {wd}; ++j)"):
                    v = f"(int32_t){x}[(({b} * {h} + i) * {wd} + j) * {c} + {ch}]"
                    w.line(f"acc += {v};" if q.average else f"acc = {v} > acc ? {v} : acc;")
                    w.line("++count;")
            if q.average:
                # Rounded to nearest, ties away from zero (TFLite's reference AveragePool).
                w.line("if (count) acc = acc > 0 ? (acc + count / 2) / count : "
                       "(acc - count / 2) / count;")
            w.line(f"{y}[(({b} * {win.out[0]} + {oh}) * {win.out[1]} + {ow}) * {c} + {ch}] = "
                   f"(int8_t)ember_clamp32(acc, {q.act_min}, {q.act_max});")


@dataclass(frozen=True)
class TflSoftmaxParams:
    input_multiplier: int
    input_left_shift: int
    diff_min: int


#: gemmlowp fixedpoint.h: exp_on_negative_values (Q5.26 in, Q0.31 out) and
#: one_over_one_plus_x_for_x_in_0_1, spelled out for int32.
SOFTMAX_C = r"""
static inline int32_t ember_sat_shl(int32_t x, int e) {
    /* SaturatingRoundingMultiplyByPOT<e>, e > 0 */
    const int32_t threshold = (int32_t)((INT64_C(1) << (31 - e)) - 1);
    if (x > threshold) return INT32_MAX;
    if (x < -threshold) return INT32_MIN;
    return ember_shl(x, e);
}
static int32_t ember_exp_quarter(int32_t a) {
    /* exp on [-1/4, 0): Taylor series around -1/8, Q0.31 */
    const int32_t constant_term = 1895147668, one_third = 715827883;
    const int32_t x = a + (1 << 28);
    const int32_t x2 = ember_srdhm(x, x), x3 = ember_srdhm(x2, x), x4 = ember_srdhm(x2, x2);
    const int32_t x4_over_4 = ember_rdivpot(x4, 2);
    const int32_t poly = ember_rdivpot(ember_srdhm(x4_over_4 + x3, one_third) + x2, 1);
    return constant_term + ember_srdhm(constant_term, x + poly);
}
static int32_t ember_exp_negative(int32_t a) {
    static const int32_t factors[7] = {1672461947, 1302514674, 790015084, 290630308,
                                       39332535, 720401, 242};   /* exp(-2^k), k = -2..4 */
    const int32_t quarter = 1 << 24;
    const int32_t a_mod = (a & (quarter - 1)) - quarter;
    int32_t result = ember_exp_quarter(ember_sat_shl(a_mod, 5));
    const int32_t remainder = a_mod - a;
    for (int k = 0; k < 7; ++k)
        if (remainder & (INT32_C(1) << (24 + k))) result = ember_srdhm(result, factors[k]);
    return a == 0 ? INT32_MAX : result;
}
static int32_t ember_one_over_one_plus_x(int32_t a) {
    /* Newton-Raphson 1 / (1 + a), a in [0, 1) as Q0.31; the iterate x is Q2.29 */
    const int64_t sum = (int64_t)a + INT32_MAX;
    const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    int32_t x = 1515870810 + ember_srdhm(half_denominator, -1010580540);
    for (int i = 0; i < 3; ++i) {
        const int32_t one_minus = (INT32_C(1) << 29) - ember_srdhm(half_denominator, x);
        x = x + ember_sat_shl(ember_srdhm(x, one_minus), 2);
    }
    return ember_sat_shl(x, 1);
}
static inline int32_t ember_softmax_diff(int32_t diff, int32_t multiplier, int left_shift) {
    /* MultiplyByQuantizedMultiplierGreaterThanOne: the difference as Q5.26 */
    return ember_srdhm(ember_shl(diff, left_shift), multiplier);
}
static void ember_softmax_int8(const int8_t *in, int8_t *out, int64_t depth, int32_t multiplier,
                               int left_shift, int32_t diff_min) {
    int32_t max_in = -128;
    for (int64_t c = 0; c < depth; ++c) max_in = in[c] > max_in ? in[c] : max_in;
    int32_t sum = 0;    /* Q12.19 */
    for (int64_t c = 0; c < depth; ++c) {
        const int32_t diff = (int32_t)in[c] - max_in;
        if (diff >= diff_min)
            sum += ember_rdivpot(ember_exp_negative(
                ember_softmax_diff(diff, multiplier, left_shift)), 12);
    }
    const int headroom = __builtin_clz((uint32_t)sum);
    const int bits_over_unit = 12 - headroom;
    const int32_t scale = ember_one_over_one_plus_x(
        (int32_t)(((uint32_t)sum << headroom) - ((uint32_t)1 << 31)));
    for (int64_t c = 0; c < depth; ++c) {
        const int32_t diff = (int32_t)in[c] - max_in;
        int32_t q = -128;
        if (diff >= diff_min) {
            const int32_t e = ember_exp_negative(
                ember_softmax_diff(diff, multiplier, left_shift));
            q = ember_rdivpot(ember_srdhm(scale, e), bits_over_unit + 23) - 128;
        }
        out[c] = (int8_t)ember_clamp32(q, -128, 127);
    }
}
"""


@register_op("TflSoftmax")
class TflSoftmax(OpDef):
    def check(self, node: Node) -> list[str]:
        return tfl_check(node, TflSoftmaxParams)

    def infer(self, node: Node) -> list[TensorType]:
        tfl_params(node, TflSoftmaxParams)
        x = node.inputs[0].type
        if x.dtype not in _INT8 or x.rank < 1:
            raise fail(node, f"input must be int8 of rank >= 1, got {x}")
        return [x]

    def lower(self, node: Node, ctx) -> None:
        q: TflSoftmaxParams = tfl_params(node, TflSoftmaxParams)
        shape = node.inputs[0].type.shape
        depth = shape[-1]
        rows = math.prod(shape[:-1])
        ctx.require("ember_fixed_point", FIXED_POINT_C)
        ctx.require("ember_softmax_int8", SOFTMAX_C)
        if depth == 0:
            return
        with ctx.w.block(f"for (int64_t r = 0; r < {rows}; ++r)"):
            ctx.w.line(f"ember_softmax_int8({ctx.ins[0]} + r * {depth}, {ctx.outs[0]} + r * "
                       f"{depth}, {depth}, {q.input_multiplier}, {q.input_left_shift}, "
                       f"{q.diff_min});")


@dataclass(frozen=True)
class TflMeanParams:
    """MEAN over `axes` (distinct, ascending). `mode` picks the kernel:
    "scaled"     QuantizedMeanOrSum (TFLite Micro; ai-edge-litert but for the case below): the
                 sum less n * input zero point, times a multiplier with 1/n folded in at compile
                 time (multiplier and shift include it), + output zero point, clamped;
    "rounded"    ai-edge-litert's reference_integer_ops::Mean (4-d, axes 1 and 2, keep_dims):
                 the sum less zero points times the multiplier, then divided by n rounding half
                 away from zero, + output zero point, clamped."""
    axes: tuple[int, ...]
    keep_dims: bool
    mode: str
    input_zero: int = 0
    multiplier: int = 0
    shift: int = 0
    output_zero: int = 0


_MEAN_MODES = ("scaled", "rounded")


@register_op("TflMean")
class TflMean(OpDef):
    def check(self, node: Node) -> list[str]:
        return tfl_check(node, TflMeanParams)

    def _params(self, node: Node) -> TflMeanParams:
        q: TflMeanParams = tfl_params(node, TflMeanParams)
        x = node.inputs[0].type
        if x.dtype not in _INT8 or q.mode not in _MEAN_MODES:
            raise fail(node, f"input must be int8, got {x}")
        if list(q.axes) != sorted(set(q.axes)) or not all(0 <= a < x.rank for a in q.axes):
            raise fail(node, f"axes {list(q.axes)} must be distinct dims of {x}, ascending")
        return q

    def infer(self, node: Node) -> list[TensorType]:
        q = self._params(node)
        x = node.inputs[0].type
        shape = tuple(1 if k in q.axes else d for k, d in enumerate(x.shape)) if q.keep_dims \
            else tuple(d for k, d in enumerate(x.shape) if k not in q.axes)
        return [TensorType(x.dtype, shape)]

    def lower(self, node: Node, ctx) -> None:
        q = self._params(node)
        shape = node.inputs[0].type.shape
        st = strides(shape)
        kept = [k for k in range(len(shape)) if k not in q.axes]
        n = math.prod(shape[k] for k in q.axes)
        ctx.require("ember_fixed_point", FIXED_POINT_C)
        w, x, y = ctx.w, ctx.ins[0], ctx.outs[0]
        w.line("int64_t o = 0;")
        with w.loops(tuple(shape[k] for k in kept), "o") as ov:
            w.line("int32_t sum = 0;")
            with w.loops(tuple(shape[k] for k in q.axes), "r") as rv:
                index = offset_expr(ov + rv, tuple(st[k] for k in kept + list(q.axes)))
                w.line(f"sum += {x}[{index}];")
            if n == 0:
                w.line("(void)sum;")
                value = "0"
            elif q.mode == "scaled":
                value = (f"ember_clamp32(ember_mbqm(sum - {q.input_zero * n}, {q.multiplier}, "
                         f"{q.shift}) + {q.output_zero}, -128, 127)")
            else:
                w.line(f"sum = ember_mbqm(sum - {q.input_zero * n}, {q.multiplier}, {q.shift});")
                w.line(f"sum = sum > 0 ? (sum + {n // 2}) / {n} : (sum - {n // 2}) / {n};")
                value = f"ember_clamp32(sum + {q.output_zero}, -128, 127)"
            w.line(f"{y}[o++] = (int8_t)({value});")
