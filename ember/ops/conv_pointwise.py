"""Direct 1x1 convolution for few output channels (MobileNetV2's projections on large maps:
32 -> 16 at 112x112, 96 / 144 -> 24 at 56x56), float32, one group, constant weights.

As a GEMM (M = output channels, N = positions, K = input channels) M = 16 fills 6-row
micro-tiles as 6 + 6 + 4, so each panel of the input is read three times, and K = 32 is too
short to hide the micro-tile's load and store. Here the positions go in strips of S columns
(K x S input floats in L1); per strip every output channel's sums are computed in register
blocks of CO channels x NV vectors of 8 positions, reading the input rows in place (per input
channel NV vectors and CO broadcast weights feed CO x NV multiply-adds; weights packed at
compile time as [channel block][input channel][CO]). Each block's sums land in `acc` (L1) and go
out at once through ctx.store with the bias, so a fused epilogue runs in its own vectorizable
loop and the output's stores overlap the next block's multiply-adds (32 -> 16 at 112x112:
1.08x quicker than a store pass per strip).
The last strip, when the positions are not a whole number of strips, is copied into a
zero-filled scratch strip first: no load reads past an input row. Each load also prefetches
the next strip's line of its row.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node
from ember.lower.parallel import part_loop, part_slot
from ember.lower.schedule import pointwise_direct_pays
from ember.ops.window_plane import (LANES, VEC, emit_broadcast_fmas, emit_sums_store,
                                    emit_vector_types, splat)

if TYPE_CHECKING:
    from ember.ops.conv import ConvGeometry

#: output channels x vectors of a register block: 12 accumulators of 16 registers, with NV
#: input vectors and a broadcast weight live
CO, NV = 6, 2
#: input floats of a strip kept in L1 (K x S): 2048 and 8192 measured no better
_STRIP_FLOATS = 4096
#: floats of a cache line: the next strip is prefetched one line per line read
_LINE_FLOATS = 16


def pointwise_direct_applies(node: Node, g: ConvGeometry, vector_bytes: int) -> bool:
    """float32 1x1 Conv, stride 1, no padding, one group, constant weights, and what
    schedule.pointwise_direct_pays takes."""
    if (g.transposed or not g.pointwise or node.inputs[0].type.dtype is not dt.F32
            or not node.inputs[1].is_const or len(g.in_sp) not in (1, 2)):
        return False
    positions = math.prod(g.out_sp)
    return (g.batch * g.out_channels * positions > 0
            and pointwise_direct_pays(g.in_channels, g.out_channels, positions, vector_bytes))


def _strip(k: int, positions: int) -> int:
    """Positions per strip: whole register blocks, K x S input floats in L1."""
    step = NV * LANES
    s = max(step, _STRIP_FLOATS // k // step * step)
    return min(s, -(-positions // step) * step)


def emit_conv_pointwise(ctx, g: ConvGeometry) -> None:
    w = ctx.w
    k, m = g.in_channels, g.out_channels
    hw = math.prod(g.out_sp)
    s = _strip(k, hw)
    strips, full = -(-hw // s), hw // s
    blocks, tail_co = m // CO, m % CO
    weights = ctx.node.inputs[1].const.reshape(m, k).astype(np.float32)
    packed = np.zeros((-(-m // CO) * CO, k), np.float32)
    packed[:m] = weights
    wk = ctx.pack_constant(packed.reshape(-1, CO, k).transpose(0, 2, 1), replaces=1)
    threads = ctx.schedule.threads
    items = g.batch * strips
    par = threads > 1 and items > 1
    per_thread = m * s + (k * s if full < strips else 0)
    scratch = ctx.request_scratch(4 * (threads if par else 1) * per_thread)
    emit_vector_types(w)
    with part_loop(ctx, "it", items):
        w.line(f"const int64_t n = it / {strips}, p0 = it % {strips} * {s};")
        mine = f" + {part_slot(ctx)} * {per_thread}" if par else ""
        w.line(f"float *restrict acc = (float *){scratch}{mine};")
        w.line(f"const float *xs = {ctx.ins[0]} + n * {k * hw} + p0;")
        w.line(f"int64_t pitch = {hw};")
        if full < strips:
            with w.block(f"if (p0 + {s} > {hw})"):
                _emit_tail_copy(w, k, m, hw, s)
        with w.block(f"for (int64_t cb = 0; cb < {blocks}; ++cb)"):
            w.line(f"const float *restrict wb = {wk} + cb * {CO * k};")
            w.line(f"float *restrict ab = acc + cb * {CO * s};")
            w.line(f"const int64_t c0 = cb * {CO};")
            _emit_positions(ctx, g, CO, k, s)
        if tail_co:
            with w.block(""):
                w.line(f"const float *restrict wb = {wk} + {blocks * CO * k};")
                w.line(f"float *restrict ab = acc + {blocks * CO * s};")
                w.line(f"const int64_t c0 = {blocks * CO};")
                _emit_positions(ctx, g, tail_co, k, s)


def _emit_tail_copy(w, k: int, m: int, hw: int, s: int) -> None:
    """The last, partial strip: its columns of every input row, zero-filled to S (after acc
    in scratch); the blocks then read rows S apart."""
    w.line(f"float *restrict xt = acc + {m * s};")
    w.line(f"const int64_t have = {hw} - p0;")
    with w.block(f"for (int64_t c = 0; c < {k}; ++c)"):
        w.line(f"memcpy(xt + c * {s}, xs + c * {hw}, sizeof(float) * have);")
        w.line(f"memset(xt + c * {s} + have, 0, sizeof(float) * ({s} - have));")
    w.line("xs = xt;")
    w.line(f"pitch = {s};")


def _emit_positions(ctx, g: ConvGeometry, co: int, k: int, s: int) -> None:
    """co channels from c0 x the strip's positions, in blocks of NV vectors, each stored as
    soon as it is summed."""
    w = ctx.w
    with w.block(f"for (int64_t q = 0; q < {s}; q += {NV * LANES})"):
        sums = [[f"s{i}_{v}" for v in range(NV)] for i in range(co)]
        zero = splat("0.0f")
        w.line(f"{VEC} " + ", ".join(f"{x} = {zero}" for row in sums for x in row) + ";")
        with w.block(f"for (int64_t c = 0; c < {k}; ++c)"):
            w.line("const float *restrict xc = xs + c * pitch + q;")
            # the next strip's lines (a 112x112 map's rows stream from L3: 32 -> 16 1.07x)
            for off in range(0, NV * LANES, _LINE_FLOATS):
                w.line(f"__builtin_prefetch(xc + {s + off}, 0, 3);")
            w.line(f"const float *restrict wc = wb + c * {CO};")
            emit_broadcast_fmas(w, "xc", NV, "wc", co, sums)
        emit_sums_store(w, sums, s, "ab + q")
        _emit_store(ctx, g, co, s, math.prod(g.out_sp))


def _emit_store(ctx, g: ConvGeometry, co: int, s: int, hw: int) -> None:
    """The block just summed (co channels from c0, NV vectors of positions from q), from acc,
    plus the bias, through the epilogue (indexed by position where every epilogue input
    allows, else by (oh, ow))."""
    w = ctx.w
    m = g.out_channels
    bias = f" + {ctx.ins[2]}[c0 + i]" if g.has_bias else ""
    merged = (g.batch, m, hw)
    at = f"(n * {m} + c0 + i) * {hw} + p0 + p"
    end = f"q + {NV * LANES}"
    if hw % s:                     # a last, partial strip
        end = f"({hw} - p0 < {end} ? {hw} - p0 : {end})"
    with w.block(f"for (int64_t i = 0; i < {co}; ++i)"):
        w.line("const int64_t co = c0 + i;")
        with w.block(f"for (int64_t p = q; p < {end}; ++p)"):
            value = f"ab[i * {s} + p]{bias}"
            if ctx.can_merge(merged):
                w.line("const int64_t pos = p0 + p;")
                ctx.store(["n", "co", "pos"], at, value, shape=merged)
            elif len(g.out_sp) == 2:
                ow = g.out_sp[1]
                w.line(f"const int64_t oh = (p0 + p) / {ow}, ow = (p0 + p) % {ow};")
                ctx.store(["n", "co", "oh", "ow"], at, value)
            else:
                w.line("const int64_t ow = p0 + p;")
                ctx.store(["n", "co", "ow"], at, value)
