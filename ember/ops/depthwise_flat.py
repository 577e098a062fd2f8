"""Depthwise Conv over a flat plane, for narrow maps (DS-CNN's 25x5, MobileNetV2's 7x7/14x14).

The plane kernel of window_plane.py computes over rows of `pitch` = out_w + taps - 1 columns:
on a 5-wide map that is 7/5 of the work, plus a copy and a finishing loop per short row. A
stride-1 window whose output is as wide as its input ("same" columns) can instead run over the
flat index q = oy*W + ox of the unpadded plane: tap (a, b) of output q reads input element
q + a*dh*W + b*dw of the plane copied once after pt*W + pl zeros (rows above and below the
image then read zeros). Only the column wrap is wrong: a tap whose column shift
s = b*dw - pl is not 0 reads the next or previous row where ox + s leaves [0, W), so those
lanes are cleared with a constant mask (per shift, over q; the same for every plane), a
bitwise AND that keeps NaN and Inf out exactly as zero padding does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ember.lower.parallel import part_loop, part_slot
from ember.ops.window_plane import (LANES, MASK, VEC, PlaneWindow, depthwise_channels,
                                   emit_vector_types, splat)

if TYPE_CHECKING:
    from ember.ops.conv import ConvGeometry

_ALIGN = 16           # per-thread scratch regions start on 64-byte boundaries (floats)


def flat_applies(pw: PlaneWindow) -> bool:
    """Stride 1 with the output as wide as the input (the flat index then maps one to one)."""
    return pw.win.strides == (1, 1) and pw.out_w == pw.in_w


def _round(n: int, to: int) -> int:
    return -(-n // to) * to


def emit_depthwise_flat(ctx, g: ConvGeometry, pw: PlaneWindow) -> None:
    w, win = ctx.w, pw.win
    width, (kh, kw), (dh, dw), (pt, pl) = pw.in_w, win.kernel, win.dilations, win.pads_begin
    planes, mult = g.batch * g.in_channels, g.out_channels // g.groups
    out_plane = pw.out_h * width
    span = _round(out_plane, LANES)                           # whole vectors over q
    front = pt * width + pl
    size = _round(max(front + pw.in_h * width, span + (kh - 1) * dh * width + (kw - 1) * dw), 8)
    taps = [(a * dh * width + b * dw, b * dw - pl) for a in range(kh) for b in range(kw)]
    shifts = sorted({s for _, s in taps if s})
    q = np.arange(span) % width
    masks = np.stack([np.where((q + s >= 0) & (q + s < width), -1, 0) for s in shifts]
                     ) if shifts else np.zeros((0, span))
    mask = ctx.pack_constant(masks.astype(np.int32).reshape(-1)) if shifts else None
    per_thread = _round(size, _ALIGN) + _round(span, _ALIGN)
    emit_vector_types(w)
    parallel = ctx.schedule.threads > 1 and planes > 1
    scratch = ctx.request_scratch((ctx.schedule.threads if parallel else 1) * per_thread * 4)
    merged = (g.batch, g.out_channels, out_plane)
    flat = ctx.can_merge(merged)
    with part_loop(ctx, "nc", planes):
        mine = f" + {part_slot(ctx)} * {per_thread}" if parallel else ""
        w.line(f"float *restrict xz = (float *){scratch}{mine};")
        w.line(f"float *restrict acc = xz + {_round(size, _ALIGN)};")
        w.line(f"memset(xz, 0, sizeof(float)*{front});")
        w.line(f"memcpy(xz + {front}, {ctx.ins[0]} + nc*{pw.in_h * width}, "
               f"sizeof(float)*{pw.in_h * width});")
        w.line(f"memset(xz + {front + pw.in_h * width}, 0, "
               f"sizeof(float)*{size - front - pw.in_h * width});")
        with depthwise_channels(ctx, g.in_channels, mult, len(taps)):
            bias = f"{ctx.ins[2]}[co]" if g.has_bias else "0.0f"
            with w.block(f"for (int64_t q = 0; q < {span}; q += {LANES})"):
                w.line(f"{VEC} s0 = {splat(bias)}, s1 = {splat('0.0f')};")
                for s in shifts:
                    w.line(f"const {MASK} m{shifts.index(s)} = "
                           f"*(const {MASK} *)({mask} + {shifts.index(s) * span} + q);")
                for t, (offset, s) in enumerate(taps):
                    x = f"*(const {VEC} *)(xz + q + {offset})"
                    if s:
                        x = f"({VEC})(({MASK}){x} & m{shifts.index(s)})"
                    w.line(f"s{t % 2} += w{t} * {x};")
                w.line(f"*({VEC} *)(acc + q) = s0 + s1;")
            at = f"(n*{g.out_channels} + co)*{out_plane} + q"
            with w.block(f"for (int64_t q = 0; q < {out_plane}; ++q)"):
                if flat:
                    ctx.store(["n", "co", "q"], at, "acc[q]", shape=merged)
                else:
                    sp = ["oh", "ow"] if len(g.in_sp) == 2 else ["ow"]
                    w.line(f"const int64_t oh = q / {width}, ow = q % {width};"
                           if len(sp) == 2 else "const int64_t ow = q;")
                    ctx.store(["n", "co"] + sp, at, "acc[q]")
