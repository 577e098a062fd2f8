"""Layout ops: strided copies between tensors (Transpose, Slice, Expand, Tile, Concat, Split,
DepthToSpace, SpaceToDepth) and masked copies (Trilu, ReverseSequence).

Each describes its copy as a list of `Dim`s over the output and lets `emit_copy` write it.
"""
from __future__ import annotations

import math

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import broadcast_shape, broadcast_strides, strides
from ember.ops.datamove import Dim, const_ints, contiguous_dims, emit_copy, normalize_axes
from ember.ops.registry import OpDef, fail, normalize_axis, register_op
from ember.render.cwriter import c_literal


def _perm(node: Node, rank: int) -> list[int]:
    perm = node.attrs.get("perm")
    perm = list(range(rank))[::-1] if perm is None else [int(p) for p in perm]
    if sorted(perm) != list(range(rank)):
        raise fail(node, f"perm {perm} is not a permutation of the {rank} axes")
    return perm


def permuted_dims(view: tuple[int, ...], perm: list[int]) -> list[Dim]:
    """Copy of a contiguous tensor viewed as `view`, transposed by `perm`, to a contiguous one."""
    src = strides(view)
    return contiguous_dims(tuple(view[p] for p in perm), tuple(src[p] for p in perm))


@register_op("Transpose")
class Transpose(OpDef):
    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        return [TensorType(x.dtype, tuple(x.shape[p] for p in _perm(node, x.rank)))]

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        emit_copy(ctx.w, ctx.outs[0], ctx.ins[0], permuted_dims(x.shape, _perm(node, x.rank)),
                  x.dtype, ctx=ctx)


def _block_size(node: Node) -> int:
    b = node.attrs.get("blocksize")
    if b is None or int(b) < 1:
        raise fail(node, f"blocksize must be a positive integer, got {b}")
    return int(b)


