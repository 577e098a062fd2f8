"""Shape ops: views that only change the shape (Reshape, Flatten, Squeeze, Unsqueeze, Dropout
at inference), shape metadata (Shape, Size) and generators (ConstantOfShape, Range, EyeLike).

View ops copy the bytes (a memcpy); aliasing the buffer is for the memory planner to learn.
"""
from __future__ import annotations

import math

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.ops.datamove import (const_ints, emit_fill, emit_memcpy, ints_arg,
                                normalize_axes)
from ember.ops.registry import OpDef, fail, register_op, unsupported
from ember.render.cwriter import c_literal


class _View(OpDef):
    """An op whose output 0 holds the bytes of input 0 under another shape."""

    def is_view(self, node: Node) -> bool:
        return True

    def lower(self, node: Node, ctx) -> None:
        emit_memcpy(ctx.w, ctx.outs[0], ctx.ins[0], node.outputs[0].type.nbytes)


def reshape_shape(node: Node, in_shape: tuple[int, ...], target: list[int],
                  allowzero: bool) -> tuple[int, ...]:
    """Resolve Reshape's 0 (copy the input dim, unless allowzero) and -1 (inferred)."""
    out = []
    infer_at = None
    for k, d in enumerate(target):
        if d == -1:
            if infer_at is not None:
                raise fail(node, f"shape {target} has more than one -1")
            infer_at = k
            out.append(1)
        elif d == 0 and not allowzero:
            if k >= len(in_shape):
                raise fail(node, f"shape {target} copies dim {k} (0) but the input has rank "
                                 f"{len(in_shape)}")
            out.append(in_shape[k])
        elif d < 0:
            raise fail(node, f"shape {target} has a negative dim {d}")
        else:
            out.append(d)
    size = math.prod(in_shape)
    if infer_at is not None:
        rest = math.prod(out)
        if rest == 0 or size % rest:
            raise fail(node, f"cannot reshape {list(in_shape)} to {target}: -1 cannot be inferred")
        out[infer_at] = size // rest
    if math.prod(out) != size:
        raise fail(node, f"cannot reshape {list(in_shape)} ({size} elements) to {target}")
    return tuple(out)


@register_op("Reshape")
class Reshape(_View):
    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        target = ints_arg(node, "shape", 1, 5, "shape")
        if target is None:
            raise fail(node, "the target shape is missing")
        allowzero = bool(node.attrs.get("allowzero", 0))
        return [TensorType(x.dtype, reshape_shape(node, x.shape, target, allowzero))]


@register_op("Flatten")
class Flatten(_View):
    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        axis = int(node.attrs.get("axis", 1))
        if not -x.rank <= axis <= x.rank:
            raise fail(node, f"axis {axis} is out of range for rank {x.rank}")
        axis = axis + x.rank if axis < 0 else axis
        return [TensorType(x.dtype, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))]


@register_op("Squeeze")
class Squeeze(_View):
    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        axes = ints_arg(node, "axes", 1, 13, "axes")
        if axes is None:
            drop = {k for k, d in enumerate(x.shape) if d == 1}
        else:
            drop = set(normalize_axes(node, axes, x.rank))
            bad = [k for k in drop if x.shape[k] != 1]
            if bad:
                raise fail(node, f"cannot squeeze axis {bad[0]} of size {x.shape[bad[0]]}")
        return [TensorType(x.dtype, tuple(d for k, d in enumerate(x.shape) if k not in drop))]


@register_op("Unsqueeze")
class Unsqueeze(_View):
    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        axes = ints_arg(node, "axes", 1, 13, "axes")
        if not axes:
            raise fail(node, "axes are missing")
        rank = x.rank + len(axes)
        new = set(normalize_axes(node, axes, rank))
        dims = iter(x.shape)
        return [TensorType(x.dtype, tuple(1 if k in new else next(dims) for k in range(rank)))]


def _scalar(value: "np.ndarray | float") -> float:
    return float(np.asarray(value).reshape(-1)[0])


@register_op("Dropout")
class Dropout(OpDef):
    """Inference only: the output is the input and the mask is all true."""

    def is_view(self, node: Node) -> bool:
        return len(node.outputs) == 1

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        if node.opset >= 12 and node.input(2) is not None:
            training, ratio = node.const_input(2), 0.5
            if node.input(1) is not None:
                ratio = node.const_input(1)
            dropping = ratio is None or _scalar(ratio) != 0
            if training is None and dropping:
                raise unsupported(node, "training_mode given at run time is not supported "
                                        "(Ember compiles for inference)")
            if training is not None and _scalar(training) and dropping:
                raise unsupported(node, "training mode (random dropout) is not supported")
        mask = dt.BOOL if node.opset >= 10 else x.dtype
        return [x, TensorType(mask, x.shape)][:len(node.outputs)]

    def lower(self, node: Node, ctx) -> None:
        emit_memcpy(ctx.w, ctx.outs[0], ctx.ins[0], node.outputs[0].type.nbytes)
        if len(node.outputs) > 1:
            mask = node.outputs[1].type
            emit_fill(ctx.w, ctx.outs[1], mask.size, c_literal(1, mask.dtype))


