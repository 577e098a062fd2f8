"""Schedules: the knobs applied to a kernel (tiles, vector width, unroll, threads).

Knobs are the autotuning search space. Every kernel gets a heuristic schedule from here, per
shape and target; the tuner's records will later override the heuristics in this one place.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

#: float32 lanes of the narrowest SIMD register a target may have (SSE2 / NEON)
_MIN_VECTOR_BYTES = 16


#: what a core without float SIMD registers (a Cortex-M FPU, soft float) has instead: one float
SCALAR_BYTES = 4


@dataclass(frozen=True)
class Schedule:
    threads: int = 1
    vector_bytes: int = 32            # SIMD register width of the target (SCALAR_BYTES: none)
    #: kernels may mark loops `#pragma omp simd` (the host builds with -fopenmp-simd); off for
    #: `ember export`'s strict C99 projects, where the pragma is unknown
    simd_pragmas: bool = True


#: a kernel doing less work than this (OpDef.flops) runs on one thread: waking the other
#: threads and joining them costs a few microseconds when they spin, far more when one was
#: descheduled, and more than splitting a few microseconds of work saves
PARALLEL_MIN_FLOPS = 200_000


def kernel_schedule(schedule: Schedule, flops: int) -> Schedule:
    """The schedule of one kernel doing `flops` of work under the model's `schedule`."""
    if schedule.threads > 1 and flops < PARALLEL_MIN_FLOPS:
        return replace(schedule, threads=1)
    return schedule


@dataclass(frozen=True)
class GemmTiles:
    """Register and cache blocking of a packed GEMM (Goto/BLIS): an mr x nr micro-tile of
    accumulators, a kc-deep slice of K per pass, mc rows of A kept in L2, nc columns of B in L3.
    `m_parts x n_parts` splits the output among threads (each part a multiple of mr / nr)."""
    mr: int
    nr: int
    kc: int
    mc: int
    nc: int
    m_parts: int = 1
    n_parts: int = 1
    #: the micro-tile is mr x nr float scalars, not mr x 2 vectors (a core without float SIMD)
    scalar: bool = False

    @property
    def lanes(self) -> int:
        return 1 if self.scalar else self.nr // 2


#: mr x nr of the scalar micro-tile: its accumulators, a row of B and one value of A in the
#: 32 single-precision registers of a Cortex-M FPU (fpv4-sp / fpv5)
SCALAR_TILE = (4, 6)

# Cache sizes this heuristic blocks for (per core): L1d 32 KiB, L2 512 KiB — Zen and most
# Intel/Arm cores of the last decade have at least these.
_L1_BYTES = 32 * 1024
_L2_BYTES = 512 * 1024
_L3_SHARE_BYTES = 2 * 1024 * 1024


