"""Direct convolution for few input channels (MobileNetV2's and ResNet's first convs: 3 -> 32
or 64 channels, 3x3 or 7x7, stride 2), float32, 1-D and 2-D, one group, constant weights.

As a GEMM such a conv has K = c_in x taps, only 27 for 3x3 over 3 channels: the im2col matrix
is as large as the products are few, so packing it costs about as much as the GEMM. Here each
input plane is copied once into window_plane.py's padded layout, split by column phase
(stride 2 by shuffles), its rows left whole (row stride 1):

    phase plane c % sw, padded row r, column c // sw  <-  padded input (r, c)

so tap (ch, a, b) of output row oh, column ow sits at `tap offset + oh*sh*pitch + ow`: a
contiguous vector per tap. Each output row then goes in register blocks of CO output
channels x NV vectors of 8 columns: per tap NV input vectors and CO broadcast weights feed
CO x NV multiply-adds (weights packed at compile time as [channel block][tap][CO]). Each
block's sums land in `acc` (L1) and go out at once through ctx.store with the bias, so a fused
epilogue runs in its own vectorizable loop, and the output's stores overlap the next block's
multiply-adds. Columns past out_w (the last vector's) read finite neighbours or
the plane's slack and are never stored.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node
from ember.lower.parallel import part_loop, part_slot, team
from ember.lower.schedule import direct_conv_pays
from ember.ops.window import Window
from ember.ops.window_plane import (LANES, VEC, PlaneWindow, emit_broadcast_fmas, emit_padded_copy,
                                    emit_sums_store, emit_vector_types, plane_window, splat)

if TYPE_CHECKING:
    from ember.ops.conv import ConvGeometry

#: output channels x column vectors of a register block: 12 accumulators of 16 registers,
#: with NV input vectors and a broadcast weight live. On Zen 3 (two FMA pipes of 4 cycles'
#: latency, so 8 sums barely cover them) 6 x 2 beat 4 x 2 by 4-10% (ResNet-18's 7x7 first
#: conv 2.94 -> 2.77 ms), though 64 or 32 channels leave part of the last block idle;
#: 4 x 3, 8 x 1, 8 x 2 and 2 x 4 were slower
CO, NV = 6, 2
_ALIGN = 16           # scratch regions start on 64-byte boundaries (floats)


def direct_conv_applies(node: Node, g: ConvGeometry, vector_bytes: int) -> bool:
    """float32 Conv, one group, constant weights, a 1-D or 2-D window that window_plane lays
    out, and what schedule.direct_conv_pays takes (few input channels, wide rows, SIMD)."""
    if (g.transposed or g.groups != 1 or node.inputs[0].type.dtype is not dt.F32
            or not node.inputs[1].is_const or g.batch * g.out_channels * math.prod(g.out_sp) == 0):
        return False
    pw = plane_window(g.in_sp, g.window)
    return pw is not None and direct_conv_pays(g.in_channels, pw.out_w, vector_bytes)


def _row_plane(pw: PlaneWindow) -> PlaneWindow:
    """The same plane, its rows not split by phase: the padded rows the outputs reach."""
    win = pw.win
    sh = win.strides[0]
    rows_win = Window(win.kernel, (1, win.strides[1]), win.dilations, win.pads_begin,
                      win.pads_end, ((pw.out_h - 1) * sh + 1, pw.out_w))
    return PlaneWindow(pw.in_h, pw.in_w, rows_win)


def _round(n: int, to: int = _ALIGN) -> int:
    return -(-n // to) * to


def emit_conv_direct(ctx, g: ConvGeometry) -> None:
    w, win = ctx.w, g.window
    pw = plane_window(g.in_sp, win)
    rp = _row_plane(pw)
    sh, sw = pw.win.strides
    (kh, kw), (dh, dw) = pw.win.kernel, pw.win.dilations
    c_in, c_out = g.in_channels, g.out_channels
    blocks = -(-c_out // CO)
    out_h, out_w = pw.out_h, pw.out_w
    owp = _round(out_w, LANES)               # columns computed per row: whole vectors
    plane = _round(rp.padded_floats)
    images = g.batch * c_in
    threads = ctx.schedule.threads
    taps = c_in * kh * kw
    offsets = [c * plane + ((b * dw) % sw) * rp.rows * rp.pitch + a * dh * rp.pitch
               + (b * dw) // sw
               for c in range(c_in) for a in range(kh) for b in range(kw)]
    weights = ctx.node.inputs[1].const.reshape(c_out, taps).astype(np.float32)
    packed = np.zeros((blocks * CO, taps), np.float32)
    packed[:c_out] = weights
    wk = ctx.pack_constant(packed.reshape(blocks, CO, taps).transpose(0, 2, 1), replaces=1)
    acc_floats = _round(blocks * CO * owp)
    rows = g.batch * out_h
    scratch = ctx.request_scratch(4 * (images * plane + threads * acc_floats))
    emit_vector_types(w)
    w.line(f"float *restrict planes = (float *){scratch};")
    w.line(f"static const int32_t offs[{taps}] = {{{', '.join(map(str, offsets))}}};")
    team(ctx)      # the copies, then the rows
    with part_loop(ctx, "im", images):
        emit_padded_copy(w, rp, f"{ctx.ins[0]} + im * {pw.in_h * pw.in_w}",
                         f"(planes + im * {plane})", "0.0f", shuffles=True)
    with part_loop(ctx, "nr", rows):
        w.line(f"const int64_t n = nr / {out_h}, oh = nr % {out_h};")
        mine = f" + {part_slot(ctx)} * {acc_floats}" if threads > 1 else ""
        w.line(f"float *restrict acc = planes + {images * plane}{mine};")
        w.line(f"const float *restrict xrow = planes + n * {c_in * plane} + oh * {sh * rp.pitch};")
        with w.block(f"for (int64_t cb = 0; cb < {blocks}; ++cb)"):
            w.line(f"const float *restrict wb = {wk} + cb * {taps * CO};")
            w.line(f"float *restrict ab = acc + cb * {CO * owp};")
            w.line("int64_t q = 0;")
            if owp >= NV * LANES:
                with w.block(f"for (; q <= {owp - NV * LANES}; q += {NV * LANES})"):
                    _emit_block(w, NV, taps, owp)
                    _emit_store(ctx, g, out_h, out_w, owp, NV)
            tail = owp % (NV * LANES) // LANES        # vectors left: one narrower block
            if tail:
                with w.block(""):
                    _emit_block(w, tail, taps, owp)
                    _emit_store(ctx, g, out_h, out_w, owp, tail)


def _emit_block(w, nv: int, taps: int, owp: int) -> None:
    """CO channels x nv vectors of row sums at column q, over every tap, into ab."""
    sums = [[f"s{i}_{v}" for v in range(nv)] for i in range(CO)]
    zero = splat("0.0f")
    w.line(f"{VEC} " + ", ".join(f"{s} = {zero}" for row in sums for s in row) + ";")
    with w.block(f"for (int64_t t = 0; t < {taps}; ++t)"):
        w.line("const float *restrict xt = xrow + offs[t] + q;")
        w.line(f"const float *restrict wt = wb + t * {CO};")
        emit_broadcast_fmas(w, "xt", nv, "wt", CO, sums)
    emit_sums_store(w, sums, owp, "ab + q")


def _emit_store(ctx, g: ConvGeometry, out_h: int, out_w: int, owp: int, nv: int) -> None:
    """The block just computed (channels cb*CO.., nv vectors from column q), from acc, plus
    the bias, through the epilogue: stored block by block, the output's writes (its lines
    fetched from L3: MobileNetV2's first conv writes 1.6 MB) overlap the next block's
    multiply-adds, where a store pass per row stalled on them (1.4x the row's time)."""
    w = ctx.w
    bias = f" + {ctx.ins[2]}[co]" if g.has_bias else ""
    at = f"((n * {g.out_channels} + co) * {out_h} + oh) * {out_w} + ow"
    co_end = f"cb * {CO} + {CO}" if g.out_channels % CO == 0 else \
        f"(cb * {CO} + {CO} < {g.out_channels} ? cb * {CO} + {CO} : {g.out_channels})"
    ow_end = f"q + {nv * LANES}" if owp == out_w else \
        f"(q + {nv * LANES} < {out_w} ? q + {nv * LANES} : {out_w})"
    with w.block(f"for (int64_t co = cb * {CO}; co < {co_end}; ++co)"):
        with w.block(f"for (int64_t ow = q; ow < {ow_end}; ++ow)"):
            sp = ["oh", "ow"] if len(g.out_sp) == 2 else ["ow"]
            ctx.store(["n", "co"] + sp, at, f"acc[co * {owp} + ow]{bias}")
