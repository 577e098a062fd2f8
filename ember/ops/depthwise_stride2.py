"""Depthwise Conv with column stride 2 straight from the input rows (MobileNetV2's
downsampling 3x3s): no padded, phase-split copy of the plane.

Output vector ow .. ow + LANES of a row takes, for tap (a, b), input columns 2*ow + e of
kernel row a, e = b*dw - pl: the even (e even) or odd lanes of the pair of vectors loaded at
columns 2*ow + e' and 2*ow + e' + LANES, e' = e rounded down to even. Two taps with e = e'
and e' + 1 (3x3: e = 0, 1) share a pair and need no shuffle: each vector of the pair is
multiplied by their two weights alternating ([w_e', w_e'+1, w_e', ...]) into interleaved
sums, whose even and odd lanes are added once per output vector, after all kernel rows. A
tap alone in its pair (3x3: e = -1) takes its lanes by one in-register shuffle. Both
shuffles keep 128-bit halves apart (lanes 0 2 8 10 | 4 6 12 14: one shufps on AVX, uzp on
NEON; a true 8-lane de-interleave crosses the AVX halves), so every vector holds outputs
0 1 4 5 2 3 6 7, and one swap of the middle pairs on the sum restores the order.

Loads that leave the row happen only in the first and last vectors of a row (their columns
are known when generating): they load the row's first or last whole vector and shift it,
filling with zeros, as zero padding would (a NaN or Inf beside the row never enters). Rows
above and below the image read a zeroed row. The frame (row pointers, prefetch, output
blocks in L1, the store through ctx.store for a fused epilogue) is
depthwise_rows.emit_row_kernel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ember.lower.schedule import SCALAR_BYTES
from ember.ops.depthwise_rows import emit_row_kernel
from ember.ops.window_plane import LANES, MASK, VEC, PlaneWindow, splat
from ember.render.cwriter import CWriter

if TYPE_CHECKING:
    from ember.ops.conv import ConvGeometry

#: de-interleaving shuffles of a pair (lo, hi) of vectors: even and odd columns, each half of
#: the result from the same half of lo and hi; the output order they leave, and its inverse
_EVEN = (0, 2, 8, 10, 4, 6, 12, 14)
_ODD = tuple(i + 1 for i in _EVEN)
_UNSWAP = (0, 1, 4, 5, 2, 3, 6, 7)


def stride2_applies(pw: PlaneWindow, vector_bytes: int) -> bool:
    """Column stride 2 on rows of a vector at least, every column offset within a vector (an
    edge load then reads at most LANES - 1 floats past the row: the frame's margins), few
    vectors at the edges (each is written out); a target with SIMD."""
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
    width, shifts, kw = pw.in_w, _shifts(pw), pw.win.kernel[1]
    pairs = _pairs(shifts)
    vectors, lo, hi = _vectors(pw)
    # per pair of loads, the kernel columns b reading it: (even e, odd e) when both are taps
    members = [[b for b, e in enumerate(shifts) if e - e % 2 == p] for p in pairs]
    both = [len(m) == 2 for m in members]

    def channel(w: CWriter) -> None:
        for a in range(pw.win.kernel[0]):
            for k, m in enumerate(members):
                if both[k]:
                    t0, t1 = (a * kw + b for b in sorted(m, key=lambda b: shifts[b] % 2))
                    w.line(f"const {VEC} p{a}_{k} = {{"
                           + ", ".join([f"wp[{t0}], wp[{t1}]"] * (LANES // 2)) + "};")

    def vector(w: CWriter, ow0: int | None) -> None:
        _emit_vector(w, pw.win.kernel[0], kw, shifts, pairs, both, ow0, width)

    def row(w: CWriter) -> None:
        for v in range(min(lo, vectors)):
            with w.block(""):
                vector(w, v * LANES)
        if hi > lo:
            with w.block(f"for (int64_t ow = {lo * LANES}; ow < {hi * LANES}; ow += {LANES})"):
                vector(w, None)
        for v in range(max(lo, hi), vectors):
            with w.block(""):
                vector(w, v * LANES)

    emit_row_kernel(ctx, g, pw, row, prefetch=True, channel=channel if any(both) else None)


def _emit_vector(w: CWriter, kh: int, kw: int, shifts: list[int], pairs: list[int],
                 both: list[bool], ow0: int | None, width: int) -> None:
    """o[ow .. ow + LANES) from every tap: `ow0` a vector at the row's edge (its loads
    checked against the row), None the loop's `ow` (every load inside). s0 (and s1): the
    sums of taps alone in their pair; i0, i1: the interleaved sums of paired taps (outputs
    ow .. ow + 3 and ow + 4 .. ow + 7). One chain s0 while it is no longer than the kernel
    rows (3x3: a second one was 4% slower on MobileNetV2's 56x56 map), two beyond."""
    zero = splat("0.0f")
    chains = 2 if kh * len(shifts) - 2 * kh * sum(both) > kh else 1
    w.line(f"{VEC} s0 = bias" + (f", s1 = {zero};" if chains == 2 else ";"))
    if any(both):
        w.line(f"{VEC} i0 = {zero}, i1 = {zero};")
    loads = {(a, k, half): _load(f"r{a}", p + half * LANES, ow0, width)
             for a in range(kh) for k, p in enumerate(pairs) for half in (0, 1)}
    if "z" in loads.values():
        w.line(f"const {VEC} z = {zero};")
    single = 0
    for a in range(kh):
        for k, p in enumerate(pairs):
            for half in (0, 1):
                w.line(f"const {VEC} l{a}_{k}_{half} = {loads[a, k, half]};")
            if both[k]:
                w.line(f"i0 += p{a}_{k} * l{a}_{k}_0;")
                w.line(f"i1 += p{a}_{k} * l{a}_{k}_1;")
                continue
            b = next(b for b, e in enumerate(shifts) if e - e % 2 == p)
            x = _deinterleave(f"l{a}_{k}", shifts[b] % 2)
            w.line(f"s{single % chains} += w{a * kw + b} * {x};")
            single += 1
    total = "s0 + s1" if chains == 2 else "s0"
    if any(both):
        total += f" + {_deinterleave('i', 0, '')} + {_deinterleave('i', 1, '')}"
    at = "ow" if ow0 is None else str(ow0)
    w.line(f"const {VEC} swapped = {total};")
    w.line(f"*({VEC} *)(o + {at}) = __builtin_shufflevector(swapped, swapped, "
           + ", ".join(map(str, _UNSWAP)) + ");")


def _deinterleave(pair: str, odd: int, sep: str = "_") -> str:
    """The even or odd lanes of the vectors {pair}{sep}0 and {pair}{sep}1, in the order above."""
    return (f"__builtin_shufflevector({pair}{sep}0, {pair}{sep}1, "
            + ", ".join(map(str, _ODD if odd else _EVEN)) + ")")


def _load(row: str, offset: int, ow0: int | None, width: int) -> str:
    """The vector of `row` at column 2*ow + offset; at an edge (`ow0` known) the lanes
    outside the row are masked to zeros (they read a neighbouring row or a margin)."""
    if ow0 is None:
        at = "2 * ow" + (f" + {offset}" if offset > 0 else f" - {-offset}" if offset else "")
        return f"*(const {VEC} *)({row} + {at})"
    c = 2 * ow0 + offset
    if 0 <= c <= width - LANES:
        return f"*(const {VEC} *)({row} + {c})"
    if c <= -LANES or c >= width:
        return "z"
    mask = ", ".join("-1" if 0 <= c + i < width else "0" for i in range(LANES))
    at = f"{row} + {c}" if c >= 0 else f"{row} - {-c}"
    return f"({VEC})(({MASK})*(const {VEC} *)({at}) & ({MASK}){{{mask}}})"
