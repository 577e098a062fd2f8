"""Integer convolutions and matrix products: int8/uint8 operands, int32 accumulation.

ONNX (NCHW, onnxruntime numerics): ConvInteger and MatMulInteger give the int32 sums;
QLinearConv and QLinearMatMul requantize them in float as onnxruntime does,
y = saturate(round_half_even(float(acc) * (x_scale * w_scale / y_scale)) + y_zero_point).

TFLite (Ember-internal ops the TFLite importer makes, integer only at run time):
  TflConv2D          NHWC input, weights [O, KH, KW, I/group] (a depthwise conv is the
                     grouped form: one group per input channel), int32 bias, per-channel
                     fixed-point requantization, output zero point, fused-activation clamp.
  TflFullyConnected  rows [R, D] x weights [U, D] -> [R, U], the same requantization.
Both compute acc = sum (w + filter_offset) * (x + input_offset) + bias, then
clamp(mbqm(acc, multiplier[c], shift[c]) + output_offset, act_min, act_max): TFLite's reference
ConvPerChannel / DepthwiseConvPerChannel / FullyConnected, bit for bit.
"""
from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import broadcast_strides, offset_expr
from ember.ops.matmul import matmul_shapes
from ember.ops.qconv_gemm import emit_gemm_conv
from ember.ops.qconv_gemm import geometry as gemm_geometry
from ember.ops.qdot import (ACC_BLOCK, depthwise_acc_len, require_depthwise, require_dot,
                            require_requant)
from ember.ops.quant import (FCLAMP_C, FIXED_POINT_C, emit_quantize_value, mbqm, tfl_check,
                             tfl_params)
from ember.ops.registry import OpDef, fail, register_op, unsupported
from ember.ops.window import Window, check_kernel, sliding_window, spatial_rank

_Q8 = (dt.I8, dt.U8)


@dataclass(frozen=True)
class _IntConv:
    batch: int
    channels: int
    out_channels: int
    groups: int
    in_sp: tuple[int, ...]
    kernel: tuple[int, ...]
    window: Window
    channels_last: bool      # NHWC input/output and [O, K..., I/g] weights (TFLite)

    @property
    def out_sp(self) -> tuple[int, ...]:
        return self.window.out

    def out_shape(self) -> tuple[int, ...]:
        if self.channels_last:
            return (self.batch, *self.out_sp, self.out_channels)
        return (self.batch, self.out_channels, *self.out_sp)


def _int_conv(node: Node, x_k: int, w_k: int, channels_last: bool) -> _IntConv:
    x, w = node.input(x_k), node.input(w_k)
    if x is None or w is None:
        raise fail(node, "needs an input and weights")
    xs, ws = x.type.shape, w.type.shape
    rank = spatial_rank(node, xs)
    if len(ws) != len(xs):
        raise fail(node, f"weights of shape {list(ws)} do not fit an input of rank {len(xs)}")
    for v, what in ((x, "input"), (w, "weights")):
        if v.type.dtype not in _Q8:
            raise fail(node, f"{what} must be int8 or uint8, got {v.type.dtype}")
    groups = int(node.attrs.get("group", 1))
    if channels_last:
        channels, in_sp, kernel, per_group = xs[-1], xs[1:-1], tuple(ws[1:-1]), ws[-1]
    else:
        channels, in_sp, kernel, per_group = xs[1], xs[2:], tuple(ws[2:]), ws[1]
        check_kernel(node, kernel, rank)
    if groups < 1 or channels % groups or ws[0] % groups or per_group * groups != channels:
        raise fail(node, f"weights {list(ws)} and group {groups} do not fit {channels} input "
                   "channels")
    window = sliding_window(node, in_sp, kernel)
    return _IntConv(xs[0], channels, ws[0], groups, tuple(in_sp), kernel, window, channels_last)


