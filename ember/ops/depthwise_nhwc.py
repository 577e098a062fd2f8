"""NhwcDepthwiseConv and NchwcDepthwiseConv: depthwise 2-D convolution on channels-last and on
blocked NCHWc data (internal ops).

The layout pass (passes/choose_layout.py) rewrites small-map convolution regions into
channels-last form, where every tensor is a [P, C] matrix: P = N*H*W positions (row-major
over n, h, w), C channels contiguous. This op is ONNX Conv with group = C (channel multiplier
1) in that form:

    inputs   0: x f32[N*H*W, C]   1: w f32[KH*KW, C] (row ky*KW + kx: every channel's weight of
             that tap)   2 (optional): bias f32[C]
    attrs    image [N, H, W], kernel_shape [KH, KW], strides [sh, sw],
             pads [top, left, bottom, right], dilations [dh, dw]
    output   f32[N*OH*OW, C], OH = (H + top + bottom - dh*(KH-1) - 1) // sh + 1 (OW alike)

Channels contiguous make each tap a vector of 8 channels, with no padded copy and no
shuffle at any stride. Per output row (threads share the rows), the columns go in blocks of
OB positions, and per block every channel in register blocks of OB positions x CV vectors:
each tap's CV weight vectors are loaded once per OB positions, and each input column once
per row of taps, feeding every position whose taps land on it. The column
geometry is static, so each block's valid taps are known at compile time: the interior
blocks (every tap inside the row) share one branch-free loop, and the few blocks at the row's
ends are written out with only their valid taps; the valid rows of taps (ky) are a range
computed once per output row. Each block's sums go to a small L1 buffer and out through
ctx.store at once, so a fused epilogue runs in its own vectorizable loop and the output's
stores overlap the next block's multiply-adds. Channels past the last whole vector, and every
channel on a target without SIMD (`ember export`), take a plain scalar loop.

Blocked NCHWc ([N, C/8, H*W, 8], passes/choose_layout.py's large-map regions) is the same
kernel over N*C/8 images of 8 channels, each with its block's weights ([C/8, KH*KW, 8]): one
vector of channels per position, so a register block holds twice the columns (10 x 1
vectors; MobileNetV2's 32 channels at 112x112 145 against 219 us for the NCHW kernel).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.parallel import part_loop
from ember.lower.schedule import SCALAR_BYTES
from ember.ops.matmul import own_inputs
from ember.ops.registry import OpDef, fail, register_op
from ember.ops.window import emit_valid_range, int_attr
from ember.ops.window_plane import LANES, VEC, emit_in_registers, emit_vector_types, splat

#: register block: output positions x channel vectors: 10 accumulators, with the KW*CV
#: weights of a tap row and an input vector in the 16 registers (1 thread, conv + Clip,
#: us: 144ch 28x28 4x2 83 / 5x2 77 / 8x1 78 / 4x3 98; 576ch 14x14 84 / 77 / 77 / 98)
OB, CV = 5, 2


@dataclass(frozen=True)
class NhwcGeometry:
    batch: int
    in_h: int
    in_w: int
    channels: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]       # top, left, bottom, right
    dilations: tuple[int, int]
    has_bias: bool
    #: channel blocks: 1 for channels-last; NchwcDepthwiseConv's C/8 images of 8 channels
    blocks: int = 1

    @property
    def columns(self) -> int:
        """Output columns per register block: OB x CV accumulators, or twice the columns
        where a block holds one vector of channels (blocked NCHWc, 8-channel maps): 5
        accumulators would leave Zen's two 4-cycle FMA pipes idle half the time."""
        return OB if self.channels >= CV * LANES else 2 * OB

    @property
    def out_h(self) -> int:
        return self._out(0)

    @property
    def out_w(self) -> int:
        return self._out(1)

    def _out(self, d: int) -> int:
        size = (self.in_h, self.in_w)[d] + self.pads[d] + self.pads[d + 2]
        return (size - self.dilations[d] * (self.kernel[d] - 1) - 1) // self.strides[d] + 1

    @property
    def out_positions(self) -> int:
        return self.batch * self.blocks * self.out_h * self.out_w

    def valid_kx(self, ow: int) -> tuple[int, ...]:
        """The column taps of output column `ow` that land inside the input row."""
        at = ow * self.strides[1] - self.pads[1]
        return tuple(kx for kx in range(self.kernel[1])
                     if 0 <= at + kx * self.dilations[1] < self.in_w)


