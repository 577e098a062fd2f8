"""`ember inspect`: the graph after a pass, what each node costs, and the memory plan.

    graph(%0: f32[1,3,8,8]) {
      [0] %1 = Relu(%0) : f32[1,3,8,8]
          # node 'relu': 192 flops, reads 768 bytes, writes 768 bytes
      ...
    memory plan: peak arena 832 bytes, weights 64 bytes
      buffer        offset      bytes  live (nodes)
      %1                 0        768  [0, 1]

A buffer listed as %1=%2 holds %2 too: %2's kernel writes it in place over %1.
"""
from __future__ import annotations

from pathlib import Path

from ember.driver import import_model, optimize
from ember.graph.ir import Graph, Node, Value
# _Names numbers values exactly as print_graph does, so both listings agree.
from ember.graph.printer import _Names, format_node
from ember.lower.to_kernels import LoweredModel, lower_graph
from ember.ops.registry import get_op
from ember.options import CompileOptions


def inspect_model(model: Path, options: CompileOptions, after: str | None = None) -> str:
    """Import `model`, run the pipeline up to `after` (all of it when None), lower, report."""
    graph, label = import_model(model, options)
    graph = optimize(graph, options, stop_after=after)
    lowered = lower_graph(graph, threads=options.threads, vector_bytes=options.target.vector_bytes)
    stage = f"after {after}" if after else "after all passes"
    head = f"model {label!r} {stage}: {len(graph.nodes)} node(s)\n"
    names = _Names()
    return head + format_nodes(graph, names) + "\n" + format_memory_plan(graph, lowered, names)


def node_costs(node: Node) -> tuple[int, int, int]:
    """(flops, bytes read, bytes written) of one node."""
    opdef = get_op(node.op)
    flops = opdef.flops(node) if opdef is not None else 0
    read = sum(v.type.nbytes for v in node.inputs if v is not None)
    written = sum(v.type.nbytes for v in node.outputs)
    return flops, read, written


def format_nodes(graph: Graph, names: _Names) -> str:
    lines = [f"graph({', '.join(f'{names(v)}: {v.type}' for v in graph.inputs)}) {{"]
    totals = [0, 0, 0]
    for k, node in enumerate(graph.nodes):
        costs = node_costs(node)
        totals = [t + c for t, c in zip(totals, costs)]
        flops, read, written = costs
        lines.append(f"  [{k}] {format_node(node, names)}")
        note = f"node {node.name!r}: {flops} flops, reads {read} bytes, writes {written} bytes"
        fused = node.attrs.get("fused_from")
        if fused:
            note += "; fused: " + ", ".join(repr(f) for f in fused)
        lines.append(f"      # {note}")
    outs = ", ".join(f"const {v.type}" if v.is_const and v.producer is None else names(v)
                     for v in graph.outputs)
    lines.append(f"  return {outs}")
    lines.append("}")
    lines.append(f"total: {totals[0]} flops, reads {totals[1]} bytes, writes {totals[2]} bytes")
    return "\n".join(lines) + "\n"


def format_memory_plan(graph: Graph, lowered: LoweredModel, names: _Names) -> str:
    values: dict[int, Value] = {v.id: v for v in graph.values()}
    scratch_of = {key: k for k, key in lowered.scratch_keys.items()}
    plan = lowered.plan
    lines = [f"memory plan: peak arena {plan.arena_bytes} bytes, weights {len(lowered.weights)} "
             f"bytes in {len(lowered.weight_offsets)} constant(s)"]
    if not plan.buffers:
        lines.append("  (no intermediate buffers: every value is an input, output or constant)")
        return "\n".join(lines) + "\n"
    lines.append(f"  {'buffer':<16}{'offset':>12}{'bytes':>12}  live (nodes)")
    joined: dict[int, list[int]] = {}
    for vid, key in plan.in_place.items():
        joined.setdefault(key, []).append(vid)
    for buf in sorted(plan.buffers, key=lambda b: (plan.offsets[b.key], b.first, b.key)):
        what = (names(values[buf.key]) if buf.key in values
                else f"scratch of [{scratch_of.get(buf.key, '?')}]")
        what += "".join(f"={names(values[vid])}" for vid in joined.get(buf.key, []))
        lines.append(f"  {what:<16}{plan.offsets[buf.key]:>12}{buf.nbytes:>12}  "
                     f"[{buf.first}, {buf.last}]")
    return "\n".join(lines) + "\n"
