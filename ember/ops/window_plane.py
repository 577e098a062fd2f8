"""Vectorizable 2-D window kernels over one NCHW plane (depthwise Conv, MaxPool, AveragePool).

A window that slides with stride (sh, sw) and dilation (dh, dw) reads input column
ow*sw + b*dw for output column ow and tap b: a strided, bounds-checked access that compilers
do not vectorize. So each plane is first copied into scratch with its padding written out
and its rows and columns split by stride phase:

    phase plane (r % sh, c % sw), row r // sh, column c // sw  <-  padded input (r, c)

Every phase plane has `pitch` columns and `rows` rows. Tap (a, b) of output (oh, ow) then
sits at `tap_offset(a, b) + oh*pitch + ow`, so over the flat index q = oh*pitch + ow each tap
is one contiguous stream at a constant offset: the kernel is a single loop over q with the
taps unrolled and no bounds test, which GCC vectorizes. Columns ow >= out_w of the pitch are
computed too (on finite neighbours, never stored); for small planes that waste is what buys
full vectors. Output rows go in blocks whose results (`acc`) stay in L1 until a second loop
hands each real element to the caller (an epilogue, a divisor).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator

from ember.kernels.vector_c import require_in_register
from ember.lower.parallel import part_loop, part_slot
from ember.lower.schedule import SCALAR_BYTES
from ember.ops.window import Window
from ember.render.cwriter import CWriter

#: accumulator block size in floats: a few output rows that stay in L1 between the two loops
_ACC_FLOATS = 2048
#: per-thread scratch regions start on 64-byte boundaries (in floats)
_ALIGN = 16
#: largest kernel (taps) whose loop is unrolled, and largest stride (the copy is written out
#: per column phase); other windows keep the generic kernels
MAX_TAPS, MAX_STRIDE = 64, 4
#: float lanes of the vectors the tap loop computes in (the C names of their types)
LANES = 8
VEC, MASK = "ember_vf", "ember_vi"


@dataclass(frozen=True)
class PlaneWindow:
    """A 2-D window over one [in_h, in_w] plane, in the phase-split padded layout above."""
    in_h: int
    in_w: int
    win: Window

    @property
    def out_h(self) -> int:
        return self.win.out[0]

    @property
    def out_w(self) -> int:
        return self.win.out[1]

    @property
    def pitch(self) -> int:
        """Columns of a phase plane: enough for every tap of every output column."""
        sw, ext = self.win.strides[1], self.win.extent[1]
        return self.out_w - 1 + -(-ext // sw)

    @property
    def rows(self) -> int:
        sh, ext = self.win.strides[0], self.win.extent[0]
        return self.out_h - 1 + -(-ext // sh)

    @property
    def phases(self) -> int:
        return self.win.strides[0] * self.win.strides[1]

    @property
    def padded_floats(self) -> int:
        # + slack: the unused columns of the last row read up to one tap extent past the end,
        # and its last vector up to LANES - 1 more
        slack = (self.win.extent[1] - 1) // self.win.strides[1] + LANES - 1
        return self.phases * self.rows * self.pitch + slack

    @property
    def block_rows(self) -> int:
        return max(1, min(self.out_h, _ACC_FLOATS // self.pitch))

    @property
    def acc_offset(self) -> int:
        """Where the accumulator block starts in a thread's scratch, after the padded plane."""
        return _round(self.padded_floats)

    def scratch_floats(self, extra: int = 0) -> int:
        """Scratch one thread needs: the padded plane, the accumulator block, `extra` floats."""
        return self.acc_offset + _round(self.block_rows * self.pitch) + _round(extra)

    def taps(self) -> list[tuple[int, int]]:
        kh, kw = self.win.kernel
        return [(a, b) for a in range(kh) for b in range(kw)]

    def tap_offset(self, a: int, b: int) -> int:
        (sh, sw), (dh, dw) = self.win.strides, self.win.dilations
        phase = (a * dh % sh) * sw + b * dw % sw
        return phase * self.rows * self.pitch + (a * dh // sh) * self.pitch + b * dw // sw


def plane_window(in_sp: tuple[int, ...], win: Window) -> PlaneWindow | None:
    """The 2-D form of a 1-D or 2-D window (a 1-D one gets a unit height), None otherwise."""
    if len(in_sp) == 2:
        pw = PlaneWindow(in_sp[0], in_sp[1], win)
    elif len(in_sp) == 1:
        pw = PlaneWindow(1, in_sp[0], Window((1,) + win.kernel, (1,) + win.strides,
                                             (1,) + win.dilations, (0,) + win.pads_begin,
                                             (0,) + win.pads_end, (1,) + win.out))
    else:
        return None
    fits = math.prod(win.kernel) <= MAX_TAPS and max(win.strides) <= MAX_STRIDE
    return pw if fits else None


def _round(floats: int) -> int:
    return -(-floats // _ALIGN) * _ALIGN


@contextlib.contextmanager
def plane_loop(ctx, pw: PlaneWindow, planes: int, pad: str, extra: int = 0) -> Iterator[None]:
    """`for (nc < planes)` over the input planes of ctx.ins[0] (threads share them out), each
    copied into `padded` (padding with `pad`); `acc` is the accumulator block and `extra`
    points to `extra` more floats of this thread's scratch."""
    w, threads = ctx.w, ctx.schedule.threads
    emit_vector_types(w)
    parallel = threads > 1 and planes > 1
    per_thread = pw.scratch_floats(extra)
    scratch = ctx.request_scratch((threads if parallel else 1) * per_thread * 4)
    with part_loop(ctx, "nc", planes):
        mine = f" + {part_slot(ctx)} * {per_thread}" if parallel else ""
        w.line(f"float *restrict padded = (float *){scratch}{mine};")
        w.line(f"float *restrict acc = padded + {pw.acc_offset};")
        if extra:
            w.line(f"float *restrict extra = acc + {_round(pw.block_rows * pw.pitch)};")
        emit_padded_copy(w, pw, f"{ctx.ins[0]} + nc * {pw.in_h * pw.in_w}", "padded", pad,
                         shuffles=ctx.schedule.vector_bytes > SCALAR_BYTES)
        yield


def emit_padded_copy(w: CWriter, pw: PlaneWindow, src: str, dst: str, pad: str,
                     shuffles: bool = False) -> None:
    """Copy the plane at `src` into the phase-split layout at `dst`, padding with `pad`.
    `shuffles`: split column phases of stride 2 by vector shuffles (a target with SIMD)."""
    (sh, sw), (pt, pl) = pw.win.strides, pw.win.pads_begin
    plane, total = pw.rows * pw.pitch, pw.rows * sh
    # padded rows [0, top) and [bottom, total) are padding, the rows between hold input rows
    top, bottom = min(pt, total), max(min(pt, total), min(pt + pw.in_h, total))
    for lo, hi, copies in ((0, top, False), (top, bottom, True), (bottom, total, False)):
        if hi <= lo:
            continue
        with w.block(f"for (int64_t rr = {lo}; rr < {hi}; ++rr)"):
            # padded row rr lands in row phase rr % sh, at row rr / sh of that phase plane
            at = (f"rr * {pw.pitch}" if sh == 1 else
                  f"(rr % {sh}) * {sw * plane} + (rr / {sh}) * {pw.pitch}")
            w.line(f"float *restrict d = {dst} + {at};")
            columns = [f"d + {c * plane}" if c else "d" for c in range(sw)]
            if not copies:
                for d in columns:
                    _fill(w, d, 0, pw.pitch, pad)
                continue
            row = f"(rr - {pt})" if pt else "rr"
            w.line(f"const float *restrict s = {src} + {row} * {pw.in_w};")
            ranges = [_phase_range(pw, c) for c in range(sw)]
            split = _split_range(pw, ranges) if shuffles and sw == 2 else (0, 0)
            if split[1] > split[0]:
                _deinterleave(w, columns, split, pl)
            for c, d in enumerate(columns):
                lo_j, hi_j = ranges[c]
                _fill(w, d, 0, lo_j, pad)
                # [split) went by shuffles: copy the columns of [lo_j, hi_j) on either side
                for a, b in ((lo_j, min(hi_j, split[0])), (max(lo_j, split[1]), hi_j)):
                    if b > a:
                        _copy(w, d, a, b, sw, c - pl)
                _fill(w, d, hi_j, pw.pitch, pad)
    _fill(w, dst, pw.phases * plane, pw.padded_floats, pad)


def _phase_range(pw: PlaneWindow, c: int) -> tuple[int, int]:
    """Columns [lo, hi) of column phase c that hold input: column j of phase c is padded
    column j*sw + c, input column j*sw + c - pl."""
    sw, pl = pw.win.strides[1], pw.win.pads_begin[1]
    lo = min(pw.pitch, max(0, -(-(pl - c) // sw)))
    return lo, max(lo, min(pw.pitch, -(-(pw.in_w + pl - c) // sw)))


def _split_range(pw: PlaneWindow, ranges: list[tuple[int, int]]) -> tuple[int, int]:
    """The columns j (whole 4-float vectors of them) both phases of stride 2 hold input at, whose
    input pairs s[2j - pl], s[2j + 1 - pl] lie inside the row."""
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    return lo, lo + max(0, hi - lo) // 4 * 4


def _deinterleave(w: CWriter, columns: list[str], split: tuple[int, int], pl: int) -> None:
    """Columns [split) of both phases of stride 2 from 8 input floats a step: the even
    ones to the phase of padded column 2j, the odd ones to the other. In 4-float vectors: a
    shuffle within 128 bits is one cheap instruction everywhere (SSE shufps, NEON uzp), where
    8-lane ones cross AVX halves (vpermd: 4 cycles each on Zen 1)."""
    w.line("typedef float ember_v4 __attribute__((vector_size(16), aligned(4)));")
    with w.block(f"for (int64_t j = {split[0]}; j < {split[1]}; j += 4)"):
        at = _affine("j", 2, -pl)
        w.line(f"const ember_v4 lo = *(const ember_v4 *)(s + {at}), "
               f"hi = *(const ember_v4 *)(s + {at} + 4);")
        w.line(f"*(ember_v4 *)({columns[0]} + j) = __builtin_shufflevector(lo, hi, 0, 2, 4, 6);")
        w.line(f"*(ember_v4 *)({columns[1]} + j) = __builtin_shufflevector(lo, hi, 1, 3, 5, 7);")


def _fill(w: CWriter, dst: str, lo: int, hi: int, value: str) -> None:
    """dst[lo:hi] = value."""
    if hi > lo:
        with w.block(f"for (int64_t j = {lo}; j < {hi}; ++j)"):
            w.line(f"{_deref(dst)}[j] = {value};")


def _copy(w: CWriter, dst: str, lo: int, hi: int, stride: int, offset: int) -> None:
    """dst[j] = s[j*stride + offset] for j in [lo, hi). A unit-stride run goes by whole vectors
    (a plain loop would become a memmove call per row)."""
    src = f"s[{_affine('j', stride, offset)}]"
    if stride == 1 and hi - lo >= LANES:
        w.line(f"int64_t j = {lo};")
        with w.block(f"for (; j <= {hi - LANES}; j += {LANES})"):
            w.line(f"*({VEC} *)({dst} + j) = *(const {VEC} *)(s + {_affine('j', 1, offset)});")
        with w.block(f"for (; j < {hi}; ++j)"):
            w.line(f"{_deref(dst)}[j] = {src};")
        return
    with w.block(f"for (int64_t j = {lo}; j < {hi}; ++j)"):
        w.line(f"{_deref(dst)}[j] = {src};")


def _deref(pointer: str) -> str:
    return pointer if pointer.isidentifier() else f"({pointer})"


def _affine(var: str, scale: int, const: int) -> str:
    text = var if scale == 1 else f"{var} * {scale}"
    return text if not const else f"{text} {'-' if const < 0 else '+'} {abs(const)}"


def emit_vector_types(w: CWriter) -> None:
    """Block-scope typedefs of the float vector and its comparison mask (GCC/Clang vector
    extensions: the compiler picks the instructions, or plain scalar code on a target with no
    SIMD). aligned(4): loads and stores at any float. The mask is only for max (`unused`:
    C99 -Wall projects of `ember export` would warn of it in the other kernels)."""
    w.line(f"typedef float {VEC} __attribute__((vector_size({4 * LANES}), aligned(4)));")
    w.line(f"typedef int32_t {MASK} __attribute__((vector_size({4 * LANES}), aligned(4), unused));")


def emit_in_registers(ctx, names: list[str]) -> None:
    """Keep the (non-const) vectors `names` in registers where they are next used
    (kernels/vector_c.py)."""
    require_in_register(ctx)
    ctx.w.line(" ".join(f"EMBER_IN_REGISTER({n});" for n in names))


def splat(scalar: str) -> str:
    """A vector of `scalar` in every lane (subtracting +0 keeps a -0 as it is)."""
    return f"({scalar} - ({VEC}){{0}})"


def emit_broadcast_fmas(w: CWriter, x: str, nv: int, weights: str, co: int,
                        sums: list[list[str]]) -> None:
    """One step of a co-channel x nv-vector register block (direct and 1x1 convs): nv input
    vectors from `x`, co weights from `weights` broadcast, sums[i][v] += w_i * x_v."""
    w.line(f"const {VEC} " + ", ".join(f"x{v} = *(const {VEC} *)({x} + {v * LANES})"
                                       for v in range(nv)) + ";")
    for i in range(co):
        w.line(f"const {VEC} w{i} = {splat(f'{weights}[{i}]')};")
        w.line(" ".join(f"{sums[i][v]} += w{i} * x{v};" for v in range(nv)))


def emit_sums_store(w: CWriter, sums: list[list[str]], row: int, at: str) -> None:
    """Store a register block's sums: channel i's vectors at `at` + i*row (floats)."""
    for i, vectors in enumerate(sums):
        w.line(" ".join(f"*({VEC} *)({at} + {i * row} + {v * LANES}) = {x};"
                        for v, x in enumerate(vectors)))


@contextlib.contextmanager
def depthwise_channels(ctx, in_channels: int, mult: int, taps: int) -> Iterator[None]:
    """Inside a loop over planes `nc`: image n, input channel c, and each of its `mult`
    output channels co with that channel's `taps` weights (ctx.ins[1], [C*mult, taps])
    splat into vectors w0, w1, ..."""
    w = ctx.w
    w.line(f"const int64_t n = nc / {in_channels}, c = nc % {in_channels};")
    channels = (w.block(f"for (int64_t co = c * {mult}; co < (c + 1) * {mult}; ++co)")
                if mult > 1 else contextlib.nullcontext(w.line("const int64_t co = c;")))
    with channels:
        w.line(f"const float *restrict wp = {ctx.ins[1]} + co * {taps};")
        w.line(f"const {VEC} " + ", ".join(f"w{t} = {splat(f'wp[{t}]')}" for t in range(taps))
               + ";")
        yield


@dataclass(frozen=True)
class Fold:
    """How the tap loop folds a window's taps, as C over vectors. Two partial results, over
    the even and the odd taps, halve the chain of dependent operations; `join` combines them.
    `step` is a statement of {acc} (the partial), {x} (the tap's vector) and {t} (its index);
    `join` an expression of {a} and {b}."""
    init: tuple[str, str]
    step: str
    join: str


def vector_max(a: str, b: str) -> str:
    """a > b ? a : b per lane (a NaN in `a` is skipped), as the mask select C allows vectors."""
    return f"({VEC})((({a} > {b}) & ({MASK})({a})) | (~({a} > {b}) & ({MASK})({b})))"


def emit_window_rows(w: CWriter, pw: PlaneWindow, padded: str, acc: str, fold: Fold,
                     finish: Callable[[str, str], None],
                     row_prologue: Callable[[], None] | None = None) -> None:
    """The blocked tap loop over a padded plane, then the per-element finishing loop.

    `finish(acc_element, out_offset)` writes output (oh, ow) from its accumulator, where
    `out_offset` is its offset within the output plane. `row_prologue` writes per-row
    declarations (oh is declared) before the column loop.
    """
    p, out_w = pw.pitch, pw.out_w
    with w.block(f"for (int64_t oh0 = 0; oh0 < {pw.out_h}; oh0 += {pw.block_rows})"):
        w.line(f"const int64_t nrows = {pw.out_h} - oh0 < {pw.block_rows} ? "
               f"{pw.out_h} - oh0 : {pw.block_rows};")
        # whole vectors: the last one runs past the block into the padded plane's slack
        with w.block(f"for (int64_t q = 0; q < nrows * {p}; q += {LANES})"):
            w.line(f"const float *restrict x = {padded} + oh0 * {p} + q;")
            w.line(f"{VEC} s0 = {fold.init[0]}, s1 = {fold.init[1]};")
            for t, (a, b) in enumerate(pw.taps()):
                offset = pw.tap_offset(a, b)
                load = f"*(const {VEC} *)(x + {offset})" if offset else f"*(const {VEC} *)x"
                w.line(fold.step.format(acc=f"s{t % 2}", x=load, t=t))
            w.line(f"*({VEC} *)({acc} + q) = {fold.join.format(a='s0', b='s1')};")
        with w.block("for (int64_t r = 0; r < nrows; ++r)"):
            w.line("const int64_t oh = oh0 + r;")
            if row_prologue is not None:
                row_prologue()
            with w.block(f"for (int64_t ow = 0; ow < {out_w}; ++ow)"):
                finish(f"{acc}[r * {p} + ow]", f"oh * {out_w} + ow")
