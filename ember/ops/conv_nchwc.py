"""NchwcConv: a 1x1 convolution on channel-blocked data (an internal op).

The layout pass (passes/choose_layout.py) rewrites large-map convolution regions into blocked
NCHWc form: a [N, C, H, W] tensor is [N, C/8, H*W, 8], eight channels of one position
contiguous (one vector), then the positions, then the blocks. This op is a pointwise ONNX Conv
(1x1, stride 1, no pads, one group) in that form:

    inputs   0: x f32[N, CI/8, P, 8]   1: w f32[CI, CO] (input channel ci's weight for every
             output channel)   2 (optional): bias f32[CO]
    output   f32[N, CO/8, P, 8]

Per tile of PB positions x OBK output blocks (6 x 2, 3 x 3 or 12 x 1), each input channel
feeds OBK weight vectors and PB broadcast inputs into PB x OBK multiply-adds; a tile's input
is PB x 8 contiguous floats per input block, and its sums are whole output vectors, stored
with no transpose: the bias starts the sums and a fused epilogue runs over the tile's
vectors in L1. Where NCHW's direct 1x1 kernel (ops/conv_pointwise.py) fills 6-channel register
blocks 6 + 6 + 4 for 16 outputs and passes every sum through a buffer, here 16 outputs are two
whole blocks (MobileNetV2's 32 -> 16 at 112x112: 229 against 331 us, 1 thread, the two run
alternately in one process).

Positions go in strips whose input (CI x S floats) fits in half of L2 (as many strips as
threads at least); within a strip every output block group walks the strip's tiles, input
blocks _PASS_BLOCKS at a time (the tile's sums go out to the strip's output and back between
passes), so the input is read from memory once and few of its lines share an L1 set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.parallel import part_loop
from ember.ops.matmul import own_inputs
from ember.ops.registry import OpDef, fail, register_op
from ember.ops.window_plane import LANES, VEC, emit_in_registers, emit_vector_types

#: channels per block: one vector of float32 (the layout pass blocks by this)
BLOCK = LANES
#: positions per tile by output blocks per tile: PB x OBK sums, OBK weight vectors and a
#: broadcast input in 16 registers (4 x 3 fills all 16, and GCC then reads the weights from
#: memory in every multiply-add: 24 -> 144 at 56x56 1.2x slower than 3 x 3)
_TILE_POSITIONS = {3: 3, 2: 6, 1: 12}
#: input floats of a strip of positions, kept in half of a 512 KiB L2
_STRIP_FLOATS = 64 * 1024
#: input blocks summed per pass over a strip: a tile reads the same positions of every block,
#: lines H*W*32 bytes apart, which a 56x56 or 112x112 map puts in one or two sets of an 8-way
#: L1, so more blocks than ways could evict one another (144 -> 24 at 56x56 measured alike
#: with 2, 4, 8 and all 18 blocks per pass: the L2 hides it; 8 keeps within the ways)
_PASS_BLOCKS = 8


def tile_shape(out_blocks: int) -> tuple[int, int]:
    """(positions, output blocks) of a tile: 3 blocks x 3 positions or 2 x 6 where they divide
    the output's blocks (24 outputs: 3 x 3; 16: 2 x 6), else 1 x 12."""
    obk = next(k for k in (3, 2, 1) if out_blocks % k == 0)
    return _TILE_POSITIONS[obk], obk


