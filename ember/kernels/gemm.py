"""Packed, register-blocked float32 GEMM: the Goto/BLIS loop nest around the microkernels.

    out[i, j] = final(sum_k A[i, k] * B[k, j])      for every item of a batch

Either operand is a constant packed at compile time (`PackedConst`, see pack_a / pack_b) or is
packed block by block while the kernel runs: a strided matrix (`Strided`; transposes fold into
its strides) or, for B, the implicit im2col matrix of a 2-D convolution (`Im2col`). B may also
be read in place through a table of row offsets (`RowOffsets`: a stride-1 convolution over a
padded image, where every row of its im2col matrix is a contiguous run of the image), and A
with unit column stride is read in place where schedule.a_rows_in_place says so (`RowsInPlace`:
the microkernel broadcasts a[r*lda + k] as it would a packed value; packing it would be a
transpose). Loops, outermost first: the thread's work item (batch entry x part of M x part of
N), jc over N in nc columns (one nr panel where each block of B is read once:
schedule.b_block_columns), pc over K in kc slices (pack B), ic over M in mc rows (pack A), jr
and ir over the micro-tiles. A micro-tile accumulates in out (a ragged edge one through a
small `tile`); after the last K slice each element goes through `final`, which applies the
op's epilogue (bias, activation, residual) while the tile is still in L1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ember.kernels.gemm_c import gemm_support_c
from ember.lower.parallel import TEAM, part_loop, part_slot
from ember.lower.schedule import GemmTiles, a_rows_in_place, b_block_columns
from ember.render.cwriter import CWriter


@dataclass(frozen=True)
class PackedConst:
    """An operand packed at compile time by pack_a / pack_b; `name` is its C pointer."""
    name: str


@dataclass(frozen=True)
class Strided:
    """A matrix read in place: element (r, c) at base[r*rs + c*cs]."""
    base: str
    rs: int
    cs: int


@dataclass(frozen=True)
class ConvWindow2d:
    """A 2-D convolution's sizes (a 1-D one is 2-D over an image of height 1): image h x w,
    kernel kh x kw, strides, dilations, leading pads, output oh x ow."""
    h: int
    w: int
    kh: int
    kw: int
    sy: int
    sx: int
    dy: int
    dx: int
    py: int
    px: int
    oh: int
    ow: int

    @property
    def pointwise(self) -> bool:
        """1x1, stride 1, no padding: the image itself is the im2col matrix."""
        return ((self.kh, self.kw, self.sy, self.sx, self.py, self.px, self.oh, self.ow)
                == (1, 1, 1, 1, 0, 0, self.h, self.w))

    @property
    def padded(self) -> tuple[int, int]:
        """Rows and columns of the zero-padded image a stride-1 convolution reads."""
        return self.oh + self.dy * (self.kh - 1), self.ow + self.dx * (self.kw - 1)

    def c_args(self) -> str:
        """The geometry as the packing routines' arguments."""
        return (f"{self.h}, {self.w}, {self.kh}, {self.kw}, {self.sy}, {self.sx}, {self.dy}, "
                f"{self.dx}, {self.py}, {self.px}, {self.ow}")


@dataclass(frozen=True)
class Im2col:
    """B of a 2-D convolution: row (c, ky, kx), column (oy, ox) of image `base` (C x H x W)."""
    base: str
    window: ConvWindow2d


@dataclass(frozen=True)
class RowOffsets:
    """B read in place, unpacked: element (k, j) at base[offsets[k] + j] (`offsets` a C array
    of K int64, e.g. a convolution's tap offsets into a padded image). nr - 1 floats past the
    last element must be readable: a ragged last panel reads them (and drops their products).
    With `row` > 0 (a multiple of the vector width), column j is at (j / row)*pitch + j % row
    instead: a convolution's output positions, whole rows of vectors, over the rows of a padded
    image `pitch` floats apart; then nothing is read past the last column."""
    base: str
    offsets: str
    row: int = 0
    pitch: int = 0


