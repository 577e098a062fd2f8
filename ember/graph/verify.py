"""verify(): the invariants every pass must keep. Run after each pass in tests and debug mode."""
from __future__ import annotations

from ember.errors import GraphError
from ember.graph.ir import Graph


def verify(graph: Graph, after: str = "") -> None:
    where = f" after {after}" if after else ""
    defined = {v.id for v in graph.inputs}
    produced: set[int] = set()
    for node in graph.nodes:
        for v in node.inputs:
            if v is not None and not v.is_const and v.id not in defined:
                raise GraphError(f"reads a value not yet defined{where}", node=node.name, op=node.op)
        for v in node.outputs:
            if v.id in produced or v.id in {i.id for i in graph.inputs}:
                raise GraphError(f"value %{v.id} defined twice{where}", node=node.name, op=node.op)
            if v.producer is not node:
                raise GraphError(f"output %{v.id} does not name this node as producer{where}",
                                 node=node.name, op=node.op)
            produced.add(v.id)
            defined.add(v.id)
    for v in graph.outputs:
        if not v.is_const and v.id not in defined:
            raise GraphError(f"graph output %{v.id} is never computed{where}")