def _emit_int_conv(ctx, g: _IntConv, x_term: Callable[[str], str],
                   w_term: Callable[[str], str], finish: Callable[[str], str]) -> None:
    """acc = sum over taps inside the input of x_term(x index) * w_term(w index), per output
    element; finish("acc") is the C value stored (out0 at `y`, the output's flat index).
    Loop variables in scope of the terms: n, oc (output channel), ic (input channel)."""
    w = ctx.w
    rank = len(g.in_sp)
    cpg, opg = g.channels // g.groups, g.out_channels // g.groups
    in_size, k_size, out_size = math.prod(g.in_sp), math.prod(g.kernel), math.prod(g.out_sp)
    win = g.window
    with w.block(f"for (int64_t n = 0; n < {g.batch}; ++n)"):
        with w.loops(g.out_sp, "o") as ov:
            with w.block(f"for (int64_t oc = 0; oc < {g.out_channels}; ++oc)"):
                w.line(f"const int64_t c0 = (oc / {opg}) * {cpg};")
                w.line("int32_t acc = 0;")
                with w.loops(g.kernel, "k") as kv:
                    for d in range(rank):
                        w.line(f"const int64_t p{d} = {ov[d]} * {win.strides[d]} - "
                               f"{win.pads_begin[d]} + {kv[d]} * {win.dilations[d]};")
                    inside = " || ".join(f"(uint64_t)p{d} >= {g.in_sp[d]}u" for d in range(rank))
                    if inside:
                        w.line(f"if ({inside}) continue;")
                    sp = _flat([f"p{d}" for d in range(rank)], g.in_sp)
                    kf = _flat(kv, g.kernel)
                    if g.channels_last:
                        xi = f"(n * {in_size} + {sp}) * {g.channels} + c0 + ic"
                        wi = f"(oc * {k_size} + {kf}) * {cpg} + ic"
                    else:
                        xi = f"(n * {g.channels} + c0 + ic) * {in_size} + {sp}"
                        wi = f"(oc * {cpg} + ic) * {k_size} + {kf}"
                    with w.block(f"for (int64_t ic = 0; ic < {cpg}; ++ic)"):
                        w.line(f"acc += {x_term(xi)} * {w_term(wi)};")
                of = _flat(ov, g.out_sp)
                y = (f"(n * {out_size} + {of}) * {g.out_channels} + oc" if g.channels_last
                     else f"(n * {g.out_channels} + oc) * {out_size} + {of}")
                w.line(f"{ctx.outs[0]}[{y}] = {finish('acc')};")


def _fast_tfl_conv(node: Node, g: _IntConv) -> bool:
    """Whether TflConv2D takes _emit_tfl_conv: int8 operands, every index within int32."""
    types = [node.inputs[0].type, node.inputs[1].type, node.outputs[0].type]
    return (all(t.dtype == dt.I8 for t in types) and g.channels_last
            and max(t.size for t in types) < 2 ** 31)


