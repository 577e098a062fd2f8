"""Indexing ops: Gather, GatherElements, GatherND, ScatterElements/Scatter, ScatterND, OneHot,
Compress.

Indices are run-time data from an untrusted source: a negative index wraps by the axis size,
and every index is bounds-checked in the generated C. An out-of-range index reads as zero
(gathers) or is skipped (scatters), so it can never touch memory outside a buffer.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import offset_expr, strides
from ember.ops.registry import OpDef, fail, normalize_axis, register_op, unsupported
from ember.render.cwriter import CWriter

_INDEX_TYPES = (dt.I32, dt.I64)
_REDUCTIONS = ("none", "add", "mul", "max", "min")


def _index_problems(node: Node, k: int, allowed=_INDEX_TYPES) -> list[str]:
    v = node.input(k)
    if v is not None and v.type.dtype not in allowed:
        return [f"index element type {v.type.dtype} is not supported "
                f"(supported: {', '.join(d.name for d in allowed)})"]
    return []


def _needs(node: Node, n: int) -> None:
    if len(node.inputs) < n or any(v is None for v in node.inputs[:n]):
        raise fail(node, f"needs {n} inputs")


def _check_const_indices(node: Node, extent: "int | tuple[int, ...]") -> None:
    """Constant indices (input 1) must lie in [-extent, extent): a bad model is reported at
    compile time rather than read as zeros. A tuple gives one extent per last-axis component
    (GatherND/ScatterND)."""
    indices = node.const_input(1)
    if indices is None or indices.size == 0:
        return
    bound = np.broadcast_to(np.asarray(extent, dtype=np.int64), indices.shape)
    bad = (indices < -bound) | (indices >= bound)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise fail(node, f"constant index {int(indices[at])} at {list(at)} is out of range "
                   f"[-{int(bound[at])}, {int(bound[at])})")


def _wrap(w: CWriter, var: str, raw: str, extent: int) -> str:
    """Declare `var` = index `raw` wrapped by `extent`; returns the C test that it is in range."""
    w.line(f"int64_t {var} = (int64_t)({raw});")
    w.line(f"if ({var} < 0) {var} += {extent};")
    return f"((uint64_t){var} < (uint64_t){extent})"


def emit_take(w: CWriter, src: str, dst: str, t: TensorType, outer: int, extent: int,
              count: int, inner: int, index: Callable[[str], str]) -> None:
    """dst[o, j, :] = src[o, index(j), :] for src viewed as [outer, extent, inner] and dst as
    [outer, count, inner]; a row whose index is out of range is zero."""
    row = inner * t.dtype.itemsize
    if outer * count * inner == 0:
        return
    with w.loops((outer, count), "g") as (o, j):
        ok = _wrap(w, "k", index(j), extent)
        w.line(f"{t.dtype.c} *d = {dst} + ({o}*{count} + {j})*{inner};")
        _copy_row(w, ok, "d", f"{src} + ({o}*{extent} + k)*{inner}", row)


def _copy_row(w: CWriter, ok: str, dst: str, src: str, nbytes: int) -> None:
    """Copy a row of `nbytes` when `ok`, else zero it: an out-of-range index reads as zeros."""
    with w.block(f"if ({ok})"):
        w.line(f"memcpy({dst}, {src}, {nbytes});")
    with w.block("else"):
        w.line(f"memset({dst}, 0, {nbytes});")


@register_op("Gather")
class Gather(OpDef):
    def check(self, node: Node) -> list[str]:
        return _index_problems(node, 1)

    def infer(self, node: Node) -> list[TensorType]:
        _needs(node, 2)
        data, indices = node.inputs[0].type, node.inputs[1].type
        if data.rank == 0:
            raise fail(node, "data must have rank >= 1")
        axis = normalize_axis(node, node.attrs.get("axis", 0), data.rank)
        _check_const_indices(node, data.shape[axis])
        shape = data.shape[:axis] + indices.shape + data.shape[axis + 1:]
        return [TensorType(data.dtype, shape)]

    def lower(self, node: Node, ctx) -> None:
        data = node.inputs[0].type
        axis = normalize_axis(node, node.attrs.get("axis", 0), data.rank)
        emit_take(ctx.w, ctx.ins[0], ctx.outs[0], data, math.prod(data.shape[:axis]),
                  data.shape[axis], node.inputs[1].type.size, math.prod(data.shape[axis + 1:]),
                  lambda j: f"{ctx.ins[1]}[{j}]")


@register_op("Compress")
class Compress(OpDef):
    """Only with a constant condition: the output shape depends on its values."""

    def _selected(self, node: Node) -> tuple[int | None, np.ndarray]:
        _needs(node, 2)
        cond = node.inputs[1].const
        if cond is None:
            raise unsupported(node, "a condition computed at run time is not supported (the "
                              "output shape would depend on it); it must be a constant")
        if cond.ndim != 1:
            raise fail(node, "condition must be 1-D")
        data = node.inputs[0].type
        axis = node.attrs.get("axis")
        if axis is not None:
            if data.rank == 0:
                raise fail(node, "data must have rank >= 1 when axis is given")
            axis = normalize_axis(node, axis, data.rank)
        extent = data.size if axis is None else data.shape[axis]
        picked = np.flatnonzero(cond)
        if picked.size and picked[-1] >= extent:
            raise fail(node, f"condition selects index {picked[-1]}, past the end ({extent})")
        return axis, picked

    def infer(self, node: Node) -> list[TensorType]:
        axis, picked = self._selected(node)
        data = node.inputs[0].type
        if axis is None:
            return [TensorType(data.dtype, (len(picked),))]
        shape = data.shape[:axis] + (len(picked),) + data.shape[axis + 1:]
        return [TensorType(data.dtype, shape)]

    def lower(self, node: Node, ctx) -> None:
        axis, picked = self._selected(node)
        data = node.inputs[0].type
        if len(picked) == 0 or node.outputs[0].type.size == 0:
            return
        ctx.w.line(f"static const int64_t sel[{len(picked)}] = {{{', '.join(map(str, picked))}}};")
        if axis is None:
            outer, extent, inner = 1, data.size, 1
        else:
            outer, extent = math.prod(data.shape[:axis]), data.shape[axis]
            inner = math.prod(data.shape[axis + 1:])
        emit_take(ctx.w, ctx.ins[0], ctx.outs[0], data, outer, extent, len(picked), inner,
                  lambda j: f"sel[{j}]")


def _elements_axis(node: Node) -> int:
    """Validated axis of GatherElements/ScatterElements (indices: input 1, same rank as data)."""
    data, indices = node.inputs[0].type, node.inputs[1].type
    if data.rank == 0:
        raise fail(node, "data must have rank >= 1")
    if indices.rank != data.rank:
        raise fail(node, f"indices rank {indices.rank} differs from data rank {data.rank}")
    axis = normalize_axis(node, node.attrs.get("axis", 0), data.rank)
    for d, (n, m) in enumerate(zip(indices.shape, data.shape)):
        if d != axis and n > m:
            raise fail(node, f"indices dim {d} ({n}) is larger than data dim {d} ({m})")
    _check_const_indices(node, data.shape[axis])
    return axis


@register_op("GatherElements")
class GatherElements(OpDef):
    def check(self, node: Node) -> list[str]:
        return _index_problems(node, 1)

    def infer(self, node: Node) -> list[TensorType]:
        _needs(node, 2)
        _elements_axis(node)
        return [TensorType(node.inputs[0].type.dtype, node.inputs[1].type.shape)]

    def lower(self, node: Node, ctx) -> None:
        axis = _elements_axis(node)
        data, indices = node.inputs[0].type, node.inputs[1].type
        w = ctx.w
        with w.loops(indices.shape) as idx:
            at = offset_expr(idx, strides(indices.shape))
            ok = _wrap(w, "k", f"{ctx.ins[1]}[{at}]", data.shape[axis])
            src = offset_expr(idx[:axis] + ["k"] + idx[axis + 1:], strides(data.shape))
            w.line(f"{ctx.outs[0]}[{at}] = {ok} ? {ctx.ins[0]}[{src}] : ({data.dtype.c})0;")


def _combine(reduction: str, t: dt.DType, old: str, new: str) -> str:
    """C expression for a scatter's reduction of the current value `old` with update `new`."""
    if reduction == "none":
        return new
    if reduction == "add":
        return f"({t.c})({old} + {new})"
    if reduction == "mul":
        return f"({t.c})({old} * {new})"
    cmp = ">" if reduction == "max" else "<"
    return f"({new} {cmp} {old} ? {new} : {old})"


