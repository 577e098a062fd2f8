"""Winograd F(2x2, 3x3) convolution for small maps: float32 NCHW, 3x3, stride 1, one group.

Where F(4x4, 3x3) (ops/conv_winograd.py) does not pay, an 8x8 map's 4 tiles filling a quarter
of a 16-column GEMM panel, its 16 2x2 tiles fill one exactly: 16 multiplies per tile and
channel pair, 4 per output against the direct convolution's 9 (ResNet-8's 64 -> 64 at 8x8).
Per image, at run time:
  1. input transform, per input channel: the zero-padded image, then V[xi][c][t] =
     (B^T d B)[xi] for each tile t's 4x4 patch d, written in the GEMM's packed-B layout
     (16-tile panels, the padding tiles zero);
  2. 16 GEMMs M[xi] (Cout x T) = U[xi] . V[xi] (Cin x T), U = G w G^T packed at compile time;
  3. output transform, per output channel and tile: Y = A^T M A plus the bias, each output
     inside the map out through ctx.store (fused epilogue).
Points 0, 1, -1: B, G and A hold 0, +-1 and 1/2 only, so the transforms round little.
As in F(4x4), a non-finite or huge input would spread NaN over its tiles: the input transform
notes any, and the GEMM convolution then computes the whole batch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node
from ember.kernels.gemm import BlockedGemm, PackedConst, blocked_gemm_text, pack_a
from ember.lower.parallel import barrier, part_loop, part_slot, serial, team
from ember.lower.schedule import gemm_tiles, winograd2_pays, winograd_pays
from ember.ops.conv_gemm import emit_conv_gemm
from ember.ops.conv_winograd import _BIG_EXPONENT_BITS, _emit_apply
from ember.render.cwriter import CWriter

if TYPE_CHECKING:
    from ember.ops.conv import ConvGeometry

_H = 0.5
BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
G = ((1, 0, 0), (_H, _H, _H), (_H, -_H, _H), (0, 0, 1))
AT = ((1, 1, 1, 0), (0, 1, -1, -1))
_NR = 16        # tiles per GEMM panel (the float32 GEMM's nr with 8-float vectors)


def winograd2_applies(node: Node, g: ConvGeometry) -> bool:
    """A float32 2-D 3x3 stride-1 convolution with constant, finite weights where F(2x2)
    pays and F(4x4) does not."""
    win, weights = g.window, node.inputs[1]
    return (not g.transposed and node.inputs[0].type.dtype is dt.F32 and len(g.in_sp) == 2
            and win.kernel == (3, 3) and win.strides == (1, 1) and win.dilations == (1, 1)
            and g.groups == 1 and g.batch > 0 and weights.is_const
            and bool(np.isfinite(weights.const).all())
            and not winograd_pays(g.in_channels, g.out_channels, *g.out_sp)
            and winograd2_pays(g.in_channels, g.out_channels, *g.out_sp))


def emit_conv_winograd2(ctx, g: ConvGeometry) -> None:
    w: CWriter = ctx.w
    cin, cout = g.in_channels, g.out_channels
    (oh, ow), (h, wd) = g.out_sp, g.in_sp
    py, px = g.window.pads_begin
    th, tw = -(-oh // 2), -(-ow // 2)
    tiles = th * tw
    tp = -(-tiles // _NR) * _NR
    # each transform touches all 16 matrices of a tile: their strides are kept off multiples
    # of 4 KiB (64x64 channels and 16 tiles: exactly 4 KiB), whose 16 lines would share one
    # 8-way L1 set
    vs, ms = cin * tp + 16, cout * tiles + 16
    ph, pw = 2 * th + 2, 2 * tw + 2                     # the padded patch grid
    t = gemm_tiles(ctx.schedule, cout, tiles, cin, 16)
    if t.nr != _NR:
        emit_conv_gemm(ctx, g)
        return
    gm = np.array(G, dtype=np.float64)
    u = np.einsum("ai,ocij,bj->aboc", gm, ctx.node.inputs[1].const.astype(np.float64), gm)
    u = u.reshape(16, cout, cin)
    packed = np.concatenate([pack_a(u[xi], t.mr) for xi in range(16)])
    a = PackedConst(f"({ctx.pack_constant(packed, replaces=1)} + xi*{cout * cin})")
    b = PackedConst(f"(wv + xi*{vs})")
    gemm = BlockedGemm(cout, tiles, cin, (("xi", 16),), a, b, f"wm + xi*{ms}", tiles)
    team(ctx)           # the transforms' loops and the GEMMs, each shared by every thread
    gemm_code = blocked_gemm_text(ctx, gemm, t, in_region=True)
    gemm_floats = -(-ctx.scratch_bytes // 64) * 16
    v_floats, m_floats, pd_floats = 16 * vs, 16 * ms, -(-ph * pw // 16) * 16
    parts = ctx.schedule.threads
    ctx.request_scratch(4 * (gemm_floats + v_floats + m_floats + parts * pd_floats + 16))
    w.line(f"float *restrict wv = (float *)scratch + {gemm_floats};   /* V[16][T/16][Cin][16] */")
    w.line(f"float *restrict wm = wv + {v_floats};   /* M[16][Cout][T] */")
    w.line(f"uint32_t *big = (uint32_t *)(wm + {m_floats + parts * pd_floats});   /* shared */")
    with serial(ctx):
        w.line("*big = 0;")
    rows, cols = min(h, ph - py), min(wd, pw - px)      # input rows and columns tiles reach
    with w.block(f"for (int64_t n = 0; n < {g.batch}; ++n)"):
        with part_loop(ctx, "c", cin):
            # one padded channel per part (its zero border written once per channel: cheap
            # next to the transform)
            w.line(f"float *restrict pd = wm + {m_floats} + {part_slot(ctx)}*{pd_floats};")
            w.line(f"memset(pd, 0, sizeof(float)*{ph * pw});")
            w.line("uint32_t huge = 0;")
            w.line(f"const float *restrict xc = {ctx.ins[0]} + (n*{cin} + c)*{h * wd};")
            with w.block(f"for (int64_t y = 0; y < {rows}; ++y)"):
                w.line(f"memcpy(pd + (y + {py})*{pw} + {px}, xc + y*{wd}, sizeof(float)*{cols});")
                with w.block(f"for (int64_t k = 0; k < {cols}; ++k)"):
                    w.line(f"uint32_t bits; memcpy(&bits, xc + y*{wd} + k, 4);")
                    w.line(f"huge |= (uint32_t)((bits & 0x7f800000u) >= {_BIG_EXPONENT_BITS:#x}u);")
            w.line("if (huge) __atomic_fetch_or(big, 1u, __ATOMIC_RELAXED);")
            with w.block(f"for (int64_t t = 0; t < {tp}; ++t)"):
                w.line(f"float *restrict v = wv + t / {_NR} * {cin * _NR} + c*{_NR} + t % {_NR};")
                with w.block(f"if (t >= {tiles})"):
                    w.line(f"for (int64_t xi = 0; xi < 16; ++xi) v[xi*{vs}] = 0.0f;")
                    w.line("continue;")
                w.line(f"const float *restrict d = pd + t / {tw} * {2 * pw} + t % {tw} * 2;")
                w.line("float e[4][4];")
                for q in range(4):        # B^T down the patch's columns, then B along its rows
                    with w.block(""):
                        _emit_apply(w, BT, lambda r, q=q: f"d[{r * pw + q}]",
                                    lambda i, q=q: f"e[{i}][{q}]")
                for i in range(4):
                    with w.block(""):
                        _emit_apply(w, BT, lambda q, i=i: f"e[{i}][{q}]",
                                    lambda j, i=i: f"v[{(i * 4 + j) * vs}]")
        w.line("if (__atomic_load_n(big, __ATOMIC_RELAXED)) break;   /* past the barrier */")
        w.lines(gemm_code)
        bias = f" + {ctx.ins[2]}[co]" if g.has_bias else ""
        with part_loop(ctx, "co", cout), w.block(f"for (int64_t t = 0; t < {tiles}; ++t)"):
            w.line(f"const float *restrict m = wm + co*{tiles} + t;")
            w.line("float f[2][4], y[2][2];")
            for j in range(4):            # A^T down the columns of M, then A along its rows
                with w.block(""):
                    _emit_apply(w, AT, lambda i, j=j: f"m[{(i * 4 + j) * ms}]",
                                lambda a, j=j: f"f[{a}][{j}]")
            for a in range(2):
                with w.block(""):
                    _emit_apply(w, AT, lambda j, a=a: f"f[{a}][{j}]", lambda b, a=a: f"y[{a}][{b}]")
            w.line(f"const int64_t ty = t / {tw}, tx = t % {tw};")
            with w.block("for (int64_t a = 0; a < 2; ++a) for (int64_t b = 0; b < 2; ++b)"):
                w.line("const int64_t oy = 2*ty + a, ox = 2*tx + b;")
                with w.block(f"if (oy < {oh} && ox < {ow})"):
                    ctx.store(["n", "co", "oy", "ox"], f"((n*{cout} + co)*{oh} + oy)*{ow} + ox",
                              f"(y[a][b]{bias})")
    # the GEMM convolution's scratch may cover `big`: every part reads it first
    w.line("const uint32_t redo = __atomic_load_n(big, __ATOMIC_RELAXED);")
    barrier(ctx)
    with w.block("if (redo)"):
        emit_conv_gemm(ctx, g)
