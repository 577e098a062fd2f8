"""eliminate-common-subexpressions: compute each distinct expression once.

Identical constants (same dtype, shape and bytes) become one value first; then two nodes with
the same op, opset, inputs and attributes compute the same thing, and the later one's readers
read the earlier one's outputs. Random ops are never merged. A node whose output is a graph
output is kept: the output's name belongs to that value.

    before:  %1 = Relu(%0) : f32[4]
             %2 = Relu(%0) : f32[4]
             %3 = Add(%1, %2) : f32[4]
    after:   %1 = Relu(%0) : f32[4]
             %2 = Add(%1, %1) : f32[4]
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from ember.frontend.onnx import NONDETERMINISTIC_OPS as NONDETERMINISTIC
from ember.graph.ir import Graph, Node, Value
from ember.passes.base import Pass
from ember.passes.rewrite import is_plain, output_ids


@dataclass(frozen=True)
class EliminateCommonSubexpressions(Pass):
    name = "eliminate-common-subexpressions"

    def run(self, graph: Graph) -> Graph:
        subst = _dedupe_constants(graph)
        outputs = output_ids(graph)
        seen: dict[Hashable, Node] = {}
        kept: list[Node] = []
        for node in graph.nodes:
            node.inputs = [None if v is None else subst.get(v.id, v) for v in node.inputs]
            key = _key(node)
            first = seen.get(key) if key is not None else None
            if first is None or any(v.id in outputs for v in node.outputs):
                if key is not None:
                    seen.setdefault(key, node)
                kept.append(node)
                continue
            for dup, orig in zip(node.outputs, first.outputs):
                subst[dup.id] = orig
        graph.nodes = kept
        return graph


def _dedupe_constants(graph: Graph) -> dict[int, Value]:
    """Map the id of each constant node input that repeats an earlier one -> that earlier one."""
    canonical: dict[tuple, Value] = {}
    subst: dict[int, Value] = {}
    for node in graph.nodes:
        for v in node.inputs:
            if v is None or not v.is_const or v.id in subst:
                continue
            data = np.ascontiguousarray(v.const).tobytes()
            key = (v.type, hashlib.blake2b(data, digest_size=16).digest())
            first = canonical.setdefault(key, v)
            # Bytes, not values: 0.0 and -0.0 differ (1/x), and NaN equals itself.
            if first is not v and np.ascontiguousarray(first.const).tobytes() == data:
                subst[v.id] = first
    return subst


def _key(node: Node) -> Hashable | None:
    """What makes two nodes compute the same thing; None for a node never merged."""
    if node.op in NONDETERMINISTIC or not is_plain(node) or not node.outputs:
        return None
    try:
        attrs = tuple(sorted((k, _frozen(v)) for k, v in node.attrs.items()))
    except TypeError:      # an attribute value with no stable identity: leave the node alone
        return None
    inputs = tuple(-1 if v is None else v.id for v in node.inputs)
    return (node.op, node.domain, node.opset, inputs, attrs)


def _frozen(value: Any) -> Hashable:
    """A hashable stand-in for an attribute value (lists, tensors); TypeError when none."""
    if isinstance(value, np.ndarray):
        return ("tensor", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, float) and value != value:
        return ("nan",)        # NaN != NaN, yet two NaN attributes mean the same
    if isinstance(value, (int, float, str, bytes, bool)) or value is None:
        return value
    raise TypeError(type(value).__name__)