def _reduction_problems(node: Node) -> list[str]:
    reduction = node.attrs.get("reduction", "none")
    if reduction not in _REDUCTIONS:
        return [f"reduction {reduction!r} is not supported"]
    if reduction != "none" and node.inputs and node.inputs[0].type.dtype is dt.BOOL:
        return [f"reduction {reduction!r} on bool data is not supported"]
    return []


def _copy_data(node: Node, ctx) -> None:
    """A scatter's output starts as a copy of its data."""
    nbytes = node.outputs[0].type.nbytes
    if nbytes:
        ctx.w.line(f"memcpy({ctx.outs[0]}, {ctx.ins[0]}, {nbytes});")


@register_op("ScatterElements", "Scatter")
class ScatterElements(OpDef):
    def check(self, node: Node) -> list[str]:
        return _index_problems(node, 1) + _reduction_problems(node)

    def infer(self, node: Node) -> list[TensorType]:
        _needs(node, 3)
        _elements_axis(node)
        data, indices, updates = (v.type for v in node.inputs[:3])
        if updates.shape != indices.shape:
            raise fail(node, f"updates shape {list(updates.shape)} differs from indices shape "
                       f"{list(indices.shape)}")
        if updates.dtype != data.dtype:
            raise fail(node, f"updates type {updates.dtype} differs from data type {data.dtype}")
        return [data]

    def lower(self, node: Node, ctx) -> None:
        axis = _elements_axis(node)
        data, indices = node.inputs[0].type, node.inputs[1].type
        reduction = node.attrs.get("reduction", "none")
        w, out = ctx.w, ctx.outs[0]
        _copy_data(node, ctx)
        with w.loops(indices.shape) as idx:
            at = offset_expr(idx, strides(indices.shape))
            ok = _wrap(w, "k", f"{ctx.ins[1]}[{at}]", data.shape[axis])
            dst = offset_expr(idx[:axis] + ["k"] + idx[axis + 1:], strides(data.shape))
            with w.block(f"if ({ok})"):
                w.line(f"{data.dtype.c} *p = {out} + {dst};")
                w.line(f"*p = {_combine(reduction, data.dtype, '*p', f'{ctx.ins[2]}[{at}]')};")