@register_op("NchwcConv")
class NchwcConv(OpDef):
    dtypes = (dt.F32,)
    accepts_epilogue = True

    def infer(self, node: Node) -> list[TensorType]:
        n, _, p, _, co = _shapes(node)
        return [TensorType(dt.F32, (n, co // BLOCK, p, BLOCK))]

    def flops(self, node: Node) -> int:
        n, _, p, ci, co = _shapes(node)
        return 2 * n * p * ci * co

    def lower(self, node: Node, ctx) -> None:
        n, blocks, p, ci, co = _shapes(node)
        if n * p * co == 0:
            return
        pb, obk = tile_shape(co // BLOCK)
        weights = own_inputs(node)[1].const.astype(np.float32)
        # [group][ci][obk * 8]: a tile's weights of one input channel are OBK adjacent vectors
        wk = ctx.pack_constant(weights.reshape(ci, co // (obk * BLOCK), obk * BLOCK)
                               .transpose(1, 0, 2), replaces=1)
        strip = _strip(p, ci, pb, ctx.schedule.threads if n < ctx.schedule.threads else 1)
        strips = -(-p // strip)
        emit_vector_types(ctx.w)
        with part_loop(ctx, "it", n * strips):
            ctx.w.line(f"const int64_t n = it / {strips}, s0 = it % {strips} * {strip};")
            ctx.w.line(f"const int64_t s1 = s0 + {strip} < {p} ? s0 + {strip} : {p};")
            groups = co // (obk * BLOCK)
            with ctx.w.block(f"for (int64_t g = 0; g < {groups}; ++g)"):
                with ctx.w.block(f"for (int64_t kb = 0; kb < {blocks}; kb += {_PASS_BLOCKS})"):
                    ctx.w.line(f"const float *restrict wg = {wk} + (g * {ci} + kb * {BLOCK}) "
                               f"* {obk * BLOCK};")
                    ctx.w.line(f"const int64_t kn = {blocks} - kb < {_PASS_BLOCKS} ? "
                               f"{blocks} - kb : {_PASS_BLOCKS};")
                    ctx.w.line("int64_t p0 = s0;")
                    with ctx.w.block(f"for (; p0 + {pb} <= s1; p0 += {pb})"):
                        _emit_tile(ctx, node, pb, obk)
                    if p % pb:
                        with ctx.w.block("if (p0 < s1)"):
                            _emit_tile(ctx, node, p % pb, obk)


def _strip(positions: int, ci: int, pb: int, parts: int) -> int:
    """Positions per strip: whole tiles, the strip's input in half of L2, and the strips a
    multiple of `parts` (the threads sharing one image: 112x112 in 2048-position strips would
    give one thread 4 of 7)."""
    def whole_tiles(k: int) -> int:
        return max(pb, -(-k // pb) * pb)
    strip = min(whole_tiles(positions), max(pb, _STRIP_FLOATS // ci // pb * pb))
    strips = -(-positions // strip)
    if parts > 1:
        strip = whole_tiles(-(-positions // (-(-strips // parts) * parts)))
    return strip


def _shapes(node: Node) -> tuple[int, int, int, int, int]:
    """(N, input blocks, positions, input channels, output channels), checked."""
    own = own_inputs(node)
    if len(own) < 2 or own[0] is None or own[1] is None or not own[1].is_const:
        raise fail(node, "needs an input x and constant weights w")
    x, w = own[0].type, own[1].type
    if x.rank != 4 or x.shape[3] != BLOCK:
        raise fail(node, f"x must be [N, C/{BLOCK}, H*W, {BLOCK}], got shape {list(x.shape)}")
    n, blocks, p, _ = x.shape
    if blocks == 0:
        raise fail(node, "x must have at least one channel block")
    ci = blocks * BLOCK
    if w.rank != 2 or w.shape[0] != ci or w.shape[1] % BLOCK or w.dtype is not dt.F32:
        raise fail(node, f"weights must be f32[{ci}, CO] with CO a multiple of {BLOCK}, "
                   f"got {w}")
    co = w.shape[1]
    b = own[2] if len(own) > 2 else None
    if b is not None and (b.type.shape != (co,) or b.type.dtype is not dt.F32):
        raise fail(node, f"bias must be f32[{co}], got {b.type}")
    return n, blocks, p, ci, co


def _emit_tile(ctx, node: Node, pb: int, obk: int) -> None:
    """pb positions from p0 x obk output blocks from g*obk: the sums over input blocks
    [kb, kb + kn), started from the bias (first pass) or from out (later passes), then out
    (through the epilogue after the last pass, when there is one)."""
    w = ctx.w
    n, blocks, p, ci, co = _shapes(node)
    x, out = ctx.ins[0], ctx.outs[0]
    has_bias = len(own_inputs(node)) > 2 and own_inputs(node)[2] is not None
    sums = [[f"a{i}_{j}" for j in range(obk)] for i in range(pb)]
    store = BlockedStore(co // BLOCK, p, lambda j: f"g * {obk} + {j}", lambda i: f"p0 + {i}")
    w.line(f"{VEC} " + ", ".join(s for row in sums for s in row) + ";")
    with w.block("if (kb == 0)"):
        for j in range(obk):
            init = _start_vector(ctx.ins[2] if has_bias else None, f"g * {obk}", j)
            w.line(" ".join(f"{sums[i][j]} = " for i in range(pb)) + f"{init};")
    with w.block("else"):
        for i in range(pb):
            w.line(" ".join(f"{sums[i][j]} = *(const {VEC} *)({out} + {store.at(i, j)});"
                            for j in range(obk)))
    emit_tile_sums(ctx, sums, f"{x} + ((n * {blocks} + kb) * {p} + p0) * {BLOCK}", p * BLOCK,
                   "kn", "wg")
    if ctx.epilogue is None:
        store.emit(ctx, sums)
        return
    with w.block(f"if (kb + kn < {blocks})"):
        store.emit(ctx, sums, plain=True)
    with w.block("else"):
        store.emit(ctx, sums)


@dataclass(frozen=True)
class BlockedStore:
    """Where a tile's sums go in a blocked output [N, blocks, positions, 8] (image `n` in
    scope): tile column j into block block(j), tile row i to position position(i) (C
    expressions of j and i)."""
    blocks: int
    positions: int
    block: Callable[[str], str]
    position: Callable[[str], str]

    def emit(self, ctx, sums: list[list[str]], plain: bool = False) -> None:
        """Store sums[i][j] as whole vectors, or (an epilogue fused, unless `plain`) through a
        buffer and ctx.store, element by element in a vectorizable loop."""
        w, rows, cols = ctx.w, len(sums), len(sums[0])
        if ctx.epilogue is None or plain:
            for i in range(rows):
                w.line(" ".join(f"*({VEC} *)({ctx.outs[0]} + {self.at(i, j)}) = "
                                f"{sums[i][j]};" for j in range(cols)))
            return
        w.line(f"float buf[{rows * cols * BLOCK}] __attribute__((aligned(32)));")
        for i in range(rows):
            w.line(" ".join(f"*({VEC} *)(buf + {(j * rows + i) * BLOCK}) = {sums[i][j]};"
                            for j in range(cols)))
        with w.block(f"for (int64_t j = 0; j < {cols}; ++j)"):
            w.line(f"const int64_t ob = {self.block('j')};")
            with w.block(f"for (int64_t i = 0; i < {rows}; ++i)"):
                w.line(f"const int64_t q = {self.position('i')};")
                if ctx.schedule.simd_pragmas:
                    w.line("#pragma omp simd")
                with w.block(f"for (int64_t l = 0; l < {BLOCK}; ++l)"):
                    ctx.store(["n", "ob", "q", "l"],
                              f"((n * {self.blocks} + ob) * {self.positions} + q) * {BLOCK} + l",
                              f"buf[(j * {rows} + i) * {BLOCK} + l]")

    def at(self, i: int, j: int) -> str:
        """The offset of tile row i's vector of tile column j."""
        return (f"((n * {self.blocks} + {self.block(str(j))}) * {self.positions} + "
                f"{self.position(str(i))}) * {BLOCK}")


def emit_in_tiles(w, var: str, count: int, size: int, body: Callable[[int], None]) -> None:
    """`var` from 0 over `count` positions in tiles of `size` (a loop), then the one shorter
    tile left (its own code): body(n) writes a tile of n positions from `var`."""
    w.line(f"int64_t {var} = 0;")
    if count >= size:
        with w.block(f"for (; {var} + {size} <= {count}; {var} += {size})"):
            body(size)
    if count % size:
        with w.block(""):
            body(count % size)


def emit_tile_sums(ctx, sums: list[list[str]], x: str, block_stride: int, blocks: str,
                   weights: str) -> None:
    """sums[i][j] (PB positions x OBK output vectors) += the products over `blocks` input
    blocks: input position i's 8 channels at `x` + i*8 (the next block `block_stride` floats
    on), weights of input channel c at `weights` + c*OBK*8 (OBK vectors)."""
    w, obk = ctx.w, len(sums[0])
    w.line(f"const float *restrict xb = {x};")
    w.line(f"const float *restrict wc = {weights};")
    with w.block(f"for (int64_t ib = 0; ib < {blocks}; ++ib, xb += {block_stride}, "
                 f"wc += {BLOCK * obk * BLOCK})"):
        w.line("#pragma GCC unroll 8")
        with w.block(f"for (int64_t c = 0; c < {BLOCK}; ++c)"):
            emit_tile_step(ctx, sums, f"wc + c * {obk * BLOCK}", lambda i: f"xb[{i * BLOCK} + c]")


def emit_tile_step(ctx, sums: list[list[str]], weights: str, value: Callable[[int], str]) -> None:
    """One step of a tile's sums: sums[i][j] += value(i) (a float, broadcast) x weight vector
    j at `weights` + j*8, the weight vectors held in registers."""
    w, pb, obk = ctx.w, len(sums), len(sums[0])
    w.line(f"{VEC} " + ", ".join(f"w{j} = *(const {VEC} *)({weights} + {j * BLOCK})"
                                 for j in range(obk)) + ";")
    emit_in_registers(ctx, [f"w{j}" for j in range(obk)])
    for i in range(pb):
        # a compound literal of the scalar: GCC broadcasts it from memory directly
        w.line(f"{{ const float s = {value(i)}; const {VEC} v = "
               f"({VEC}){{{', '.join(['s'] * BLOCK)}}}; "
               + " ".join(f"{sums[i][j]} += v * w{j};" for j in range(obk)) + " }")


def emit_tile_start(ctx, sums: list[list[str]], bias: str | None, first_block: str) -> None:
    """Declare a tile's sums, each output vector j starting at its bias (the 8 values at
    `bias` + (first_block + j) * 8) or 0."""
    w, obk = ctx.w, len(sums[0])
    for j in range(obk):
        w.line(f"const {VEC} b{j} = {_start_vector(bias, first_block, j)};")
    w.line(f"{VEC} " + ", ".join(f"{s} = b{j}" for row in sums for j, s in enumerate(row)) + ";")


def _start_vector(bias: str | None, first_block: str, j: int) -> str:
    """Output vector j's starting value: its 8 biases at `bias` + (first_block + j) * 8, or 0."""
    if bias is None:
        return f"({VEC}){{0}}"
    return f"*(const {VEC} *)({bias} + ({first_block} + {j}) * {BLOCK})"
