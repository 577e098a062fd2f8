"""Stable text form of a graph, for `ember inspect`, golden tests and debugging.

    %3 = Conv(%0 x, %1 w, %2 b) {group=1, pads=[1, 1, 1, 1]} : f32[1,8,8,8]

Values print by their id in graph order (renumbered from 0, so output is stable across
runs); constants print as `const f32[8,3,3,3]`; names from the model never appear unescaped.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ember.graph.ir import Graph, Node, Value
from ember.render.cwriter import c_comment


class _Names:
    def __init__(self) -> None:
        self.ids: dict[int, int] = {}

    def __call__(self, v: Value) -> str:
        if v.id not in self.ids:
            self.ids[v.id] = len(self.ids)
        return f"%{self.ids[v.id]}"


def format_attr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"tensor<{value.dtype}{list(value.shape)}>"
    if hasattr(value, "steps"):
        return "{" + format_program(value) + "}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return repr(c_comment(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    return str(value)


def format_program(program: Any) -> str:
    """An elementwise Program (ops/elementwise.py) as `s0=Add(x0,x1); s1=Relu(s0)`: xK is
    input K, sK the result of step K; step attributes follow in braces."""
    n = len(program.input_types)
    parts = []
    for k, step in enumerate(program.steps):
        args = ",".join(f"x{r}" if r < n else f"s{r - n}" for r in step.args)
        attrs = ", ".join(f"{a}={format_attr(v)}" for a, v in step.attrs)
        parts.append(f"s{k}={step.op}({args})" + (f"{{{attrs}}}" if attrs else ""))
    return "; ".join(parts)


def format_node(node: Node, name: "_Names", extra: str = "") -> str:
    def operand(v: Value | None) -> str:
        if v is None:
            return "_"
        return f"const {v.type}" if v.is_const else name(v)
    outs = ", ".join(name(v) for v in node.outputs)
    args = ", ".join(operand(v) for v in node.inputs)
    attrs = {k: v for k, v in sorted(node.attrs.items()) if k != "fused_from"}
    attr_text = (" {" + ", ".join(f"{k}={format_attr(v)}" for k, v in attrs.items()) + "}") if attrs else ""
    types = ", ".join(str(v.type) for v in node.outputs)
    return f"{outs} = {node.op}({args}){attr_text} : {types}{extra}"


def print_graph(graph: Graph) -> str:
    name = _Names()
    lines = [f"graph({', '.join(f'{name(v)}: {v.type}' for v in graph.inputs)}) {{"]
    for node in graph.nodes:
        lines.append("  " + format_node(node, name))
    outs = ", ".join(f"const {v.type}" if v.is_const else name(v) for v in graph.outputs)
    lines.append(f"  return {outs}")
    lines.append("}")
    return "\n".join(lines) + "\n"