def _emit_tfl_conv(node: Node, ctx, g: _IntConv, q: "TflConvParams", bias: str | None) -> None:
    """TflConv2D on int8 in NHWC with 32-bit indices. Per output position and spatial dim d:
    i{d}, the input coordinate of tap 0, lo{d} the first tap inside the input and m{d} how
    many are, so the tap loops test nothing. The sums are qdot.py's routines: a depthwise
    conv (one input channel per output channel) sums all channels of a position at once;
    otherwise one dot product per output channel and tap row, over the contiguous input
    channels of a group (and over the row's taps too when groups == 1 and the innermost
    dilation is 1: in NHWC and [O, KH, KW, I] those runs are contiguous in both operands).
    A position's channels are then requantized together (_Requant)."""
    w = ctx.w
    rank = len(g.in_sp)
    win = g.window
    cpg, opg = g.channels // g.groups, g.out_channels // g.groups
    in_size, out_size = math.prod(g.in_sp), math.prod(g.out_sp)
    x_st = [math.prod(g.in_sp[d + 1:]) * g.channels for d in range(rank)]
    k_st = [math.prod(g.kernel[d + 1:]) * cpg for d in range(rank)]
    x, y = ctx.ins[0], ctx.outs[0]
    xo, wo = q.input_offset, q.filter_offset
    weights = node.inputs[1].const
    depthwise = cpg == 1 and opg == 1 and rank == 2 and weights is not None
    rq = _Requant(ctx, q, bias, node.outputs[0].type.dtype, g.out_channels)
    if depthwise:
        dw = require_depthwise(ctx)
        # [C, KH, KW, 1] -> [KH, KW, C]: a tap's weights contiguous over the channels
        packed = ctx.pack_constant(np.moveaxis(np.asarray(weights).reshape(g.out_channels, -1),
                                               0, 1), replaces=1)
    with ExitStack() as positions:
        positions.enter_context(w.block(f"for (int32_t n = 0; n < {g.batch}; ++n)"))
        ov = [f"o{d}" for d in range(rank)]
        for d in range(rank):
            positions.enter_context(w.block(f"for (int32_t o{d} = 0; o{d} < {g.out_sp[d]}; "
                                            f"++o{d})"))
            s, p, dil = win.strides[d], win.pads_begin[d], win.dilations[d]
            w.line(f"const int32_t i{d} = o{d} * {s} - {p};")
            w.line(f"const int32_t lo{d} = i{d} < 0 ? {_ceil_div(f'-i{d}', dil)} : 0;")
            w.line(f"const int32_t t{d} = {_ceil_div(f'{g.in_sp[d]} - i{d}', dil)};")
            w.line(f"const int32_t hi{d} = t{d} < {g.kernel[d]} ? t{d} : {g.kernel[d]};")
            w.line(f"const int32_t m{d} = hi{d} > lo{d} ? hi{d} - lo{d} : 0;")
        start = " + ".join(f"(i{d} + lo{d} * {win.dilations[d]}) * {x_st[d]}" for d in range(rank))
        w.line(f"const int8_t *const xs = {x} + n * {in_size * g.channels} + {start or '0'};")
        w.line(f"int8_t *const ys = {y} + (n * {out_size} + {_flat(ov, g.out_sp)}) * "
               f"{g.out_channels};")
        with rq.blocks("ys") as (first, count):
            if depthwise:
                k1 = g.kernel[1]
                at = "" if first == "0" else f" + {first}"
                w.line(f"{dw}(accs, xs{at}, {packed}{at} + (lo0 * {k1} + lo1) * {g.channels}, "
                       f"{count}, m0, m1, {win.dilations[0] * x_st[0]}, "
                       f"{win.dilations[1] * x_st[1]}, {k1 * g.channels}, {g.channels}, "
                       f"{xo}, {wo});")
            else:
                _emit_conv_block(ctx, g, q, (first, count), k_st, x_st)


def _emit_conv_block(ctx, g: _IntConv, q: "TflConvParams", block: tuple[str, str],
                     k_st: list[int], x_st: list[int]) -> None:
    """accs[oc - first] = the sum of output channel oc at the position (xs: its first tap
    inside the input), for oc in the block: one dot product per tap row, or per tap."""
    w, win, rank = ctx.w, g.window, len(g.in_sp)
    cpg, opg = g.channels // g.groups, g.out_channels // g.groups
    first, count = block
    dot = require_dot(ctx)
    merge = g.groups == 1 and win.dilations[-1] == 1
    looped = rank - 1 if merge else rank
    end = count if first == "0" else f"{first} + {count}"
    with w.block(f"for (int32_t oc = {first}; oc < {end}; ++oc)"), ExitStack() as taps:
        group = f" + (oc / {opg}) * {cpg}" if g.groups > 1 else ""
        w.line(f"const int8_t *const xg = xs{group};")
        lo = " + ".join(f"lo{d} * {k_st[d]}" for d in range(rank))
        w.line(f"const int8_t *const wg = {ctx.ins[1]} + oc * {math.prod(g.kernel) * cpg} + "
               f"{lo or '0'};")
        w.line("int32_t acc = 0;")
        for d in range(looped):
            taps.enter_context(w.block(f"for (int32_t k{d} = 0; k{d} < m{d}; ++k{d})"))
        xi = " + ".join(f"k{d} * {win.dilations[d] * x_st[d]}" for d in range(looped))
        wi = " + ".join(f"k{d} * {k_st[d]}" for d in range(looped))
        n = f"m{rank - 1} * {cpg}" if merge else str(cpg)
        w.line(f"acc += {dot}(xg + {xi or '0'}, wg + {wi or '0'}, {n}, {q.input_offset}, "
               f"{q.filter_offset});")
        taps.close()
        w.line(f"accs[{_minus('oc', first)}] = acc;")


