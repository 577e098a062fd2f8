"""Conv and ConvTranspose: direct convolution in 1-, 2- and 3-D with groups, dilations and pads.

The shape and attribute logic (`conv_geometry`) is apart from the loop nest
(`emit_direct_conv`), so a faster lowering (packed GEMM, microkernels, Winograd) can take
over the cases it handles and reuse the geometry.

The loop nest: for each (image, output channel) an accumulator plane starts at the bias;
each (input channel, kernel tap) then adds weight * input over the positions where that tap
lands inside the input. Those ranges are computed once per tap, so the inner loop has no
padding test and walks contiguous memory. ConvTranspose is the same nest with input and
output swapped: it scatters where Conv gathers. The finished plane goes out through
ctx.store, which applies a fused epilogue.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import offset_expr, strides
from ember.lower.parallel import part_loop, part_slot
from ember.ops.conv_direct import direct_conv_applies, emit_conv_direct
from ember.ops.conv_gemm import conv_gemm_applies, emit_conv_gemm
from ember.ops.conv_pointwise import emit_conv_pointwise, pointwise_direct_applies
from ember.ops.conv_winograd import emit_conv_winograd, winograd_applies
from ember.ops.conv_winograd2 import emit_conv_winograd2, winograd2_applies
from ember.ops.depthwise import emit_depthwise, is_depthwise
from ember.ops.registry import OpDef, fail, register_op
from ember.ops.window import (Window, check_kernel, emit_valid_range, int_attr, linear,
                              sliding_window, spatial_rank, transposed_window)
from ember.render.cwriter import CWriter


@dataclass(frozen=True)
class ConvGeometry:
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_sp: tuple[int, ...]
    window: Window
    transposed: bool
    has_bias: bool

    @property
    def out_sp(self) -> tuple[int, ...]:
        return self.window.out

    @property
    def pointwise(self) -> bool:
        """1x1, stride 1, unpadded, one group: a matrix product per image."""
        win = self.window
        return (self.groups == 1 and all(k == 1 for k in win.kernel)
                and all(s == 1 for s in win.strides) and not any(win.pads_begin + win.pads_end)
                and self.out_sp == self.in_sp)

    @property
    def depthwise(self) -> bool:
        """A group per input channel, one output channel each."""
        return self.groups == self.in_channels == self.out_channels > 1

    def macs(self) -> int:
        """Multiply-adds: every (input, output) channel pair of a group meets at every tap."""
        pairs = self.in_channels * self.out_channels // self.groups
        positions = math.prod(self.in_sp if self.transposed else self.out_sp)
        return self.batch * pairs * positions * math.prod(self.window.kernel)


def conv_geometry(node: Node) -> ConvGeometry:
    """Check Conv/ConvTranspose inputs and attributes; the sizes the kernel needs."""
    transposed = node.op == "ConvTranspose"
    x, w, b = node.input(0), node.input(1), _bias(node)
    if x is None or w is None:
        raise fail(node, "needs an input X and weights W")
    xs, ws = x.type.shape, w.type.shape
    rank = spatial_rank(node, xs)
    if len(ws) != len(xs):
        raise fail(node, f"weights of shape {list(ws)} do not fit an input of rank {len(xs)}")
    if w.type.dtype != x.type.dtype:
        raise fail(node, f"weights are {w.type.dtype}, the input {x.type.dtype}")
    group = int(node.attrs.get("group", 1))
    if group < 1:
        raise fail(node, f"group must be >= 1, got {group}")
    channels, kernel = xs[1], tuple(ws[2:])
    check_kernel(node, kernel, rank)
    if channels % group:
        raise fail(node, f"{channels} input channels do not split into {group} groups")
    if transposed:
        if ws[0] != channels:
            raise fail(node, f"weights have {ws[0]} input channels, the input has {channels}")
        out_channels = ws[1] * group
        output_shape = node.attrs.get("output_shape")
        if output_shape is not None and len(output_shape) != rank:
            raise fail(node, f"output_shape has {len(output_shape)} values, expected {rank}")
        window = transposed_window(node, xs[2:], kernel,
                                   int_attr(node, "output_padding", rank, 0, 0), output_shape)
    else:
        out_channels = ws[0]
        if ws[1] * group != channels:
            raise fail(node, f"weights have {ws[1]} input channels per group; the input has "
                       f"{channels} channels in {group} group(s)")
        if out_channels % group:
            raise fail(node, f"{out_channels} output channels do not split into {group} groups")
        window = sliding_window(node, xs[2:], kernel)
    if b is not None and (b.type.shape != (out_channels,) or b.type.dtype != x.type.dtype):
        raise fail(node, f"bias must be {x.type.dtype}[{out_channels}], got {b.type}")
    return ConvGeometry(xs[0], channels, out_channels, group, tuple(xs[2:]), window,
                        transposed, b is not None)


def _bias(node: Node):
    """Input 2, unless it is absent and the inputs there feed a fused epilogue."""
    epilogue = node.attrs.get("epilogue")
    extra = len(epilogue.input_types) - 1 if epilogue is not None else 0
    return node.input(2) if len(node.inputs) - extra > 2 else None


@register_op("Conv", "ConvTranspose")
class Conv(OpDef):
    dtypes = dt.FLOATS
    accepts_epilogue = True

    def infer(self, node: Node) -> list[TensorType]:
        g = conv_geometry(node)
        return [TensorType(node.inputs[0].type.dtype, (g.batch, g.out_channels) + g.out_sp)]

    def flops(self, node: Node) -> int:
        g = conv_geometry(node)
        bias = g.batch * g.out_channels * math.prod(g.out_sp) if g.has_bias else 0
        return 2 * g.macs() + bias

    def lower(self, node: Node, ctx) -> None:
        g = conv_geometry(node)
        # One input channel and one group is "depthwise" too, but as a GEMM its many output
        # channels share each packed input element (DS-CNN's first conv: 1.35x quicker).
        if is_depthwise(g) and g.groups > 1 and node.inputs[0].type.dtype == dt.F32:
            emit_depthwise(ctx, g)
            return
        if direct_conv_applies(node, g, ctx.schedule.vector_bytes):
            emit_conv_direct(ctx, g)
            return
        if pointwise_direct_applies(node, g, ctx.schedule.vector_bytes):
            emit_conv_pointwise(ctx, g)
            return
        if winograd_applies(node, g):
            emit_conv_winograd(ctx, g)
            return
        if winograd2_applies(node, g):
            emit_conv_winograd2(ctx, g)
            return
        if conv_gemm_applies(node, g):
            emit_conv_gemm(ctx, g)
            return
        emit_direct_conv(ctx, g)


def emit_direct_conv(ctx, g: ConvGeometry) -> None:
    """The direct-convolution loop nest (see the module docstring)."""
    w, win = ctx.w, g.window
    T = ctx.node.inputs[0].type.dtype
    c_in, c_out, groups = g.in_channels, g.out_channels, g.groups
    cg, mg = c_in // groups, c_out // groups
    in_plane, out_plane = math.prod(g.in_sp), math.prod(g.out_sp)
    planes = g.batch * c_out
    if planes * out_plane == 0:
        return
    ksize, rank = math.prod(win.kernel), len(g.in_sp)
    # The loops run t over the "dense" buffer's positions; the tap lands at t*stride + offset
    # in the "strided" one. Conv: dense = output (acc), strided = input; transposed: swapped.
    dense_sp, strided_sp = (g.in_sp, g.out_sp) if g.transposed else (g.out_sp, g.in_sp)
    threads = ctx.schedule.threads
    parallel = threads > 1 and planes > 1
    scratch = ctx.request_scratch((threads if parallel else 1) * out_plane * T.itemsize)
    x, wt = ctx.ins[0], ctx.ins[1]
    with part_loop(ctx, "nm", planes):
        w.line(f"const int64_t n = nm / {c_out}, m = nm % {c_out}, g = m / {mg};")
        mine = f" + {part_slot(ctx)} * {out_plane}" if parallel else ""
        w.line(f"{T.c} *restrict acc = ({T.c} *){scratch}{mine};")
        bias = f"{ctx.ins[2]}[m]" if g.has_bias else f"({T.c})0"
        with w.loops((out_plane,), "z") as (z,):
            w.line(f"acc[{z}] = {bias};")
        with w.block(f"for (int64_t c = 0; c < {cg}; ++c)"):
            w.line(f"const {T.c} *restrict xp = {x} + (n * {c_in} + g * {cg} + c) * {in_plane};")
            w_off = (f"((g * {cg} + c) * {mg} + m % {mg}) * {ksize}" if g.transposed
                     else f"(m * {cg} + c) * {ksize}")
            w.line(f"const {T.c} *restrict wp = {wt} + {w_off};")
            dense, strided = ("xp", "acc") if g.transposed else ("acc", "xp")
            _tap_loops(w, T.c, win, dense_sp, strided_sp, dense, strided)
        out_vars = [f"o{d}" for d in range(rank)]
        with w.loops(g.out_sp, "o"):
            flat = offset_expr(out_vars, strides(g.out_sp))
            ctx.store(["n", "m"] + out_vars, f"nm * {out_plane} + {flat}", f"acc[{flat}]")


def _tap_loops(w: CWriter, ctype: str, win: Window, dense_sp: tuple[int, ...],
               strided_sp: tuple[int, ...], dense: str, strided: str) -> None:
    """for each tap k: for each t in its valid range: acc[...] += wv * x[...]."""
    rank = len(dense_sp)
    dense_st, strided_st = strides(dense_sp), strides(strided_sp)
    kvars = [f"k{d}" for d in range(rank)]
    with contextlib.ExitStack() as loops:
        for d in range(rank):
            loops.enter_context(w.block(f"for (int64_t k{d} = 0; k{d} < {win.kernel[d]}; ++k{d})"))
            emit_valid_range(w, f"r{d}", dense_sp[d], win.strides[d],
                             linear([(f"k{d}", win.dilations[d])], -win.pads_begin[d]),
                             strided_sp[d])
        w.line(f"const {ctype} wv = wp[{offset_expr(kvars, strides(win.kernel))}];")
        a = b = None        # flat offsets of the current row in the dense and strided buffers
        for d in range(rank):
            t, s = f"t{d}", win.strides[d]
            loops.enter_context(w.block(f"for (int64_t {t} = r{d}_lo; {t} < r{d}_hi; ++{t})"))
            dense_at = linear([(a, 1), (t, dense_st[d])])
            strided_at = linear([(b, 1), (t, s * strided_st[d]), (f"r{d}_o", strided_st[d])])
            if d < rank - 1:
                w.line(f"const int64_t a{d} = {dense_at}, b{d} = {strided_at};")
                a, b = f"a{d}", f"b{d}"
            elif dense == "acc":
                w.line(f"acc[{dense_at}] += wv * {strided}[{strided_at}];")
            else:
                w.line(f"{strided}[{strided_at}] += wv * {dense}[{dense_at}];")
