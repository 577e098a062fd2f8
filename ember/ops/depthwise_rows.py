"""Depthwise Conv straight from the input rows, for wide stride-1 "same"-width maps
(MobileNetV2's 112x112 and 56x56): no padded copy of the plane.

The plane kernel of window_plane.py first copies each plane into a padded layout: on a
112x112 map that copy costs about as much as the taps. When the output is as wide as the
input and a whole number of vectors, each output row is W / LANES vectors that read the
input rows in place: tap (a, b) of the vector at column ow reads row oh + a*dh - pt at columns
ow + s, s = b*dw - pl. Only two things leave the image: a row above or below it (its taps read
a zeroed row instead) and, in a row's first and last vectors, the lanes a negative or positive
shift s pushes past the row's ends: they read the neighbouring row (or a margin of the zero
row, or of a copy of the input's very first and last rows, which have no input memory beside
them) and a constant AND clears them (exactly as zero padding: a NaN or Inf next to the row
never enters; shuffles with zeros instead were 4% slower on MobileNetV2's 112x112 and 56x56).
Rows of results (`acc`, in L1) then go out through ctx.store, so a fused epilogue runs in its
own vectorizable loop.

`emit_row_kernel` is that frame (planes, zero row and margins, row pointers, blocks of output
rows, the store loop); depthwise_stride2.py fills it with column stride 2's vectors.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ember.lower.parallel import part_loop, part_slot
from ember.lower.schedule import SCALAR_BYTES
from ember.ops.window_plane import (LANES, MASK, VEC, PlaneWindow, depthwise_channels,
                                   emit_vector_types, splat)
from ember.render.cwriter import CWriter

if TYPE_CHECKING:
    from ember.ops.conv import ConvGeometry

_ALIGN = 16           # per-thread scratch regions start on 64-byte boundaries (floats)
_ACC_FLOATS = 2048    # output rows per block: their results stay in L1 until stored


def rows_applies(pw: PlaneWindow, vector_bytes: int) -> bool:
    """Stride 1, output as wide as the input, rows of whole vectors (two at least, so the
    first and the last differ), every column shift within one vector; a target with SIMD."""
    win, width = pw.win, pw.in_w
    pl = win.pads_begin[1]
    pr = (win.kernel[1] - 1) * win.dilations[1] - pl
    return (vector_bytes > SCALAR_BYTES and win.strides == (1, 1) and pw.out_w == width
            and width % LANES == 0 and width >= 2 * LANES and 0 <= pl < LANES
            and 0 <= pr < LANES)


def _round(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def emit_depthwise_rows(ctx, g: ConvGeometry, pw: PlaneWindow) -> None:
    win = pw.win
    shifts = [(a, b * win.dilations[1] - win.pads_begin[1])
              for a in range(win.kernel[0]) for b in range(win.kernel[1])]
    width = pw.in_w

    def row(w: CWriter) -> None:
        with w.block(""):
            _emit_vector(w, shifts, "0", edge=-1)
        with w.block(f"for (int64_t ow = {LANES}; ow < {width - LANES}; ow += {LANES})"):
            _emit_vector(w, shifts, "ow", edge=0)
        with w.block(""):
            _emit_vector(w, shifts, str(width - LANES), edge=1)

    emit_row_kernel(ctx, g, pw, row)


def emit_row_kernel(ctx, g: ConvGeometry, pw: PlaneWindow, row: Callable[[CWriter], None],
                    prefetch: bool = False,
                    channel: Callable[[CWriter], None] | None = None) -> None:
    """For each plane and output channel, blocks of output rows: `row(w)` writes the C that
    computes output row oh0 + r into `o` (pw.out_w floats; it may write up to LANES - 1 more,
    which the next row or the slack after the block takes) from its kernel rows `r0`, `r1`,
    ... (input rows, or `zero`: pw.in_w zeros), with the weights w0, w1, ... and `bias`
    splat; then the block goes out through ctx.store. `row` may read LANES floats before and
    after a row (and must mask them off): the zero row has zero margins, and the first and
    last rows of the whole input, which have no input memory beside them, are read from
    copies with margins. `prefetch`: each row fetches the input rows two output rows ahead
    will first read. `channel(w)` writes declarations per output channel (after its
    weights)."""
    w, win = ctx.w, pw.win
    height, width, out_w = pw.in_h, pw.in_w, pw.out_w
    kh, dh, sh, pt = win.kernel[0], win.dilations[0], win.strides[0], win.pads_begin[0]
    planes, mult = g.batch * g.in_channels, g.out_channels // g.groups
    out_plane, block = pw.out_h * out_w, max(1, min(pw.out_h, _ACC_FLOATS // out_w))
    line = _round(width + 2 * LANES)    # a row with margins
    per_thread = 3 * line + _round(block * out_w + LANES)
    emit_vector_types(w)
    threads = ctx.schedule.threads if ctx.schedule.threads > 1 and planes > 1 else 1
    scratch = ctx.request_scratch(threads * per_thread * 4)
    # the part's zero row (and margins), once: nothing writes it (a memset call per
    # plane cost 13% of MobileNetV2's 14x14 stride-2 kernel)
    mine = f" + {part_slot(ctx)} * {per_thread}" if threads > 1 else ""
    w.line(f"memset((float *){scratch}{mine}, 0, sizeof(float)*{width + 2 * LANES});")
    merged = (g.batch, g.out_channels, out_plane)
    with part_loop(ctx, "nc", planes):
        w.line(f"const float *restrict zero = (const float *){scratch}{mine} + {LANES};")
        w.line(f"float *restrict acc = (float *){scratch}{mine} + {3 * line};")
        w.line(f"const float *xp = {ctx.ins[0]} + nc*{height * width};")
        # the plane's first and last rows: copies with margins in the input's first / last
        w.line(f"const float *top = xp, *bottom = xp + {(height - 1) * width};")
        for k, (name, plane, at) in enumerate((("bottom", planes - 1, (height - 1) * width),
                                                ("top", 0, 0))):
            with w.block(f"if (nc == {plane})"):
                w.line(f"float *restrict copy = (float *){scratch}{mine} + {(k + 1) * line};")
                w.line(f"memset(copy, 0, sizeof(float)*{width + 2 * LANES});")
                w.line(f"memcpy(copy + {LANES}, xp + {at}, sizeof(float)*{width});")
                w.line(f"{name} = copy + {LANES};")
        if height == 1:             # one row, both first and last
            w.line("top = nc == 0 ? top : bottom;")
        with depthwise_channels(ctx, g.in_channels, mult, kh * win.kernel[1]):
            w.line(f"const {VEC} bias = {splat(f'{ctx.ins[2]}[co]' if g.has_bias else '0.0f')};")
            if channel is not None:
                channel(w)
            with w.block(f"for (int64_t oh0 = 0; oh0 < {pw.out_h}; oh0 += {block})"):
                w.line(f"const int64_t nrows = {pw.out_h} - oh0 < {block} ? "
                       f"{pw.out_h} - oh0 : {block};")
                with w.block("for (int64_t r = 0; r < nrows; ++r)"):
                    top = f"(oh0 + r) * {sh}" if sh > 1 else "oh0 + r"
                    for a in range(kh):
                        ih = _plus(top, a * dh - pt)
                        pick = f"{ih} == 0 ? top : {ih} == {height - 1} ? bottom : zero"
                        if height == 1:
                            pick = f"{ih} == 0 ? top : zero"
                        if height > 2:      # rows 1 .. height - 2 in place
                            pick = (f"(uint64_t)({_plus(top, a * dh - pt - 1)}) < {height - 2}"
                                    f" ? xp + ({ih}) * {width} : {pick}")
                        w.line(f"const float *r{a} = {pick};")
                    w.line(f"float *restrict o = acc + r * {out_w};")
                    if prefetch:
                        _emit_prefetch(w, pw, top)
                    row(w)
                at = f"(n*{g.out_channels} + co)*{out_plane} + oh0*{out_w} + q"
                with w.block(f"for (int64_t q = 0; q < nrows * {out_w}; ++q)"):
                    if ctx.can_merge(merged):
                        w.line(f"const int64_t p = oh0*{out_w} + q;")
                        ctx.store(["n", "co", "p"], at, "acc[q]", shape=merged)
                    else:
                        sp = ["oh", "ow"] if len(g.in_sp) == 2 else ["ow"]
                        w.line(f"const int64_t oh = oh0 + q / {out_w}, ow = q % {out_w};")
                        if len(sp) == 1:
                            w.line("(void)oh;")
                        ctx.store(["n", "co"] + sp, at, "acc[q]")


def _plus(expr: str, const: int) -> str:
    return f"{expr} + {const}" if const > 0 else f"{expr} - {-const}" if const else expr


def _emit_vector(w: CWriter, shifts: list[tuple[int, int]], ow: str, edge: int) -> None:
    """o[ow .. ow + LANES) from every tap; `edge` -1 / 1: the row's first / last vector,
    whose lanes past the row's start / end are masked to zeros (they read a neighbouring row
    or a margin)."""
    w.line(f"{VEC} s0 = bias, s1 = {splat('0.0f')};")
    for t, (a, s) in enumerate(shifts):
        x = f"*(const {VEC} *)(r{a} + {_plus(ow, s)})"
        if s * edge > 0:
            outside = [i + s < 0 if edge < 0 else i + s >= LANES for i in range(LANES)]
            mask = ", ".join("0" if out else "-1" for out in outside)
            x = f"({VEC})(({MASK}){x} & ({MASK}){{{mask}}})"
        w.line(f"s{t % 2} += w{t} * {x};")
    w.line(f"*({VEC} *)(o + {ow}) = s0 + s1;")


#: output rows ahead whose new input rows a row prefetches
_PREFETCH_ROWS = 2


def _emit_prefetch(w: CWriter, pw: PlaneWindow, top: str) -> None:
    """Prefetch the sh input rows that output row oh + _PREFETCH_ROWS reads first (its last
    kernel row and the sh - 1 above it). On MobileNetV2's 112x112 stride-2 maps (4.8 MB, out
    of L2) the hardware prefetcher alone left the kernel waiting on memory: 1.5x slower. Past
    the plane it fetches the next plane's rows; a prefetch never faults."""
    win = pw.win
    kh, dh, sh, pt = win.kernel[0], win.dilations[0], win.strides[0], win.pads_begin[0]
    first = _PREFETCH_ROWS * sh + (kh - 1) * dh - pt - sh + 1
    lines = -(-sh * pw.in_w * 4 // 64)
    w.line(f"const char *pf = (const char *)xp + (({top}) + {first}) * {4 * pw.in_w};")
    with w.block(f"for (int64_t k = 0; k < {lines}; ++k)"):
        w.line("__builtin_prefetch(pf + 64 * k);")