class _Metadata(OpDef):
    """Shape and Size: the value depends only on the static input shape, so infer() also
    records it as the output's constant (a Reshape downstream can then read it at compile
    time); lower() writes the same numbers for a graph that keeps the node."""

    def values(self, node: Node) -> np.ndarray:
        raise NotImplementedError

    def infer(self, node: Node) -> list[TensorType]:
        data = self.values(node)
        node.outputs[0].const = data
        return [TensorType(dt.I64, data.shape)]

    def lower(self, node: Node, ctx) -> None:
        for k, v in enumerate(self.values(node).reshape(-1)):
            ctx.w.line(f"{ctx.outs[0]}[{k}] = {c_literal(v, dt.I64)};")


@register_op("Shape")
class Shape(_Metadata):
    def values(self, node: Node) -> np.ndarray:
        shape = node.inputs[0].type.shape
        rank = len(shape)
        start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")
        end = rank if end is None else int(end)
        start, end = (min(max(a + rank if a < 0 else a, 0), rank) for a in (start, end))
        return np.array(shape[start:end], dtype=np.int64)


@register_op("Size")
class Size(_Metadata):
    def values(self, node: Node) -> np.ndarray:
        return np.array(node.inputs[0].type.size, dtype=np.int64)


def _constant_of_shape_value(node: Node) -> np.ndarray:
    value = node.attrs.get("value")
    return np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)


@register_op("ConstantOfShape")
class ConstantOfShape(OpDef):
    def check(self, node: Node) -> list[str]:
        value = _constant_of_shape_value(node)
        if dt.from_numpy(value.dtype) is None:
            return [f"value of element type {value.dtype} is not supported"]
        return []

    def infer(self, node: Node) -> list[TensorType]:
        value = _constant_of_shape_value(node)
        if value.size != 1:
            raise fail(node, f"value must hold one element, it has {value.size}")
        shape = const_ints(node, 0, "shape")
        if shape is None or any(d < 0 for d in shape):
            raise fail(node, f"shape {shape} must be given with dims >= 0")
        return [TensorType(dt.from_numpy(value.dtype), tuple(shape))]

    def lower(self, node: Node, ctx) -> None:
        out = node.outputs[0].type
        emit_fill(ctx.w, ctx.outs[0], out.size, c_literal(_constant_of_shape_value(node)[0],
                                                          out.dtype))


_RANGE_TYPES = (dt.F16, dt.F32, dt.F64, dt.I16, dt.I32, dt.I64)


@register_op("Range")
class Range(OpDef):
    dtypes = _RANGE_TYPES

    def infer(self, node: Node) -> list[TensorType]:
        if len(node.inputs) != 3 or any(v is None for v in node.inputs):
            raise fail(node, "needs start, limit and delta")
        if any(v.const is None for v in node.inputs):
            raise unsupported(node, "start, limit or delta given at run time make the output "
                                    "shape dynamic, which is not supported")
        dtype = node.inputs[0].type.dtype
        if any(v.type.size != 1 or v.type.dtype != dtype for v in node.inputs):
            raise fail(node, "start, limit and delta must be scalars of one element type")
        start, limit, delta = (np.asarray(v.const).reshape(-1)[0] for v in node.inputs)
        if delta == 0:
            raise fail(node, "delta must not be 0")
        if dtype.is_float:
            span = (float(limit) - float(start)) / float(delta)
            if not math.isfinite(span):
                raise fail(node, f"start {start}, limit {limit} and delta {delta} do not give "
                           "a finite number of elements")
            count = math.ceil(span)
        else:
            count = -((int(start) - int(limit)) // int(delta))
        return [TensorType(dtype, (max(count, 0),))]

    def lower(self, node: Node, ctx) -> None:
        out = node.outputs[0].type
        start, delta = f"{ctx.ins[0]}[0]", f"{ctx.ins[2]}[0]"
        with ctx.w.loops(out.shape) as (i,):
            ctx.w.line(f"{ctx.outs[0]}[{i}] = ({out.dtype.c})({start} + ({out.dtype.c}){i} * "
                       f"{delta});")


@register_op("EyeLike")
class EyeLike(OpDef):
    def check(self, node: Node) -> list[str]:
        code = node.attrs.get("dtype")
        if code is not None and dt.from_onnx(int(code)) is None:
            return [f"dtype {dt.onnx_type_name(int(code))} is not supported"]
        return []

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        if x.rank != 2:
            raise fail(node, f"input must have rank 2, got {x.rank}")
        code = node.attrs.get("dtype")
        return [TensorType(x.dtype if code is None else dt.from_onnx(int(code)), x.shape)]

    def lower(self, node: Node, ctx) -> None:
        out = node.outputs[0].type
        rows, cols = out.shape
        k = int(node.attrs.get("k", 0))
        emit_fill(ctx.w, ctx.outs[0], out.size, c_literal(0, out.dtype))
        first, last = max(0, -k), min(rows, cols - k)
        if first < last:
            ctx.w.line(f"for (int64_t i = {first}; i < {last}; ++i) "
                       f"{ctx.outs[0]}[i * {cols} + i + {k}] = {c_literal(1, out.dtype)};")
