"""Depthwise Conv with column stride 2 straight from the input rows (MobileNetV2's
downsampling 3x3s): no padded, phase-split copy of the plane.

Output vector ow0 .. ow0 + LANES of a row takes, for tap (a, b), input columns 2*ow + e of
kernel row a, e = b*dw - pl: the even (e even) or odd lanes of the two vectors loaded at
columns 2*ow0 + e' and 2*ow0 + e' + LANES, e' = e rounded down to even. Taps whose e differ
by one share their pair of loads. The de-interleave is one in-register shuffle per tap; it
keeps 128-bit halves apart (lanes 0 2 8 10 | 4 6 12 14: a single shufps on AVX, uzp on
NEON, where a true 8-lane de-interleave crosses the AVX halves), so every tap's vector holds
outputs 0 1 4 5 2 3 6 7, and one swap of the middle pairs on the sum restores the order.

Loads that leave the row happen only in the first and last vectors of a row (their columns
are known when generating): they load the row's first or last whole vector and shift it,
filling with zeros, as zero padding would (a NaN or Inf beside the row never enters). Rows
above and below the image read a zeroed row. The frame (row pointers, output blocks in L1,
the store through ctx.store for a fused epilogue) is depthwise_rows.emit_row_kernel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ember.lower.schedule import SCALAR_BYTES
from ember.ops.depthwise_rows import emit_row_kernel
from ember.ops.window_plane import LANES, VEC, PlaneWindow, splat
from ember.render.cwriter import CWriter

if TYPE_CHECKING:
    from ember.ops.conv import ConvGeometry

#: de-interleaving shuffles of a pair (lo, hi) of vectors: even and odd columns, each half of
#: the result from the same half of lo and hi; the output order they leave, and its inverse
_EVEN = (0, 2, 8, 10, 4, 6, 12, 14)
_ODD = tuple(i + 1 for i in _EVEN)
_UNSWAP = (0, 1, 4, 5, 2, 3, 6, 7)


def stride2_applies(pw: PlaneWindow, vector_bytes: int) -> bool:
    """Column stride 2 on rows of a vector at least (an edge load then shifts the first or
    last whole vector), every column offset within a vector, few vectors at the edges (each
    is written out); a target with SIMD."""
    win = pw.win
    shifts = _shifts(pw)
    if not (vector_bytes > SCALAR_BYTES and LANES == len(_EVEN) and win.strides[1] == 2
            and pw.in_w >= LANES and -LANES < min(shifts) and max(shifts) < LANES):
        return False
    vectors, lo, hi = _vectors(pw)
    return vectors - (hi - lo) <= _MAX_EDGE_VECTORS


#: vectors of a row at its edges (written out one by one) up to which this kernel applies
_MAX_EDGE_VECTORS = 3


def _shifts(pw: PlaneWindow) -> list[int]:
    """Column offset e of each kernel column: output ow reads input column 2*ow + e."""
    return [b * pw.win.dilations[1] - pw.win.pads_begin[1] for b in range(pw.win.kernel[1])]


def _pairs(shifts: list[int]) -> list[int]:
    """Offsets (even) of the pairs of vectors loaded per kernel row."""
    return sorted({e - e % 2 for e in shifts})


def _vectors(pw: PlaneWindow) -> tuple[int, int, int]:
    """Vectors of an output row, and the range [lo, hi) of those whose loads all lie within
    the input row (the others are at its edges)."""
    pairs, vectors = _pairs(_shifts(pw)), -(-pw.out_w // LANES)
    safe = [v for v in range(vectors) if 2 * LANES * v + pairs[0] >= 0
            and 2 * LANES * v + pairs[-1] + 2 * LANES <= pw.in_w]
    return (vectors, safe[0], safe[-1] + 1) if safe else (vectors, vectors, vectors)


def emit_depthwise_stride2(ctx, g: ConvGeometry, pw: PlaneWindow) -> None:
    kh, width = pw.win.kernel[0], pw.in_w
    shifts = _shifts(pw)
    pairs = _pairs(shifts)
    vectors, lo, hi = _vectors(pw)

    def row(w: CWriter) -> None:
        for v in range(min(lo, vectors)):
            with w.block(""):
                _emit_vector(w, kh, shifts, pairs, v * LANES, width)
        if hi > lo:
            with w.block(f"for (int64_t ow = {lo * LANES}; ow < {hi * LANES}; ow += {LANES})"):
                _emit_vector(w, kh, shifts, pairs, None, width)
        for v in range(max(lo, hi), vectors):
            with w.block(""):
                _emit_vector(w, kh, shifts, pairs, v * LANES, width)

    emit_row_kernel(ctx, g, pw, row, prefetch=True)


def _emit_vector(w: CWriter, kh: int, shifts: list[int], pairs: list[int], ow0: int | None,
                 width: int) -> None:
    """o[ow .. ow + LANES) from every tap: `ow0` a vector at the row's edge (its loads
    checked against the row), None the loop's `ow` (every load inside)."""
    w.line(f"{VEC} s0 = bias, s1 = {splat('0.0f')};")
    if ow0 is not None:
        w.line(f"const {VEC} z = {splat('0.0f')};")
    for a in range(kh):
        for k, e in enumerate(pairs):
            for half in (0, 1):
                w.line(f"const {VEC} l{a}_{k}_{half} = "
                       f"{_load(f'r{a}', e + half * LANES, ow0, width)};")
    t = 0
    for a in range(kh):
        for e in shifts:
            k, lanes = pairs.index(e - e % 2), _ODD if e % 2 else _EVEN
            x = (f"__builtin_shufflevector(l{a}_{k}_0, l{a}_{k}_1, "
                 + ", ".join(map(str, lanes)) + ")")
            w.line(f"s{t % 2} += w{t} * {x};")
            t += 1
    at = "ow" if ow0 is None else str(ow0)
    w.line(f"const {VEC} swapped = s0 + s1;")
    w.line(f"*({VEC} *)(o + {at}) = __builtin_shufflevector(swapped, swapped, "
           + ", ".join(map(str, _UNSWAP)) + ");")


def _load(row: str, offset: int, ow0: int | None, width: int) -> str:
    """The vector of `row` at column 2*ow + offset; at an edge (`ow0` known) the lanes
    outside the row are zeros (from a vector inside it, shifted)."""
    if ow0 is None:
        at = "2 * ow" + (f" + {offset}" if offset > 0 else f" - {-offset}" if offset else "")
        return f"*(const {VEC} *)({row} + {at})"
    c = 2 * ow0 + offset
    if 0 <= c <= width - LANES:
        return f"*(const {VEC} *)({row} + {c})"
    if c <= -LANES or c >= width:
        return "z"
    base = 0 if c < 0 else width - LANES
    # lane i is column c + i: lane c + i - base of the vector at base, a zero outside the row
    lanes = [LANES + c + i - base if 0 <= c + i < width else 0 for i in range(LANES)]
    return (f"__builtin_shufflevector(z, *(const {VEC} *)({row} + {base}), "
            + ", ".join(map(str, lanes)) + ")")