def gemm_tiles(schedule: Schedule, m: int, n: int, k: int, batch: int = 1) -> GemmTiles:
    """float32 GEMM blocking for an (m x k) . (k x n) product repeated `batch` times.

    mr x nr = 6 x 2 vectors: 12 accumulator registers of 16 (AVX2, SSE, NEON), with two B
    vectors and one broadcast A value live. kc keeps a kc x nr panel of B in 3/4 of L1 (the
    A micro-panel takes most of the rest; 3/4, not 5/8, leaves BERT's K = 384 in one slice:
    its projections and FFN 1.02-1.03x quicker), K cut in equal slices, except for one row
    of A (M = 1, an MLP's layers), which reads each panel of B once, so no slice is reused
    from L1 and every cut only restarts the prefetchers' stream (the MLP 0.92-0.95 of its
    time with K whole); mc a
    mc x kc block of A in half of L2; nc a kc x nc block of B in a share of L3.

    Without float SIMD (schedule.vector_bytes == SCALAR_BYTES) the micro-tile is SCALAR_TILE
    scalars instead, and the cache blocking is moot (a microcontroller's flash and SRAM have no
    cache to fit): see _scalar_tiles."""
    scalar = schedule.vector_bytes <= SCALAR_BYTES
    if scalar:
        return _scalar_tiles(m, k)
    lanes = max(_MIN_VECTOR_BYTES, schedule.vector_bytes) // 4
    mr, nr = 6, 2 * lanes
    # kc x nr of B in 3/4 of L1; one row of A takes K whole
    slices = 1 if m == 1 else -(-k // (_L1_BYTES * 3 // 4 // (nr * 4)))
    kc = max(1, -(-k // slices))                              # equal slices
    mc = max(mr, min(_round_up(m, mr), _L2_BYTES // 2 // (kc * 4) // mr * mr))
    nc = max(nr, min(_round_up(n, nr), _L3_SHARE_BYTES // (kc * 4) // nr * nr))
    m_parts, n_parts = _thread_split(schedule.threads, m, n, mr, nr, batch)
    return GemmTiles(mr, nr, kc, mc, nc, m_parts, n_parts, scalar)


def b_block_columns(t: GemmTiles, m_part: int, a_packed_per_block: bool) -> int:
    """Columns of B packed per block (the jc loop's step). A packed block of B serves every
    mc-row block of A; where a part's rows are one block it is read once, panel by panel, so
    one nr-column panel is packed at a time and read from L1 right after, where a whole nc
    block (MobileNetV2's 1x1 convs, 24 x 3136 x 96: 1.2 MB) went out to L3 and back
    (same-process A/B, 1 thread: 96->24 56x56 498 -> 466 us, 144->24 + Add 947 -> 752,
    24->144 754 -> 733; 2 or 4 panels at a time 1-4% slower than 1). Not when A is packed
    per block: a run-time A would be packed again for every panel."""
    if t.scalar or a_packed_per_block or m_part > t.mc:
        return t.nc
    return t.nr


def _scalar_tiles(m: int, k: int) -> GemmTiles:
    """A microcontroller's blocking (no cache, RAM the scarce resource, one thread): all of K
    in one slice, so every micro-tile finishes in the local tile and out is written once
    (an epilogue's residual may then be overwritten in place); one nr-column panel of B
    packed at a time (K x nr floats of scratch, not K x N); all of M per panel."""
    mr, nr = SCALAR_TILE
    return GemmTiles(mr, nr, max(1, k), max(mr, _round_up(m, mr)), nr, scalar=True)


def _thread_split(threads: int, m: int, n: int, mr: int, nr: int, batch: int) -> tuple[int, int]:
    """Split the output among threads along N (each thread packs its own slice of B) when N has
    panels enough, else along M; a batch of at least `threads` problems needs no split."""
    if threads <= 1 or batch >= threads:
        return 1, 1
    want = -(-threads // batch)
    n_panels, m_panels = -(-n // nr), -(-m // mr)
    if n_panels >= 2 * want or n_panels >= m_panels:
        return 1, max(1, min(want, n_panels))
    return max(1, min(want, m_panels)), 1


def _round_up(x: int, to: int) -> int:
    return -(-x // to) * to


#: output positions go on the GEMM's M side when that fills the micro-tiles this much better
_SWAP_GAIN = 0.9


def conv_positions_on_m(positions: int, t: GemmTiles) -> bool:
    """Whether a convolution with few output positions (a 7x7 map) computes out^T: positions
    then fill mr-row micro-tiles instead of nr-column ones, which they would fill badly."""
    def use(size: int, panel: int) -> float:
        return size / (-(-size // panel) * panel)
    if t.scalar:          # the swap needs scratch for the transposed sums (see conv_copies_input)
        return False
    return use(positions, t.nr) < use(positions, t.mr) * _SWAP_GAIN


#: positions from which a 1x1 convolution reads its input rows in place (MobileNetV2's
#: 112x112 maps; its 56x56 and 28x28 ones ran 1.3% slower in place, in the model)
_IN_PLACE_MIN_POSITIONS = 8192


def pointwise_in_place(positions: int, t: GemmTiles) -> bool:
    """Whether a 1x1 convolution's GEMM reads its input rows in place rather than packing them:
    on large maps, where every row starts a whole number of nr-panels after the first (the
    loads then share one alignment, and no ragged panel reads past the end). Packing the
    other shapes pays (MobileNetV2's 14x14 maps 1.2-1.4x); on 112x112 maps with few output
    channels the copy is what costs (32 -> 16 channels: 1.35x). Scalar tiles (a
    microcontroller: no cache, no alignment to share) read in place whenever no panel is
    ragged."""
    if t.scalar:
        return positions % t.nr == 0
    return positions % t.nr == 0 and positions >= _IN_PLACE_MIN_POSITIONS


#: im2col elements (over all images and groups) up to which a convolution gathers its whole
#: im2col matrix through a table before the GEMM (1 load and store per element) instead of
#: packing it per block: DS-CNN's first conv (40 x 128, 1 channel) 1.4x quicker
_GATHER_MAX_ELEMENTS = 16384


def im2col_gathered(k: int, n: int, images: int, t: GemmTiles) -> bool:
    """Whether a convolution's k x n im2col matrix (per image and group) is small enough to
    gather whole (its table and copy stay in L1). Never with scalar tiles (see
    conv_copies_input)."""
    if t.scalar:
        return False
    return images * k * _round_up(n, t.nr) <= _GATHER_MAX_ELEMENTS


#: a strided convolution's GEMM reads its padded, phase-split image in place up to this many
#: bytes of it per image group, half of L2 (1 thread, per kernel, against packed im2col:
#: ResNet-8's 16 -> 32 at 32x32, 74 KB, 88.7 -> 71 us; 48 -> 96 at 28x28, 172 KB, 640 -> 586);
#: past it the rows a B panel reads, re-read by every micro-tile of M, drop out of L1 and L2
#: (32 -> 64 at 56x56, 430 KB: 1109 -> 1175 us; ResNet-18's 0.46 and 0.86 MB ones 1.13x)
_STRIDED_IN_PLACE_MAX_BYTES = 256 * 1024


def strided_rows_in_place(image_bytes: int) -> bool:
    """Whether a strided convolution reads B in place from its phase-split padded image of
    `image_bytes` per image group, rather than packing im2col panels."""
    return image_bytes <= _STRIDED_IN_PLACE_MAX_BYTES


def conv_copies_input(t: GemmTiles) -> bool:
    """Whether a convolution may spend scratch as large as its input or output for speed (a
    zero-padded copy of the image read in place, a gathered im2col matrix, sums stored
    transposed). Not with scalar tiles: on a microcontroller RAM is what runs out, and its
    im2col panels are packed one nr-column panel at a time instead (ember_conv_panel)."""
    return not t.scalar


#: the flat depthwise kernel (ops/depthwise_flat.py) keeps one mask of int32 per output per
#: column shift: planes up to this many outputs
_FLAT_MAX_OUTPUTS = 4096


def depthwise_flat_pays(out_h: int, out_w: int, pitch: int) -> bool:
    """Whether a stride-1 "same"-width depthwise conv runs over the flat plane (masked taps at
    the row ends) rather than over padded rows of `pitch` columns: where the padding columns
    are a large share of a row (narrow maps) and the masks stay small."""
    return out_h * out_w <= _FLAT_MAX_OUTPUTS and pitch > out_w * 1.1



#: Winograd F(4x4, 3x3): outputs per tile side, transformed tile side, GEMM panel width (tiles;
#: the float32 GEMM's nr, two 8-float vectors). ops/conv_winograd.py builds on these.
WINOGRAD_TILE, WINOGRAD_ALPHA, WINOGRAD_NR = 4, 6, 16


def winograd_pays(cin: int, cout: int, oh: int, ow: int) -> bool:
    """Whether F(4x4, 3x3) beats the GEMM convolution. It saves multiplies (9 per output
    against 36 per tile, the tiles counted in whole 16-tile GEMM panels: a 7x7 or 8x8 plane
    saves none), and spends transform work per channel and tile, which is small next to the
    products' (per channel pair and tile) only with channels enough: the cost of the
    transforms is about 14 multiply-adds of the GEMM per channel. Fitted on a Zen 1 core,
    single thread (tools/bench_winograd.py): Winograd wins 1.2-2.9x where this picks it,
    loses or ties where it does not."""
    panels = -(-(-(-oh // WINOGRAD_TILE) * -(-ow // WINOGRAD_TILE)) // WINOGRAD_NR)
    saving = 9 * oh * ow / (WINOGRAD_ALPHA * WINOGRAD_ALPHA * WINOGRAD_NR * panels)
    return saving > 1 + 14 * (1 / cin + 1 / cout)


def winograd2_pays(cin: int, cout: int, oh: int, ow: int) -> bool:
    """Whether F(2x2, 3x3) (ops/conv_winograd2.py) beats the GEMM convolution where F(4x4)
    does not: its multiplies (16 per 2x2 tile, tiles in whole 16-tile panels) against the
    direct 9 per output, with channels enough for the transforms. 1 thread, per kernel,
    against the GEMM: 64 -> 64 at 8x8 (ResNet-8) 126 -> 74 us, 160 -> 160 at 7x7 713 -> 393,
    512 -> 512 at 7x7 (ResNet-18) 6.88 -> 4.16 ms. The channel threshold is a guess (the
    transforms cost a few GEMM multiply-adds per channel), not yet fitted."""
    tiles = -(-oh // 2) * -(-ow // 2)
    saving = 9 * oh * ow / (16 * WINOGRAD_NR * -(-tiles // WINOGRAD_NR))
    return min(cin, cout) >= 16 and saving > 1 + 8 * (1 / cin + 1 / cout)


#: bytes of an L1 way (32 KiB, 8-way): rows a multiple of this apart share their cache sets
_L1_WAY_BYTES = 4096


def a_rows_in_place(t: GemmTiles, lda: int) -> bool:
    """Whether the GEMM reads a run-time A with unit column stride in place (the microkernel
    broadcasts a[r*lda + k] as it would a packed value) rather than packing its blocks into
    k-major panels, a transpose. In place won 3-25% on every shape measured (BERT's attention
    128x128x32 and 128x32x128 per head: 1.1-1.3x; its projections and FFN 1-4%), except
    rows a multiple of 4 KiB apart (1024x1024x1024: 0.85x), where the micro-panel's rows
    share their L1 sets. Always for scalar tiles (`ember export`): a microcontroller has no
    cache for packing to serve, and the packed copy would cost RAM (AD's 640-wide input:
    10 KiB of scratch, 3x TFLite Micro's whole activation arena)."""
    return t.scalar or (lda * 4) % _L1_WAY_BYTES != 0


#: a direct convolution (ops/conv_direct.py) takes convs with at most this many input channels
DIRECT_MAX_CHANNELS = 4


def direct_conv_pays(c_in: int, out_w: int, vector_bytes: int) -> bool:
    """Whether a convolution with few input channels runs direct (register blocks of output
    channels x column vectors over a phase-split copy of the input) rather than as a GEMM,
    whose K = c_in x taps is then too short to repay packing im2col. Rows of a vector at
    least; a target with SIMD."""
    return vector_bytes > SCALAR_BYTES and c_in <= DIRECT_MAX_CHANNELS and out_w >= 8


#: a 1x1 convolution runs direct (ops/conv_pointwise.py) with at most this many output channels:
#: MobileNetV2's 32 -> 16 at 112x112 1.22x, 96 / 144 -> 24 at 56x56 1.2x; with 96, 144 or 192
#: (16 -> 96, 24 -> 144, 32 -> 192) the GEMM was 1.1x quicker in the model
_POINTWISE_MAX_OUT = 24


def pointwise_direct_pays(c_in: int, c_out: int, positions: int, vector_bytes: int) -> bool:
    """Whether a 1x1 convolution with few output channels runs direct (every output channel's
    sums of a strip of positions in registers, the input rows streamed once) rather than as a
    GEMM, whose 6-row micro-tiles such an M fills badly and whose K is short. A target with
    SIMD; positions enough for vectors."""
    return vector_bytes > SCALAR_BYTES and c_out <= _POINTWISE_MAX_OUT and positions >= 64


def nchwc_pointwise_pays(c_in: int, c_out: int) -> bool:
    """Whether a 1x1 conv on a large map runs quicker in blocked NCHWc (ops/conv_nchwc.py:
    tiles of positions x whole 8-channel output vectors) than in NCHW (conv_pointwise, the
    GEMM), enough to repay a region's layout changes alone: two output blocks fill a
    6-position tile (MobileNetV2's 32 -> 16 at 112x112: 248 against 420 us; each kernel
    alone, blocked and NCHW alternately in one process, 1 thread)."""
    return c_out == 16 and c_in >= 32


def nchwc_region_pays(pointwise: list[tuple[int, int]], expansions: int) -> bool:
    """Whether a region of large maps runs blocked NCHWc, from its 1x1 convs ((C_in, C_out)
    each) and its 1x1 expansions fused into depthwise convs: where it holds a fused expansion
    (blocked, MobileNetV2's 16 -> 96 at 112x112 ran 680 against 780 us, and the rest of the
    region follows: depthwise convs 1.3-2x quicker blocked, 1x1 convs 0.8-1.0 the NCHW time:
    144 -> 24 + Add 236 / 269, 24 -> 144 + Clip 256 / 307, 96 -> 24 159 / 202), or where every
    1x1 conv pays alone. A region of 1x1 convs that only match NCHW does not repay its
    entry's transpose (MobileNetV2's 56x56 blocks entered from an NCHW expansion: 1.01-1.05
    of the NCHW time). MobileNetV2, every large map blocked: 0.88-0.97 of its NCHW time at
    1 thread, 0.91-0.95 at 2."""
    return bool(expansions) or (bool(pointwise) and all(
        nchwc_pointwise_pays(c_in, c_out) for c_in, c_out in pointwise))


#: expanded maps from this many bytes are expanded in the depthwise conv that reads them
#: (ops/expand_depthwise.py): MobileNetV2's 16 -> 96 at 112x112 (4.8 MB) ran ~800 us fused
#: against ~1030 as two kernels (whole model 0.94-0.96 at 1 thread, 0.98-1.0 at 2); its
#: 24 -> 144 at 56x56 (1.8 MB), which L3 holds, ran no quicker fused (485 / 411 against
#: 479 / 327 us)
_EXPAND_DEPTHWISE_MIN_BYTES = 4 << 20


def expand_depthwise_pays(expanded_bytes: int) -> bool:
    """Whether a 1x1 conv expanding to `expanded_bytes` runs inside the 3x3 depthwise conv
    that reads it, row by row, instead of writing its whole map out for it."""
    return expanded_bytes >= _EXPAND_DEPTHWISE_MIN_BYTES
