"""BitCast (opset 26): the input's bytes read as another element type of the same width.

The spec requires equal bit widths, so the shape never changes and the kernel is a byte copy.
"""
from __future__ import annotations

from ember.graph import dtypes as dt
from ember.graph.dtypes import DType
from ember.graph.ir import Node, TensorType
from ember.ops.datamove import emit_memcpy
from ember.ops.registry import OpDef, fail, register_op


def _target(node: Node) -> DType | None:
    return dt.from_onnx(int(node.attrs.get("to", 0)))


@register_op("BitCast")
class BitCast(OpDef):
    def check(self, node: Node) -> list[str]:
        if "to" not in node.attrs:
            return []           # infer() reports the missing attribute
        if _target(node) is None:
            return [f"target type {dt.onnx_type_name(int(node.attrs['to']))} is not supported"]
        return []

    def infer(self, node: Node) -> list[TensorType]:
        if "to" not in node.attrs:
            raise fail(node, "attribute 'to' is required")
        x, to = node.inputs[0].type, _target(node)
        if to.itemsize != x.dtype.itemsize:
            raise fail(node, f"cannot bit-cast {x.dtype} ({x.dtype.itemsize * 8} bits) to {to} "
                             f"({to.itemsize * 8} bits): the widths must be equal")
        return [TensorType(to, x.shape)]

    def lower(self, node: Node, ctx) -> None:
        x, out = node.inputs[0].type, node.outputs[0].type
        if out.dtype is dt.BOOL and x.dtype is not dt.BOOL:
            # Ember's bools are the bytes 0 and 1 (Xor compares them with !=); any
            # other byte is not a valid bool, and reads as true, as numpy's view does.
            with ctx.w.loops((x.size,)) as (i,):
                ctx.w.line(f"{ctx.outs[0]}[{i}] = {ctx.ins[0]}[{i}] != 0;")
            return
        emit_memcpy(ctx.w, ctx.outs[0], ctx.ins[0], out.nbytes)
