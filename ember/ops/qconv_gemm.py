"""ConvInteger and QLinearConv (NCHW, onnxruntime numerics) as an int16 GEMM on the host.

Per image, the input minus its zero point is copied once into an int16 map in scratch: NHWC,
zero-padded by the conv's pads (a padded tap adds 0, as a skipped one does) and with each
group's channels padded to an even count, so that a pixel's channel pairs are 32-bit words.
Every tap of every output position then reads the map in place (no im2col): position j's
pixel is at xo[j], tap t's offset toff[t]. Weights minus their zero points are packed at
compile time, per group and block of IGEMM_NR output channels, in the tile's layout
(kernels/igemm.py). Work: chunks of positions (the threads' split) x groups x channel blocks
x tiles of IGEMM_MR positions; a finished tile is stored channel by channel into NCHW.

A depthwise conv (one input and one output channel per group) reads the map unpaired and
sums a position's channels as one contiguous run per tap, which compilers vectorize.
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ember.kernels.igemm import IGEMM_MR, IGEMM_NR, igemm_support_c
from ember.lower.parallel import part_loop, serial, team

#: positions per work item: a weight block is reused over this many before the next
_CHUNK = 64
#: channels of a depthwise position summed at once (int32 accumulators on the stack)
_DW_BLOCK = 64


@dataclass(frozen=True)
class Geometry:
    """A 1-d or 2-d integer conv seen as 2-d (a 1-d conv has height 1)."""
    batch: int
    channels: int
    out_channels: int
    groups: int
    size: tuple[int, int]          # input height, width
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int]          # top, left (the bottom and right pads need no storage)
    out: tuple[int, int]

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.channels == self.out_channels

    @property
    def group_width(self) -> int:
        """Input channels of a group in the map: paired, so even, except for depthwise."""
        cpg = self.channels // self.groups
        return 1 if self.depthwise else cpg + cpg % 2

    @property
    def padded(self) -> tuple[int, int]:
        """The map's height and width: every tap of every output position lies inside."""
        return tuple((o - 1) * s + (k - 1) * d + 1
                     for o, s, k, d in zip(self.out, self.strides, self.kernel, self.dilations))


def geometry(batch: int, channels: int, out_channels: int, groups: int, in_sp: tuple[int, ...],
             window) -> Geometry | None:
    """The 2-d view of a conv this path computes; None when it does not (rank 3+, an empty
    dim, or indices past int32)."""
    rank = len(in_sp)
    if rank not in (1, 2):
        return None

    def two(values, fill):
        return (fill,) * (2 - rank) + tuple(values)
    geo = Geometry(batch, channels, out_channels, groups, two(in_sp, 1), two(window.kernel, 1),
                   two(window.strides, 1), two(window.dilations, 1), two(window.pads_begin, 0),
                   two(window.out, 1))
    if min(batch, channels, out_channels, *geo.size, *geo.out) <= 0:
        return None
    hp, wp = geo.padded
    biggest = max(hp * wp * geo.group_width * groups,
                  batch * channels * math.prod(geo.size),
                  batch * out_channels * math.prod(geo.out))
    return geo if biggest < 2 ** 31 else None