def _nd_layout(node: Node, batch_dims: int) -> tuple[int, int, int]:
    """(k, slices per batch, slice size) for GatherND/ScatterND; validates the shapes."""
    data, indices = node.inputs[0].type, node.inputs[1].type
    if indices.rank < 1 or data.rank < 1:
        raise fail(node, "data and indices must have rank >= 1")
    if not 0 <= batch_dims < min(data.rank, indices.rank):
        raise fail(node, f"batch_dims {batch_dims} must be in [0, min(data rank, indices rank))")
    if data.shape[:batch_dims] != indices.shape[:batch_dims]:
        raise fail(node, "data and indices differ in their batch dims")
    k = indices.shape[-1]
    if k > data.rank - batch_dims:
        raise fail(node, f"indices last dim {k} is larger than data rank - batch_dims "
                   f"({data.rank - batch_dims})")
    _check_const_indices(node, data.shape[batch_dims:batch_dims + k])
    slices = math.prod(indices.shape[batch_dims:-1])
    return k, slices, math.prod(data.shape[batch_dims + k:])


def _emit_nd_offset(w: CWriter, node: Node, ctx, batch_dims: int, row: str) -> str:
    """Declare `off`, the element offset of the slice that index row `row` names inside its
    batch; returns the C test that every component of the row is in range."""
    data, k = node.inputs[0].type, node.inputs[1].type.shape[-1]
    st = strides(data.shape)
    w.line("int64_t off = 0;")
    w.line("int ok = 1;")
    for t in range(k):
        extent = data.shape[batch_dims + t]
        ok = _wrap(w, f"c{t}", f"{ctx.ins[1]}[{row}*{k} + {t}]", extent)
        w.line(f"ok &= {ok};")
        w.line(f"off += c{t}*{st[batch_dims + t]};")
    return "ok"


@register_op("GatherND")
class GatherND(OpDef):
    def check(self, node: Node) -> list[str]:
        return _index_problems(node, 1)

    def infer(self, node: Node) -> list[TensorType]:
        _needs(node, 2)
        b = node.attrs.get("batch_dims", 0)
        k, _, _ = _nd_layout(node, b)
        data, indices = node.inputs[0].type, node.inputs[1].type
        return [TensorType(data.dtype, indices.shape[:-1] + data.shape[b + k:])]

    def lower(self, node: Node, ctx) -> None:
        b = node.attrs.get("batch_dims", 0)
        k, slices, inner = _nd_layout(node, b)
        data = node.inputs[0].type
        batches = math.prod(data.shape[:b])
        per_batch = math.prod(data.shape[b:])
        row = inner * data.dtype.itemsize
        w = ctx.w
        if node.outputs[0].type.size == 0:
            return
        with w.loops((batches, slices), "g") as (n, m):
            ok = _emit_nd_offset(w, node, ctx, b, f"({n}*{slices} + {m})")
            w.line(f"{data.dtype.c} *d = {ctx.outs[0]} + ({n}*{slices} + {m})*{inner};")
            _copy_row(w, ok, "d", f"{ctx.ins[0]} + {n}*{per_batch} + off", row)


