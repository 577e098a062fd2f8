"""Winograd F(4x4, 3x3) convolution: float32 NCHW, 3x3 kernel, stride 1, dilation 1, one group.

Each 4x4 block ("tile") of an output plane comes from the 6x6 input patch d under it:

    Y = A^T [ sum over input channels of U (.) V ] A,    U = G g G^T,  V = B^T d B

so a channel pair costs 36 multiplies per tile, 2.25 per output where a direct convolution
needs 9. U (per output x input channel, 36 values) is computed at compile time and laid out as
36 matrices U[xi] (Cout x Cin), each packed for the GEMM. Per image, at run time:
  1. input transform: V[xi][c][t] = (B^T d B)[xi] for input channel c and tile t (patches
     reach into the padding and past the image's end: zeros there), written straight in the
     GEMM's packed-B layout (16-tile panels), so the GEMM packs neither operand;
  2. 36 GEMMs M[xi] (Cout x T) = U[xi] . V[xi] (Cin x T), one batch of the packed GEMM;
  3. output transform: Y = A^T M A per (output channel, tile), plus the bias; each output element
     inside the plane goes out through ctx.store (fused epilogue).
The transforms split each plane by row and column phase (y mod 4, x mod 4), so that one element
of every tile's patch is one contiguous run, and then work on all the plane's tiles at once:
GCC vectorizes them across tiles.

With threads, each image splits in bands of tile rows, one per thread, each running all three
steps on its own tiles (V and M stay in the thread's caches; a 32x32 map's 16 channels, 2
threads, on this project's 2-vCPU VM: ResNet-8 0.485 -> 0.46 ms, 0.64 -> 0.55 in periods where
the host keeps the two vCPUs far apart), where the bands' tiles still fill the GEMM's 16-tile
panels; on smaller maps the steps split by channel instead (input, then output channels),
with the 36 products shared in between.

Interpolation points 0, 1, -1, 1/2, -2 (and infinity): the max error of a fp32 F(4, 3) is about
half of what the usual 0, +-1, +-2 give (Barabasz et al., "Error analysis and improving the
accuracy of Winograd convolution", 2020); B and A then still hold only dyadic fractions.

Transforms mix a tile's inputs, so one Inf or NaN would turn a whole tile (and its neighbours')
to NaN where a direct convolution keeps most outputs finite. The input transform notes any
input that is not finite (or so large the transforms could overflow); the GEMM convolution then
computes the whole batch instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as Fr
from typing import TYPE_CHECKING

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node
from ember.kernels.gemm import BlockedGemm, PackedConst, blocked_gemm_text, pack_a
from ember.lower.parallel import barrier, part_loop, part_slot, serial, team
from ember.lower.schedule import (WINOGRAD_ALPHA, WINOGRAD_NR, WINOGRAD_TILE, gemm_tiles,
                                  winograd_pays)
from ember.ops.conv_gemm import emit_conv_gemm
from ember.render.cwriter import CWriter

if TYPE_CHECKING:
    from ember.ops.conv import ConvGeometry

TILE, ALPHA = WINOGRAD_TILE, WINOGRAD_ALPHA    # outputs per tile side; input patch side

_H, _Q = Fr(1, 2), Fr(1, 4)
#: A^T (4 x 6), G (6 x 3), B^T (6 x 6) for the points above (Cook-Toom construction)
AT = ((1, 1, 1, 1, 1, 0),
      (0, 1, -1, _H, -2, 0),
      (0, 1, 1, _Q, 4, 0),
      (0, 1, -1, _H * _Q, -8, 1))
G = ((1, 0, 0),
     (Fr(1, 3), Fr(1, 3), Fr(1, 3)),
     (Fr(-1, 3), Fr(1, 3), Fr(-1, 3)),
     (Fr(-16, 15), Fr(-8, 15), Fr(-4, 15)),
     (Fr(1, 15), Fr(-2, 15), Fr(4, 15)),
     (0, 0, 1))
BT = ((1, -3 * _H, -2, 3 * _H, 1, 0),
      (0, -1, _H, 5 * _H, 1, 0),
      (0, 1, -5 * _H, _H, 1, 0),
      (0, -2, -1, 2, 1, 0),
      (0, _H, -1, -_H, 1, 0),
      (0, 1, -3 * _H, -2, 3 * _H, 1))

_NR = WINOGRAD_NR       # columns of the GEMM's B panels

#: inputs with |x| >= 2^64 (exponent bits at or above this) or not finite take the GEMM path
_BIG_EXPONENT_BITS = (127 + 64) << 23


def winograd_applies(node: Node, g: ConvGeometry) -> bool:
    """A float32 2-D 3x3 stride-1 convolution with constant, finite weights where it pays."""
    win, weights = g.window, node.inputs[1]
    return (not g.transposed and node.inputs[0].type.dtype is dt.F32 and len(g.in_sp) == 2
            and win.kernel == (3, 3) and win.strides == (1, 1) and win.dilations == (1, 1)
            and g.groups == 1 and g.batch > 0 and weights.is_const
            and bool(np.isfinite(weights.const).all())
            and winograd_pays(g.in_channels, g.out_channels, *g.out_sp))


def winograd_weights(w: np.ndarray) -> np.ndarray:
    """U[xi][o][c] = (G w[o, c] G^T)[xi] for weights (Cout, Cin, 3, 3), computed in float64."""
    gm = np.array(G, dtype=np.float64)
    u = np.einsum("ai,ocij,bj->aboc", gm, w.astype(np.float64), gm)
    return u.reshape(ALPHA * ALPHA, w.shape[0], w.shape[1])


@dataclass(frozen=True)
class _Plan:
    """Sizes of the tiles one pass transforms (an image's, or a band of `bands` of its tile
    rows) and of the buffers the transforms use (in floats)."""
    g: ConvGeometry
    bands: int = 1

    @property
    def image_rows(self) -> int:
        """Tile rows of a whole image."""
        return -(-self.g.out_sp[0] // TILE)

    @property
    def th(self) -> int:
        """Tile rows of a band (the last band's rows past the image's are left out)."""
        return -(-self.image_rows // self.bands)

    @property
    def tw(self) -> int:
        return -(-self.g.out_sp[1] // TILE)

    @property
    def tiles(self) -> int:
        return self.th * self.tw

    @property
    def tiles_padded(self) -> int:
        """Tiles rounded up to whole GEMM panels (NR = 16 columns)."""
        return -(-self.tiles // _NR) * _NR

    @property
    def row(self) -> int:
        """A zero-padded input row under one tile row: 4 columns a tile and the 2 past them."""
        return TILE * self.tw + 2

    @property
    def p_row(self) -> int:
        """P[r][p] (rows y = 4*ty + r, columns x = 4*tx + p), one more tile row than the image,
        then zeros past the padded tiles' reach (a flat pass over t reads P at t and t + TW)."""
        return _round8(self.tiles_padded + self.tw)

    def input_work(self) -> tuple[int, int, int, int]:
        """Offsets of pr, P, Pc, E in a thread's work space, and its size."""
        p = _round8(self.row)
        pc = p + 16 * self.p_row
        e = pc + _round8(8 * (self.th + 1))
        return p, pc, e, e + 36 * self.tiles_padded

    def output_work(self) -> int:
        """tm, Y, and `row`: the TILE output rows of one tile row, gathered before any is
        stored (_emit_output_transform)."""
        return 40 * self.tiles + TILE * TILE * self.tw