def _depth_to_space_view(node: Node) -> tuple[tuple[int, ...], list[int], tuple[int, ...]]:
    """DepthToSpace as reshape-transpose-reshape: (input view, perm, output shape)."""
    x = node.inputs[0].type
    if x.rank != 4:
        raise fail(node, f"input must have rank 4 (N, C, H, W), got {x.rank}")
    b = _block_size(node)
    n, c, h, w = x.shape
    if c % (b * b):
        raise fail(node, f"channels {c} are not a multiple of blocksize^2 = {b * b}")
    if node.attrs.get("mode", "DCR") == "CRD":
        view, perm = (n, c // (b * b), b, b, h, w), [0, 1, 4, 2, 5, 3]
    else:
        view, perm = (n, b, b, c // (b * b), h, w), [0, 3, 4, 1, 5, 2]
    return view, perm, (n, c // (b * b), h * b, w * b)


def _space_to_depth_view(node: Node) -> tuple[tuple[int, ...], list[int], tuple[int, ...]]:
    x = node.inputs[0].type
    if x.rank != 4:
        raise fail(node, f"input must have rank 4 (N, C, H, W), got {x.rank}")
    b = _block_size(node)
    n, c, h, w = x.shape
    if h % b or w % b:
        raise fail(node, f"height {h} and width {w} must be multiples of blocksize {b}")
    view = (n, c, h // b, b, w // b, b)
    perm = [0, 1, 3, 5, 2, 4] if node.attrs.get("mode", "DCR") == "CRD" else [0, 3, 5, 1, 2, 4]
    return view, perm, (n, c * b * b, h // b, w // b)


class _Rearrange(OpDef):
    """A reshape-transpose-reshape op, described by `view(node)`."""
    view = staticmethod(_depth_to_space_view)

    def check(self, node: Node) -> list[str]:
        mode = node.attrs.get("mode", "DCR")
        return [] if mode in ("DCR", "CRD") else [f"mode {mode!r} is not supported"]

    def infer(self, node: Node) -> list[TensorType]:
        return [TensorType(node.inputs[0].type.dtype, self.view(node)[2])]

    def lower(self, node: Node, ctx) -> None:
        view, perm, _ = self.view(node)
        emit_copy(ctx.w, ctx.outs[0], ctx.ins[0], permuted_dims(view, perm),
                  node.inputs[0].type.dtype)


@register_op("DepthToSpace")
class DepthToSpace(_Rearrange):
    view = staticmethod(_depth_to_space_view)


@register_op("SpaceToDepth")
class SpaceToDepth(_Rearrange):
    view = staticmethod(_space_to_depth_view)


@register_op("Concat")
class Concat(OpDef):
    def _axis(self, node: Node) -> int:
        present = [v for v in node.inputs if v is not None]
        if not present:
            raise fail(node, "needs at least one input")
        first = present[0].type
        if "axis" not in node.attrs:
            raise fail(node, "the axis attribute is missing")
        if first.rank == 0:
            raise fail(node, "cannot concatenate scalars")
        axis = normalize_axis(node, int(node.attrs["axis"]), first.rank)
        for v in present[1:]:
            t = v.type
            if t.dtype != first.dtype or t.rank != first.rank or any(
                    a != b for k, (a, b) in enumerate(zip(t.shape, first.shape)) if k != axis):
                raise fail(node, f"input {t} does not match {first} outside axis {axis}")
        return axis

    def infer(self, node: Node) -> list[TensorType]:
        axis = self._axis(node)
        present = [v.type for v in node.inputs if v is not None]
        shape = list(present[0].shape)
        shape[axis] = sum(t.shape[axis] for t in present)
        return [TensorType(present[0].dtype, tuple(shape))]

    def lower(self, node: Node, ctx) -> None:
        axis = self._axis(node)
        out = node.outputs[0].type
        out_strides = strides(out.shape)
        offset = 0
        for v, name in zip(node.inputs, ctx.ins):
            if v is None:
                continue
            dims = [Dim(e, d, s) for e, d, s in zip(v.type.shape, out_strides,
                                                       strides(v.type.shape))]
            emit_copy(ctx.w, ctx.outs[0], name, dims, out.dtype, dst_base=offset)
            offset += v.type.shape[axis] * out_strides[axis]


@register_op("Split")
class Split(OpDef):
    def _sizes(self, node: Node) -> tuple[int, list[int]]:
        x = node.inputs[0].type
        if x.rank == 0:
            raise fail(node, "cannot split a scalar")
        axis = normalize_axis(node, int(node.attrs.get("axis", 0)), x.rank)
        dim, n = x.shape[axis], len(node.outputs)
        if node.opset >= 13 or node.input(1) is not None:
            split = const_ints(node, 1, "split")
        else:
            split = node.attrs.get("split")
            split = None if split is None else [int(s) for s in split]
        if split is not None:
            if len(split) != n or any(s < 0 for s in split) or sum(split) != dim:
                raise fail(node, f"split {split} must give {n} sizes >= 0 summing to {dim}")
            return axis, split
        parts = node.attrs.get("num_outputs") if node.opset >= 18 else None
        if parts is not None:
            if int(parts) != n or n < 1:
                raise fail(node, f"num_outputs {parts} does not match the {n} outputs")
            chunk = -(-dim // n)
            sizes = [min(chunk, max(dim - k * chunk, 0)) for k in range(n)]
            return axis, sizes
        if dim % n:
            raise fail(node, f"axis {axis} of size {dim} does not split evenly into {n} outputs")
        return axis, [dim // n] * n

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        axis, sizes = self._sizes(node)
        return [TensorType(x.dtype, x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in sizes]

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        axis, _ = self._sizes(node)
        in_strides = strides(x.shape)
        offset = 0
        for v, name in zip(node.outputs, ctx.outs):
            emit_copy(ctx.w, name, ctx.ins[0], contiguous_dims(v.type.shape, in_strides),
                      x.dtype, src_base=offset)
            offset += v.type.shape[axis] * in_strides[axis]


def _slice_bounds(start: int, end: int, step: int, dim: int) -> tuple[int, int]:
    """ONNX Slice clamping: (first index, element count) along one axis."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        return start, max(0, -((start - end) // step))
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return start, max(0, -((end - start) // -step)) if start >= 0 else 0


@register_op("Slice")
class Slice(OpDef):
    def _plan(self, node: Node) -> list[tuple[int, int, int]]:
        """(first index, count, step) per input dim."""
        x = node.inputs[0].type
        if node.opset >= 10:
            starts = const_ints(node, 1, "starts")
            ends = const_ints(node, 2, "ends")
            axes = const_ints(node, 3, "axes")
            steps = const_ints(node, 4, "steps")
        else:
            starts, ends, axes = (node.attrs.get(a) for a in ("starts", "ends", "axes"))
            starts, ends, axes = (None if v is None else [int(a) for a in v]
                                  for v in (starts, ends, axes))
            steps = None
        if starts is None or ends is None or len(starts) != len(ends):
            raise fail(node, f"starts {starts} and ends {ends} must have the same length")
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        if len(axes) != len(starts) or len(steps) != len(starts):
            raise fail(node, "starts, ends, axes and steps must have the same length")
        plan = [(0, d, 1) for d in x.shape]
        for a, s, e, st in zip(normalize_axes(node, axes, x.rank), starts, ends, steps):
            if st == 0:
                raise fail(node, "steps must not be 0")
            first, count = _slice_bounds(s, e, st, x.shape[a])
            plan[a] = (first, count, st)
        return plan

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        return [TensorType(x.dtype, tuple(c for _, c, _ in self._plan(node)))]

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        plan = self._plan(node)
        in_strides = strides(x.shape)
        base = sum(f * s for (f, _, _), s in zip(plan, in_strides))
        dims = contiguous_dims(tuple(c for _, c, _ in plan),
                               tuple(st * s for (_, _, st), s in zip(plan, in_strides)))
        emit_copy(ctx.w, ctx.outs[0], ctx.ins[0], dims, x.dtype, src_base=base)


@register_op("Expand")
class Expand(OpDef):
    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        shape = const_ints(node, 1, "shape")
        if shape is None or any(d < 0 for d in shape):
            raise fail(node, f"shape {shape} must be given with dims >= 0")
        out = broadcast_shape(x.shape, tuple(shape))
        if out is None:
            raise fail(node, f"input shape {list(x.shape)} does not broadcast to {shape}")
        return [TensorType(x.dtype, out)]

    def lower(self, node: Node, ctx) -> None:
        x, out = node.inputs[0].type, node.outputs[0].type
        emit_copy(ctx.w, ctx.outs[0], ctx.ins[0],
                  contiguous_dims(out.shape, broadcast_strides(x.shape, out.shape)), x.dtype)


@register_op("Tile")
class Tile(OpDef):
    def _repeats(self, node: Node) -> list[int]:
        x = node.inputs[0].type
        repeats = const_ints(node, 1, "repeats")
        if repeats is None or len(repeats) != x.rank or any(r < 0 for r in repeats):
            raise fail(node, f"repeats {repeats} must give one count >= 0 per input dim")
        return repeats

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        return [TensorType(x.dtype, tuple(d * r for d, r in zip(x.shape, self._repeats(node))))]

    def lower(self, node: Node, ctx) -> None:
        # The output viewed as (r0, d0, r1, d1, ...) reads the input broadcast along each r.
        x = node.inputs[0].type
        view, src = [], []
        for r, d, s in zip(self._repeats(node), x.shape, strides(x.shape)):
            view += [r, d]
            src += [0, s]
        emit_copy(ctx.w, ctx.outs[0], ctx.ins[0], contiguous_dims(tuple(view), tuple(src)),
                  x.dtype)


@register_op("Trilu")
class Trilu(OpDef):
    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        if x.rank < 2:
            raise fail(node, f"input must have rank >= 2, got {x.rank}")
        k = node.input(1)
        if k is not None and (k.type.size != 1 or k.type.dtype != dt.I64):
            raise fail(node, "k must be one int64")
        return [x]

    def lower(self, node: Node, ctx) -> None:
        # k may be a run-time input: the shape does not depend on it.
        x = node.inputs[0].type
        w = ctx.w
        k_input = ctx.ins[1] if len(ctx.ins) > 1 else None
        w.line(f"const int64_t k = {k_input + '[0]' if k_input else '0'};")
        keep = "{j} - {i} >= k" if node.attrs.get("upper", 1) else "{j} - {i} <= k"
        rows, cols = x.shape[-2:]
        zero = c_literal(0, x.dtype)
        with w.loops((math.prod(x.shape[:-2]), rows, cols)) as (b, i, j):
            off = f"({b} * {rows} + {i}) * {cols} + {j}"
            w.line(f"{ctx.outs[0]}[{off}] = {keep.format(i=i, j=j)} ? "
                   f"{ctx.ins[0]}[{off}] : {zero};")


@register_op("ReverseSequence")
class ReverseSequence(OpDef):
    def _axes(self, node: Node) -> tuple[int, int]:
        x = node.inputs[0].type
        batch, time = int(node.attrs.get("batch_axis", 1)), int(node.attrs.get("time_axis", 0))
        if x.rank < 2 or {batch, time} != {0, 1}:
            raise fail(node, "needs rank >= 2 and batch_axis, time_axis being 0 and 1")
        return batch, time

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        batch, _ = self._axes(node)
        lens = node.input(1)
        if lens is None or lens.type.shape != (x.shape[batch],):
            raise fail(node, f"sequence_lens must have shape [{x.shape[batch]}]")
        return [x]

    def lower(self, node: Node, ctx) -> None:
        # Rows (b, t) are reversed within the first sequence_lens[b] steps, clamped to the
        # time extent so a bad length cannot read outside the input.
        x = node.inputs[0].type
        batch, time = self._axes(node)
        w = ctx.w
        inner = math.prod(x.shape[2:])
        steps = x.shape[time]
        with w.loops(x.shape[:2]) as idx:
            b, t = idx[batch], idx[time]
            w.line(f"int64_t n = (int64_t){ctx.ins[1]}[{b}];")
            w.line(f"n = n < 0 ? 0 : (n > {steps} ? {steps} : n);")
            w.line(f"const int64_t src_t = {t} < n ? n - 1 - {t} : {t};")
            src = [None, None]
            src[batch], src[time] = b, "src_t"
            w.line(f"memcpy({ctx.outs[0]} + ({idx[0]} * {x.shape[1]} + {idx[1]}) * {inner}, "
                   f"{ctx.ins[0]} + ({src[0]} * {x.shape[1]} + {src[1]}) * {inner}, "
                   f"{inner * x.dtype.itemsize});")
