"""NchwcDirectConv: a convolution with few input channels (a network's first conv) reading NCHW
and writing blocked NCHWc (an internal op, made by passes/choose_layout.py where its output
feeds a blocked region).

    inputs   0: x f32[N, C, H, W]   1: w f32[CO, C, KH, KW] (constant)   2 (optional): bias
             f32[CO]
    attrs    those of the ONNX Conv it replaces (2-D, one group)
    output   f32[N, CO/8, OH*OW, 8]

MobileNetV2's first conv (3 -> 32, 3x3, stride 2) has K = 27 taps per output: as ops/conv_direct.py
computes it, in blocks of 6 channels x 16 positions, each block's sums pass through a buffer
to land in NCHW rows, and the blocked region after it then needed a layout change of its 1.6
MB output. Here a tile is 6 output positions x 2 output vectors (16 channels), as NchwcConv's:
per tap, 2 weight vectors and 6 inputs broadcast from a zero-padded copy of the image, and the
sums are whole output vectors. Threads share the output rows (each image padded first).
MobileNetV2's: 352 us, against 513 for conv_direct and 109 for the layout change after it
(1 thread, alternately in one process; the whole model 0.97 of its time at 1 and 2 threads).
"""
from __future__ import annotations

import math

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.parallel import part_loop, team
from ember.ops.conv import ConvGeometry, conv_geometry
from ember.ops.conv_nchwc import (BLOCK, BlockedStore, emit_in_tiles, emit_tile_start,
                                  emit_tile_step, tile_shape)
from ember.ops.matmul import own_inputs
from ember.ops.registry import OpDef, fail, register_op
from ember.ops.window_plane import emit_vector_types


def direct_geometry(node: Node) -> ConvGeometry:
    """conv_geometry, with what this kernel needs: 2-D, one group, constant weights, whole
    output blocks."""
    g = conv_geometry(node)
    w = own_inputs(node)[1]
    if len(g.in_sp) != 2 or g.groups != 1 or g.transposed or not w.is_const \
            or node.inputs[0].type.dtype is not dt.F32 or g.out_channels % BLOCK:
        raise fail(node, f"takes a float32 2-D convolution of one group with constant weights "
                   f"and a multiple of {BLOCK} output channels")
    return g


@register_op("NchwcDirectConv")
class NchwcDirectConv(OpDef):
    dtypes = (dt.F32,)
    accepts_epilogue = True

    def infer(self, node: Node) -> list[TensorType]:
        g = direct_geometry(node)
        return [TensorType(dt.F32, (g.batch, g.out_channels // BLOCK, math.prod(g.out_sp),
                                    BLOCK))]

    def flops(self, node: Node) -> int:
        return 2 * direct_geometry(node).macs()

    def lower(self, node: Node, ctx) -> None:
        g = direct_geometry(node)
        if g.batch * math.prod(g.out_sp) == 0:
            return
        w = ctx.w
        win = g.window
        (h, wd), (oh, ow) = g.in_sp, g.out_sp
        (kh, kw), (sh, sw), (dh, dw) = win.kernel, win.strides, win.dilations
        ph, pw = h + win.pads_begin[0] + win.pads_end[0], wd + win.pads_begin[1] + win.pads_end[1]
        blocks = g.out_channels // BLOCK
        pb, obk = tile_shape(blocks)
        taps = g.in_channels * kh * kw
        weights = own_inputs(node)[1].const.astype(np.float32).reshape(g.out_channels, taps)
        # [group][tap][obk * 8]: a tile's weights of one tap are OBK adjacent vectors
        wk = ctx.pack_constant(weights.T.reshape(taps, blocks // obk, obk * BLOCK)
                               .transpose(1, 0, 2), replaces=1)
        offsets = [c * ph * pw + a * dh * pw + b * dw
                   for c in range(g.in_channels) for a in range(kh) for b in range(kw)]
        plane = g.in_channels * ph * pw
        scratch = ctx.request_scratch(4 * g.batch * plane)
        emit_vector_types(w)
        w.line(f"float *restrict padded = (float *){scratch};")
        w.line(f"static const int32_t offs[{taps}] = {{{', '.join(map(str, offsets))}}};")
        team(ctx)      # the padded copies, then the rows
        with part_loop(ctx, "im", g.batch * g.in_channels):
            w.line(f"float *restrict dst = padded + im * {ph * pw};")
            w.line(f"const float *restrict src = {ctx.ins[0]} + im * {h * wd};")
            w.line(f"memset(dst, 0, sizeof(float) * {ph * pw});")
            with w.block(f"for (int64_t r = 0; r < {h}; ++r)"):
                w.line(f"memcpy(dst + (r + {win.pads_begin[0]}) * {pw} + {win.pads_begin[1]}, "
                       f"src + r * {wd}, sizeof(float) * {wd});")
        with part_loop(ctx, "nr", g.batch * oh):
            w.line(f"const int64_t n = nr / {oh}, oh = nr % {oh};")
            w.line(f"const float *restrict xrow = padded + n * {plane} + oh * {sh * pw};")
            with w.block(f"for (int64_t gr = 0; gr < {blocks // obk}; ++gr)"):
                w.line(f"const float *restrict wg = {wk} + gr * {taps * obk * BLOCK};")
                emit_in_tiles(w, "ow0", ow, pb, lambda k: _emit_tile(ctx, g, k, obk, taps, sw))


def _emit_tile(ctx, g: ConvGeometry, pb: int, obk: int, taps: int, sw: int) -> None:
    """pb output positions of row (n, oh) from ow0 x obk output blocks from gr*obk."""
    w = ctx.w
    blocks, positions = g.out_channels // BLOCK, math.prod(g.out_sp)
    sums = [[f"a{i}_{j}" for j in range(obk)] for i in range(pb)]
    emit_tile_start(ctx, sums, ctx.ins[2] if g.has_bias else None, f"gr * {obk}")
    w.line(f"const float *restrict xt0 = xrow + ow0 * {sw};")
    with w.block(f"for (int64_t t = 0; t < {taps}; ++t)"):
        w.line("const float *restrict xt = xt0 + offs[t];")
        emit_tile_step(ctx, sums, f"wg + t * {obk * BLOCK}", lambda i: f"xt[{i * sw}]")
    BlockedStore(blocks, positions, lambda j: f"gr * {obk} + {j}",
                 lambda i: f"oh * {g.out_sp[1]} + ow0 + {i}").emit(ctx, sums)
