"""Convolution as a packed GEMM (NCHW, float32, 1-D and 2-D).

For each image and group, out[m, (oy, ox)] = sum over k = (c, ky, kx) of W[m, k] * X'[k, (oy, ox)]:
M = output channels of the group, N = output positions, K = input channels x kernel taps.
The weights are A, packed at compile time. B, the im2col matrix, is never materialized whole:
  - a 1x1 stride-1 convolution on a large map whose rows lie whole vectors apart (112x112)
    reads the input itself as B, in place; elsewhere B is packed from the rows (Strided: on
    14x14, 7x7, 25x5 maps the unaligned, line-crossing loads in place cost 1.2-1.4x);
  - a stride-1 convolution, or a strided one on a small image, reads a zero-padded copy of
    the image, split by stride phase, in place: each row of B is a contiguous run of it per
    output row, at a fixed offset (see _emit_padded_direct), nothing is packed (not with
    scalar tiles, where RAM is scarce: schedule.conv_copies_input);
  - a small im2col matrix is gathered whole through a table of offsets (_emit_gathered);
  - any other is packed one kc x nc block at a time from the image (Im2col);
  - with few output positions (a 7x7 map) the roles swap: out^T = im2col^T . W^T (positions
    on M), the weights packed as B, the sums stored transposed (see _emit_swapped).
Bias and the fused epilogue apply as each micro-tile is finished.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node
from ember.kernels.gemm import (BlockedGemm, ConvWindow2d, Im2col, PackedConst, RowOffsets,
                                Strided, blocked_gemm_text, emit_blocked_gemm, pack_a, pack_b,
                                part_extent)
from ember.lower.parallel import part_loop, part_slot, serial, team
from ember.lower.schedule import (conv_copies_input, conv_positions_on_m, gemm_tiles,
                                  im2col_gathered, pointwise_in_place, strided_rows_in_place)
from ember.ops.registry import same_layout_inputs

if TYPE_CHECKING:
    from ember.ops.conv import ConvGeometry


def conv_gemm_applies(node: Node, g: ConvGeometry) -> bool:
    """float32 Conv in 1-D or 2-D with channels to reduce over, or a single group (depthwise
    has its own kernel)."""
    return (not g.transposed and node.inputs[0].type.dtype is dt.F32 and len(g.in_sp) in (1, 2)
            and (g.in_channels // g.groups > 1 or g.groups == 1)
            and g.batch * g.out_channels * math.prod(g.out_sp) > 0)


def _as_2d(values: tuple[int, ...], fill: int) -> tuple[int, int]:
    """A 1-D convolution's sizes as 2-D ones over an image of height 1."""
    return (fill, values[0]) if len(values) == 1 else (values[0], values[1])


def _window(g: ConvGeometry) -> ConvWindow2d:
    win = g.window
    return ConvWindow2d(*_as_2d(g.in_sp, 1), *_as_2d(win.kernel, 1), *_as_2d(win.strides, 1),
                        *_as_2d(win.dilations, 1), *_as_2d(win.pads_begin, 0),
                        *_as_2d(g.out_sp, 1))


#: a convolution reads the padded image in place when the columns it computes and drops (the
#: right-hand padding of each row) are at most this share of the work
_MAX_DROPPED_COLUMNS = 0.25


def emit_conv_gemm(ctx, g: ConvGeometry) -> None:
    d = _window(g)
    cg, mg = g.in_channels // g.groups, g.out_channels // g.groups
    k = cg * d.kh * d.kw
    pointwise = d.pointwise
    n = d.oh * d.ow
    t = gemm_tiles(ctx.schedule, mg, n, k, g.batch * g.groups)
    const = ctx.node.inputs[1].is_const
    if const and conv_positions_on_m(n, t):
        _emit_swapped(ctx, g, d)
        return
    gathered = not pointwise and const and im2col_gathered(k, n, g.batch * g.groups, t)
    # stride 1 reads in place even where the im2col matrix is small enough to gather
    if const and _rows_in_place(d, t, cg) and (not gathered or (d.sy, d.sx) == (1, 1)):
        _emit_padded_direct(ctx, g, d, t)
        return
    if gathered:
        _emit_gathered(ctx, g, d, t)
        return
    image = f"({ctx.ins[0]} + (n*{g.in_channels} + g*{cg})*{d.h * d.w})"
    if pointwise and pointwise_in_place(n, t):     # whole panels: nothing read past the end
        rows = np.arange(cg, dtype=np.int64) * (d.h * d.w)
        b = RowOffsets(image, ctx.pack_constant(rows))
    elif pointwise:        # B is the image itself: row c at c*H*W
        b = Strided(image, d.h * d.w, 1)
    else:
        b = Im2col(image, d)
    _positions_gemm(ctx, g, d, t, b)
    if t.scalar:
        _residual_in_place(ctx)