def emit_gemm_conv(ctx, geo: Geometry, x: str, x_zp: str, weights: np.ndarray, w_input: int,
                   scale: Callable[[str], str] | None, finish: Callable[[str], str]) -> None:
    """The conv of input `x` (zero point the C value x_zp) with `weights` (int16, their zero
    points already subtracted, [O, I/group, kh, kw] or [O, I/group, kw]; packed in place of
    constant input `w_input`) into ctx.outs[0].
    `scale(oc)`, if given, is a float C expression computed once per output channel into
    sc[oc]; finish("acc") the C value stored for the int32 sum `acc` of channel `oc` (both in
    scope, acc modifiable)."""
    w = ctx.w
    oc_n = geo.out_channels
    hp, wp = geo.padded
    width = geo.group_width * geo.groups           # channels of a map pixel
    map_bytes = hp * wp * width * 2
    sc_bytes = -(-oc_n * 4 // 64) * 64 if scale else 0
    scratch = ctx.request_scratch(sc_bytes + map_bytes)
    team(ctx)       # the scales and each image's map by one thread, the products by all
    if scale:
        w.line(f"float *const sc = (float *){scratch};")
        with serial(ctx), w.block(f"for (int32_t oc = 0; oc < {oc_n}; ++oc)"):
            w.line(f"sc[oc] = {scale('oc')};")
    w.line(f"int16_t *const xp = (int16_t *)((char *){scratch} + {sc_bytes});")
    w.line(f"const int32_t xz = {x_zp};")
    with w.block(f"for (int32_t n = 0; n < {geo.batch}; ++n)"):
        with serial(ctx):
            _emit_map(ctx, geo, x, width, map_bytes)
        if geo.depthwise:
            _emit_depthwise(ctx, geo, weights, w_input, width, finish)
        else:
            _emit_tiles(ctx, geo, weights, w_input, width, finish)


def _emit_map(ctx, geo: Geometry, x: str, width: int, map_bytes: int) -> None:
    """xp: image n's pixels less the input zero point, channels innermost, zero-padded."""
    w = ctx.w
    (h, wd), (hp, wp) = geo.size, geo.padded
    cpg = geo.channels // geo.groups
    # input pixels past the last tap (a stride's leftovers) stay out of the map
    rows, cols = max(0, min(h, hp - geo.pads[0])), max(0, min(wd, wp - geo.pads[1]))
    w.line(f"memset(xp, 0, {map_bytes});")
    with w.block(f"for (int32_t c = 0; c < {geo.channels}; ++c)"):
        w.line(f"const {_ctype(ctx, 0)} *const xs = {x} + (n * {geo.channels} + c) * {h * wd};")
        at = "c" if geo.group_width == cpg else f"(c / {cpg}) * {geo.group_width} + c % {cpg}"
        w.line(f"int16_t *const xd = xp + {(geo.pads[0] * wp + geo.pads[1]) * width} + {at};")
        with w.block(f"for (int32_t y = 0; y < {rows}; ++y)"):
            with w.block(f"for (int32_t i = 0; i < {cols}; ++i)"):
                w.line(f"xd[(y * {wp} + i) * {width}] = (int16_t)((int32_t)xs[y * {wd} + i] - xz);")


def _ctype(ctx, k: int) -> str:
    return ctx.node.inputs[k].type.dtype.c


def _position(geo: Geometry, width: int) -> str:
    """C offset in the map of the first tap of output position (oy, ox)."""
    return f"(oy * {geo.strides[0] * geo.padded[1]} + ox * {geo.strides[1]}) * {width}"


def _emit_tiles(ctx, geo: Geometry, weights: np.ndarray, w_input: int, width: int,
                finish: Callable[[str], str]) -> None:
    w = ctx.w
    (kh, kw), (dh, dw), wp = geo.kernel, geo.dilations, geo.padded[1]
    taps = ctx.pack_constant(np.array([(i * dh * wp + j * dw) * width for i in range(kh)
                                       for j in range(kw)], np.int32))
    groups, opg = geo.groups, geo.out_channels // geo.groups
    pairs, blocks = geo.group_width // 2, -(-opg // IGEMM_NR)
    ntaps = math.prod(geo.kernel)
    packed = ctx.pack_constant(_pack_weights(weights, geo), replaces=w_input)
    ctx.require("ember_igemm", igemm_support_c())
    positions = math.prod(geo.out)
    threads = ctx.schedule.threads
    chunk = min(_CHUNK, -(-positions // threads // IGEMM_MR) * IGEMM_MR) if threads > 1 else _CHUNK
    chunk = max(IGEMM_MR, chunk)
    ukrs = ", ".join(f"ember_igemm{mr}" for mr in range(1, IGEMM_MR + 1))
    w.line("static void (*const ukr[])(int32_t *restrict, const int16_t *restrict, "
           "const int32_t *restrict, const int32_t *restrict, int32_t, int32_t, "
           f"const int16_t *restrict) = {{{ukrs}}};")
    with part_loop(ctx, "ci", -(-positions // chunk), "int32_t"):
        w.line(f"const int32_t pc = ci * {chunk};")
        w.line(f"const int32_t pe = pc + {chunk} < {positions} ? pc + {chunk} : {positions};")
        with w.block(f"for (int32_t gb = 0; gb < {groups * blocks}; ++gb)"):
            w.line(f"const int32_t g = gb / {blocks}, ob = gb % {blocks};")
            w.line(f"const int16_t *const wb = {packed} + gb * {ntaps * pairs * 2 * IGEMM_NR};")
            w.line(f"const int32_t oc0 = g * {opg} + ob * {IGEMM_NR};")
            w.line(f"const int32_t nv = {opg} - ob * {IGEMM_NR} < {IGEMM_NR} ? "
                   f"{opg} - ob * {IGEMM_NR} : {IGEMM_NR};")
            with w.block(f"for (int32_t p0 = pc; p0 < pe; p0 += {IGEMM_MR})"):
                w.line(f"const int32_t mr = pe - p0 < {IGEMM_MR} ? pe - p0 : {IGEMM_MR};")
                w.line(f"int32_t xo[{IGEMM_MR}], tile[{IGEMM_MR * IGEMM_NR}];")
                with w.block("for (int32_t j = 0; j < mr; ++j)"):
                    w.line(f"const int32_t oy = (p0 + j) / {geo.out[1]}, "
                           f"ox = p0 + j - oy * {geo.out[1]};")
                    w.line(f"xo[j] = {_position(geo, width)};")
                w.line(f"ukr[mr - 1](tile, xp + g * {geo.group_width}, xo, {taps}, {ntaps}, "
                       f"{pairs}, wb);")
                # channels innermost: the tile's rows, scales and biases are contiguous there,
                # so the requantization vectorizes (the stores go one per channel plane)
                with w.block("for (int32_t j = 0; j < mr; ++j)"):
                    w.line(f"{ctx.node.outputs[0].type.dtype.c} *const yo = {ctx.outs[0]} + "
                           f"(n * {geo.out_channels} + oc0) * {positions} + p0 + j;")
                    with w.block("for (int32_t o = 0; o < nv; ++o)"):
                        w.line("const int32_t oc = oc0 + o;")
                        w.line(f"int32_t acc = tile[j * {IGEMM_NR} + o];")
                        w.line(f"yo[o * {positions}] = {finish('acc')};")


def _pack_weights(weights: np.ndarray, geo: Geometry) -> np.ndarray:
    """[groups, blocks, taps, pairs, NR, 2] int16: per group and block of NR output channels,
    per tap and input channel pair, the NR channels' pairs (zero past the group's channels)."""
    groups, cpg, opg = geo.groups, geo.channels // geo.groups, geo.out_channels // geo.groups
    width, blocks, taps = geo.group_width, -(-opg // IGEMM_NR), math.prod(geo.kernel)
    src = np.asarray(weights, np.int16).reshape(groups, opg, cpg, taps)
    full = np.zeros((groups, blocks * IGEMM_NR, width, taps), np.int16)
    full[:, :opg, :cpg] = src
    return full.reshape(groups, blocks, IGEMM_NR, width // 2, 2, taps).transpose(0, 1, 5, 3, 2, 4)


def _emit_depthwise(ctx, geo: Geometry, weights: np.ndarray, w_input: int, width: int,
                    finish: Callable[[str], str]) -> None:
    w = ctx.w
    channels, ntaps, positions = geo.channels, math.prod(geo.kernel), math.prod(geo.out)
    # [C, 1, kh, kw] -> [taps, C]: a tap's weights contiguous over the channels
    packed = ctx.pack_constant(np.asarray(weights, np.int16).reshape(channels, ntaps).T,
                                replaces=w_input)
    block = min(_DW_BLOCK, channels)
    (kh, kw), (dh, dw), wp = geo.kernel, geo.dilations, geo.padded[1]
    with part_loop(ctx, "p", positions, "int32_t"), ExitStack() as blocks:
        w.line(f"const int32_t oy = p / {geo.out[1]}, ox = p - oy * {geo.out[1]};")
        w.line(f"const int16_t *const xs = xp + {_position(geo, width)};")
        if block < channels:
            blocks.enter_context(w.block(f"for (int32_t cb = 0; cb < {channels}; cb += {block})"))
            w.line(f"const int32_t nb = {channels} - cb < {block} ? {channels} - cb : {block};")
        else:
            w.line(f"const int32_t cb = 0, nb = {channels};")
        w.line(f"int32_t accs[{block}];")
        with w.block("for (int32_t c = 0; c < nb; ++c)"):
            w.line("accs[c] = 0;")
        # the taps as two affine loops: a table of offsets kept GCC from vectorizing
        with w.block(f"for (int32_t ky = 0; ky < {kh}; ++ky)"), \
                w.block(f"for (int32_t kx = 0; kx < {kw}; ++kx)"):
            w.line(f"const int16_t *const xt = xs + (ky * {dh * wp} + kx * {dw}) * {width} + cb, "
                   f"*const wt = {packed} + (ky * {kw} + kx) * {channels} + cb;")
            with w.block("for (int32_t c = 0; c < nb; ++c)"):
                w.line("accs[c] += (int32_t)xt[c] * wt[c];")
        with w.block("for (int32_t c = 0; c < nb; ++c)"):
            w.line("const int32_t oc = cb + c;")
            w.line("int32_t acc = accs[c];")
            w.line(f"{ctx.outs[0]}[(n * {channels} + oc) * {positions} + p] = {finish('acc')};")
