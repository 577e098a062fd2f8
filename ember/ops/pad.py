"""Pad (constant, reflect, edge, wrap; negative pads crop) and CenterCropPad."""
from __future__ import annotations

from ember.graph.ir import Node, TensorType
from ember.lower.indexing import strides
from ember.ops.datamove import Dim, const_ints, emit_copy, emit_fill, normalize_axes
from ember.ops.registry import OpDef, fail, register_op
from ember.render.cwriter import c_literal

_MODES = ("constant", "reflect", "edge", "wrap")


def _pads(node: Node) -> list[tuple[int, int]]:
    """(begin, end) pads for every input dim."""
    rank = node.inputs[0].type.rank
    if node.opset >= 11:
        raw = const_ints(node, 1, "pads")
        axes = const_ints(node, 3, "axes") if node.opset >= 18 else None
    else:
        raw = node.attrs.get("pads", node.attrs.get("paddings"))
        raw = None if raw is None else [int(p) for p in raw]
        axes = None
    axes = list(range(rank)) if axes is None else normalize_axes(node, axes, rank)
    if raw is None or len(raw) != 2 * len(axes):
        raise fail(node, f"pads {raw} must hold 2 values per padded axis ({len(axes)} axes)")
    pads = [(0, 0)] * rank
    for k, a in enumerate(axes):
        pads[a] = (raw[k], raw[k + len(axes)])
    return pads


def _source_index(mode: str, begin: int, n: int) -> str:
    """C expression of the input index read by output index {i} along a padded dim."""
    j = f"({{i}} - {begin})"
    if mode == "edge":
        return f"{j} < 0 ? 0 : ({j} >= {n} ? {n - 1} : {j})"
    if mode == "wrap":
        return f"({j} % {n} + {n}) % {n}"
    if n == 1:   # reflect
        return "0"
    period = 2 * (n - 1)
    t = f"(({j} % {period} + {period}) % {period})"
    return f"{t} < {n} ? {t} : {period} - {t}"


@register_op("Pad")
class Pad(OpDef):
    def check(self, node: Node) -> list[str]:
        mode = node.attrs.get("mode", "constant")
        if mode not in _MODES or (mode == "wrap" and node.opset < 19):
            return [f"mode {mode!r} is not supported"]
        return []

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        pads = _pads(node)
        shape = tuple(d + b + e for d, (b, e) in zip(x.shape, pads))
        if any(d < 0 for d in shape):
            raise fail(node, f"pads {pads} crop more than the input shape {list(x.shape)}")
        mode = node.attrs.get("mode", "constant")
        for d, (b, e), o in zip(x.shape, pads, shape):
            if mode != "constant" and d - max(-b, 0) - max(-e, 0) <= 0 and o > 0:
                raise fail(node, f"cannot pad an empty axis in mode {mode!r}")
        value = node.input(2) if node.opset >= 11 else None
        if value is not None and (value.type.size != 1 or value.type.dtype != x.dtype):
            raise fail(node, f"constant_value must be one {x.dtype}")
        return [TensorType(x.dtype, shape)]

    def lower(self, node: Node, ctx) -> None:
        x, out = node.inputs[0].type, node.outputs[0].type
        pads = _pads(node)
        mode = node.attrs.get("mode", "constant")
        if mode == "constant":
            if node.opset >= 11:
                value = f"{ctx.ins[2]}[0]" if len(ctx.ins) > 2 and ctx.ins[2] else "0"
            else:
                value = c_literal(float(node.attrs.get("value", 0.0)), x.dtype)
            _copy_window(ctx, [max(b, 0) for b, _ in pads], [max(-b, 0) for b, _ in pads],
                         [max(0, d - max(-b, 0) - max(-e, 0)) for d, (b, e) in zip(x.shape, pads)],
                         value)
            return
        # Negative pads crop first; the other modes then pad the cropped window (as onnxruntime).
        dims, base = [], 0
        for n, (b, e), o, si, so in zip(x.shape, pads, out.shape, strides(x.shape),
                                        strides(out.shape)):
            base += max(-b, 0) * si
            if b > 0 or e > 0:
                window = n - max(-b, 0) - max(-e, 0)
                dims.append(Dim(o, so, si, _source_index(mode, max(b, 0), window)))
            else:
                dims.append(Dim(o, so, si))
        emit_copy(ctx.w, ctx.outs[0], ctx.ins[0], dims, x.dtype, src_base=base)


def _copy_window(ctx, dst_start: list[int], src_start: list[int], extent: list[int],
                 fill: str) -> None:
    """Output = `fill` outside a window; inside, the input window at `src_start`."""
    x, out = ctx.node.inputs[0].type, ctx.node.outputs[0].type
    if list(extent) != list(out.shape):
        emit_fill(ctx.w, ctx.outs[0], out.size, fill)
    so, si = strides(out.shape), strides(x.shape)
    emit_copy(ctx.w, ctx.outs[0], ctx.ins[0],
              [Dim(e, d, s) for e, d, s in zip(extent, so, si)], x.dtype,
              dst_base=sum(a * s for a, s in zip(dst_start, so)),
              src_base=sum(a * s for a, s in zip(src_start, si)))


@register_op("CenterCropPad")
class CenterCropPad(OpDef):
    def _target(self, node: Node) -> tuple[int, ...]:
        x = node.inputs[0].type
        shape = const_ints(node, 1, "shape")
        axes = node.attrs.get("axes")
        axes = list(range(x.rank)) if axes is None else normalize_axes(node, list(axes), x.rank)
        if shape is None or len(shape) != len(axes) or any(s < 0 for s in shape):
            raise fail(node, f"shape {shape} must give one size >= 0 per axis ({len(axes)})")
        target = list(x.shape)
        for a, s in zip(axes, shape):
            target[a] = s
        return tuple(target)

    def infer(self, node: Node) -> list[TensorType]:
        return [TensorType(node.inputs[0].type.dtype, self._target(node))]

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        target = self._target(node)
        _copy_window(ctx, [max(t - n, 0) // 2 for n, t in zip(x.shape, target)],
                     [max(n - t, 0) // 2 for n, t in zip(x.shape, target)],
                     [min(n, t) for n, t in zip(x.shape, target)], c_literal(0, x.dtype))
