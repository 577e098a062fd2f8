"""NchwcExpandDepthwiseConv: ExpandDepthwiseConv (ops/expand_depthwise.py) on blocked NCHWc
data (an internal op, made by passes/choose_layout.py in a blocked region).

A 1x1 convolution expanding C_in channels to C, clamped, and the 3x3 depthwise convolution
(pads 1, stride 1 or 2) reading it, in one kernel: each thread walks its band of output rows
in order and expands only the input rows the depthwise taps next, into a ring of three rows,
so the expanded map (MobileNetV2's 96 channels at 112x112: 4.8 MB) never leaves L2.

    inputs   0: x f32[N, C_in/8, H*W, 8]   1: expand weights f32[C, C_in]   2 (optional):
             their bias f32[C]   3: depthwise weights f32[C, 9] (3x3, row-major)
             4 (optional): their bias f32[C]
    attrs    image [N, H, W], stride (1 or 2), act_min, act_max (the clamp of the expanded
             values; +-inf for none)
    output   f32[N, C/8, OH*OW, 8], OH = (H - 1) // stride + 1 (OW alike)

A ring row holds every block of one expanded row, [C/8][W + 2][8], a zero position either
side (the depthwise's padding), so every tap is one aligned vector at any stride. The
expansion runs in NchwcConv's tiles (conv_nchwc.emit_tile_sums); the depthwise in register
blocks of 10 output positions of one channel block, a row of taps (3 weight vectors) at a time.
"""
from __future__ import annotations

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.ops.conv_nchwc import (BLOCK, BlockedStore, emit_in_tiles, emit_tile_start,
                                  emit_tile_sums, tile_shape)
from ember.ops.expand_depthwise import (ExpandGeometry, checked_geometry, clamped,
                                        emit_ring_walk)
from ember.ops.registry import OpDef, fail, register_op
from ember.ops.window import int_attr
from ember.ops.window_plane import VEC, emit_vector_types

#: output positions per depthwise register block: 10 sums, 3 weights and an input vector live
_COLUMNS = 10


def nchwc_expand_geometry(node: Node) -> ExpandGeometry:
    """Check the inputs and attributes; the sizes the kernel needs."""
    x, wd = node.input(0), node.input(3)
    if x is not None and wd is not None and not wd.is_const:
        raise fail(node, "the depthwise weights must be constants (they are packed)")
    if node.attrs.get("image") is None:
        raise fail(node, "attribute image is required")
    batch, h, w = int_attr(node, "image", 3, 1, 1)
    if x is not None and (x.type.rank != 4 or x.type.dtype is not dt.F32
                          or x.type.shape != (batch, x.type.shape[1], h * w, BLOCK)
                          or x.type.shape[1] == 0):
        raise fail(node, f"x must be float32 [{batch}, C_in/{BLOCK}, {h * w}, {BLOCK}] (image "
                   f"{[batch, h, w]}), got {x.type}")
    g = checked_geometry(node, batch, x.type.shape[1] * BLOCK if x is not None else 0, h, w)
    if g.channels <= 0 or g.channels % BLOCK:
        raise fail(node, f"the expanded channels ({g.channels}) must be a multiple of {BLOCK}")
    return g


