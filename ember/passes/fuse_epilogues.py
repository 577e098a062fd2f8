"""fuse-epilogues: elementwise ops after a Conv/Gemm/MatMul run inside its kernel.

From a node whose OpDef accepts an epilogue, follow output 0 down a chain of elementwise nodes
(bias Add, activation, residual Add ...) while each value in the chain has that one reader,
is not a graph output, and the next node keeps the producer's shape and dtype. The chain
becomes `attrs["epilogue"]`, a Program whose input 0 is the accumulator and whose inputs 1..
are the chain's other operands, appended to the node's inputs (after padding the node's own
optional inputs with None, so `node.input(k)` still means what the op says). The node then
produces the chain's last value, standing where the chain's last node stood.

    before:  %1 = Conv(%0 x, const f32[8,3,3,3]) {...} : f32[1,8,6,6]
             %2 = Add(%1, const f32[1,8,1,1]) : f32[1,8,6,6]
             %3 = Relu(%2) : f32[1,8,6,6]
    after:   %1 = Conv(%0 x, const f32[8,3,3,3], _, const f32[1,8,1,1])
                  {..., epilogue={s0=Add(x0,x1); s1=Relu(s0)}} : f32[1,8,6,6]
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from ember.graph.ir import Graph, Node, Value
from ember.ops.elementwise import Program, operands
from ember.ops.registry import get_op
from ember.passes.base import Pass
from ember.passes.rewrite import append_step, is_elementwise, label, output_ids, readers, splice


@dataclass(frozen=True)
class FuseEpilogues(Pass):
    name = "fuse-epilogues"

    def run(self, graph: Graph) -> Graph:
        users = readers(graph)
        outputs = output_ids(graph)
        taken: set[int] = set()            # chain nodes already fused into some producer
        replaced: dict[int, Node] = {}
        removed: list[Node] = []
        for node in list(graph.nodes):
            if id(node) in taken or not _accepts(node):
                continue
            chain = _chain(node, users, outputs, taken)
            if not chain:
                continue
            _absorb(node, chain)
            taken.update(id(n) for n in chain)
            replaced[id(chain[-1])] = node
            removed.append(node)
            removed.extend(chain[:-1])
        if replaced:
            splice(graph, replaced, removed)
        return graph


def _accepts(node: Node) -> bool:
    opdef = get_op(node.op)
    return (opdef is not None and opdef.accepts_epilogue and node.domain == ""
            and "program" not in node.attrs and bool(node.outputs))


def _chain(node: Node, users: dict[int, list[Node]], outputs: set[int],
           taken: set[int]) -> list[Node]:
    """The elementwise nodes that can follow `node`'s output 0 into its kernel, in order."""
    want = node.outputs[0].type
    chain: list[Node] = []
    v = node.outputs[0]
    while v.id not in outputs:
        after = users.get(v.id, [])
        if len(after) != 1:
            break
        nxt = after[0]
        # A chain node must compute on v, and not read another output of `node` (the kernel
        # would read itself).
        ins = operands(nxt) if is_elementwise(nxt) else []
        if (all(u is not v for u in ins) or id(nxt) in taken or nxt.outputs[0].type != want
                or any(u in node.outputs for u in nxt.inputs if u is not v)):
            break
        chain.append(nxt)
        v = nxt.outputs[0]
    return chain


def _absorb(node: Node, chain: list[Node]) -> None:
    """Rewrite `node` to compute the chain too (extending an epilogue it already has)."""
    program: Program | None = node.attrs.get("epilogue")
    n_extra = len(program.input_types) - 1 if program is not None else 0
    own = _padded(node, node.inputs[:len(node.inputs) - n_extra])
    extra: list[Value] = list(node.inputs[len(node.inputs) - n_extra:]) if n_extra else []
    # Gather the chain's other operands first: program input refs must precede step refs.
    inside = {node.outputs[0].id} | {n.outputs[0].id for n in chain}
    for n in chain:
        for u in operands(n):
            if u.id not in inside and all(u is not e for e in extra):
                extra.append(u)
    fused = Program([node.outputs[0].type] + [u.type for u in extra])
    ref: dict[int, int] = {node.outputs[0].id: 0}
    ref.update((u.id, 1 + k) for k, u in enumerate(extra))
    if program is not None:     # replay the existing steps over the new input numbering
        ref[node.outputs[0].id] = _replay(fused, program)
    for n in chain:
        ref[n.outputs[0].id] = append_step(fused, n, lambda u: ref[u.id])
    node.inputs = own + extra
    node.outputs[0] = chain[-1].outputs[0]
    node.outputs[0].producer = node
    node.attrs["epilogue"] = fused
    node.attrs["fused_from"] = list(node.attrs.get("fused_from", [])) + [label(n) for n in chain]


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
