"""FusedElementwise: a chain or small DAG of elementwise ops computed in one loop.

Only the fuse-elementwise pass creates it. `attrs["program"]` is a Program whose inputs are
the node's inputs in order; every step is one scalar op of ops/elementwise.py, and the result
is the last step, computed for each element of the output with the inputs broadcast to it.
"""
from __future__ import annotations

from ember.graph.ir import Node, TensorType
from ember.lower.indexing import broadcast_shape
from ember.ops.elementwise import SCALAR_OPS, Program, emit_elementwise
from ember.ops.registry import OpDef, fail, register_op


@register_op("FusedElementwise")
class FusedElementwise(OpDef):
    def check(self, node: Node) -> list[str]:
        program = node.attrs.get("program")
        if not isinstance(program, Program):
            return ["FusedElementwise needs a Program in attribute 'program'"]
        return [f"unknown scalar op {s.op}" for s in program.steps if s.op not in SCALAR_OPS]

    def infer(self, node: Node) -> list[TensorType]:
        program = _program(node)
        types = [v.type if v is not None else None for v in node.inputs]
        if types != program.input_types or not program.steps:
            raise fail(node, "the program's inputs do not match the node's inputs")
        shape = broadcast_shape(*(t.shape for t in types))
        if shape is None:
            raise fail(node, "input shapes do not broadcast")
        return [TensorType(program.dtype, shape)]

    def lower(self, node: Node, ctx) -> None:
        emit_elementwise(ctx.w, _program(node), list(ctx.ins), ctx.outs[0],
                         node.outputs[0].type.shape)


def _program(node: Node) -> Program:
    program = node.attrs.get("program")
    if not isinstance(program, Program):
        raise fail(node, "FusedElementwise needs a Program in attribute 'program'")
    return program
