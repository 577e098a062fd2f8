"""Loops shared by the data-movement ops: strided copies, fills, and compile-time arguments.

Transpose, Slice, Expand, Tile, Concat, Split, Pad, DepthToSpace ... are all one pattern:
walk the output (or a view of it) in row-major order and read the input at an offset that is
a sum of per-dim terms. `emit_copy` writes that loop nest once: it drops size-1 dims, merges
dims that are contiguous on both sides, and turns a contiguous innermost run into memcpy.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from ember.graph.dtypes import DType
from ember.graph.ir import Node
from ember.lower.indexing import strides
from ember.lower.parallel import part_loop
from ember.ops.registry import fail, normalize_axis, unsupported
from ember.render.cwriter import CWriter


@dataclass(frozen=True)
class Dim:
    """One loop of a copy: `extent` iterations, moving `dst_stride`/`src_stride` elements each.

    `src_index`, when given, is a C expression of the source index along this dim written in
    terms of `{i}` (the loop variable); the source offset is then src_index * src_stride.
    """
    extent: int
    dst_stride: int
    src_stride: int
    src_index: str | None = None


def contiguous_dims(shape: tuple[int, ...], src_strides: tuple[int, ...]) -> list[Dim]:
    """Dims writing a contiguous destination of `shape` while reading with `src_strides`."""
    return [Dim(e, d, s) for e, d, s in zip(shape, strides(shape), src_strides)]


def _simplify(dims: list[Dim]) -> list[Dim]:
    dims = [d for d in dims if d.extent != 1 or d.src_index is not None]
    merged: list[Dim] = []
    for d in dims:
        prev = merged[-1] if merged else None
        if (prev is not None and prev.src_index is None and d.src_index is None
                and prev.dst_stride == d.dst_stride * d.extent
                and prev.src_stride == d.src_stride * d.extent):
            merged[-1] = Dim(prev.extent * d.extent, d.dst_stride, d.src_stride)
        else:
            merged.append(d)
    return merged


def _term(var: str, stride: int) -> str:
    return var if stride == 1 else f"{var} * {stride}"


def _add(base: str, term: str) -> str:
    return term if base == "0" else f"{base} + {term}"


def _enter_loops(w: CWriter, loops: contextlib.ExitStack, dims: list[Dim], dst_base: int,
                 src_base: int) -> tuple[str, str]:
    """Open one loop per dim (closed with `loops`); the C names of the destination and
    source offsets inside the innermost."""
    dst_off, src_off = str(dst_base), str(src_base)
    for k, d in enumerate(dims):
        i = f"i{k}"
        loops.enter_context(w.block(f"for (int64_t {i} = 0; {i} < {d.extent}; ++{i})"))
        index = f"({d.src_index.format(i=i)})" if d.src_index is not None else i
        w.line(f"const int64_t d{k} = {_add(dst_off, _term(i, d.dst_stride))};")
        w.line(f"const int64_t s{k} = {_add(src_off, _term(index, d.src_stride))};")
        dst_off, src_off = f"d{k}", f"s{k}"
    return dst_off, src_off


def emit_copy(w: CWriter, dst: str, src: str, dims: list[Dim], dtype: DType,
              dst_base: int = 0, src_base: int = 0, ctx=None) -> None:
    """dst[dst_base + sum(i_d * dst_stride_d)] = src[src_base + sum(idx_d * src_stride_d)].
    With `ctx` (the kernel's, whose writer is `w`), a transpose's tiles are shared among its
    threads; the other copies are serial."""
    if any(d.extent == 0 for d in dims):
        return
    dims = _simplify(dims)
    if _is_transpose_2d(dims):
        _emit_tiled_transpose(w, dst, src, dims, dtype, dst_base, src_base, ctx)
        return
    inner = dims[-1] if dims else None
    if inner is not None and inner.src_index is None and inner.dst_stride == 1 \
            and inner.src_stride == 1 and inner.extent > 1:
        dims = dims[:-1]
    else:
        inner = None
    with contextlib.ExitStack() as loops:
        dst_off, src_off = _enter_loops(w, loops, dims, dst_base, src_base)
        if inner is not None:
            w.line(f"memcpy({dst} + {dst_off}, {src} + {src_off}, "
                   f"{inner.extent * dtype.itemsize});")
        else:
            w.line(f"{dst}[{dst_off}] = {src}[{src_off}];")


#: side of the tiles a 2-D transpose copies at a time: the tile's source lines and
#: destination lines stay in L1 (a [144, 784] layout change 4x quicker than row by row); a
#: side of 8 to 15 elements takes tiles _BLOCK long on that side (the blocked NCHWc layout's
#: [8, H*W] <-> [H*W, 8] per channel block: 16 channels at 112x112 195 -> 39 us)
_TILE = 16
#: side of the register blocks a whole tile of 4-byte elements goes in: rows of 8 loaded,
#: transposed by 24 shuffles, stored as columns (MobileNetV2's [144, 784] layout change
#: 52 -> 22 us, its [784, 144] 38 -> 21, DS-CNN's ragged [64, 125] 2.7 -> 2.0)
_BLOCK = 8


def _is_transpose_2d(dims: list[Dim]) -> bool:
    """The two innermost dims swap axes: the destination contiguous along the last, the
    source along the one before (a layout change, NCHW <-> NHWC)."""
    if len(dims) < 2 or any(d.src_index is not None for d in dims[-2:]):
        return False
    outer, inner = dims[-2], dims[-1]
    return (inner.dst_stride == 1 and outer.src_stride == 1 and inner.src_stride > 1
            and outer.dst_stride == inner.extent and min(outer.extent, inner.extent) >= _BLOCK)


def _emit_tiled_transpose(w: CWriter, dst: str, src: str, dims: list[Dim], dtype: DType,
                          dst_base: int, src_base: int, ctx) -> None:
    """The copy with its last two dims walked in _TILE x _TILE tiles (the rest as emit_copy);
    whole tiles of 4-byte elements in vector blocks. With threads, each takes its share of
    the rows of tiles (of every leading index) in one shared loop: MobileNetV2's blocked
    layout changes of 32 channels at 112x112 ran 103 us on one thread of two."""
    outer, inner = dims[-2], dims[-1]
    ta, tb = (_TILE if d.extent >= _TILE else _BLOCK for d in (outer, inner))
    lead = dims[:-2]
    with contextlib.ExitStack() as loops:
        if ctx is not None and ctx.schedule.threads > 1 and all(
                d.src_index is None for d in lead):
            dst_off, src_off = _enter_tile_rows(ctx, loops, lead, -(-outer.extent // ta), ta,
                                                dst_base, src_base)
        else:
            dst_off, src_off = _enter_loops(w, loops, lead, dst_base, src_base)
            loops.enter_context(w.block(f"for (int64_t a0 = 0; a0 < {outer.extent}; "
                                        f"a0 += {ta})"))
        with w.block(f"for (int64_t b0 = 0; b0 < {inner.extent}; b0 += {tb})"):
            w.line(f"const int64_t a1 = a0 + {ta} < {outer.extent} ? a0 + {ta} : {outer.extent}, "
                   f"b1 = b0 + {tb} < {inner.extent} ? b0 + {tb} : {inner.extent};")
            scalar = contextlib.nullcontext()
            if dtype.itemsize == 4:
                with w.block(f"if (a1 - a0 == {ta} && b1 - b0 == {tb})"):
                    dst_row = _add(dst_off, _term("a", outer.dst_stride))
                    _emit_vector_blocks(w, dst, src, dtype, dst_row, _add(src_off, "a"),
                                        outer.dst_stride, inner.src_stride, (ta, tb))
                scalar = w.block("else")
            with scalar, w.block("for (int64_t a = a0; a < a1; ++a)"), \
                    w.block("for (int64_t b = b0; b < b1; ++b)"):
                w.line(f"{dst}[{_add(dst_off, _term('a', outer.dst_stride))} + b] = "
                       f"{src}[{_add(src_off, 'a')} + {_term('b', inner.src_stride)}];")


def _enter_tile_rows(ctx, loops: contextlib.ExitStack, lead: list[Dim], rows: int, ta: int,
                     dst_base: int, src_base: int) -> tuple[str, str]:
    """One shared loop over every leading index x row of tiles (closed with `loops`),
    declaring a0 and the offsets of the leading indices; returns their C names."""
    w = ctx.w
    loops.enter_context(part_loop(ctx, "tr", rows * int(np.prod([d.extent for d in lead]))))
    w.line(f"const int64_t a0 = tr % {rows} * {ta};")
    dst_off, src_off, rest = str(dst_base), str(src_base), f"tr / {rows}"
    for k, d in reversed(list(enumerate(lead))):
        w.line(f"const int64_t i{k} = {rest} % {d.extent};")
        dst_off, src_off = _add(dst_off, _term(f"i{k}", d.dst_stride)), \
            _add(src_off, _term(f"i{k}", d.src_stride))
        rest = f"{rest} / {d.extent}"
    w.line(f"const int64_t dl = {dst_off}, sl = {src_off};")
    return "dl", "sl"


def _emit_vector_blocks(w: CWriter, dst: str, src: str, dtype: DType, dst_row: str,
                        src_col: str, dst_stride: int, src_stride: int,
                        tile: tuple[int, int]) -> None:
    """The tile at (a0, b0), tile[0] x tile[1], in _BLOCK x _BLOCK blocks: source rows b
    (contiguous along a) loaded as vectors, transposed in registers (the AVX unpack / shuffle /
    lane-swap sequence, as generic vector shuffles), stored as destination rows a. `dst_row` and
    `src_col`: the offsets of element (a, 0) in the destination and the source."""
    n = _BLOCK
    w.line(f"typedef {dtype.c} ember_vt __attribute__((vector_size({4 * n}), aligned(4)));")
    with w.block(f"for (int64_t a = a0; a < a0 + {tile[0]}; a += {n})"), \
            w.block(f"for (int64_t b = b0; b < b0 + {tile[1]}; b += {n})"):
        w.line(f"const {dtype.c} *restrict s = {src} + {src_col} + b * {src_stride};")
        w.line("const ember_vt " + ", ".join(
            f"r{k} = *(const ember_vt *)(s + {k * src_stride})" for k in range(n)) + ";")
        pairs = [(0, 8, 1, 9, 4, 12, 5, 13), (2, 10, 3, 11, 6, 14, 7, 15)]      # unpack lo, hi
        quads = [(0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15)]      # shuffle 0x44, 0xee
        halves = [(0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)]   # lane swap

        def shuffle(x: str, y: str, lanes: tuple[int, ...]) -> str:
            return f"__builtin_shufflevector({x}, {y}, {', '.join(map(str, lanes))})"
        for k in range(0, n, 2):
            w.line(f"const ember_vt t{k} = {shuffle(f'r{k}', f'r{k + 1}', pairs[0])}, "
                   f"t{k + 1} = {shuffle(f'r{k}', f'r{k + 1}', pairs[1])};")
        for g in (0, 4):          # rows 0-3 and 4-7: u holds 4 rows' column pairs
            for h in (0, 1):
                x, y = f"t{g + h}", f"t{g + h + 2}"
                w.line(f"const ember_vt u{g + 2 * h} = {shuffle(x, y, quads[0])}, "
                       f"u{g + 2 * h + 1} = {shuffle(x, y, quads[1])};")
        w.line(f"{dtype.c} *restrict d = {dst} + {dst_row} + b;")
        for j in range(n):
            w.line(f"*(ember_vt *)(d + {j * dst_stride}) = "
                   f"{shuffle(f'u{j % 4}', f'u{j % 4 + 4}', halves[j // 4])};")


def emit_fill(w: CWriter, dst: str, count: int, value: str) -> None:
    """dst[0:count] = value."""
    if count == 1:
        w.line(f"{dst}[0] = {value};")
    elif count > 1:
        w.line(f"for (int64_t i = 0; i < {count}; ++i) {dst}[i] = {value};")


def emit_memcpy(w: CWriter, dst: str, src: str, nbytes: int) -> None:
    """A byte copy: the kernel of ops that only reinterpret the shape."""
    if nbytes:
        w.line(f"memcpy({dst}, {src}, {nbytes});")


def const_ints(node: Node, i: int, what: str) -> list[int] | None:
    """Input i as a list of ints; None when omitted; unsupported when known only at run time."""
    v = node.input(i)
    if v is None:
        return None
    if v.const is None:
        raise unsupported(node, f"{what} given at run time (a dynamic input) is not supported; "
                                "it must be a constant")
    if v.type.dtype.is_float:
        raise fail(node, f"{what} must be integers, got {v.type.dtype}")
    return [int(x) for x in np.asarray(v.const).reshape(-1)]


def ints_arg(node: Node, attr: str, index: int, input_since: int, what: str) -> list[int] | None:
    """An int list that moved from attribute `attr` to input `index` at opset `input_since`."""
    if node.opset >= input_since:
        return const_ints(node, index, what)
    value = node.attrs.get(attr)
    return None if value is None else [int(x) for x in value]


def normalize_axes(node: Node, axes: list[int], rank: int) -> list[int]:
    """Axes made non-negative; error on out-of-range or repeated axes."""
    out = [normalize_axis(node, a, rank) for a in axes]
    if len(set(out)) != len(out):
        raise fail(node, f"axes {axes} repeat an axis")
    return out
