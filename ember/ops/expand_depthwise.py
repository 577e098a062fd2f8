"""ExpandDepthwiseConv: a 1x1 convolution and the 3x3 depthwise convolution that reads it, in
one kernel (an internal op, made by passes/fuse_expand_depthwise.py).

MobileNetV2's blocks expand a map 6x in channels (16 -> 96 at 112x112: 4.8 MB), then a
depthwise conv reads it back; as two kernels the expanded map goes out to L3 and back. Here
each thread walks its band of output rows in order and expands only the input rows the
depthwise taps next, into a ring of three rows (every channel of a row: the rows oh*s - 1,
oh*s, oh*s + 1 of output row oh land in distinct slots r % 3), so the expanded map never
leaves L2. A band's first output row expands its upper neighbour too (rows are shared by
consecutive output rows, not across bands).

    inputs   0: x f32[N, Cin, H, W]   1: expand weights f32[C, Cin]   2 (optional): their
             bias f32[C]   3: depthwise weights f32[C, 9] (3x3, row-major)   4 (optional):
             their bias f32[C]
    attrs    stride (1 or 2; pads 1 on every side, dilation 1), act_min, act_max: the clamp
             applied to the expanded values (an absorbed Relu or Clip; +-inf for none)
    output   f32[N, C, OH, OW], OH = (H - 1) // stride + 1 (OW alike)

A ring row holds one channel's expanded row with zero columns either side (the depthwise's
padding): at stride 1 column j at 1 + j; at stride 2 split by parity, even columns first and
the odd ones after a zero (column -1), so each tap of a vector of outputs is a whole vector
load. The expansion runs in register blocks of CO channels x NV vectors of columns (per input
channel NV vectors and CO broadcast weights); the depthwise sums a row per channel into a
small buffer, which goes out through ctx.store (the fused epilogue) in its own loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.parallel import part_loop, part_slot
from ember.ops.registry import OpDef, fail, register_op
from ember.ops.window_plane import (LANES, MASK, VEC, emit_broadcast_fmas, emit_vector_types,
                                    splat)
from ember.render.cwriter import c_float

#: expansion register block: channels x column vectors (12 sums, as conv_pointwise's)
CO, NV = 6, 2


@dataclass(frozen=True)
class ExpandGeometry:
    batch: int
    in_channels: int
    channels: int
    in_h: int
    in_w: int
    stride: int
    act: tuple[float, float]
    has_expand_bias: bool
    has_depthwise_bias: bool

    @property
    def out_h(self) -> int:
        return (self.in_h - 1) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.in_w - 1) // self.stride + 1

    @property
    def flops(self) -> int:
        expand = self.batch * self.channels * self.in_h * self.in_w * 2 * self.in_channels
        return expand + self.batch * self.channels * self.out_h * self.out_w * 2 * 9

    @property
    def out_vec(self) -> int:
        """Output columns the depthwise computes: whole vectors."""
        return -(-self.out_w // LANES) * LANES

    @property
    def row_floats(self) -> int:
        """One channel's row in the ring: the columns (split by parity at stride 2) with
        their zero borders, wide enough for the last vector's taps."""
        if self.stride == 1:
            return _round(self.out_vec + 2)
        return 2 * _round(self.out_vec + 1)

    @property
    def odd_at(self) -> int:
        """Stride 2: where the odd columns' part of a row starts (its zero column -1)."""
        return self.row_floats // 2