def _round8(n: int) -> int:
    return -(-n // 8) * 8


#: most extra GEMM columns banding may cost (its bands' tiles in whole 16-tile panels, against
#: the image's)
_BAND_WASTE = 1.125


def _bands(g: ConvGeometry, threads: int) -> int:
    """Bands of tile rows an image's work splits in: one per thread where each band's tiles
    still fill the GEMM's panels; else 1 (every phase then shared by channels)."""
    whole = _Plan(g)
    if threads <= 1 or whole.image_rows < threads:
        return 1
    banded = _Plan(g, threads)
    return threads if banded.tiles_padded * threads <= _BAND_WASTE * whole.tiles_padded else 1


def emit_conv_winograd(ctx, g: ConvGeometry) -> None:
    w: CWriter = ctx.w
    threads = ctx.schedule.threads
    plan = _Plan(g, _bands(g, threads))
    banded = plan.bands > 1
    cin, cout, tiles, xis = g.in_channels, g.out_channels, plan.tiles, ALPHA * ALPHA
    t = gemm_tiles(ctx.schedule, cout, tiles, cin, xis)
    if t.nr != _NR:
        # V is written in 16-column panels: other GEMM tiles (narrower vectors, or a core
        # without float SIMD, as in `ember export`) take the GEMM convolution
        emit_conv_gemm(ctx, g)
        return
    u = winograd_weights(ctx.node.inputs[1].const)
    packed = np.concatenate([pack_a(u[xi], t.mr) for xi in range(xis)])
    a = PackedConst(f"({ctx.pack_constant(packed, replaces=1)} + xi*{cout * cin})")
    b = PackedConst(f"(wv + xi*{cin * plan.tiles_padded})")
    gemm = BlockedGemm(cout, tiles, cin, (("xi", xis),), a, b, f"wm + xi*{cout * tiles}", tiles)
    # Any scratch the GEMM asks for (none with both operands packed) stays at the start of
    # scratch; V, M and the transforms' per-thread buffers follow.
    team(ctx)           # the phases, or the bands, shared by every thread; the redo after
    gemm_code = blocked_gemm_text(ctx, gemm, t, in_region=not banded, alone=banded)
    gemm_floats = -(-ctx.scratch_bytes // 64) * 16
    work = max(plan.input_work()[-1], plan.output_work())
    v_floats, m_floats = xis * cin * plan.tiles_padded, xis * cout * tiles
    own = v_floats + m_floats + work if banded else work       # per part
    shared = 0 if banded else v_floats + m_floats
    ctx.request_scratch(4 * (gemm_floats + shared + threads * own + 16))

    # The input transform of each image raises `big` (see the module docstring) before the
    # image's products; the GEMM convolution then redoes the whole batch (out0 aliases no input).
    w.line(f"float *restrict base = (float *)scratch + {gemm_floats};")
    w.line(f"uint32_t *big = (uint32_t *)(base + {shared + threads * own});   /* shared */")
    with serial(ctx):
        w.line("*big = 0;")
    if banded:
        # each part a band of an image's tile rows, every phase of it: V and M never leave
        # the thread that makes them (handed to the other core, on this project's VM they
        # cost more than they take to compute)
        with part_loop(ctx, "it", g.batch * plan.bands):
            w.line(f"const int64_t n = it / {plan.bands}, ty0 = it % {plan.bands} * {plan.th};")
            w.line(f"float *restrict wv = base + (int64_t){part_slot(ctx)}*{own};   "
                   "/* V[36][T/16][Cin][16] of the band */")
            w.line(f"float *restrict wm = wv + {v_floats};   /* M[36][Cout][T] */")
            w.line(f"float *restrict work = wm + {m_floats};")
            _emit_input_transform(ctx, plan, "work")
            w.line("if (__atomic_load_n(big, __ATOMIC_RELAXED)) continue;")
            w.lines(gemm_code)
            _emit_output_transform(ctx, plan, "work")
    else:
        w.line("float *restrict wv = base;   /* V[36][T/16][Cin][16] */")
        w.line(f"float *restrict wm = wv + {v_floats};   /* M[36][Cout][T] */")
        w.line(f"float *restrict work = wm + {m_floats};   /* per thread */")
        with w.block(f"for (int64_t n = 0; n < {g.batch}; ++n)"):
            w.line("const int64_t ty0 = 0;")
            _emit_input_transform(ctx, plan, _part_buffer(ctx, work))
            # every part reads `big` once, past the transform's barrier (a second read could
            # see the next image's transform, which a quicker part may have begun)
            w.line("if (__atomic_load_n(big, __ATOMIC_RELAXED)) break;")
            w.lines(gemm_code)
            _emit_output_transform(ctx, plan, _part_buffer(ctx, work))
    # the GEMM convolution's scratch may cover `big`: every part reads it first
    w.line("const uint32_t redo = __atomic_load_n(big, __ATOMIC_RELAXED);")
    barrier(ctx)
    with w.block("if (redo)"):
        emit_conv_gemm(ctx, g)


def _combo(coefs, terms: list[str]) -> str:
    """sum of coef * term as a C float expression (zero coefficients left out)."""
    parts = []
    for c, term in zip(coefs, terms):
        if c:
            sign = "-" if c < 0 else "+"
            parts.append(f"{sign} {term}" if abs(c) == 1 else f"{sign} {float(abs(c))!r}f*{term}")
    return " ".join(parts).removeprefix("+ ")


def _emit_apply(w: CWriter, matrix, load, store) -> None:
    """store(i) = sum over k of matrix[i][k] * load(k): loads into locals, one line per row."""
    cols = len(matrix[0])
    w.line("const float " + ", ".join(f"s{k} = {load(k)}" for k in range(cols)) + ";")
    for i, row in enumerate(matrix):
        w.line(f"{store(i)} = {_combo(row, [f's{k}' for k in range(cols)])};")


def _part_buffer(ctx, work: int) -> str:
    """This part's share of the transforms' work space (per-part slices `work` floats long)."""
    return f"work + (int64_t){part_slot(ctx)}*{work}"


def _channel_loop(ctx, plan: _Plan, var: str, trips: int):
    """A transform's loop over channels: shared by the parts, or the band's own."""
    if plan.bands > 1:
        return ctx.w.block(f"for (int64_t {var} = 0; {var} < {trips}; ++{var})")
    return part_loop(ctx, var, trips)


def _emit_input_transform(ctx, plan: _Plan, buf: str) -> None:
    """V for every input channel c of image n's tile rows from ty0 (the plan's), in passes
    over one channel (work space at `buf`):
    1. split the zero-padded image by row and column phase: P[r][p][ty*TW + tx] is row
       4*ty + r, column 4*tx + p, so column q < 4 of every tile's patch is a contiguous run
       of P (rows 4, 5 of a patch are the next tile row's 0, 1); Pc holds the columns 4*TW
       and 4*TW + 1 past the last tiles;
    2. B^T down the patch rows: E[i][q][t] = sum over r of BT[i][r] * (row r, column q of
       tile t), for q < 4 from P; columns q = 4, 5 are the next tile's 0, 1, shifted in from
       E[i][q - 4], except at a row's last tile, computed from Pc;
    3. B along the patch columns: V[i*6 + j][t] from E[i][0..5][t].
    Passes 2 and 3 run over all tiles at once and vectorize; V goes out in the GEMM's packed-B
    layout (16-tile panels), the padding tiles' columns zero."""
    w: CWriter = ctx.w
    g = plan.g
    cin, (h, wd) = g.in_channels, g.in_sp
    py, px = g.window.pads_begin
    th, tw, tp = plan.th, plan.tw, plan.tiles_padded
    rp, hp = plan.p_row, th + 1
    at_p, at_pc, at_e, _ = plan.input_work()
    lo, hi = min(px, plan.row), min(px + wd, plan.row)      # where image columns land in pr
    with _channel_loop(ctx, plan, "c", cin):
        w.line(f"float *restrict buf = {buf};")
        w.line("uint32_t huge = 0;")
        w.line(f"float *restrict pr = buf, *restrict P = buf + {at_p}, *restrict Pc = buf + "
               f"{at_pc}, *restrict E = buf + {at_e};")
        w.line(f"const float *restrict xc = {ctx.ins[0]} + (n*{cin} + c)*{h * wd};")
        w.line(f"for (int64_t k = 0; k < {plan.row}; ++k) pr[k] = 0.0f;")
        w.line(f"for (int64_t k = 0; k < 16; ++k) for (int64_t z = {hp * tw}; z < {rp}; ++z) "
               f"P[k*{rp} + z] = 0.0f;")
        with w.block(f"for (int64_t y = 0; y < {TILE * hp}; ++y)"):
            w.line(f"const int64_t iy = y + {TILE}*ty0 - {py};")
            w.line(f"float *restrict dst = P + y % 4 * {4 * rp} + y / 4 * {tw};")
            w.line(f"float *restrict dc = Pc + y % 4 * {2 * hp} + y / 4;")
            with w.block(f"if (iy < 0 || iy >= {h})"):
                w.line(f"for (int64_t p = 0; p < 4; ++p) for (int64_t q = 0; q < {tw}; ++q) "
                       f"dst[p*{rp} + q] = 0.0f;")
                w.line(f"dc[0] = dc[{hp}] = 0.0f;")
                w.line("continue;")
            if hi > lo:
                w.line(f"memcpy(pr + {lo}, xc + iy*{wd}, {4 * (hi - lo)});")
                # checked in the image, not in pr: pr's vector loads would span the copy's
                # stores, which cannot forward to them (a stall per load; 30% of the kernel)
                with w.block(f"for (int64_t k = 0; k < {hi - lo}; ++k)"):
                    w.line(f"uint32_t bits; memcpy(&bits, xc + iy*{wd} + k, 4);")
                    w.line(f"huge |= (uint32_t)((bits & 0x7f800000u) >= {_BIG_EXPONENT_BITS:#x}u);")
            w.line(f"for (int64_t q = 0; q < {tw}; ++q) for (int64_t p = 0; p < 4; ++p) "
                   f"dst[p*{rp} + q] = pr[q*4 + p];")
            w.line(f"dc[0] = pr[{TILE * tw}]; dc[{hp}] = pr[{TILE * tw + 1}];")
        w.line("if (huge) __atomic_fetch_or(big, 1u, __ATOMIC_RELAXED);")
        with w.block(f"for (int64_t q = 0; q < 4; ++q) for (int64_t t = 0; t < {tp}; ++t)"):
            _emit_apply(w, BT, lambda r: f"P[{r % 4 * 4 * rp} + q*{rp} + t + {r // 4 * tw}]",
                        lambda i: f"E[{i * 6 * tp} + q*{tp} + t]")
        w.line(f"for (int64_t i = 0; i < 6; ++i) for (int64_t q = 4; q < 6; ++q) "
               f"for (int64_t t = 0; t < {tp}; ++t) E[(i*6 + q)*{tp} + t] = "
               f"t + 1 < {tp} ? E[(i*6 + q - 4)*{tp} + t + 1] : 0.0f;")
        with w.block(f"for (int64_t q = 0; q < 2; ++q) for (int64_t ty = 0; ty < {th}; ++ty)"):
            _emit_apply(w, BT, lambda r: f"Pc[{r % 4 * 2 * hp} + q*{hp} + ty + {r // 4}]",
                        lambda i: f"E[{(i * 6 + 4) * tp} + q*{tp} + ty*{tw} + {tw - 1}]")
        with w.block(f"for (int64_t i = 0; i < 6; ++i) for (int64_t tq = 0; tq < {tp // _NR}; "
                     f"++tq) for (int64_t l = 0; l < {_NR}; ++l)"):
            _emit_apply(w, BT, lambda q: f"E[(i*6 + {q})*{tp} + tq*{_NR} + l]",
                        lambda j: f"wv[((i*6 + {j})*{tp // _NR} + tq)*{cin * _NR} + c*{_NR} + l]")


def _emit_output_transform(ctx, plan: _Plan, buf: str) -> None:
    """Y for every output channel co of image n's tile rows from ty0 (work space at `buf`):
    A^T along the patch columns of M into tm[i][b][t], then A down the rows into Y[a][b][t]
    (both over all tiles at once); then each output row, gathered from Y's four column phases
    into `row`, goes out through ctx.store with the bias."""
    w: CWriter = ctx.w
    g = plan.g
    cout, (oh, ow) = g.out_channels, g.out_sp
    tw, tiles = plan.tw, plan.tiles
    bias = f" + {ctx.ins[2]}[co]" if g.has_bias else ""
    with _channel_loop(ctx, plan, "co", cout):
        w.line(f"float *restrict buf = {buf};")
        w.line(f"float *restrict tm = buf, *restrict Y = buf + {24 * tiles}, "
               f"*restrict row = buf + {40 * tiles};")
        with w.block(f"for (int64_t i = 0; i < 6; ++i) for (int64_t t = 0; t < {tiles}; ++t)"):
            _emit_apply(w, AT, lambda j: f"wm[((i*6 + {j})*{cout} + co)*{tiles} + t]",
                        lambda b: f"tm[(i*4 + {b})*{tiles} + t]")
        with w.block(f"for (int64_t b = 0; b < 4; ++b) for (int64_t t = 0; t < {tiles}; ++t)"):
            _emit_apply(w, AT, lambda i: f"tm[({i * 4} + b)*{tiles} + t]",
                        lambda a: f"Y[({a * 4} + b)*{tiles} + t]")
        end = f"{TILE}*(ty0 + {plan.th})"           # the band's last row, or the image's
        w.line(f"const int64_t oy1 = {end} < {oh} ? {end} : {oh};")
        # A tile row's output rows are gathered from Y's column phases one float at a time,
        # all of them before any is stored: the stores' vector loads of a row right after its
        # gather spanned several pending scalar stores, which cannot forward to them (a stall
        # per load; ResNet-8's 16-channel 32x32 conv 0.95-0.97 of its time, 0.92 at 2 threads)
        with w.block(f"for (int64_t oy0 = {TILE}*ty0; oy0 < oy1; oy0 += {TILE})"):
            w.line(f"const int64_t rows = oy1 - oy0 < {TILE} ? oy1 - oy0 : {TILE};")
            with w.block("for (int64_t a = 0; a < rows; ++a)"):
                w.line(f"const float *restrict ya = Y + a * {4 * tiles} + (oy0 / 4 - ty0) * {tw};")
                w.line(f"for (int64_t tx = 0; tx < {tw}; ++tx) for (int64_t b = 0; b < 4; ++b) "
                       f"row[a*{TILE * tw} + tx*4 + b] = ya[b*{tiles} + tx];")
            with w.block("for (int64_t a = 0; a < rows; ++a)"):
                w.line("const int64_t oy = oy0 + a;")
                with w.block(f"for (int64_t ox = 0; ox < {ow}; ++ox)"):
                    ctx.store(["n", "co", "oy", "ox"], f"((n*{cout} + co)*{oh} + oy)*{ow} + ox",
                              f"(row[a*{TILE * tw} + ox]{bias})")
