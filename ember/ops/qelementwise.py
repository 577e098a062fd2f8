"""TFLite's int8 elementwise operators, integer only, bit-exact with its reference kernels.

TflMul     (x1 + offset1) * (x2 + offset2), scaled by one fixed-point multiplier to the output
           scale, + zero point, clamped (reference_integer_ops::MulElementwise and
           BroadcastMul6DSlow). Inputs broadcast.
TflLookup  y = table[x]: an int8 activation (LOGISTIC, TANH, RELU, RELU6, LEAKY_RELU,
           HARD_SWISH) whose 256 results ops/qtables.py computed at compile time with the
           kernel's own integer arithmetic; the table is a constant int8[256] input.
(SUB is TflAdd with `subtract` set, ops/qlayers.py.)
"""
from __future__ import annotations

from dataclasses import dataclass

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import broadcast_shape, broadcast_strides, offset_expr, strides
from ember.ops.quant import FIXED_POINT_C, tfl_check, tfl_params
from ember.ops.registry import OpDef, fail, register_op, same_layout_inputs


def int8_broadcast(node: Node) -> TensorType:
    """The output type of a binary int8 op whose two inputs broadcast."""
    a, b = node.inputs[0].type, node.inputs[1].type
    if a.dtype != dt.I8 or b.dtype != dt.I8:
        raise fail(node, f"inputs must both be int8, got {a.dtype} and {b.dtype}")
    shape = broadcast_shape(a.shape, b.shape)
    if shape is None:
        raise fail(node, f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast")
    return TensorType(dt.I8, shape)


def emit_binary_loop(node: Node, ctx, body) -> None:
    """Loops over the output; `body(a, b, y)` writes the C for one element from the C
    expressions of both inputs' elements and the output's lvalue."""
    shape = node.outputs[0].type.shape
    sa, sb = (broadcast_strides(v.type.shape, shape) for v in node.inputs[:2])
    with ctx.w.loops(shape) as iv:
        body(f"(int32_t){ctx.ins[0]}[{offset_expr(iv, sa)}]",
             f"(int32_t){ctx.ins[1]}[{offset_expr(iv, sb)}]",
             f"{ctx.outs[0]}[{offset_expr(iv, strides(shape))}]")


@dataclass(frozen=True)
class TflMulParams:
    input1_offset: int
    input2_offset: int
    output_multiplier: int
    output_shift: int
    output_offset: int
    act_min: int
    act_max: int


@register_op("TflMul")
class TflMul(OpDef):
    def check(self, node: Node) -> list[str]:
        return tfl_check(node, TflMulParams)

    def infer(self, node: Node) -> list[TensorType]:
        tfl_params(node, TflMulParams)
        return [int8_broadcast(node)]

    def overwritable_inputs(self, node: Node) -> tuple[int, ...]:
        return same_layout_inputs(node)

    def lower(self, node: Node, ctx) -> None:
        q: TflMulParams = tfl_params(node, TflMulParams)
        ctx.require("ember_fixed_point", FIXED_POINT_C)
        emit_binary_loop(node, ctx, lambda a, b, y: ctx.w.line(
            f"{y} = (int8_t)ember_clamp32(ember_mbqm(({a} + {q.input1_offset}) * ({b} + "
            f"{q.input2_offset}), {q.output_multiplier}, {q.output_shift}) + "
            f"{q.output_offset}, {q.act_min}, {q.act_max});"))


@dataclass(frozen=True)
class TflLookupParams:
    activation: str        # the TFLite operator the table stands for (for `ember inspect`)


@register_op("TflLookup")
class TflLookup(OpDef):
    def check(self, node: Node) -> list[str]:
        return tfl_check(node, TflLookupParams)

    def infer(self, node: Node) -> list[TensorType]:
        tfl_params(node, TflLookupParams)
        x, table = node.inputs[0].type, node.inputs[1].type
        if x.dtype != dt.I8 or table.dtype != dt.I8 or table.shape != (256,):
            raise fail(node, f"needs an int8 input and an int8[256] table, got {x} and {table}")
        return [x]

    def overwritable_inputs(self, node: Node) -> tuple[int, ...]:
        return tuple(k for k in same_layout_inputs(node) if k == 0)   # never the table

    def lower(self, node: Node, ctx) -> None:
        x, table, y = ctx.ins[0], ctx.ins[1], ctx.outs[0]
        with ctx.w.block(f"for (int64_t i = 0; i < {node.outputs[0].type.size}; ++i)"):
            ctx.w.line(f"{y}[i] = {table}[(uint8_t){x}[i]];")