def _round(n: int, to: int = 16) -> int:
    return -(-n // to) * to


def expand_geometry(node: Node) -> ExpandGeometry:
    """Check the inputs and attributes; the sizes the kernel needs."""
    x = node.input(0)
    if x is not None and (x.type.rank != 4 or x.type.dtype is not dt.F32):
        raise fail(node, f"x must be float32 [N, C, H, W], got {x.type}")
    return checked_geometry(node, *(x.type.shape if x is not None else (0, 0, 0, 0)))


def checked_geometry(node: Node, batch: int, cin: int, h: int, w: int) -> ExpandGeometry:
    """The geometry of an expansion of x (`batch` images of `cin` channels, h x w) into a
    depthwise conv, its weights, biases and attributes checked (both layouts' ops)."""
    x, we, be, wd, bd = (node.input(k) for k in range(5))
    if x is None or we is None or wd is None:
        raise fail(node, "needs an input x, expand weights and depthwise weights")
    if not we.is_const or (be is not None and not be.is_const):
        raise fail(node, "the expand weights and bias must be constants (they are packed)")
    c = we.type.shape[0] if we.type.rank == 2 else -1
    if we.type.shape != (c, cin) or wd.type.shape != (c, 9):
        raise fail(node, f"weights must be [C, {cin}] and [C, 9], got {list(we.type.shape)} "
                   f"and {list(wd.type.shape)}")
    for name, b in (("expand bias", be), ("depthwise bias", bd)):
        if b is not None and b.type.shape != (c,):
            raise fail(node, f"{name} must be [{c}], got {list(b.type.shape)}")
    stride = int(node.attrs.get("stride", 1))
    if stride not in (1, 2):
        raise fail(node, f"stride must be 1 or 2, got {stride}")
    act = (float(node.attrs.get("act_min", -math.inf)), float(node.attrs.get("act_max", math.inf)))
    return ExpandGeometry(batch, cin, c, h, w, stride, act, be is not None, bd is not None)


@register_op("ExpandDepthwiseConv")
class ExpandDepthwiseConv(OpDef):
    dtypes = (dt.F32,)
    accepts_epilogue = True

    def infer(self, node: Node) -> list[TensorType]:
        g = expand_geometry(node)
        return [TensorType(dt.F32, (g.batch, g.channels, g.out_h, g.out_w))]

    def flops(self, node: Node) -> int:
        return expand_geometry(node).flops

    def lower(self, node: Node, ctx) -> None:
        g = expand_geometry(node)
        if g.batch * g.channels * g.out_h * g.out_w == 0:
            return
        w = ctx.w
        blocks = -(-g.channels // CO)
        weights = np.zeros((blocks * CO, g.in_channels), np.float32)
        weights[:g.channels] = node.inputs[1].const
        packed = ctx.pack_constant(
            weights.reshape(blocks, CO, g.in_channels).transpose(0, 2, 1), replaces=1)
        bias = None
        if g.has_expand_bias:
            padded = np.zeros(blocks * CO, np.float32)
            padded[:g.channels] = node.inputs[2].const
            bias = ctx.pack_constant(padded, replaces=2)
        emit_vector_types(w)
        slot = g.channels * g.row_floats

        def declarations() -> None:
            w.line(f"float *restrict sums = ring + {4 * slot};")
            w.line(f"const float *restrict xn = {ctx.ins[0]} + n * "
                   f"{g.in_channels * g.in_h * g.in_w};")

        def expand_row() -> None:
            w.line(f"const float *restrict xr = xn + next * {g.in_w};")
            _emit_expand_row(ctx, g, packed, bias)
        emit_ring_walk(ctx, g, slot, g.out_vec, declarations, expand_row,
                       lambda: _emit_depthwise_row(ctx, g, ["e0", "e1", "e2"]))


def emit_ring_walk(ctx, g: ExpandGeometry, slot: int, extra: int, declarations: Callable,
                   expand_row: Callable, depthwise_row: Callable) -> None:
    """The walk over output rows both layouts' kernels share. Each part (a band of output
    rows of image n per thread) has `ring` (three rows of `slot` floats, a zero row, then
    `extra` floats of its own) in scratch and runs declarations(); per output row oh,
    expand_row() writes each input row `next` the taps reach first into ring row `e`, then
    depthwise_row() reads e0..e2, its three rows (the zero row outside the image)."""
    w = ctx.w
    per_part = 4 * slot + extra
    bands = threads = ctx.schedule.threads     # a band of output rows per thread and image
    scratch = ctx.request_scratch(4 * threads * per_part)
    with part_loop(ctx, "it", g.batch * bands):
        mine = f" + {part_slot(ctx)} * {per_part}" if threads > 1 else ""
        w.line(f"float *restrict ring = (float *){scratch}{mine};")
        w.line(f"const float *restrict zero = ring + {3 * slot};")
        w.line(f"memset(ring, 0, sizeof(float) * {4 * slot});")
        w.line(f"const int64_t n = it / {bands}, band = it % {bands};")
        w.line(f"const int64_t oh0 = band * {g.out_h} / {bands}, "
               f"oh1 = (band + 1) * {g.out_h} / {bands};")
        declarations()
        w.line(f"int64_t next = oh0 * {g.stride} - 1 < 0 ? 0 : oh0 * {g.stride} - 1;")
        with w.block("for (int64_t oh = oh0; oh < oh1; ++oh)"):
            with w.block(f"for (; next <= oh * {g.stride} + 1 && next < {g.in_h}; ++next)"):
                w.line(f"float *restrict e = ring + next % 3 * {slot};")
                expand_row()
            for a in range(3):
                r = f"oh * {g.stride} + {a - 1}"
                w.line(f"const float *restrict e{a} = {r} < 0 || {r} >= {g.in_h} ? zero : "
                       f"ring + ({r}) % 3 * {slot};")
            depthwise_row()


def _emit_expand_row(ctx, g: ExpandGeometry, packed: str, bias: str | None) -> None:
    """Expand input row `xr` (rows of every input channel, H*W apart) into ring row `e`:
    every channel, clamped, at its column's place. Columns in blocks of NV vectors, then one
    vector, then one by one."""
    w = ctx.w
    full = g.in_w // (NV * LANES) * NV * LANES
    vectors = g.in_w // LANES * LANES
    blocks = -(-g.channels // CO)
    with w.block(f"for (int64_t cb = 0; cb < {blocks}; ++cb)"):
        w.line(f"const float *restrict wb = {packed} + cb * {CO * g.in_channels};")
        if bias:
            w.line(f"const float *restrict bb = {bias} + cb * {CO};")
        w.line(f"const int64_t co = cb * {CO};")
        for lo, hi, nv in ((0, full, NV), (full, vectors, 1)):
            if lo < hi:
                with w.block(f"for (int64_t p = {lo}; p < {hi}; p += {nv * LANES})"):
                    _emit_expand_block(ctx, g, nv, bias)
        if vectors < g.in_w:
            with w.block(f"for (int64_t p = {vectors}; p < {g.in_w}; ++p)"), \
                    w.block(f"for (int64_t i = 0; i < {CO} && co + i < {g.channels}; ++i)"):
                w.line("float s = 0.0f;")
                with w.block(f"for (int64_t ci = 0; ci < {g.in_channels}; ++ci)"):
                    w.line(f"s += wb[ci * {CO} + i] * xr[ci * {g.in_h * g.in_w} + p];")
                value = clamped(g, f"s + bb[i]" if bias else "s", vector=False)
                at = "1 + p" if g.stride == 1 else f"(p % 2 ? {g.odd_at} + 1 + p / 2 : p / 2)"
                w.line(f"e[(co + i) * {g.row_floats} + {at}] = {value};")


def _emit_expand_block(ctx, g: ExpandGeometry, nv: int, bias: str | None) -> None:
    """CO channels from co x nv vectors of columns from p, into the ring row."""
    w = ctx.w
    sums = [[f"s{i}_{v}" for v in range(nv)] for i in range(CO)]
    # the sums start at the bias (packed per block, zero past the channels)
    w.line(f"{VEC} " + ", ".join(f"{s} = {splat(f'bb[{i}]') if bias else splat('0.0f')}"
                                 for i, r in enumerate(sums) for s in r) + ";")
    with w.block(f"for (int64_t ci = 0; ci < {g.in_channels}; ++ci)"):
        emit_broadcast_fmas(w, f"(xr + ci * {g.in_h * g.in_w} + p)", nv,
                            f"(wb + ci * {CO})", CO, sums)
    for i in range(CO):
        with w.block(f"if (co + {i} < {g.channels})"):
            values = [clamped(g, s, vector=True) for s in sums[i]]
            _emit_vector_place(w, g, f"e + (co + {i}) * {g.row_floats}", values)


def clamped(g: ExpandGeometry, value: str, vector: bool) -> str:
    """`value` clamped to the absorbed activation's bounds as Clip and Relu compute it
    (x < lo ? lo : x, then x > hi ? hi : x: NaN passes)."""
    lo, hi = g.act
    for bound, beyond in ((lo, "<"), (hi, ">")):
        if not math.isfinite(bound):
            continue
        b = c_float(bound, "float")
        if vector:
            v, limit = f"({value})", splat(b)
            mask = f"({v} {beyond} {limit})"
            value = f"({VEC})(({mask} & ({MASK}){limit}) | (~{mask} & ({MASK}){v}))"
        else:
            value = f"(({value}) {beyond} {b} ? {b} : ({value}))"
    return value


def _emit_vector_place(w, g: ExpandGeometry, row: str, values: list[str]) -> None:
    """Store NV vectors of consecutive columns from p into a ring row (stride 2: split by
    parity, so each pair of vectors gives one vector of even and one of odd columns)."""
    names = [f"v{k}" for k in range(len(values))]
    w.line(f"const {VEC} " + ", ".join(f"{n} = {v}" for n, v in zip(names, values)) + ";")
    if g.stride == 1:
        for k, n in enumerate(names):
            w.line(f"*({VEC} *)({row} + 1 + p + {k * LANES}) = {n};")
        return
    if len(names) == 1:     # one vector: a half vector of even and one of odd columns
        half = LANES // 2
        w.line(f"typedef float ember_vh __attribute__((vector_size({4 * half}), aligned(4)));")
        for part, first in (("p / 2", 0), (f"{g.odd_at + 1} + p / 2", 1)):
            lanes = ", ".join(str(2 * i + first) for i in range(half))
            w.line(f"*(ember_vh *)({row} + {part}) = "
                   f"__builtin_shufflevector({names[0]}, {names[0]}, {lanes});")
        return
    evens = ", ".join(str(2 * i) for i in range(LANES))
    odds = ", ".join(str(2 * i + 1) for i in range(LANES))
    for k in range(0, len(names), 2):
        a, b = names[k], names[k + 1]
        at = f"p / 2 + {k // 2 * LANES}"
        w.line(f"*({VEC} *)({row} + {at}) = __builtin_shufflevector({a}, {b}, {evens});")
        w.line(f"*({VEC} *)({row} + {g.odd_at + 1} + {at}) = "
               f"__builtin_shufflevector({a}, {b}, {odds});")


def _emit_depthwise_row(ctx, g: ExpandGeometry, rows: list[str]) -> None:
    """Output row (n, oh) of every channel from ring rows e0..e2, through ctx.store."""
    w = ctx.w
    bias = f"{ctx.ins[4]}[c]" if g.has_depthwise_bias else "0.0f"
    with w.block(f"for (int64_t c = 0; c < {g.channels}; ++c)"):
        w.line(f"const float *restrict wp = {ctx.ins[3]} + c * 9;")
        w.line(f"const {VEC} " + ", ".join(f"w{t} = {splat(f'wp[{t}]')}" for t in range(9))
               + ";")
        for a, r in enumerate(rows):
            w.line(f"const float *restrict r{a} = {r} + c * {g.row_floats};")
        with w.block(f"for (int64_t ow = 0; ow < {g.out_vec}; ow += {LANES})"):
            # a partial sum per row of taps: three short chains of multiply-adds
            w.line(f"{VEC} t0 = {splat(bias)}, t1 = {splat('0.0f')}, t2 = t1;")
            for a in range(3):
                for b in range(3):
                    if g.stride == 1:
                        at = f"r{a} + ow + {b}" if b else f"r{a} + ow"
                    else:       # columns 2ow - 1, 2ow, 2ow + 1: odd[ow - 1], even[ow], odd[ow]
                        at = (f"r{a} + ow" if b == 1 else
                              f"r{a} + {g.odd_at} + ow" + (" + 1" if b == 2 else ""))
                    w.line(f"t{a} += w{a * 3 + b} * *(const {VEC} *)({at});")
            w.line(f"*({VEC} *)(sums + ow) = t0 + t1 + t2;")
        with w.block(f"for (int64_t ow = 0; ow < {g.out_w}; ++ow)"):
            at = f"((n * {g.channels} + c) * {g.out_h} + oh) * {g.out_w} + ow"
            ctx.store(["n", "c", "oh", "ow"], at, "sums[ow]")
