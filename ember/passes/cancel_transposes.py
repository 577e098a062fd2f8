"""cancel-transposes: drop Transposes that undo each other, moving them through elementwise ops.

Layout changes at import (TFLite's NHWC convolutions run as NCHW between a Transpose pair)
leave a Transpose back to NHWC followed by one to NCHW between consecutive layers. Three
rewrites, applied in one forward sweep repeated until nothing changes:

  1. Transpose(Transpose(x, p), q) is Transpose(x, p[q]), and just x when that is the identity.
  2. An elementwise op whose run-time inputs are all Transposes with one perm p runs before
     the Transpose instead: E(T(a, p), T(b, p), c) -> T(E(a, b, c'), p), the constant c
     transposed back to c'. Done only when an input Transpose then has no reader left, so the
     number of Transposes never grows; the moved Transpose may then meet its inverse (rule 1).
  3. Last, a Transpose that keeps the order of the dims larger than 1 moves no data: it
     becomes a Reshape, a view.

    before:  %1 = Transpose(%0) {perm=[0, 2, 3, 1]} : f32[1,4,4,8]
             %2 = Relu(%1) : f32[1,4,4,8]
             %3 = Transpose(%2) {perm=[0, 3, 1, 2]} : f32[1,8,4,4]
             %4 = Conv(%3, const f32[8,8,1,1]) ... : f32[1,8,4,4]
    after:   %1 = Relu(%0) : f32[1,8,4,4]
             %2 = Conv(%1, const f32[8,8,1,1]) ... : f32[1,8,4,4]
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ember.graph.ir import Graph, Node, TensorType, Value, const_value
from ember.passes.base import Pass
from ember.passes.rewrite import is_elementwise, is_plain, output_ids, reshape_node


@dataclass(frozen=True)
class CancelTransposes(Pass):
    name = "cancel-transposes"

    def run(self, graph: Graph) -> Graph:
        while _Sweep(graph).run():
            pass
        graph.nodes = [_as_reshape(n) if _is_transpose(n) else n for n in graph.nodes]
        return graph


def _is_transpose(node: Node | None) -> bool:
    return node is not None and node.op == "Transpose" and is_plain(node)


def perm_of(node: Node) -> list[int]:
    """A Transpose's permutation (ONNX's default reverses the dims)."""
    perm = node.attrs.get("perm")
    return [int(p) for p in perm] if perm else list(range(node.inputs[0].type.rank))[::-1]


class _Sweep:
    """One forward pass over the nodes; `uses` counts each value's reader nodes (and a graph
    output as one more), kept current as inputs are rewired."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.outputs = output_ids(graph)
        self.uses: Counter[int] = Counter(self.outputs)
        for n in graph.nodes:
            self.uses.update({v.id for v in n.inputs if v is not None})
        self.producer: dict[int, Node] = {}
        self.subst: dict[int, Value] = {}
        self.changed = False

    def run(self) -> bool:
        nodes: list[Node] = []
        for node in self.graph.nodes:
            self.rewire(node, [None if v is None else self.subst.get(v.id, v)
                               for v in node.inputs])
            if _is_transpose(node):
                keep = self.compose(node)
                new = [node] if keep else []
            else:
                new = self.sink(node) or [node]
            for n in new:
                self.producer.update({v.id: n for v in n.outputs})
            nodes.extend(new)
        self.graph.nodes = self.drop_dead(nodes)
        return self.changed

    def rewire(self, node: Node, inputs: list[Value | None]) -> None:
        old = {v.id for v in node.inputs if v is not None}
        new = {v.id for v in inputs if v is not None}
        self.uses.subtract(old - new)
        self.uses.update(new - old)
        node.inputs = inputs

    def input_transpose(self, v: Value | None) -> Node | None:
        producer = None if v is None else self.producer.get(v.id)
        return producer if _is_transpose(producer) else None

    def compose(self, node: Node) -> bool:
        """Rule 1 for `node`; False when the node is gone (it undid its input Transpose)."""
        first = self.input_transpose(node.inputs[0])
        if first is None:
            return True
        inner, outer = perm_of(first), perm_of(node)
        perm = [inner[p] for p in outer]
        x = first.inputs[0]
        out = node.outputs[0]
        self.changed = True
        if perm == sorted(perm) and out.id not in self.outputs:
            self.subst[out.id] = x
            self.rewire(node, [])
            return False
        self.rewire(node, [x])
        node.attrs["perm"] = perm
        return True

    def sink(self, node: Node) -> list[Node] | None:
        """Rule 2 for `node`: [the op, the Transpose after it], or None when it does not apply."""
        if not is_elementwise(node):
            return None
        out = node.outputs[0]
        transposes = [self.input_transpose(v) for v in node.inputs]
        perms = {tuple(perm_of(t)) for t in transposes if t is not None}
        if len(perms) != 1:
            return None
        perm = list(perms.pop())
        for v, t in zip(node.inputs, transposes):
            if v is not None and t is None and not (v.is_const and v.type.rank <= out.type.rank):
                return None
            if t is not None and v.type.rank != out.type.rank:
                return None
        if not any(t is not None and self.uses[v.id] == 1
                   for v, t in zip(node.inputs, transposes)):
            return None
        back = [int(i) for i in np.argsort(perm)]
        inputs = [t.inputs[0] if t is not None else _transposed_const(v, back, out.type.rank)
                  for v, t in zip(node.inputs, transposes)]
        inner = Value(TensorType(out.type.dtype, tuple(out.type.shape[i] for i in back)))
        moved = Node(node.op, [], [inner], node.attrs, node.name, node.opset, node.domain)
        self.rewire(moved, inputs)
        self.rewire(node, [])
        after = Node("Transpose", [], [out], {"perm": perm}, node.name, node.opset)
        self.rewire(after, [inner])
        self.changed = True
        return [moved, after]

    def drop_dead(self, nodes: list[Node]) -> list[Node]:
        """Remove the Transposes left with no reader (last first, so chains go too)."""
        kept = []
        for node in reversed(nodes):
            if _is_transpose(node) and self.uses[node.outputs[0].id] == 0:
                self.rewire(node, [])
                continue
            kept.append(node)
        return kept[::-1]


def _transposed_const(v: Value | None, back: list[int], rank: int) -> Value | None:
    """Constant operand `v` as the op sees it before the Transpose (scalars stay as they are)."""
    if v is None or v.type.rank == 0:
        return v
    array = v.const.reshape((1,) * (rank - v.type.rank) + v.const.shape)
    return const_value(np.transpose(array, back), v.type.dtype, v.name)


def _as_reshape(node: Node) -> Node:
    """Rule 3: a Transpose that only moves size-1 dims as a Reshape, else the node itself."""
    x, out = node.inputs[0], node.outputs[0]
    moved = [p for p in perm_of(node) if x.type.shape[p] != 1]
    if moved != sorted(moved) or 0 in x.type.shape:
        return node
    return reshape_node(x, out, node)
