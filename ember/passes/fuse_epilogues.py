"""fuse-epilogues: elementwise ops after a Conv/Gemm/MatMul run inside its kernel.

From a node whose OpDef accepts an epilogue, follow output 0 into the elementwise nodes after
it (bias Add, activation, residual Add, x * sigmoid(x) ...) while every value but the last is
read only inside the group and is not a graph output, and each node keeps the producer's
shape and dtype. The group becomes `attrs["epilogue"]`, a Program whose input 0 is the
accumulator and whose inputs 1.. are the group's other operands, appended to the node's
inputs (after padding the node's own optional inputs with None, so `node.input(k)` still
means what the op says). The node then produces the group's last value, standing where the
group's last node stood.

    before:  %1 = Conv(%0 x, const f32[8,3,3,3]) {...} : f32[1,8,6,6]
             %2 = Add(%1, const f32[1,8,1,1]) : f32[1,8,6,6]
             %3 = Relu(%2) : f32[1,8,6,6]
    after:   %1 = Conv(%0 x, const f32[8,3,3,3], _, const f32[1,8,1,1])
                  {..., epilogue={s0=Add(x0,x1); s1=Relu(s0)}} : f32[1,8,6,6]
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from ember.graph.ir import Graph, Node, TensorType, Value
from ember.ops.elementwise import Program, operands
from ember.ops.registry import get_op
from ember.passes.base import Pass
from ember.passes.rewrite import append_step, is_elementwise, label, output_ids, readers, splice


@dataclass(frozen=True)
class FuseEpilogues(Pass):
    name = "fuse-epilogues"
    max_steps: int = 32        # keeps the kernel's store code a readable size

    def run(self, graph: Graph) -> Graph:
        scope = _Scope(graph)
        replaced: dict[int, Node] = {}
        removed: list[Node] = []
        for node in list(graph.nodes):
            if id(node) in scope.taken or not _accepts(node):
                continue
            group = scope.epilogue(node, self.max_steps)
            if not group:
                continue
            _absorb(node, group)
            scope.taken.update(id(n) for n in group)
            replaced[id(group[-1])] = node
            removed.append(node)
            removed.extend(group[:-1])
        if replaced:
            splice(graph, replaced, removed)
        return graph


def _accepts(node: Node) -> bool:
    opdef = get_op(node.op)
    return (opdef is not None and opdef.accepts_epilogue and node.domain == ""
            and "program" not in node.attrs and bool(node.outputs))


class _Scope:
    """What the search needs to know about the graph, and the nodes already fused."""

    def __init__(self, graph: Graph) -> None:
        self.users = readers(graph)
        self.outputs = output_ids(graph)
        self.position = {id(n): k for k, n in enumerate(graph.nodes)}
        self.taken: set[int] = set()

    def epilogue(self, node: Node, max_steps: int) -> list[Node]:
        """The largest group of elementwise nodes after `node`'s output 0 that its kernel can
        compute, in graph order: a chain or a small DAG (x * sigmoid(x)) whose values all stay
        inside the group except the last one.

        Readers join earliest first, so the last node added is the latest, and the group is
        complete exactly when one value (the last) is still read from outside.
        """
        want = node.outputs[0].type
        group: list[Node] = []
        members: set[int] = set()
        values = [node.outputs[0]]
        best: list[Node] = []
        while len(group) < max_steps:
            open_ = [v for v in values if v.id in self.outputs
                     or any(id(r) not in members for r in self.users.get(v.id, []))]
            if len(open_) == 1:
                best = list(group)
            nxt: list[Node] = []
            for v in open_:
                outside = [r for r in self.users.get(v.id, []) if id(r) not in members]
                if v.id in self.outputs or not all(self._fits(r, node, want) for r in outside):
                    return best     # v can never close, and only the last value may stay open
                nxt.extend(outside)
            if not nxt:
                return best
            r = min(nxt, key=lambda n: self.position[id(n)])
            group.append(r)
            members.add(id(r))
            values.append(r.outputs[0])
        return best

    def _fits(self, r: Node, node: Node, want: TensorType) -> bool:
        """Whether `r` can run inside `node`'s epilogue: elementwise, keeping the producer's
        type, not fused elsewhere, and not reading another output of `node` (the kernel would
        read its own result)."""
        return (is_elementwise(r) and id(r) not in self.taken and r.outputs[0].type == want
                and not any(u in node.outputs[1:] for u in r.inputs))


def _absorb(node: Node, group: list[Node]) -> None:
    """Rewrite `node` to compute `group` (a group in graph order) too, extending an epilogue it
    already has."""
    program: Program | None = node.attrs.get("epilogue")
    n_extra = len(program.input_types) - 1 if program is not None else 0
    own = _padded(node, node.inputs[:len(node.inputs) - n_extra])
    extra: list[Value] = list(node.inputs[len(node.inputs) - n_extra:]) if n_extra else []
    # Gather the group's other operands first: program input refs must precede step refs.
    inside = {node.outputs[0].id} | {n.outputs[0].id for n in group}
    for n in group:
        for u in operands(n):
            if u.id not in inside and all(u is not e for e in extra):
                extra.append(u)
    fused = Program([node.outputs[0].type] + [u.type for u in extra])
    ref: dict[int, int] = {node.outputs[0].id: 0}
    ref.update((u.id, 1 + k) for k, u in enumerate(extra))
    if program is not None:     # replay the existing steps over the new input numbering
        ref[node.outputs[0].id] = _replay(fused, program)
    for n in group:
        ref[n.outputs[0].id] = append_step(fused, n, lambda u: ref[u.id])
    node.inputs = own + extra
    node.outputs[0] = group[-1].outputs[0]
    node.outputs[0].producer = node
    node.attrs["epilogue"] = fused
    node.attrs["fused_from"] = list(node.attrs.get("fused_from", [])) + [label(n) for n in group]


def _replay(target: Program, source: Program) -> int:
    """Copy `source`'s steps into `target`, whose first inputs are source's; the result ref."""
    shift = len(target.input_types) - len(source.input_types)
    n_src = len(source.input_types)
    ref = 0
    for step in source.steps:
        args = tuple(a if a < n_src else a + shift for a in step.args)
        ref = target.add(step.op, args, dict(step.attrs), step.dtype)
    return ref


def _padded(node: Node, own: list[Value | None]) -> list[Value | None]:
    """`own` padded with None to the op's declared input count, so appended operands are
    never mistaken for the op's optional inputs (a Conv without bias gets `_` for it)."""
    try:
        limit = onnx.defs.get_schema(node.op, node.opset or 1, node.domain).max_input
    except onnx.defs.SchemaError:
        return list(own)
    return list(own) + [None] * max(0, min(limit, 16) - len(own))
