"""Control flow with static structure, flattened at import.

Ember compiles straight-line code. An If whose condition is a compile-time constant becomes
the branch it takes; a Scan (opset 9+) over a static sequence length is unrolled into its body
once per step. Bodies see the values of every enclosing scope (a function body, a branch, the
graph), as ONNX's lexical scoping says. Mixed into the importer (frontend/onnx.py), whose
`_instantiate`, `_tensor_value`, `values` and `scopes` these methods use.
"""
from __future__ import annotations

from collections import ChainMap
from typing import Callable, Mapping

import numpy as np
import onnx

from ember.errors import GraphError, UnsupportedError
from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType, Value, const_value

#: body nodes an unrolled Scan may add; a longer sequence stays unsupported
MAX_UNROLLED_NODES = 20_000


class Subgraph:
    """A graph-valued attribute (an If branch, a Loop or Scan body), kept for inlining."""

    def __init__(self, graph: onnx.GraphProto | None) -> None:
        self.graph = graph

    def __repr__(self) -> str:
        return "<subgraph>"


class ControlFlow:
    values: dict[str, Value]
    scopes: dict[int, Mapping[str, Value | None]]

    def _body(self, node: Node, attr: str, n_outputs: int) -> onnx.GraphProto:
        sub = node.attrs.get(attr)
        graph = sub.graph if isinstance(sub, Subgraph) else None
        if graph is None or len(graph.output) != n_outputs:
            raise GraphError(f"{attr} is missing or does not give {n_outputs} output(s)",
                             node=node.name, op=node.op)
        return graph

    def _scope(self, node: Node, graph: onnx.GraphProto, where: str,
               local: dict[str, Value | None]) -> tuple[ChainMap, Callable[[str], Value]]:
        """The body's scope (its initializers and `local`, then enclosing scopes) and a lookup
        that names the missing value."""
        for init in graph.initializer:
            local[init.name] = self._tensor_value(init, f"{where}: initializer {init.name!r}")
        scope = ChainMap(local, self.scopes.get(id(node), {}), self.values)

        def lookup(name: str) -> Value:
            value = scope.get(name)
            if value is None:
                raise GraphError(f"{graph.name or 'body'} uses {name!r}, which nothing defines",
                                 node=node.name, op=node.op)
            return value
        return scope, lookup

    def inline_branch(self, node: Node, where: str) -> list[Node]:
        """An If whose condition is known at compile time becomes the branch it takes."""
        cond = node.inputs[0].const
        if cond.size != 1:
            raise GraphError(f"If condition must hold one value, got shape {list(cond.shape)}",
                             node=node.name, op=node.op)
        taken = "then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"
        graph = self._body(node, taken, len(node.outputs))
        # The first branch output of each name becomes the If's output value in place.
        results: dict[str, Value] = {}
        for vi, result in zip(graph.output, node.outputs):
            results.setdefault(vi.name, result)
        local: dict[str, Value | None] = {}
        scope, lookup = self._scope(node, graph, where, local)
        inner_nodes = self._instantiate(node, graph.node, lookup, local, results, scope,
                                        lambda proto: None)   # None: the model's opset
        for vi, result in zip(graph.output, node.outputs):
            if result.producer is node:            # returned an outer value, or a name twice
                inner_nodes.append(Node("Identity", [lookup(vi.name)], [result], {},
                                        f"{node.name}/{vi.name}", node.opset))
        return inner_nodes

    def unroll_scan(self, node: Node, where: str) -> list[Node]:
        """Scan over a static length: the body once per step, states threaded through, scan
        outputs stacked with Unsqueeze + Concat."""
        n_scan = int(node.attrs.get("num_scan_inputs", 0))
        n_state = len(node.inputs) - n_scan
        if n_scan < 1 or n_state < 0 or any(v is None for v in node.inputs):
            raise GraphError("Scan needs num_scan_inputs >= 1 and every input given",
                             node=node.name, op=node.op)
        graph = self._body(node, "body", len(node.outputs))
        n_out = len(node.outputs) - n_state
        states, scanned = node.inputs[:n_state], node.inputs[n_state:]
        in_axes = _axes(node, "scan_input_axes", [v.type.rank for v in scanned])
        in_rev = _flags(node, "scan_input_directions", n_scan)
        out_axes = node.attrs.get("scan_output_axes") or [0] * n_out
        out_rev = _flags(node, "scan_output_directions", n_out)
        lengths = {v.type.shape[a] for v, a in zip(scanned, in_axes)}
        if len(lengths) != 1:
            raise GraphError(f"scan inputs have different lengths {sorted(lengths)}",
                             node=node.name, op=node.op)
        steps = lengths.pop()
        if steps == 0 or steps * max(len(graph.node), 1) > MAX_UNROLLED_NODES:
            raise UnsupportedError(f"a Scan of {steps} steps is not supported (unrolled, it "
                                   f"must have 1 to {MAX_UNROLLED_NODES} body nodes)",
                                   node=node.name, op=node.op)
        make = _Maker(node)
        nodes: list[Node] = []
        per_step: list[list[Value]] = [[] for _ in range(n_out)]
        for t in range(steps):
            local: dict[str, Value | None] = dict(zip((vi.name for vi in graph.input), states))
            for k, (v, axis, rev) in enumerate(zip(scanned, in_axes, in_rev)):
                index = const_value(np.array(steps - 1 - t if rev else t), dt.I64)
                local[graph.input[n_state + k].name] = make(nodes, "Gather", [v, index],
                                                            {"axis": axis})
            scope, lookup = self._scope(node, graph, where, local)
            nodes += self._instantiate(node, graph.node, lookup, local, {}, scope,
                                       lambda proto: None)
            results = [lookup(vi.name) for vi in graph.output]
            states = results[:n_state]
            for k in range(n_out):
                per_step[k].append(results[n_state + k])
        for result, final in zip(node.outputs[:n_state], states):
            nodes.append(Node("Identity", [final], [result], {}, node.name, node.opset))
        for k, result in enumerate(node.outputs[n_state:]):
            axis = int(out_axes[k])
            pieces = [make(nodes, "Unsqueeze", [v], {"axes": [axis]}) for v in per_step[k]]
            nodes.append(Node("Concat", pieces[::-1] if out_rev[k] else pieces, [result],
                              {"axis": axis}, node.name, node.opset))
        return nodes