def nhwc_geometry(node: Node) -> NhwcGeometry:
    """Check the inputs and attributes; the sizes the kernel needs."""
    x = _operands(node)[0]
    if len(x.type.shape) != 2:
        raise fail(node, f"x must be a [N*H*W, C] matrix, got shape {list(x.type.shape)}")
    return _geometry(node, x.type.shape[1], 1, x.type.shape[0])


def nchwc_geometry(node: Node) -> NhwcGeometry:
    """NchwcDepthwiseConv's: x [N, C/8, H*W, 8], w [C/8, KH*KW, 8], bias [C]."""
    x = _operands(node)[0]
    if len(x.type.shape) != 4 or x.type.shape[3] != LANES:
        raise fail(node, f"x must be [N, C/{LANES}, H*W, {LANES}], got shape "
                   f"{list(x.type.shape)}")
    n, blocks, hw, _ = x.type.shape
    return _geometry(node, LANES, blocks, n * hw)


def _operands(node: Node) -> list:
    own = own_inputs(node)
    x, w = (own[k] if len(own) > k else None for k in (0, 1))
    b = own[2] if len(own) > 2 else None
    if x is None or w is None:
        raise fail(node, "needs an input x and weights w")
    return [x, w, b]


def _geometry(node: Node, channels: int, blocks: int, positions: int) -> NhwcGeometry:
    """The geometry of x with `positions` per block of `channels` (checked against the
    attributes), and the weights and bias checked against it."""
    x, w, b = _operands(node)
    for name in ("image", "kernel_shape"):
        if node.attrs.get(name) is None:
            raise fail(node, f"attribute {name} is required")
    batch, in_h, in_w = int_attr(node, "image", 3, 1, 0)
    kernel = int_attr(node, "kernel_shape", 2, 1, 1)
    strides = int_attr(node, "strides", 2, 1, 1)
    pads = int_attr(node, "pads", 4, 0, 0)
    dilations = int_attr(node, "dilations", 2, 1, 1)
    if positions != batch * in_h * in_w:
        raise fail(node, f"x has {positions} positions per channel, image "
                   f"{[batch, in_h, in_w]} needs {batch * in_h * in_w}")
    taps = kernel[0] * kernel[1]
    want = (taps, channels) if blocks == 1 else (blocks, taps, channels)
    if w.type.shape != want or w.type.dtype != x.type.dtype:
        raise fail(node, f"weights must be {x.type.dtype}{list(want)}, got {w.type}")
    if b is not None and (b.type.shape != (blocks * channels,) or b.type.dtype != x.type.dtype):
        raise fail(node, f"bias must be {x.type.dtype}[{blocks * channels}], got {b.type}")
    g = NhwcGeometry(batch, in_h, in_w, channels, kernel, strides, pads, dilations,
                     b is not None, blocks)
    if g.out_h < 1 or g.out_w < 1:
        extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
        raise fail(node, f"the kernel (extent {extent}) is larger than the padded image "
                   f"({[in_h + pads[0] + pads[2], in_w + pads[1] + pads[3]]})")
    return g


class _DepthwiseChannels(OpDef):
    """The kernel of both ops: channels-last is blocked NCHWc with one block of C channels."""
    dtypes = (dt.F32,)
    accepts_epilogue = True
    geometry: Callable[[Node], NhwcGeometry]

    def flops(self, node: Node) -> int:
        g = self.geometry(node)
        outputs = g.out_positions * g.channels
        return 2 * outputs * math.prod(g.kernel) + (outputs if g.has_bias else 0)

    def lower(self, node: Node, ctx) -> None:
        g = self.geometry(node)
        if g.out_positions * g.channels == 0:
            return
        w = ctx.w
        vector = ctx.schedule.vector_bytes > SCALAR_BYTES
        whole = g.channels // LANES * LANES if vector else 0
        if vector:
            emit_vector_types(w)
        rows = g.batch * g.blocks * g.out_h
        with part_loop(ctx, "nr", rows):
            # image: one (n, channel block) pair, whose rows are W positions of C channels
            w.line(f"const int64_t img = nr / {g.out_h}, oh = nr % {g.out_h};")
            w.line(f"const float *restrict wt = {ctx.ins[1]} + img % {g.blocks} * "
                   f"{math.prod(g.kernel) * g.channels};")
            if g.has_bias:
                w.line(f"const float *restrict bs = {ctx.ins[2]} + img % {g.blocks} * "
                       f"{g.channels};")
            emit_valid_range(w, "ky", g.kernel[0], g.dilations[0],
                             f"oh * {g.strides[0]} - {g.pads[0]}", g.in_h)
            # input row of tap ky: ky_o + ky * dh; its first element: ((img*H + row) * W) * C
            w.line(f"const int64_t xrow = (img * {g.in_h} + ky_o) * {g.in_w * g.channels};")
            w.line(f"const int64_t prow = nr * {g.out_w};")
            if whole:
                w.line(f"float buf[{g.columns * min(CV, whole // LANES) * LANES}] "
                       "__attribute__((aligned(64)));")
                # blocks of columns outermost: each block's input columns stream in once
                # for all its channels (1.1-1.35x quicker than channel blocks outermost)
                _emit_row(ctx, g, lambda taps: _channel_blocks(
                    ctx, whole, lambda cv: _emit_block(ctx, g, cv, taps)))
            if whole < g.channels:
                _emit_scalar_row(ctx, g, whole)


