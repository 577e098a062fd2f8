"""fuse-elementwise: elementwise chains and small DAGs become one FusedElementwise loop.

A group grows backwards from its last node (the root): an elementwise producer joins when
every reader of its output is already in the group, its output is not a graph output, and it
has as many elements as the root's output (so nothing is recomputed per element). The group
becomes one node whose `program` reads the group's external inputs; it stands where the root
stood, and every intermediate value disappears from memory.

    before:  %1 = Sigmoid(%0 x) : f32[8]
             %2 = Mul(%0 x, %1) : f32[8]
    after:   %1 = FusedElementwise(%0 x) {program={s0=Sigmoid(x0); s1=Mul(x0,s0)}} : f32[8]
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from ember.graph.ir import Graph, Node, Value
from ember.ops.elementwise import Program, operands
from ember.passes.base import Pass
from ember.passes.rewrite import append_step, is_elementwise, label, output_ids, readers, splice


@dataclass(frozen=True)
class FuseElementwise(Pass):
    name = "fuse-elementwise"
    max_steps: int = 64        # keeps each generated loop body a readable size

    def run(self, graph: Graph) -> Graph:
        position = {id(n): k for k, n in enumerate(graph.nodes)}
        users = readers(graph)
        outputs = output_ids(graph)
        grouped: set[int] = set()
        replaced: dict[int, Node] = {}
        removed: list[Node] = []
        for root in reversed(graph.nodes):
            if id(root) in grouped or not is_elementwise(root):
                continue
            group = self._grow(root, graph.nodes, position, users, outputs, grouped)
            if len(group) < 2:
                continue
            grouped.update(id(n) for n in group)
            replaced[id(root)] = _fuse(group)
            removed.extend(n for n in group if n is not root)
        if replaced:
            splice(graph, replaced, removed)
        return graph

    def _grow(self, root: Node, nodes: list[Node], position: dict[int, int],
              users: dict[int, list[Node]], outputs: set[int], grouped: set[int]) -> list[Node]:
        """The root and the producers that can fuse into it, in graph order."""
        size = root.outputs[0].type.size
        members = {id(root): root}
        heap: list[int] = []     # positions (negated: latest first) of candidate producers

        def offer(node: Node) -> None:
            for v in operands(node):
                p = None if v.is_const else v.producer
                if p is not None and id(p) in position and id(p) not in members:
                    heapq.heappush(heap, -position[id(p)])

        offer(root)
        while heap and len(members) < self.max_steps:
            cand = nodes[-heapq.heappop(heap)]
            if id(cand) in members:
                continue
            out = cand.outputs[0] if cand.outputs else None
            # Latest first: every reader of `cand` comes later, so its membership is settled.
            if (is_elementwise(cand) and id(cand) not in grouped and out.id not in outputs
                    and out.type.size == size
                    and all(id(r) in members for r in users.get(out.id, []))):
                members[id(cand)] = cand
                offer(cand)
        return sorted(members.values(), key=lambda n: position[id(n)])


def _fuse(group: list[Node]) -> Node:
    """One FusedElementwise node computing `group` (in graph order; the last is the root)."""
    inside = {v.id for n in group for v in n.outputs}
    external: dict[int, Value] = {}
    for n in group:
        for v in operands(n):
            if v.id not in inside:
                external.setdefault(v.id, v)
    slot = {vid: k for k, vid in enumerate(external)}
    program = Program([v.type for v in external.values()])
    for n in group:
        slot[n.outputs[0].id] = append_step(program, n, lambda v: slot[v.id])
    root = group[-1]
    return Node("FusedElementwise", list(external.values()), [root.outputs[0]],
                {"program": program, "fused_from": [label(n) for n in group]},
                name=root.name, opset=root.opset)