class _Maker:
    """Makes the glue nodes of an unrolled Scan at the model's opset."""

    def __init__(self, scan: Node) -> None:
        self.scan = scan

    def __call__(self, nodes: list[Node], op: str, inputs: list[Value], attrs: dict) -> Value:
        out = Value(TensorType(dt.F32, ()), "")
        if op == "Unsqueeze" and self.scan.opset >= 13:     # axes became an input
            inputs = inputs + [const_value(np.array(attrs.pop("axes")), dt.I64)]
        nodes.append(Node(op, inputs, [out], attrs, self.scan.name, self.scan.opset))
        return out


def _axes(node: Node, attr: str, ranks: list[int]) -> list[int]:
    axes = node.attrs.get(attr) or [0] * len(ranks)
    if len(axes) != len(ranks) or not all(-r <= a < r for a, r in zip(axes, ranks)):
        raise GraphError(f"{attr} {list(axes)} does not fit the scan inputs' ranks {ranks}",
                         node=node.name, op=node.op)
    return [a + r if a < 0 else a for a, r in zip(axes, ranks)]


def _flags(node: Node, attr: str, count: int) -> list[bool]:
    flags = node.attrs.get(attr) or [0] * count
    if len(flags) != count:
        raise GraphError(f"{attr} has {len(flags)} entries for {count}", node=node.name,
                         op=node.op)
    return [bool(f) for f in flags]