def _minus(a: str, b: str) -> str:
    return a if b == "0" else f"{a} - {b}"


def _ceil_div(num: str, den: int) -> str:
    """C for num / den rounded up, for num >= 0 (rounded towards 0 when num < 0)."""
    return num if den == 1 else f"({num} + {den - 1}) / {den}"


def _flat(names: list[str], shape: tuple[int, ...]) -> str:
    st = [math.prod(shape[d + 1:]) for d in range(len(shape))]
    return offset_expr(list(names), tuple(st)) if names else "0"


def _zero_point(node: Node, ctx, k: int, count: int, index: str, what: str) -> str:
    """C value of zero-point input k: "0" when omitted, one value, or `count` values at `index`."""
    v = node.input(k)
    if v is None:
        return "0"
    if v.type.size == 1:
        return f"(int32_t){ctx.ins[k]}[0]"
    if v.type.size != count or v.type.rank != 1:
        raise fail(node, f"{what} must hold 1 or {count} values, got {v.type}")
    return f"(int32_t){ctx.ins[k]}[{index}]"


def _check_zero_point(node: Node, k: int, count: int, what: str, of: int) -> None:
    v = node.input(k)
    if v is None:
        return
    if v.type.dtype != node.inputs[of].type.dtype:
        raise fail(node, f"{what} is {v.type.dtype}, its tensor {node.inputs[of].type.dtype}")
    if v.type.size not in (1, count) or (v.type.size != 1 and v.type.rank != 1):
        raise fail(node, f"{what} must hold 1 or {count} values, got {v.type}")


def _check_scale(node: Node, k: int, count: int, what: str) -> None:
    v = node.input(k)
    if v is None:
        raise fail(node, f"needs input {k} ({what})")
    if v.type.dtype != dt.F32:
        make = unsupported if v.type.dtype.is_float else fail
        raise make(node, f"{what} of element type {v.type.dtype} is not supported (float32 is)")
    if v.type.size not in (1, count) or (v.type.size != 1 and v.type.rank != 1):
        raise fail(node, f"{what} must hold 1 or {count} values, got {v.type}")


def _scale(node: Node, ctx, scales: tuple[int, int, int], index: str) -> str:
    """onnxruntime's requantization scale in float: a_scale * b_scale[index] / y_scale."""
    a, b, y = (ctx.ins[k] for k in scales)
    b_at = f"{b}[{index}]" if node.inputs[scales[1]].type.size > 1 else f"{b}[0]"
    return f"({a}[0] * {b_at} / {y}[0])"


def _requantize(node: Node, ctx, scale: str, zp_k: int) -> str:
    """onnxruntime's requantization of `acc` by the float `scale`, then the rounding."""
    out = node.outputs[0].type.dtype
    lo, hi = (-128, 127) if out == dt.I8 else (0, 255)
    zp = _zero_point(node, ctx, zp_k, 1, "0", "y_zero_point")
    ctx.require("ember_fixed_point", FIXED_POINT_C)
    ctx.require("ember_fclamp", FCLAMP_C)
    return f"({out.c})" + emit_quantize_value(f"(float)acc * {scale}", lo, hi, zp, False)