@dataclass(frozen=True)
class RowsInPlace:
    """A read in place, unpacked: element (i, k) at base[i*lda + k] (emit_blocked_gemm picks
    it for a `Strided` A with unit column stride where packing does not pay)."""
    base: str
    lda: int


#: final(i, j, value): write C statements storing `value` (a float expression) as out[i, j]
Final = Callable[[str, str, str], None]


@dataclass(frozen=True)
class BlockedGemm:
    m: int
    n: int
    k: int
    batch: tuple[tuple[str, int], ...]     # (C loop variable, extent) of each batch dim
    a: PackedConst | Strided | Im2col | RowsInPlace  # Im2col as A: its transpose (positions x taps)
    b: PackedConst | Strided | Im2col | RowOffsets
    out: str                               # float pointer to out[0, 0] of a batch item
    ldc: int                               # its row stride


def pack_a(a: np.ndarray, mr: int) -> np.ndarray:
    """A (M x K) as mr-row panels, each K x rows k-major; a last short panel stays short, so
    panel p starts at p*K*mr and its slice from k0 at p*K*mr + k0*rows."""
    m, k = a.shape
    panels = [a[i:i + mr].T.reshape(-1) for i in range(0, m, mr)]
    return np.concatenate(panels).astype(np.float32) if panels else np.zeros(0, np.float32)