@register_op("NchwcExpandDepthwiseConv")
class NchwcExpandDepthwiseConv(OpDef):
    dtypes = (dt.F32,)
    accepts_epilogue = True

    def infer(self, node: Node) -> list[TensorType]:
        g = nchwc_expand_geometry(node)
        return [TensorType(dt.F32, (g.batch, g.channels // BLOCK, g.out_h * g.out_w, BLOCK))]

    def flops(self, node: Node) -> int:
        return nchwc_expand_geometry(node).flops

    def lower(self, node: Node, ctx) -> None:
        g = nchwc_expand_geometry(node)
        if g.batch * g.out_h * g.out_w == 0:
            return
        w = ctx.w
        blocks = g.channels // BLOCK
        pb, obk = tile_shape(blocks)
        we = node.inputs[1].const.astype(np.float32).T          # [C_in, C]
        expand = ctx.pack_constant(we.reshape(g.in_channels, blocks // obk, obk * BLOCK)
                                   .transpose(1, 0, 2), replaces=1)
        depthwise = ctx.pack_constant(node.inputs[3].const.astype(np.float32)
                                      .reshape(blocks, BLOCK, 9).transpose(0, 2, 1), replaces=3)
        emit_vector_types(w)
        emit_ring_walk(ctx, g, blocks * (g.in_w + 2) * BLOCK, 0, lambda: None,
                       lambda: _emit_expand_row(ctx, g, expand, pb, obk),
                       lambda: _emit_depthwise_row(ctx, g, depthwise))


def _emit_expand_row(ctx, g: ExpandGeometry, expand: str, pb: int, obk: int) -> None:
    """Input row `next` of image n, expanded and clamped, into ring row `e` (position p of
    block cb at (cb * (W + 2) + 1 + p) * 8), in tiles of pb positions x obk blocks."""
    w = ctx.w
    blocks = g.channels // BLOCK
    with w.block(f"for (int64_t gr = 0; gr < {blocks // obk}; ++gr)"):
        w.line(f"const float *restrict wg = {expand} + gr * {g.in_channels * obk * BLOCK};")
        emit_in_tiles(w, "p0", g.in_w, pb, lambda k: _emit_expand_tile(ctx, g, k, obk))


def _emit_expand_tile(ctx, g: ExpandGeometry, pb: int, obk: int) -> None:
    """pb positions from p0 x obk blocks from gr*obk of the expanded row, into the ring."""
    w = ctx.w
    hw, cib = g.in_h * g.in_w, g.in_channels // BLOCK
    sums = [[f"a{i}_{j}" for j in range(obk)] for i in range(pb)]
    emit_tile_start(ctx, sums, ctx.ins[2] if g.has_expand_bias else None, f"gr * {obk}")
    emit_tile_sums(ctx, sums, f"{ctx.ins[0]} + ((n * {cib}) * {hw} + next * {g.in_w} + p0) * "
                   f"{BLOCK}", hw * BLOCK, str(cib), "wg")
    for i in range(pb):
        for j in range(obk):
            at = f"e + ((gr * {obk} + {j}) * {g.in_w + 2} + 1 + p0 + {i}) * {BLOCK}"
            w.line(f"*({VEC} *)({at}) = {clamped(g, sums[i][j], vector=True)};")


def _emit_depthwise_row(ctx, g: ExpandGeometry, depthwise: str) -> None:
    """Output row (n, oh) of every block from ring rows e0..e2: blocks of _COLUMNS positions,
    each tap one vector (padded position ow * stride + kx), then out through ctx.store."""
    w = ctx.w
    blocks, pitch = g.channels // BLOCK, (g.in_w + 2) * BLOCK
    with w.block(f"for (int64_t cb = 0; cb < {blocks}; ++cb)"):
        w.line(f"const float *restrict wb = {depthwise} + cb * {9 * BLOCK};")
        emit_in_tiles(w, "ow0", g.out_w, _COLUMNS,
                      lambda k: _emit_depthwise_block(ctx, g, k, pitch))


def _emit_depthwise_block(ctx, g: ExpandGeometry, cols: int, pitch: int) -> None:
    """`cols` output positions from ow0 of block cb: 9 taps, a row of 3 weights at a time."""
    w = ctx.w
    blocks = g.channels // BLOCK
    init = (f"*(const {VEC} *)({ctx.ins[4]} + cb * {BLOCK})" if g.has_depthwise_bias
            else f"({VEC}){{0}}")
    w.line(f"const {VEC} bias = {init};")
    w.line(f"{VEC} " + ", ".join(f"s{j} = bias" for j in range(cols)) + ";")
    for a in range(3):
        with w.block(""):
            w.line(f"const float *restrict r = e{a} + cb * {pitch} + ow0 * {g.stride * BLOCK};")
            w.line(f"const {VEC} " + ", ".join(
                f"w{b} = *(const {VEC} *)(wb + {(a * 3 + b) * BLOCK})" for b in range(3)) + ";")
            for j in range(cols):
                w.line(" ".join(f"s{j} += w{b} * *(const {VEC} *)(r + "
                                f"{(j * g.stride + b) * BLOCK});" for b in range(3)))
    # `cols` positions of one block: tile row i is position ow0 + i
    store = BlockedStore(blocks, g.out_h * g.out_w, lambda j: "cb",
                         lambda i: f"oh * {g.out_w} + ow0 + {i}")
    store.emit(ctx, [[f"s{j}"] for j in range(cols)])