@register_op("ConvInteger", "QLinearConv")
class ConvInteger(OpDef):
    def _geometry(self, node: Node) -> _IntConv:
        return _int_conv(node, 0, 1 if node.op == "ConvInteger" else 3, False)

    def infer(self, node: Node) -> list[TensorType]:
        g = self._geometry(node)
        if node.op == "ConvInteger":
            _check_zero_point(node, 2, 1, "x_zero_point", 0)
            _check_zero_point(node, 3, g.out_channels, "w_zero_point", 1)
            return [TensorType(dt.I32, g.out_shape())]
        for k, what in ((1, "x_scale"), (4, "w_scale"), (6, "y_scale")):
            _check_scale(node, k, g.out_channels if k == 4 else 1, what)
        _check_zero_point(node, 2, 1, "x_zero_point", 0)
        _check_zero_point(node, 5, g.out_channels, "w_zero_point", 3)
        y_zp = node.input(7)
        out = y_zp.type.dtype if y_zp is not None else dt.U8
        if y_zp is not None and y_zp.type.size != 1:
            raise fail(node, f"y_zero_point must be one value, got {y_zp.type}")
        b = node.input(8)
        if b is not None and (b.type.dtype != dt.I32 or b.type.shape != (g.out_channels,)):
            raise fail(node, f"bias must be int32[{g.out_channels}], got {b.type}")
        return [TensorType(out, g.out_shape())]

    def flops(self, node: Node) -> int:
        g = self._geometry(node)
        return 2 * g.batch * g.out_channels * math.prod(g.out_sp) * math.prod(g.kernel) \
            * (g.channels // g.groups)

    def lower(self, node: Node, ctx) -> None:
        g = self._geometry(node)
        qlinear = node.op == "QLinearConv"
        xk, wk, xz, wz = (0, 3, 2, 5) if qlinear else (0, 1, 2, 3)
        x_zp = _zero_point(node, ctx, xz, 1, "0", "x_zero_point")
        x_in = ctx.ins[xk]
        bias = ctx.ins[8] if qlinear and node.input(8) is not None else None
        weights = _centered_weights(node, wk, wz)
        geo = None if weights is None else \
            gemm_geometry(g.batch, g.channels, g.out_channels, g.groups, g.in_sp, g.window)
        if geo is not None:
            emit_gemm_conv(ctx, geo, x_in, x_zp, weights, wk,
                           (lambda oc: _scale(node, ctx, (1, 4, 6), oc)) if qlinear else None,
                           lambda acc: self._finish(node, ctx, bias, "sc[oc]"))
            return
        w_zp = _zero_point(node, ctx, wz, g.out_channels, "oc", "w_zero_point")
        w_in = ctx.ins[wk]
        _emit_int_conv(ctx, g, lambda i: f"((int32_t){x_in}[{i}] - {x_zp})",
                       lambda i: f"((int32_t){w_in}[{i}] - {w_zp})",
                       lambda acc: self._finish(node, ctx, bias, _scale(node, ctx, (1, 4, 6), "oc")
                                                if qlinear else ""))

    @staticmethod
    def _finish(node: Node, ctx, bias: str | None, scale: str) -> str:
        """The value stored for the sum `acc` of output channel `oc`."""
        if node.op == "ConvInteger":
            return "acc"
        if bias is not None:
            ctx.w.line(f"acc += {bias}[oc];")
        return _requantize(node, ctx, scale, 7)


def _centered_weights(node: Node, wk: int, wz: int) -> np.ndarray | None:
    """Constant weights minus their constant zero points (per tensor or per output channel)
    as int16; None when either is only known at run time."""
    w, z = node.inputs[wk], node.input(wz)
    if w.const is None or (z is not None and z.const is None):
        return None
    weights = np.asarray(w.const, np.int16)
    if z is None:
        return weights
    zero = np.asarray(z.const, np.int16).reshape(-1)
    return weights - zero.reshape((-1,) + (1,) * (weights.ndim - 1))


# -- integer matrix products ------------------------------------------------------------------
@dataclass(frozen=True)
class _IntMatMul:
    batch: tuple[int, ...]
    m: int
    k: int
    n: int
    a_batch: tuple[int, ...]      # element strides of A's batch dims over `batch` (0: broadcast)
    b_batch: tuple[int, ...]
    out_shape: tuple[int, ...]


def _int_matmul(node: Node, a_k: int, b_k: int) -> _IntMatMul:
    a, b = node.input(a_k), node.input(b_k)
    if a is None or b is None:
        raise fail(node, "needs inputs A and B")
    for v in (a, b):
        if v.type.dtype not in _Q8:
            raise fail(node, f"inputs must be int8 or uint8, got {v.type.dtype}")
    sa, sb = a.type.shape, b.type.shape
    a2, b2, batch = matmul_shapes(node, sa, sb)
    m, k, n = a2[-2], a2[-1], b2[-1]
    a_batch = tuple(s * m * k for s in broadcast_strides(a2[:-2], batch))
    b_batch = tuple(s * k * n for s in broadcast_strides(b2[:-2], batch))
    out = batch + ((m,) if len(sa) > 1 else ()) + ((n,) if len(sb) > 1 else ())
    return _IntMatMul(batch, m, k, n, a_batch, b_batch, out)


@register_op("MatMulInteger", "QLinearMatMul")
class MatMulInteger(OpDef):
    def _inputs(self, node: Node) -> tuple[int, int, int, int]:
        """(A, B, A zero point, B zero point) input positions."""
        return (0, 3, 2, 5) if node.op == "QLinearMatMul" else (0, 1, 2, 3)

    def infer(self, node: Node) -> list[TensorType]:
        ak, bk, az, bz = self._inputs(node)
        p = _int_matmul(node, ak, bk)
        _check_zero_point(node, az, 1, "a_zero_point", ak)
        _check_zero_point(node, bz, p.n, "b_zero_point", bk)
        if node.op == "MatMulInteger":
            return [TensorType(dt.I32, p.out_shape)]
        for k, what in ((1, "a_scale"), (4, "b_scale"), (6, "y_scale")):
            _check_scale(node, k, p.n if k == 4 else 1, what)
        y_zp = node.input(7)
        if y_zp is not None and y_zp.type.size != 1:
            raise fail(node, f"y_zero_point must be one value, got {y_zp.type}")
        return [TensorType(y_zp.type.dtype if y_zp is not None else dt.U8, p.out_shape)]

    def flops(self, node: Node) -> int:
        ak, bk, _, _ = self._inputs(node)
        p = _int_matmul(node, ak, bk)
        return 2 * math.prod(p.batch) * p.m * p.n * p.k

    def lower(self, node: Node, ctx) -> None:
        ak, bk, az, bz = self._inputs(node)
        p = _int_matmul(node, ak, bk)
        w = ctx.w
        a, b = ctx.ins[ak], ctx.ins[bk]
        a_zp = _zero_point(node, ctx, az, 1, "0", "a_zero_point")
        b_zp = _zero_point(node, ctx, bz, p.n, "j", "b_zero_point")
        value = "acc" if node.op == "MatMulInteger" else \
            _requantize(node, ctx, _scale(node, ctx, (1, 4, 6), "j"), 7)
        with w.loops(p.batch, "b") as bv:
            w.line(f"const int64_t ao = {offset_expr(bv, p.a_batch)}, "
                   f"bo = {offset_expr(bv, p.b_batch)}, yo = ({_flat(bv, p.batch)}) * {p.m * p.n};")
            w.line("(void)ao; (void)bo;")
            with w.block(f"for (int64_t i = 0; i < {p.m}; ++i)"):
                with w.block(f"for (int64_t j = 0; j < {p.n}; ++j)"):
                    w.line("int32_t acc = 0;")
                    with w.block(f"for (int64_t t = 0; t < {p.k}; ++t)"):
                        w.line(f"acc += ((int32_t){a}[ao + i * {p.k} + t] - {a_zp}) * "
                               f"((int32_t){b}[bo + t * {p.n} + j] - {b_zp});")
                    w.line(f"{ctx.outs[0]}[yo + i * {p.n} + j] = {value};")


# -- TFLite numerics --------------------------------------------------------------------------
@dataclass(frozen=True)
class TflConvParams:
    """Requantization of a TFLite conv or fully-connected layer (see the module docstring)."""
    input_offset: int
    filter_offset: int
    output_offset: int
    multipliers: tuple[int, ...]      # one per output channel, or one for all
    shifts: tuple[int, ...]
    act_min: int
    act_max: int
    single_rounding: bool = False


def _finish_tfl(ctx, q: TflConvParams, channel: str, bias: str | None, out: dt.DType) -> str:
    """The C value of a finished accumulator `acc` of output channel `channel`."""
    ctx.require("ember_fixed_point", FIXED_POINT_C)
    if bias is not None:
        ctx.w.line(f"acc += {bias}[{channel}];")
    if len(q.multipliers) == 1:
        mult, shift = str(q.multipliers[0]), str(q.shifts[0])
    else:
        pm = ctx.pack_constant(np.array(q.multipliers, np.int32))
        ps = ctx.pack_constant(np.array(q.shifts, np.int32))
        mult, shift = f"{pm}[{channel}]", f"{ps}[{channel}]"
    return (f"({out.c})ember_clamp32({mbqm(q.single_rounding)}(acc, {mult}, (int){shift}) + "
            f"{q.output_offset}, "
            f"{q.act_min}, {q.act_max})")


class _Requant:
    """Finishing the accumulators of a position's channels, ACC_BLOCK channels at a time: the
    sums go to a small int32 array on the stack (`accs`, so the arena does not grow), then
    qdot.py's ember_requant_s8 requantizes the block (vectorized with MVE) with TFLite Micro's
    double rounding, or a loop does with single rounding."""

    def __init__(self, ctx, q: TflConvParams, bias: str | None, out: dt.DType,
                 channels: int) -> None:
        self.ctx, self.q, self.bias, self.out, self.channels = ctx, q, bias, out, channels
        self.block = min(ACC_BLOCK, depthwise_acc_len(channels))
        ctx.w.line(f"int32_t accs[{self.block}];")
        if not q.single_rounding:
            self.call = require_requant(ctx)
            m, sh = (np.broadcast_to(np.array(v, np.int32), (channels,))
                     for v in (q.multipliers, q.shifts))
            self.mult, self.shift = ctx.pack_constant(m), ctx.pack_constant(sh)

    @contextmanager
    def blocks(self, y: str) -> Iterator[tuple[str, str]]:
        """The loop over channel blocks (none when one block holds them all); yields the C
        first channel and count of the block, whose sums the body leaves in accs[0 .. count);
        their outputs then go to y[first ...]."""
        w, q = self.ctx.w, self.q
        with ExitStack() as loop:
            if self.channels <= self.block:
                first, count = "0", str(self.channels)
            else:
                first, count = "cb", "nb"
                loop.enter_context(w.block(f"for (int32_t cb = 0; cb < {self.channels}; "
                                           f"cb += {self.block})"))
                w.line(f"const int32_t nb = {self.channels} - cb < {self.block} ? "
                       f"{self.channels} - cb : {self.block};")
            yield first, count
            at = (lambda ptr: ptr) if first == "0" else (lambda ptr: f"{ptr} + {first}")
            if not q.single_rounding:
                w.line(f"{self.call}({at(y)}, accs, {at(self.bias) if self.bias else '0'}, "
                       f"{at(self.mult)}, {at(self.shift)}, {count}, {q.output_offset}, "
                       f"{q.act_min}, {q.act_max});")
                return
            with w.block(f"for (int32_t c = 0; c < {count}; ++c)"):
                w.line("int32_t acc = accs[c];")
                channel = "c" if first == "0" else f"{first} + c"
                w.line(f"{y}[{channel}] = {_finish_tfl(self.ctx, q, channel, self.bias, self.out)};")


def _check_tfl(node: Node, q: TflConvParams, channels: int) -> None:
    if len(q.multipliers) not in (1, channels) or len(q.shifts) != len(q.multipliers):
        raise fail(node, f"{len(q.multipliers)} multipliers do not fit {channels} channels")
    b = node.input(2)
    if b is not None and (b.type.dtype != dt.I32 or b.type.shape != (channels,)):
        raise fail(node, f"bias must be int32[{channels}], got {b.type}")


@register_op("TflConv2D")
class TflConv2D(OpDef):
    def check(self, node: Node) -> list[str]:
        return tfl_check(node, TflConvParams)

    def infer(self, node: Node) -> list[TensorType]:
        q = tfl_params(node, TflConvParams)
        g = _int_conv(node, 0, 1, True)
        _check_tfl(node, q, g.out_channels)
        return [TensorType(node.inputs[0].type.dtype, g.out_shape())]

    def flops(self, node: Node) -> int:
        g = _int_conv(node, 0, 1, True)
        return 2 * g.batch * g.out_channels * math.prod(g.out_sp) * math.prod(g.kernel) \
            * (g.channels // g.groups)

    def lower(self, node: Node, ctx) -> None:
        q = tfl_params(node, TflConvParams)
        g = _int_conv(node, 0, 1, True)
        x, wt = ctx.ins[0], ctx.ins[1]
        bias = ctx.ins[2] if node.input(2) is not None else None
        out = node.outputs[0].type.dtype
        if _fast_tfl_conv(node, g):
            _emit_tfl_conv(node, ctx, g, q, bias)
            return
        _emit_int_conv(ctx, g, lambda i: f"((int32_t){x}[{i}] + {q.input_offset})",
                       lambda i: f"((int32_t){wt}[{i}] + {q.filter_offset})",
                       lambda acc: _finish_tfl(ctx, q, "oc", bias, out))


@register_op("TflFullyConnected")
class TflFullyConnected(OpDef):
    def check(self, node: Node) -> list[str]:
        return tfl_check(node, TflConvParams)

    def _shape(self, node: Node) -> tuple[int, int, int]:
        x, w = node.input(0), node.input(1)
        if x is None or w is None or x.type.rank != 2 or w.type.rank != 2:
            raise fail(node, "needs rows [R, D] and weights [U, D]")
        if x.type.shape[1] != w.type.shape[1]:
            raise fail(node, f"rows {x.type} do not fit weights {w.type}")
        for v in (x, w):
            if v.type.dtype not in _Q8:
                raise fail(node, f"operands must be int8 or uint8, got {v.type.dtype}")
        return x.type.shape[0], x.type.shape[1], w.type.shape[0]

    def infer(self, node: Node) -> list[TensorType]:
        q = tfl_params(node, TflConvParams)
        rows, _, units = self._shape(node)
        _check_tfl(node, q, units)
        return [TensorType(node.inputs[0].type.dtype, (rows, units))]

    def flops(self, node: Node) -> int:
        rows, depth, units = self._shape(node)
        return 2 * rows * depth * units

    def lower(self, node: Node, ctx) -> None:
        q = tfl_params(node, TflConvParams)
        rows, depth, units = self._shape(node)
        w = ctx.w
        x, wt = ctx.ins[0], ctx.ins[1]
        bias = ctx.ins[2] if node.input(2) is not None else None
        out = node.outputs[0].type.dtype
        types = [node.inputs[0].type, node.inputs[1].type]
        if not (all(t.dtype == dt.I8 for t in types) and max(t.size for t in types) < 2 ** 31):
            with w.block(f"for (int64_t r = 0; r < {rows}; ++r)"):
                with w.block(f"for (int64_t u = 0; u < {units}; ++u)"):
                    w.line("int32_t acc = 0;")
                    with w.block(f"for (int64_t d = 0; d < {depth}; ++d)"):
                        w.line(f"acc += ((int32_t){wt}[u * {depth} + d] + {q.filter_offset}) "
                               f"* ((int32_t){x}[r * {depth} + d] + {q.input_offset});")
                    w.line(f"{ctx.outs[0]}[r * {units} + u] = "
                           f"{_finish_tfl(ctx, q, 'u', bias, out)};")
            return
        dot = require_dot(ctx)
        rq = _Requant(ctx, q, bias, out, units)
        with w.block(f"for (int32_t r = 0; r < {rows}; ++r)"):
            w.line(f"int8_t *const ys = {ctx.outs[0]} + r * {units};")
            with rq.blocks("ys") as (first, count):
                end = count if first == "0" else f"{first} + {count}"
                with w.block(f"for (int32_t u = {first}; u < {end}; ++u)"):
                    w.line(f"accs[{_minus('u', first)}] = {dot}({x} + r * {depth}, {wt} + u * {depth}, "
                           f"{depth}, {q.input_offset}, {q.filter_offset});")