def _residual_in_place(ctx) -> None:
    """Scalar tiles take K in one slice (schedule._scalar_tiles): each output element is
    written once, by the epilogue, right after it reads the epilogue inputs' elements at the
    same offset, so an epilogue input laid out as the output (a residual) may share its
    buffer (ResNet's Add over an operand that dies there)."""
    if ctx.epilogue is not None:
        n_own = len(ctx.node.inputs) - len(ctx.epilogue_inputs)
        ctx.overwritable = tuple(k for k in same_layout_inputs(ctx.node) if k >= n_own)


def _phase_grid(d: ConvWindow2d) -> tuple[int, int]:
    """Rows and columns of each stride phase of the zero-padded image the windows read:
    padded row Y lies in phase Y % sy at row Y / sy (columns alike), so a window row's taps
    at one phase are a contiguous run of it. Stride 1: the padded image itself."""
    rows = (d.oh - 1) * d.sy + (d.kh - 1) * d.dy + 1
    cols = (d.ow - 1) * d.sx + (d.kw - 1) * d.dx + 1
    return -(-rows // d.sy), -(-cols // d.sx)


def _rows_in_place(d: ConvWindow2d, t, channels: int) -> bool:
    """Whether the GEMM reads B in place from a padded, phase-split copy of the image
    (_emit_padded_direct): where the output rows are whole vectors (nothing computed is
    dropped), or where the dropped columns are a small share; strided, only where the copy
    is small (schedule.strided_rows_in_place)."""
    if d.pointwise or not conv_copies_input(t):
        return False
    rows, cols = _phase_grid(d)
    if (d.sy, d.sx) != (1, 1) and not strided_rows_in_place(4 * channels * d.sy * d.sx
                                                            * rows * cols):
        return False
    return d.ow % t.lanes == 0 or (cols - d.ow) / cols <= _MAX_DROPPED_COLUMNS


def _emit_padded_direct(ctx, g: ConvGeometry, d: ConvWindow2d, t) -> None:
    """Without im2col: copy the images into a zero-padded scratch image split by stride phase
    (_phase_grid), then every row (c, ky, kx) of the im2col matrix is a contiguous run of it
    per output row, at a fixed offset. The GEMM reads those runs in place (RowOffsets).
    Output rows of whole vectors map positions onto the phase rows (RowOffsets.row), the sums
    stored as they are; other widths run over "virtual" positions oy*Wq + ox, which include
    each row's right-hand padding columns, into scratch, their sums dropped when stored."""
    w = ctx.w
    hq, wq = _phase_grid(d)
    plane = d.sy * d.sx * hq * wq
    mapped = d.ow % t.lanes == 0
    n = (d.oh - 1) * wq + d.ow
    images = g.batch * g.in_channels
    image_floats = _round16(images * plane + t.nr)         # nr - 1 readable floats past the end
    vout_floats = 0 if mapped else g.batch * g.out_channels * n
    banded = _banded(ctx, g, d, t)
    if banded:
        # each part copies, into its own copy, only the rows its own output rows read
        ctx.request_scratch(4 * image_floats * ctx.schedule.threads)
        w.line(f"float *restrict xpad = (float *)scratch + {part_slot(ctx)}*{image_floats};")
    else:
        ctx.request_scratch(4 * (image_floats + vout_floats))
        w.line("float *restrict xpad = (float *)scratch;")
        team(ctx)           # the copy, then the GEMM reading it (a barrier between)
    _emit_rows_gemm(ctx, g, d, t, images, image_floats, banded)


def _banded(ctx, g: ConvGeometry, d: ConvWindow2d, t) -> bool:
    """Whether each thread copies the padded rows its own part of the GEMM reads (a band of
    output rows), so no copied row crosses between threads and no barrier waits: one image
    and group, output rows of whole vectors, the GEMM's parts one per thread along N.
    Rows on a band's edge are copied twice, once per band."""
    threads = ctx.schedule.threads
    return (threads > 1 and g.batch * g.groups == 1 and d.ow % t.lanes == 0
            and t.m_parts == 1 and t.n_parts == threads)


def _band_rows(ctx, d: ConvWindow2d, t) -> tuple[str, str]:
    """C expressions of the phase rows [r0, r1) the running part's output rows read (all of
    them where one thread runs every part: part < 0)."""
    w = ctx.w
    hq, _ = _phase_grid(d)
    n = d.oh * d.ow
    n_part = part_extent(n, t.n_parts, t.nr)        # as emit_blocked_gemm splits N
    below = (d.kh - 1) * d.dy // d.sy             # phase rows a window reaches below its first
    w.line(f"const int64_t band_end = part < 0 ? {n} : "
           f"((part + 1)*{n_part} < {n} ? (part + 1)*{n_part} : {n});")
    w.line(f"const int64_t r0 = part < 0 ? 0 : part*{n_part} / {d.ow};")
    w.line(f"const int64_t r1 = (band_end + {d.ow - 1}) / {d.ow} + {below} < {hq} ? "
           f"(band_end + {d.ow - 1}) / {d.ow} + {below} : {hq};")
    return "r0", "r1"


def _emit_rows_gemm(ctx, g: ConvGeometry, d: ConvWindow2d, t, images: int,
                    image_floats: int, banded: bool) -> None:
    """_emit_padded_direct's copy (`banded`: each part its own rows), then its GEMM reading
    the copy's rows in place."""
    w = ctx.w
    cg, mg = g.in_channels // g.groups, g.out_channels // g.groups
    hq, wq = _phase_grid(d)
    plane = d.sy * d.sx * hq * wq
    k, n = cg * d.kh * d.kw, (d.oh - 1) * wq + d.ow
    in_region = ctx.schedule.threads > 1 and not banded
    _emit_pad_copy(ctx, d, images, image_floats, _band_rows(ctx, d, t) if banded else None)
    offsets = np.array([((c * d.sy + ky * d.dy % d.sy) * d.sx + kx * d.dx % d.sx) * hq * wq
                        + ky * d.dy // d.sy * wq + kx * d.dx // d.sx
                        for c in range(cg) for ky in range(d.kh) for kx in range(d.kw)], np.int64)
    image = f"(xpad + (n*{g.in_channels} + g*{cg})*{plane})"
    if d.ow % t.lanes == 0:         # output rows of whole vectors: mapped onto the copy's
        b = RowOffsets(image, ctx.pack_constant(offsets), d.ow, wq)
        _positions_gemm(ctx, g, d, t, b, in_region)
        return
    t = gemm_tiles(ctx.schedule, mg, n, k, g.batch * g.groups)
    w.line(f"float *restrict vout = xpad + {image_floats};")
    b = RowOffsets(image, ctx.pack_constant(offsets))
    out = f"vout + (n*{g.out_channels} + g*{mg})*{n}"
    gemm = BlockedGemm(mg, n, k, (("n", g.batch), ("g", g.groups)), _weights(ctx, g, t, k), b,
                       out, n)
    sp = ["oy", "ox"] if len(g.out_sp) == 2 else ["ox"]

    def final(i: str, j: str, value: str) -> None:
        w.line(f"const int64_t oy = {j} / {wq}, ox = {j} % {wq};")
        with w.block(f"if (ox < {d.ow})"):
            at = f"(n*{g.out_channels} + mo)*{d.oh * d.ow} + oy*{d.ow} + ox"
            ctx.store(["n", "mo"] + sp, at, _biased(ctx, g, i, value))

    emit_blocked_gemm(ctx, gemm, t, final, in_region)


def _emit_gathered(ctx, g: ConvGeometry, d: ConvWindow2d, t) -> None:
    """A small im2col matrix (DS-CNN's first conv: 40 x 125) gathered whole, already in packed-B
    panels, through a compile-time table of offsets into the image group followed by a zero
    (padding reads the zero): one load and store per element, no branch, where packing block
    by block spends its time on index math per short run."""
    cg = g.in_channels // g.groups
    k, n, images, plane = cg * d.kh * d.kw, d.oh * d.ow, g.batch * g.groups, cg * d.h * d.w
    size = k * _round_up(n, t.nr)
    table = ctx.pack_constant(_im2col_table(d, cg, t.nr))
    ctx.request_scratch(4 * (images * size + plane + 1))
    w = ctx.w
    w.line("float *restrict bfull = (float *)scratch;")
    w.line(f"float *restrict xz = bfull + {images * size};")
    team(ctx)           # one thread gathers (a few microseconds), then all share the GEMM
    with serial(ctx):
        w.line(f"xz[{plane}] = 0.0f;")
        with w.block(f"for (int64_t im = 0; im < {images}; ++im)"):
            w.line(f"memcpy(xz, {ctx.ins[0]} + im*{plane}, sizeof(float)*{plane});")
            w.line(f"float *restrict dst = bfull + im*{size};")
            with w.block(f"for (int64_t i = 0; i < {size}; ++i)"):
                w.line(f"dst[i] = xz[{table}[i]];")
    _positions_gemm(ctx, g, d, t, PackedConst(f"(bfull + (n*{g.groups} + g)*{size})"))


def _positions_gemm(ctx, g: ConvGeometry, d: ConvWindow2d, t, b, in_region: bool = False
                    ) -> None:
    """out[n, g] (output channels x positions) = weights x b, per image and group, through
    the bias and the fused epilogue (inside the caller's parallel region: `in_region`)."""
    mg, n = g.out_channels // g.groups, d.oh * d.ow
    k = g.in_channels // g.groups * d.kh * d.kw
    out = f"{ctx.outs[0]} + (n*{g.out_channels} + g*{mg})*{n}"
    gemm = BlockedGemm(mg, n, k, (("n", g.batch), ("g", g.groups)), _weights(ctx, g, t, k), b,
                       out, n)
    store = _position_store(ctx, g, d)

    def final(i: str, j: str, value: str) -> None:
        store(j, _biased(ctx, g, i, value))

    emit_blocked_gemm(ctx, gemm, t, final if g.has_bias or ctx.epilogue is not None else None,
                      in_region)


def _im2col_table(d: ConvWindow2d, cg: int, nr: int) -> np.ndarray:
    """Offset into one image group (cg x H x W) of each im2col element, cg*H*W (the zero after
    it) where the window is outside the image or past the last position, laid out as pack_b's
    panels."""
    c, ky, kx = np.unravel_index(np.arange(cg * d.kh * d.kw), (cg, d.kh, d.kw))
    j = np.arange(_round_up(d.oh * d.ow, nr))
    oy, ox = j // d.ow, j % d.ow
    iy = oy[None, :] * d.sy + ky[:, None] * d.dy - d.py
    ix = ox[None, :] * d.sx + kx[:, None] * d.dx - d.px
    inside = (iy >= 0) & (iy < d.h) & (ix >= 0) & (ix < d.w) & (oy[None, :] < d.oh)
    table = np.where(inside, (c[:, None] * d.h + iy) * d.w + ix, cg * d.h * d.w)
    table = table.astype(np.int32)
    return table.reshape(table.shape[0], -1, nr).transpose(1, 0, 2).reshape(-1).copy()


def _emit_swapped(ctx, g: ConvGeometry, d: ConvWindow2d) -> None:
    """Few output positions (a 7x7 map), many channels: out^T = im2col^T . W^T, so the
    positions fill 6-row micro-tiles and the channels 16-column ones, which a 7x7 map would
    fill badly. The sums land in scratch as [position][channel] and are stored transposed."""
    cg, mg = g.in_channels // g.groups, g.out_channels // g.groups
    n, k = d.oh * d.ow, cg * d.kh * d.kw
    t = gemm_tiles(ctx.schedule, n, mg, k, g.batch * g.groups)
    weights = ctx.node.inputs[1].const.reshape(g.groups, mg, k)
    packed = np.concatenate([pack_b(weights[i].T, t.nr) for i in range(g.groups)])
    b = PackedConst(f"({ctx.pack_constant(packed, replaces=1)} + g*{packed.size // g.groups})")
    image = f"({ctx.ins[0]} + (n*{g.in_channels} + g*{cg})*{d.h * d.w})"
    a = Strided(image, 1, d.h * d.w) if d.pointwise else Im2col(image, d)
    vout_floats = g.batch * g.out_channels * n
    out = f"vout + (n*{g.out_channels} + g*{mg})*{n}"
    gemm = BlockedGemm(n, mg, k, (("n", g.batch), ("g", g.groups)), a, b, out, mg)
    store = _position_store(ctx, g, d)

    def final(i: str, j: str, value: str) -> None:
        store(i, _biased(ctx, g, j, value))

    gemm_text = blocked_gemm_text(ctx, gemm, t, final)   # first: its scratch size comes after
    gemm_floats = _round16(ctx.scratch_bytes // 4)
    ctx.request_scratch(4 * (gemm_floats + vout_floats))
    ctx.w.line(f"float *restrict vout = (float *)scratch + {gemm_floats};")
    ctx.w.lines(gemm_text)


def _emit_pad_copy(ctx, d: ConvWindow2d, images: int, image_floats: int,
                   band: tuple[str, str] | None = None) -> None:
    """xpad[image][phase] = the image's padded rows and columns of that stride phase
    (_phase_grid), zero outside the image; zeros past the last image (up to image_floats,
    written with the last image). Each input row is
    split once into its column phases, each a loop with constant bounds that GCC
    vectorizes (a de-interleave at stride 2). `band`: only phase rows [r0, r1) (C
    expressions), every image on this thread; else the images shared among the parts."""
    w = ctx.w
    hq, wq = _phase_grid(d)
    phases = d.sy * d.sx
    rows = band or ("0", str(hq))
    with (w.block(f"for (int64_t im = 0; im < {images}; ++im)") if band else
          part_loop(ctx, "im", images)):
        tail = image_floats - images * phases * hq * wq
        w.line(f"if (im == {images - 1}) memset(xpad + {images * phases * hq * wq}, 0, "
               f"sizeof(float)*{tail});")
        w.line(f"const float *restrict src = {ctx.ins[0]} + im*{d.h * d.w};")
        w.line(f"float *restrict dst = xpad + im*{phases * hq * wq};")
        with w.block(f"for (int64_t ry = 0; ry < {d.sy}; ++ry)"), \
                w.block(f"for (int64_t r = {rows[0]}; r < {rows[1]}; ++r)"):
            w.line(f"const int64_t iy = r*{d.sy} + ry - {d.py};")
            w.line(f"float *restrict row = dst + (ry*{d.sx * hq} + r)*{wq};")
            with w.block(f"if (iy < 0 || iy >= {d.h})"):
                w.line(f"for (int64_t rx = 0; rx < {d.sx}; ++rx) "
                       f"memset(row + rx*{hq * wq}, 0, sizeof(float)*{wq});")
                w.line("continue;")
            w.line(f"const float *restrict srow = src + iy*{d.w};")
            for rx in range(d.sx):       # the phase columns [lo, hi) that land in the image
                lo = min(wq, max(0, -(-(d.px - rx) // d.sx)))
                hi = max(lo, min(wq, -(-(d.w + d.px - rx) // d.sx)))
                at = f"row + {rx * hq * wq}" if rx else "row"
                with w.block(""):
                    w.line(f"float *restrict q = {at};")
                    if lo:
                        w.line(f"for (int64_t s = 0; s < {lo}; ++s) q[s] = 0.0f;")
                    w.line(f"for (int64_t s = {lo}; s < {hi}; ++s) "
                           f"q[s] = srow[s*{d.sx} + {rx - d.px}];")
                    if hi < wq:
                        w.line(f"for (int64_t s = {hi}; s < {wq}; ++s) q[s] = 0.0f;")


def _position_store(ctx, g: ConvGeometry, d: ConvWindow2d):
    """store(pos, value): write `value` as output (n, mo, position pos), through the epilogue,
    which indexes by position when every input it reads allows, else by (oy, ox)."""
    positions = d.oh * d.ow
    merged = (g.batch, g.out_channels, positions)
    flat = ctx.can_merge(merged)
    spatial = [f"o{s}" for s in range(len(g.out_sp))]

    def store(pos: str, value: str) -> None:
        at = f"(n*{g.out_channels} + mo)*{positions} + {pos}"
        if flat:
            ctx.store(["n", "mo", pos], at, value, shape=merged)
            return
        ctx.w.line(f"const int64_t o0 = {pos} / {d.ow}, o1 = {pos} % {d.ow};"
                   if len(spatial) == 2 else f"const int64_t o0 = {pos};")
        ctx.store(["n", "mo"] + spatial, at, value)

    return store


def _weights(ctx, g: ConvGeometry, t, k: int):
    """The GEMM's A: the group's weights, packed at compile time when constant."""
    mg = g.out_channels // g.groups
    weights = ctx.node.inputs[1]
    if not weights.is_const:
        return Strided(f"({ctx.ins[1]} + g*{mg * k})", k, 1)
    per_group = weights.const.reshape(g.groups, mg, k)
    packed = np.concatenate([pack_a(per_group[i], t.mr) for i in range(g.groups)])
    return PackedConst(f"({ctx.pack_constant(packed, replaces=1)} + g*{packed.size // g.groups})")


def _biased(ctx, g: ConvGeometry, i: str, value: str) -> str:
    """Declare `mo`, output row i's channel; the value plus its bias."""
    ctx.w.line(f"const int64_t mo = g*{g.out_channels // g.groups} + {i};")
    return f"({value} + {ctx.ins[2]}[mo])" if g.has_bias else value


def _round16(n: int) -> int:
    return -(-n // 16) * 16


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to
