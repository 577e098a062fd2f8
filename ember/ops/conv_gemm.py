"""Convolution as a packed GEMM (NCHW, float32, 1-D and 2-D).

For each image and group, out[m, (oy, ox)] = sum over k = (c, ky, kx) of W[m, k] * X'[k, (oy, ox)]:
M = output channels of the group, N = output positions, K = input channels x kernel taps.
The weights are A, packed at compile time. B is read straight from the input for a 1x1
stride-1 convolution (no im2col at all), and otherwise is the implicit im2col matrix, packed
one kc x nc block at a time by the GEMM (never materialized whole). Bias and the fused
epilogue apply as each micro-tile is finished.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node
from ember.kernels.gemm import (BlockedGemm, Im2col, PackedConst, Strided, emit_blocked_gemm,
                                pack_a)
from ember.lower.schedule import gemm_tiles

if TYPE_CHECKING:
    from ember.ops.conv import ConvGeometry


def conv_gemm_applies(node: Node, g: ConvGeometry) -> bool:
    """float32 Conv in 1-D or 2-D with channels to reduce over (depthwise has its own kernel)."""
    return (not g.transposed and node.inputs[0].type.dtype is dt.F32 and len(g.in_sp) in (1, 2)
            and g.in_channels // g.groups > 1
            and g.batch * g.out_channels * math.prod(g.out_sp) > 0)


def _as_2d(values: tuple[int, ...], fill: int) -> tuple[int, int]:
    """A 1-D convolution's sizes as 2-D ones over an image of height 1."""
    return (fill, values[0]) if len(values) == 1 else (values[0], values[1])


def emit_conv_gemm(ctx, g: ConvGeometry) -> None:
    node, win = ctx.node, g.window
    h, w = _as_2d(g.in_sp, 1)
    kh, kw = _as_2d(win.kernel, 1)
    sy, sx = _as_2d(win.strides, 1)
    dy, dx = _as_2d(win.dilations, 1)
    py, px = _as_2d(win.pads_begin, 0)
    oh, ow = _as_2d(g.out_sp, 1)
    cg, mg = g.in_channels // g.groups, g.out_channels // g.groups
    m, n, k = mg, oh * ow, cg * kh * kw
    t = gemm_tiles(ctx.schedule, m, n, k, g.batch * g.groups)

    weights = node.inputs[1]
    if weights.is_const:
        per_group = weights.const.reshape(g.groups, mg, k)
        packed = np.concatenate([pack_a(per_group[i], t.mr) for i in range(g.groups)])
        name = ctx.pack_constant(packed, replaces=1)
        a = PackedConst(f"({name} + g*{packed.size // g.groups})")
    else:
        a = Strided(f"({ctx.ins[1]} + g*{mg * k})", k, 1)
    image = f"({ctx.ins[0]} + (n*{g.in_channels} + g*{cg})*{h * w})"
    pointwise = (kh, kw, sy, sx, py, px, oh, ow) == (1, 1, 1, 1, 0, 0, h, w)
    b = (Strided(image, h * w, 1) if pointwise
         else Im2col(image, h, w, kh, kw, sy, sx, dy, dx, py, px, ow))
    out = f"{ctx.outs[0]} + (n*{g.out_channels} + g*{mg})*{n}"
    gemm = BlockedGemm(m, n, k, (("n", g.batch), ("g", g.groups)), a, b, out, n)

    merged = (g.batch, g.out_channels, n)
    flat = ctx.can_merge(merged)        # index the epilogue by position, not (oy, ox)
    bias = f" + {ctx.ins[2]}[mo]" if g.has_bias else ""

    def final(i: str, j: str, value: str) -> None:
        ctx.w.line(f"const int64_t mo = g*{mg} + {i};")
        value = f"({value}{bias})"
        at = f"(n*{g.out_channels} + mo)*{n} + {j}"
        if flat:
            ctx.store(["n", "mo", j], at, value, shape=merged)
            return
        sp = [f"o{d}" for d in range(len(g.out_sp))]
        if len(sp) == 1:
            ctx.w.line(f"const int64_t o0 = {j};")
        else:
            ctx.w.line(f"const int64_t o0 = {j} / {ow}, o1 = {j} % {ow};")
        ctx.store(["n", "mo"] + sp, at, value)

    emit_blocked_gemm(ctx, gemm, t, final if g.has_bias or ctx.epilogue is not None else None)
