"""fuse-gelu: the erf form of Gelu, as exported BERT models write it, becomes one Gelu node.

    y = (x * (Erf(x / sqrt 2) + 1)) * 0.5          also x * (1/sqrt 2), 1 + Erf(...),
                                                    and (x * 0.5) * (Erf(...) + 1)

Five elementwise nodes become Gelu(x) (approximate "none"), whose float32 kernel
(ops/vecmath.py ember_geluf) costs half of Erf's and needs no division; fuse-epilogues then
takes it into the MatMul before it as one step. Only float32, and only where every
intermediate value is read inside the pattern alone and keeps x's type (a constant of higher
rank would broadcast x). It runs before the pipeline (driver.optimize), at opt_level >= 2.

    before:  %2 = Div(%1, const f32 1.4142135) : f32[1,8,32]
             %3 = Erf(%2) : f32[1,8,32]
             %4 = Add(%3, const f32 1) : f32[1,8,32]
             %5 = Mul(%1, %4) : f32[1,8,32]
             %6 = Mul(%5, const f32 0.5) : f32[1,8,32]
    after:   %6 = Gelu(%1) {approximate='none'} : f32[1,8,32]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ember.graph import dtypes as dt
from ember.graph.ir import Graph, Node, Value
from ember.passes.base import Pass
from ember.passes.rewrite import is_plain, label, output_ids, readers, splice

_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class FuseGelu(Pass):
    name = "fuse-gelu"

    def run(self, graph: Graph) -> Graph:
        users = readers(graph)
        outputs = output_ids(graph)
        replaced: dict[int, Node] = {}
        removed: list[Node] = []
        for erf in graph.nodes:
            found = _match(erf, users, outputs) if erf.op == "Erf" and is_plain(erf) else None
            if found is None:
                continue
            x, chain = found
            last = chain[-1]
            if last.outputs[0].type != x.type:       # a constant of higher rank broadcast x
                continue
            gelu = Node("Gelu", [x], [last.outputs[0]],
                        {"approximate": "none", "fused_from": [label(n) for n in chain]},
                        erf.name, erf.opset)
            replaced[id(last)] = gelu
            removed.extend(chain[:-1])
        if replaced:
            splice(graph, replaced, removed)
        return graph


def _match(erf: Node, users: dict, outputs: set[int]) -> tuple[Value, list[Node]] | None:
    """(x, the pattern's nodes in order, the last one producing y) where `erf` is the Erf of
    a Gelu written out; None otherwise."""
    def only_reader(v: Value) -> Node | None:
        """The one plain node reading v, when v is no graph output and keeps x's type."""
        rs = users.get(v.id, [])
        ok = len(rs) == 1 and v.id not in outputs and v.type == x.type and is_plain(rs[0])
        return rs[0] if ok else None

    scaled = erf.inputs[0].producer if erf.inputs and erf.inputs[0] is not None else None
    x = _scaled_input(scaled)
    if x is None or x.type.dtype is not dt.F32 or only_reader(scaled.outputs[0]) is not erf:
        return None
    plus = only_reader(erf.outputs[0])
    if plus is None or plus.op != "Add" or _other(plus, erf.outputs[0], 1.0) is None:
        return None
    times = only_reader(plus.outputs[0])
    if times is None or times.op != "Mul":
        return None
    other = _other(times, plus.outputs[0])
    if other is x:                                   # (x * (1 + erf)) * 0.5
        half = only_reader(times.outputs[0])
        if half is None or half.op != "Mul" or _other(half, times.outputs[0], 0.5) is None:
            return None
        return x, [scaled, erf, plus, times, half]
    halved = other.producer if other is not None else None    # (x * 0.5) * (1 + erf)
    if (halved is None or halved.op != "Mul" or not is_plain(halved)
            or _other(halved, x, 0.5) is None or only_reader(halved.outputs[0]) is not times):
        return None
    return x, [scaled, halved, erf, plus, times]


def _scaled_input(node: Node | None) -> Value | None:
    """x where `node` is x / sqrt 2 or x * (1 / sqrt 2) with a constant scalar."""
    if node is None or not is_plain(node) or len(node.inputs) != 2:
        return None
    if node.op == "Div" and node.inputs[0] is not None and not node.inputs[0].is_const:
        return node.inputs[0] if _is_scalar(node.inputs[1], _SQRT2, 1e-6) else None
    if node.op == "Mul":
        for k in (0, 1):
            x = node.inputs[k]
            if x is not None and not x.is_const and _is_scalar(node.inputs[1 - k], 1 / _SQRT2, 1e-6):
                return x
    return None


def _other(node: Node, v: Value, const: float | None = None) -> Value | None:
    """The operand of binary `node` beside `v`; with `const`, only if it is that constant."""
    if len(node.inputs) != 2 or not any(u is v for u in node.inputs):
        return None
    other = node.inputs[1] if node.inputs[0] is v else node.inputs[0]
    if const is not None and not _is_scalar(other, const, 0.0):
        return None
    return other


def _is_scalar(v: Value | None, want: float, rtol: float) -> bool:
    """v is a constant holding one element within rtol of `want`."""
    if v is None or not v.is_const or v.type.size != 1 or not v.type.dtype.is_float:
        return False
    got = float(v.const.reshape(-1)[0])
    return abs(got - want) <= rtol * abs(want)