def pack_b(b: np.ndarray, nr: int) -> np.ndarray:
    """B (K x N) as nr-column panels, each K x nr k-major, zero-padded past N: panel q starts at
    q*K*nr and its slice from k0 at q*K*nr + k0*nr."""
    k, n = b.shape
    padded = np.zeros((k, -(-n // nr) * nr), np.float32)
    padded[:, :n] = b
    return padded.reshape(k, -1, nr).transpose(1, 0, 2).reshape(-1).copy()


def _whole_lines(floats: int) -> int:
    """`floats` rounded up to whole 64-byte cache lines."""
    return -(-floats // 16) * 16


def part_extent(size: int, parts: int, tile: int) -> int:
    """Rows (or columns) of each part of a GEMM's output split `parts` ways: whole micro-tiles
    of `tile`, the last part taking what is left."""
    return -(-(-(-size // parts)) // tile) * tile


def emit_blocked_gemm(ctx, g: BlockedGemm, t: GemmTiles, final: Final | None,
                      in_region: bool = False) -> None:
    """Write the loop nest computing `g` into ctx.w (see the module docstring). With `final`
    None, the sums are the result (no epilogue, bias or scaling). `in_region`: one phase of a
    team kernel (lower/parallel.py), so its work items are shared among every part."""
    w: CWriter = ctx.w
    ctx.require(f"sgemm{t.mr}x{t.nr}", gemm_support_c(t))
    in_region = in_region or ctx.sharing == TEAM      # a team's phase: shared even if small
    items = math.prod(e for _, e in g.batch) * t.m_parts * t.n_parts
    kc_max = min(t.kc, g.k)
    threads = ctx.schedule.threads if in_region else min(ctx.schedule.threads, items)
    m_part, n_part = part_extent(g.m, t.m_parts, t.mr), part_extent(g.n, t.n_parts, t.nr)
    if isinstance(g.a, Strided) and g.a.cs == 1 and a_rows_in_place(t, g.a.rs):
        g = replace(g, a=RowsInPlace(g.a.base, g.a.rs))
    a_packed = not isinstance(g.a, (PackedConst, RowsInPlace))
    b_packed = not isinstance(g.b, (PackedConst, RowOffsets))
    if b_packed:
        t = replace(t, nc=b_block_columns(t, m_part, a_packed))
    # Each packed block starts on a cache line: a B row of NR floats misaligned by 48 bytes
    # straddled two lines, one of its two vector loads split in every step of the microkernel
    a_floats = _whole_lines(min(t.mc, m_part) * kc_max) if a_packed else 0
    b_floats = kc_max * min(t.nc, n_part) if b_packed else 0
    per_thread = _whole_lines(a_floats + b_floats)                   # 64-byte aligned slices
    if per_thread:              # a slice per part (lower/parallel.py's parts: every thread)
        ctx.request_scratch((ctx.schedule.threads if threads > 1 else 1) * per_thread * 4)
    with (part_loop(ctx, "item", items) if threads > 1 else
          w.block(f"for (int64_t item = 0; item < {items}; ++item)")):
        if per_thread:
            me = part_slot(ctx) if threads > 1 else "0"
            w.line(f"float *restrict apack = (float *)scratch + (int64_t){me}*{per_thread};")
            w.line(f"float *restrict bpack = apack + {a_floats};")
            w.line("(void)apack; (void)bpack;")
        w.line(f"float tile[{t.mr * t.nr}] __attribute__((aligned(64)));")
        parts = t.m_parts * t.n_parts
        rest = f"item / {parts}"
        for name, extent in reversed(g.batch):
            w.line(f"const int64_t {name} = {rest} % {extent};")
            rest = f"{rest} / {extent}"
        w.line(f"const int64_t m0 = item / {t.n_parts} % {t.m_parts} * {m_part}, "
               f"n0 = item % {t.n_parts} * {n_part};")
        w.line(f"const int64_t m1 = m0 + {m_part} < {g.m} ? m0 + {m_part} : {g.m}, "
               f"n1 = n0 + {n_part} < {g.n} ? n0 + {n_part} : {g.n};")
        w.line(f"float *outp = {g.out};      /* not restrict: final() stores through out0 */")
        w.line("(void)outp;        /* unread when every micro-tile goes through `tile` */")
        with w.block(f"for (int64_t jc = n0; jc < n1; jc += {t.nc})"):
            w.line(f"const int64_t nc = n1 - jc < {t.nc} ? n1 - jc : {t.nc};")
            with w.block(f"for (int64_t pc = 0; pc < {g.k}; pc += {t.kc})"):
                w.line(f"const int64_t kc = {g.k} - pc < {t.kc} ? {g.k} - pc : {t.kc};")
                b_stride = _emit_b_block(w, g.b, g.k, t)
                with w.block(f"for (int64_t ic = m0; ic < m1; ic += {t.mc})"):
                    w.line(f"const int64_t mc = m1 - ic < {t.mc} ? m1 - ic : {t.mc};")
                    a_stride = _emit_a_block(w, g.a, g.k, t)
                    with w.block(f"for (int64_t jr = 0; jr < nc; jr += {t.nr})"):
                        w.line(f"const int64_t nr = nc - jr < {t.nr} ? nc - jr : {t.nr};")
                        if isinstance(g.b, RowOffsets) and g.b.row:
                            _emit_pitched_panel(w, g.b, t)
                        else:
                            w.line(f"const float *restrict bq = bp + jr / {t.nr} * {b_stride};")
                        with w.block(f"for (int64_t ir = 0; ir < mc; ir += {t.mr})"):
                            w.line(f"const int64_t mr = mc - ir < {t.mr} ? mc - ir : {t.mr};")
                            if not t.scalar and g.m > t.mr and isinstance(g.b, PackedConst):
                                _emit_next_b_prefetch(w, g, t, b_stride)
                            slice_at = " + pc*mr" if isinstance(g.a, PackedConst) else ""
                            w.line(f"const float *restrict aq = ap + ir / {t.mr} * {a_stride}"
                                   f"{slice_at};")
                            via_tile = final is not None and g.k <= t.kc
                            _emit_microkernel_call(w, g, t, via_tile)
                            if final is not None:
                                _emit_final(w, g, t, final, ctx.schedule.simd_pragmas)


def _emit_next_b_prefetch(w: CWriter, g: BlockedGemm, t: GemmTiles, b_stride: str) -> None:
    """Each micro-tile of a panel prefetches its share of the next panel of B, so that panel
    is in cache when the jr loop reaches it: for B packed at compile time (a MatMul's weights),
    which in a model come from L3 or memory (the other layers' weights pass through the caches
    between calls): BERT 0.85-0.95 of its time at 1 thread, 0.975 at 2, MobileNetV2 0.975
    (alternately in one process). Not for B packed as the kernel runs (a conv's input, just
    written, in cache: ResNet-18 and ResNet-8 ran 1-2% slower with it). Addresses past the
    last panel are only prefetched (a hint: no fault), computed as integers."""
    tiles = -(-min(t.mc, g.m) // t.mr)
    chunk = -(-t.kc * t.nr * 4 // tiles // 64) * 64
    w.line(f"{{ const uintptr_t nb = (uintptr_t)bq + {b_stride} * 4 + ir / {t.mr} * {chunk};")
    w.line(f"  for (int l = 0; l < {chunk}; l += 64) __builtin_prefetch((const void *)(nb + l), "
           "0, 3); }")


def blocked_gemm_text(ctx, g: BlockedGemm, t: GemmTiles, final: Final | None = None,
                      in_region: bool = False, alone: bool = False) -> str:
    """emit_blocked_gemm's C written aside, for a caller to place once its own scratch, which
    follows the GEMM's, is laid out. alone: inside a threaded kernel, on the thread of the part
    that reaches it, unshared (one of a Winograd band's products)."""
    w, schedule, sharing = ctx.w, ctx.schedule, ctx.sharing
    ctx.w = CWriter()
    if alone:
        ctx.schedule, ctx.sharing = replace(schedule, threads=1), None
    try:
        emit_blocked_gemm(ctx, g, t, final, in_region)
        return ctx.w.text()
    finally:
        ctx.w = w
        if alone:   # what the GEMM records of its sharing otherwise stays the kernel's
            ctx.schedule, ctx.sharing = schedule, sharing


def _emit_b_block(w: CWriter, b, k: int, t: GemmTiles) -> str:
    """Point `bp` at the packed kc x nc block of B at (pc, jc); returns its panel stride."""
    if isinstance(b, PackedConst):
        w.line(f"const float *restrict bp = {b.name} + jc*{k} + pc*{t.nr};")
        return f"{k * t.nr}"
    if isinstance(b, RowOffsets):
        w.line(f"const float *restrict bp = {b.base}{'' if b.row else ' + jc'};")
        return f"{t.nr}"
    if isinstance(b, Strided):
        w.line(f"ember_pack_b_{t.nr}(kc, nc, {b.base} + pc*{b.rs} + jc*{b.cs}, {b.rs}, {b.cs}, "
               "bpack);")
    elif t.scalar:          # one panel of all K rows (scalar tiles: nc == nr, kc == K)
        d = b.window
        w.line(f"int ctab[{d.kh * d.kw * t.nr}];")
        w.line(f"ember_conv_panel_{t.nr}({b.base}, {d.c_args()}, {d.oh * d.ow}, "
               f"{k // (d.kh * d.kw)}, (int)jc, ctab, bpack);")
    else:
        w.line(f"ember_pack_im2col_{t.nr}({b.base}, {b.window.c_args()}, pc, kc, jc, nc, bpack);")
    w.line("const float *restrict bp = bpack;")
    return f"kc*{t.nr}"


def _emit_pitched_panel(w: CWriter, b: RowOffsets, t: GemmTiles) -> None:
    """Point `bq` at the first vector of the panel at column jc + jr of a pitched RowOffsets B,
    `b1` at its second vector relative to it (0, a harmless re-read, in a ragged last panel)."""
    def at(j: str) -> str:
        return f"({j}) / {b.row} * {b.pitch} + ({j}) % {b.row}"
    w.line(f"const float *restrict bq = bp + {at('jc + jr')};")
    w.line(f"const int64_t b1 = nr > {t.lanes} ? {at(f'jc + jr + {t.lanes}')} - "
           f"({at('jc + jr')}) : 0;")


def _emit_a_block(w: CWriter, a, k: int, t: GemmTiles) -> str:
    """Point `ap` at the packed mc x kc block of A at (ic, pc) (or at its first element, read
    in place); returns its panel stride."""
    if isinstance(a, PackedConst):
        w.line(f"const float *restrict ap = {a.name} + ic*{k};")
        return f"{k * t.mr}"
    if isinstance(a, RowsInPlace):
        w.line(f"const float *restrict ap = {a.base} + ic*{a.lda} + pc;")
        return f"{t.mr * a.lda}"
    if isinstance(a, Im2col):         # as A: the im2col matrix transposed (positions x taps)
        w.line(f"ember_pack_im2col_a_{t.mr}({a.base}, {a.window.c_args()}, ic, mc, pc, kc, apack);")
    else:
        w.line(f"ember_pack_a_{t.mr}(mc, kc, {a.base} + ic*{a.rs} + pc*{a.cs}, {a.rs}, {a.cs}, "
               "apack);")
    w.line("const float *restrict ap = apack;")
    return f"kc*{t.mr}"


def _emit_microkernel_call(w: CWriter, g: BlockedGemm, t: GemmTiles, via_tile: bool) -> None:
    """A full-width micro-tile accumulates straight into out; a ragged one (nr < NR) goes
    through `tile`, and so does every one `via_tile` (K in one slice, an epilogue to apply:
    it reads the sums from `tile`, in L1 and aligned, and out is written once). Only the last
    panel of M can be short (parts and blocks are whole panels)."""
    if isinstance(g.b, RowOffsets) and g.b.row:
        in_place = ("p", f"aq, bq, {g.b.offsets} + pc, b1")
    elif isinstance(g.b, RowOffsets):
        in_place = ("o", f"aq, bq, {g.b.offsets} + pc")
    elif isinstance(g.a, RowsInPlace):
        in_place = ("a", f"aq, {g.a.lda}, bq")
    else:
        in_place = ("", "aq, bq")

    def call(c: str, ldc: str, accumulate: str, ab: tuple[str, str]) -> None:
        suffix, ab_args = ab
        args = f"(kc, {ab_args}, {c}, {ldc}, {accumulate});"
        full = f"ember_sgemm_ukr{t.mr}_{t.nr}{suffix}{args}"
        if g.m % t.mr == 0:
            w.line(full)
        else:
            w.line(f"if (mr == {t.mr}) {full}")
            w.line(f"else ember_sgemm_ukr{g.m % t.mr}_{t.nr}{suffix}{args}")

    def into_tile() -> None:
        """A narrow last panel (nr <= one vector) takes the one-vector microkernel."""
        if in_place[0] == "" and not t.scalar and g.n % t.nr and g.n % t.nr <= t.lanes:
            with w.block(f"if (nr <= {t.lanes})"):
                call("tile", f"{t.nr}", "0", ("h", "aq, bq"))
            with w.block("else"):
                call("tile", f"{t.nr}", "0", in_place)
        else:
            call("tile", f"{t.nr}", "0", in_place)

    if via_tile:
        into_tile()
        return
    with w.block(f"if (nr == {t.nr})"):
        call(f"outp + (ic + ir)*{g.ldc} + jc + jr", f"{g.ldc}", "pc > 0", in_place)
    with w.block("else"):
        into_tile()
        w.line(f"for (int64_t r = 0; r < mr; ++r) for (int64_t c = 0; c < nr; ++c) "
               f"{_AT} = (pc ? {_AT} : 0.0f) + tile[r*{t.nr} + c];".replace("LDC", f"{g.ldc}"))


#: out[i, j] of the current micro-tile's element (r, c)
_AT = "outp[(ic + ir + r)*LDC + jc + jr + c]"


def _emit_final(w: CWriter, g: BlockedGemm, t: GemmTiles, final: Final, simd: bool) -> None:
    """After the last K slice, every element of the finished micro-tile goes through `final`
    (one vectorized loop where `simd` allows the pragma; emitted once, as the epilogue can be
    long)."""
    at = f"tile[r*{t.nr} + c]" if g.k <= t.kc else _AT.replace("LDC", f"{g.ldc}")
    with w.block(f"if (pc + kc == {g.k})"), w.block("for (int64_t r = 0; r < mr; ++r)"):
        # GCC gives up on this loop on its own (it cannot tell out0 and outp apart); its
        # elements are independent: each reads and writes only itself.
        if simd:
            w.line("#pragma omp simd")
        with w.block("for (int64_t c = 0; c < nr; ++c)"):
            w.line("const int64_t i = ic + ir + r, j = jc + jr + c;")
            final("i", "j", at)
