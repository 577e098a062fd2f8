"""Depthwise Conv (group == input channels, float32, 1-D or 2-D): a vectorized plane kernel.

Each input plane is copied once into the padded, stride-phase-split layout of
`window_plane`; then, for each of its output channels (the channel multiplier), the taps
are unrolled with their weights and the bias held in registers, and one flat loop over the
plane computes every output. Finished rows go out through ctx.store, so a fused epilogue
(BatchNorm shift, Relu, Clip) runs in its own vectorizable loop.

Three cases skip that copy: stride-1 "same"-width narrow maps run over the flat plane
(depthwise_flat.py), wide ones whose rows are whole vectors read the input rows in place
(depthwise_rows.py), and column stride 2 on rows of a vector or more reads them in place too,
de-interleaving even and odd columns in registers (depthwise_stride2.py). The copy stays for
other strides, narrower rows, scalar targets (`ember export`) and odd geometries.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ember.lower.schedule import depthwise_flat_pays
from ember.ops.depthwise_flat import emit_depthwise_flat, flat_applies
from ember.ops.depthwise_rows import emit_depthwise_rows, rows_applies
from ember.ops.depthwise_stride2 import emit_depthwise_stride2, stride2_applies
from ember.ops.window_plane import (Fold, PlaneWindow, depthwise_channels, emit_window_rows,
                                   plane_loop, plane_window, splat)

if TYPE_CHECKING:
    from ember.ops.conv import ConvGeometry


def depthwise_plane(g: ConvGeometry) -> PlaneWindow | None:
    """The plane window of a depthwise Conv this kernel handles, None for any other Conv."""
    if g.transposed or g.groups != g.in_channels:
        return None
    return plane_window(g.in_sp, g.window)


def is_depthwise(g: ConvGeometry) -> bool:
    return depthwise_plane(g) is not None


def emit_depthwise(ctx, g: ConvGeometry) -> None:
    pw = depthwise_plane(g)
    assert pw is not None, "emit_depthwise needs a depthwise Conv (see is_depthwise)"
    w = ctx.w
    planes, mult = g.batch * g.in_channels, g.out_channels // g.groups
    out_plane = pw.out_h * pw.out_w
    if planes * mult * out_plane == 0:
        return
    if flat_applies(pw) and depthwise_flat_pays(pw.out_h, pw.out_w, pw.pitch):
        emit_depthwise_flat(ctx, g, pw)
        return
    if rows_applies(pw, ctx.schedule.vector_bytes):
        emit_depthwise_rows(ctx, g, pw)
        return
    if stride2_applies(pw, ctx.schedule.vector_bytes):
        emit_depthwise_stride2(ctx, g, pw)
        return
    taps = len(pw.taps())
    out_vars = ["n", "co", "oh", "ow"] if len(g.in_sp) == 2 else ["n", "co", "ow"]
    with plane_loop(ctx, pw, planes, "0.0f"):
        with depthwise_channels(ctx, g.in_channels, mult, taps):
            bias = f"{ctx.ins[2]}[co]" if g.has_bias else "0.0f"

            def finish(value: str, offset: str) -> None:
                ctx.store(out_vars, f"(n * {g.out_channels} + co) * {out_plane} + {offset}",
                          value)

            fold = Fold((splat(bias), splat("0.0f")), "{acc} += w{t} * {x};", "{a} + {b}")
            emit_window_rows(w, pw, "padded", "acc", fold, finish)
