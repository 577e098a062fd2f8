"""eliminate-dead: drop nodes none of whose outputs reach a graph output."""
from __future__ import annotations

from dataclasses import dataclass

from ember.graph.ir import Graph
from ember.passes.base import Pass


@dataclass(frozen=True)
class EliminateDead(Pass):
    name = "eliminate-dead"

    def run(self, graph: Graph) -> Graph:
        live = {v.id for v in graph.outputs}
        kept = []
        for node in reversed(graph.nodes):
            if any(v.id in live for v in node.outputs):
                kept.append(node)
                live.update(v.id for v in node.inputs if v is not None)
        graph.nodes = kept[::-1]
        return graph