@register_op("NhwcDepthwiseConv")
class NhwcDepthwiseConv(_DepthwiseChannels):
    geometry = staticmethod(nhwc_geometry)

    def infer(self, node: Node) -> list[TensorType]:
        g = nhwc_geometry(node)
        return [TensorType(dt.F32, (g.out_positions, g.channels))]


@register_op("NchwcDepthwiseConv")
class NchwcDepthwiseConv(_DepthwiseChannels):
    """Blocked NCHWc (passes/choose_layout.py): x [N, C/8, H*W, 8], w [C/8, KH*KW, 8] (a
    block's weights of tap t: 8 channels), bias [C]; out [N, C/8, OH*OW, 8]. The channels-last
    kernel over N*C/8 images of 8 channels, each with its block's weights."""
    geometry = staticmethod(nchwc_geometry)

    def infer(self, node: Node) -> list[TensorType]:
        g = nchwc_geometry(node)
        return [TensorType(dt.F32, (g.batch, g.blocks, g.out_h * g.out_w, g.channels))]


def _channel_blocks(ctx, whole: int, body: Callable[[int], None]) -> None:
    """Channels [0, whole) in blocks of CV vectors from c0 (the last block may be narrower):
    body(vectors) writes one block."""
    w = ctx.w
    full = whole // (CV * LANES) * CV * LANES
    if full:
        with w.block(f"for (int64_t c0 = 0; c0 < {full}; c0 += {CV * LANES})"):
            body(CV)
    if whole > full:
        with w.block(""):
            w.line(f"const int64_t c0 = {full};")
            body((whole - full) // LANES)


def _emit_row(ctx, g: NhwcGeometry, body: Callable[[tuple], None]) -> None:
    """Every column of output row (n, oh) in blocks of OB columns from ow0, grouped into runs
    of blocks with the same valid taps (a loop each): body(taps) writes one block, whose
    position j takes the column taps taps[j]."""
    w = ctx.w
    ob = g.columns
    starts = list(range(0, g.out_w, ob))
    blocks = [(s, tuple(g.valid_kx(s + j) for j in range(min(ob, g.out_w - s))))
              for s in starts]
    k = 0
    while k < len(blocks):
        end = k + 1
        while end < len(blocks) and blocks[end][1] == blocks[k][1]:
            end += 1
        first, taps = blocks[k]
        if end - k > 1:
            with w.block(f"for (int64_t ow0 = {first}; ow0 < {blocks[end - 1][0] + 1}; "
                         f"ow0 += {ob})"):
                body(taps)
        else:
            with w.block(""):
                w.line(f"const int64_t ow0 = {first};")
                body(taps)
        k = end


def _emit_block(ctx, g: NhwcGeometry, cv: int, taps: tuple[tuple[int, ...], ...]) -> None:
    """len(taps) columns from ow0 x cv vectors from c0; position j takes column taps taps[j]."""
    w = ctx.w
    C, kw, sw, dh = g.channels, g.kernel[1], g.strides[1], g.dilations[0]
    x, wt = ctx.ins[0], "wt"
    ob = len(taps)
    sums = [[f"a{j}_{v}" for v in range(cv)] for j in range(ob)]
    init = [f"*(const {VEC} *)(bs + c0 + {v * LANES})" if g.has_bias
            else splat("0.0f") for v in range(cv)]
    w.line(f"{VEC} " + ", ".join(f"{sums[j][v]} = {init[v]}" for j in range(ob)
                                 for v in range(cv)) + ";")
    used = sorted(set().union(*taps))
    if used:
        with w.block("for (int64_t ky = ky_lo; ky < ky_hi; ++ky)"):
            # element offset of column ow0 * sw of tap row ky, channel c0 (an offset, not a
            # pointer: in the right pad it may lie past the input)
            w.line(f"const int64_t xo = xrow + ky * {dh * g.in_w * C} + ow0 * {sw * C} + c0;")
            w.line(f"const float *restrict wr = {wt} + (ky * {kw * C} + c0);")
            w.line(f"{VEC} " + ", ".join(
                f"w{kx}_{v} = *(const {VEC} *)(wr + {kx * C + v * LANES})"
                for kx in used for v in range(cv)) + ";")
            # (NHWC: 144 channels at 28x28 59 -> 50 us, 1 thread; DS-CNN 0.97 of its time)
            emit_in_registers(ctx, [f"w{kx}_{v}" for kx in used for v in range(cv)])
            # each input column once: it feeds every (position, tap) that lands on it
            uses: dict[int, list[tuple[int, int]]] = {}
            for j in range(ob):
                for kx in taps[j]:
                    uses.setdefault(j * sw - g.pads[1] + kx * g.dilations[1], []).append((j, kx))
            for col in sorted(uses):
                for v in range(cv):
                    at = f"{x} + (xo + {col * C + v * LANES})"
                    fmas = " ".join(f"{sums[j][v]} += w{kx}_{v} * xv;" for j, kx in uses[col])
                    w.line(f"{{ const {VEC} xv = *(const {VEC} *)({at}); {fmas} }}")
    for j in range(ob):
        w.line(" ".join(f"*({VEC} *)(buf + {(j * cv + v) * LANES}) = {sums[j][v]};"
                        for v in range(cv)))
    with w.block(f"for (int64_t j = 0; j < {ob}; ++j)"):
        w.line("const int64_t p = prow + ow0 + j;")
        if ctx.schedule.simd_pragmas:
            # GCC's Zen tuning vectorizes this loop 4 wide at best on its own (64ch 25x5
            # 13.5 -> 7.7 us, 960ch 7x7 50 -> 34 with the pragma)
            w.line("#pragma omp simd")
        with w.block(f"for (int64_t cc = 0; cc < {cv * LANES}; ++cc)"):
            w.line("const int64_t c = c0 + cc;")
            _store(ctx, g, f"buf[j * {cv * LANES} + cc]")


def _emit_scalar_row(ctx, g: NhwcGeometry, c_from: int) -> None:
    """Channels [c_from, C) of every column of output row (n, oh), in plain C: the whole
    kernel on a target without SIMD, the channels past the last vector on others."""
    w = ctx.w
    C, kw, sw, (dh, dw) = g.channels, g.kernel[1], g.strides[1], g.dilations
    x, wt = ctx.ins[0], "wt"
    with w.block(f"for (int64_t ow = 0; ow < {g.out_w}; ++ow)"):
        emit_valid_range(w, "kx", kw, dw, f"ow * {sw} - {g.pads[1]}", g.in_w)
        w.line("const int64_t p = prow + ow;")
        with w.block(f"for (int64_t c = {c_from}; c < {C}; ++c)"):
            w.line(f"float acc = {'bs[c]' if g.has_bias else '0.0f'};")
            with w.block("for (int64_t ky = ky_lo; ky < ky_hi; ++ky)"):
                w.line(f"const int64_t xo = xrow + ky * {dh * g.in_w * C} + kx_o * {C} + c;")
                with w.block("for (int64_t kx = kx_lo; kx < kx_hi; ++kx)"):
                    w.line(f"acc += {wt}[(ky * {kw} + kx) * {C} + c] * {x}[xo + kx * {dw * C}];")
            _store(ctx, g, "acc")


def _store(ctx, g: NhwcGeometry, value: str) -> None:
    """Channel c of output position p (image img's row oh, column p - prow): p * C + c in
    both layouts; the epilogue's operands index [P, C] or [N, C/8, OH*OW, 8]."""
    if g.blocks == 1 and len(ctx.node.outputs[0].type.shape) == 2:
        ctx.store(["p", "c"], f"p * {g.channels} + c", value)
        return
    ctx.w.line(f"const int64_t n = img / {g.blocks}, cb = img % {g.blocks}, "
               f"op = p - img * {g.out_h * g.out_w};")
    ctx.store(["n", "cb", "op", "c"],
              f"((n * {g.blocks} + cb) * {g.out_h * g.out_w} + op) * {g.channels} + c", value)