@register_op("ScatterND")
class ScatterND(OpDef):
    def check(self, node: Node) -> list[str]:
        return _index_problems(node, 1, (dt.I64,)) + _reduction_problems(node)

    def infer(self, node: Node) -> list[TensorType]:
        _needs(node, 3)
        k, _, _ = _nd_layout(node, 0)
        data, indices, updates = (v.type for v in node.inputs[:3])
        want = indices.shape[:-1] + data.shape[k:]
        if updates.shape != want:
            raise fail(node, f"updates shape {list(updates.shape)} should be {list(want)}")
        if updates.dtype != data.dtype:
            raise fail(node, f"updates type {updates.dtype} differs from data type {data.dtype}")
        return [data]

    def lower(self, node: Node, ctx) -> None:
        k, slices, inner = _nd_layout(node, 0)
        data = node.inputs[0].type
        reduction = node.attrs.get("reduction", "none")
        w, out = ctx.w, ctx.outs[0]
        _copy_data(node, ctx)
        if slices * inner == 0:
            return
        with w.loops((slices,), "g") as (m,):
            ok = _emit_nd_offset(w, node, ctx, 0, m)
            with w.block(f"if ({ok})"):
                with w.loops((inner,), "j") as (j,):
                    w.line(f"{data.dtype.c} *p = {out} + off + {j};")
                    new = f"{ctx.ins[2]}[{m}*{inner} + {j}]"
                    w.line(f"*p = {_combine(reduction, data.dtype, '*p', new)};")


@register_op("OneHot")
class OneHot(OpDef):
    def check(self, node: Node) -> list[str]:
        return _index_problems(node, 0, dt.NUMERIC)

    def _depth(self, node: Node) -> int:
        _needs(node, 3)
        depth = node.inputs[1].const
        if depth is None:
            raise unsupported(node, "a depth computed at run time is not supported (the output "
                              "shape depends on it); it must be a constant")
        if depth.size != 1:
            raise fail(node, "depth must hold one value")
        value = float(depth.reshape(-1)[0])
        if not math.isfinite(value) or value < 0:
            raise fail(node, f"depth must be a non-negative number, got {value}")
        return int(value)

    def _axis(self, node: Node) -> int:
        return normalize_axis(node, node.attrs.get("axis", -1), node.inputs[0].type.rank + 1)

    def infer(self, node: Node) -> list[TensorType]:
        depth = self._depth(node)
        indices, values = node.inputs[0].type, node.inputs[2].type
        if values.size != 2:
            raise fail(node, "values must hold two elements: [off_value, on_value]")
        axis = self._axis(node)
        return [TensorType(values.dtype, indices.shape[:axis] + (depth,) + indices.shape[axis:])]

    def lower(self, node: Node, ctx) -> None:
        depth, axis = self._depth(node), self._axis(node)
        indices, out = node.inputs[0].type, node.outputs[0].type
        outer, inner = math.prod(indices.shape[:axis]), math.prod(indices.shape[axis:])
        w, x = ctx.w, ctx.ins[0]
        if out.size == 0:
            return
        t = out.dtype.c
        w.line(f"const {t} off = {ctx.ins[2]}[0], on = {ctx.ins[2]}[1];")
        with w.loops((outer, inner), "g") as (o, i):
            raw = f"{x}[{o}*{inner} + {i}]"
            if indices.dtype.is_float:   # NaN and huge values must not reach the int cast
                w.line(f"const double r = (double){raw};")
                raw = "(r > -9.2e18 && r < 9.2e18 ? (int64_t)r : INT64_MIN)"
            w.line(f"int64_t k = (int64_t)({raw});")
            w.line(f"if (k < 0) k += {depth};")
            with w.loops((depth,), "d") as (d,):
                w.line(f"{ctx.outs[0]}[({o}*{depth} + {d})*{inner} + {i}] = k == {d} ? on : off;")
