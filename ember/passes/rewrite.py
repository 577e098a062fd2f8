"""Graph-editing helpers shared by the passes: who reads what, elementwise steps, splicing."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ember.graph import dtypes as dt
from ember.errors import EmberError
from ember.graph.ir import Graph, Node, Value, const_value, topological_order
from ember.ops.conv import ConvGeometry, conv_geometry
from ember.ops.elementwise import SCALAR_OPS, Program, operands, scalar_attrs

#: attributes the fusion passes set; a node carrying one is no longer a plain ONNX op
FUSION_ATTRS = ("epilogue", "program")


def readers(graph: Graph) -> dict[int, list[Node]]:
    """Map value id -> the distinct nodes reading it (a node reading a value twice counts once)."""
    out: dict[int, list[Node]] = {}
    for n in graph.nodes:
        seen: set[int] = set()
        for v in n.inputs:
            if v is not None and v.id not in seen:
                seen.add(v.id)
                out.setdefault(v.id, []).append(n)
    return out


def output_ids(graph: Graph) -> set[int]:
    return {v.id for v in graph.outputs}


def is_plain(node: Node) -> bool:
    """A standard-domain node no pass has rewritten into a fused form."""
    return node.domain == "" and not any(a in node.attrs for a in FUSION_ATTRS)


def float_conv(node: Node) -> ConvGeometry | None:
    """The geometry of a plain float32 2-D Conv with constant weights (what the layout and
    fusion passes rewrite), else None; a Conv whose geometry does not check out is left for
    its own checks to report."""
    x, w = node.input(0), node.input(1)
    if (node.op != "Conv" or not is_plain(node) or x is None or w is None or not w.is_const
            or x.type.dtype is not dt.F32 or x.type.rank != 4):
        return None
    try:
        return conv_geometry(node)
    except EmberError:
        return None


def is_elementwise(node: Node) -> bool:
    """A plain single-output node computed by one scalar expression (ops/elementwise.py)."""
    return node.op in SCALAR_OPS and is_plain(node) and len(node.outputs) == 1


def append_step(program: Program, node: Node, ref: Callable[[Value], int]) -> int:
    """Append `node`'s scalar op to `program`, its operands mapped by `ref`.

    Returns the reference to the step's result. Arguments keep the node's input order, as
    node_program() does, so ops with optional operands (Clip) read the right ones.
    """
    args = tuple(ref(v) for v in operands(node))
    return program.add(node.op, args, scalar_attrs(node), node.outputs[0].type.dtype)


def label(node: Node) -> str:
    """How a fused node is named in `fused_from` (and so in the kernel's header comment)."""
    return f"{node.op} {node.name}".rstrip()


def splice(graph: Graph, replaced: dict[int, Node | list[Node]], removed: Iterable[Node]) -> None:
    """Put replaced[id(old)] (a node or several) where each old node stood, drop `removed`,
    and re-sort.

    The final sort keeps the given order wherever it is valid; it only moves a node when a
    fusion made it read a value defined later.
    """
    gone = {id(n) for n in removed}
    nodes: list[Node] = []
    for n in graph.nodes:
        if id(n) in gone:
            continue
        new = replaced.get(id(n), n)
        nodes.extend(new if isinstance(new, list) else [new])
    graph.nodes = topological_order(nodes, graph.inputs)


def reshape_node(x: Value, out: Value, like: Node) -> Node:
    """A Reshape of `x` into `out`'s shape (a view), named and versioned after `like`.
    (Reshape takes its shape as an input from opset 5 on; a model older than that still gets
    this node at a newer opset.)"""
    shape = const_value(np.array(out.type.shape, np.int64), dt.I64)
    return Node("Reshape", [x, shape], [out], {"allowzero": 0}, like.name, max(like.opset, 14))
