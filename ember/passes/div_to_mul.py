"""div-to-mul: x / c by a float constant c becomes x * (1 / c).

A vector division costs several times a multiplication (on Zen 1 one 8-wide vdivps per
~10 cycles), and BERT divides every attention score by sqrt(head_dim) inside the Q.K^T
epilogue. x * fl(1/c) is within 1.5 ulp of fl(x / c) (exact when c is a power of two), as
onnxruntime's FusedMatMul, which multiplies by alpha = 1/sqrt(d), also computes it. Only
float32 and float64, and only where every element of c and of 1/c is a finite normal
number, so x / 0, x / Inf and reciprocals that overflow or lose bits as denormals keep the
division (and its exact NaN/Inf results). It runs before the pipeline (driver.optimize), at
opt_level >= 2.

    before:  %2 = Div(%1, const f32[]) : f32[1,12,128,128]
    after:   %2 = Mul(%1, const f32[]) : f32[1,12,128,128]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Graph, Node, Value, const_value
from ember.passes.base import Pass
from ember.passes.rewrite import is_plain


@dataclass(frozen=True)
class DivToMul(Pass):
    name = "div-to-mul"

    def run(self, graph: Graph) -> Graph:
        for k, node in enumerate(graph.nodes):
            recip = _reciprocal(node)
            if recip is not None:
                graph.nodes[k] = Node("Mul", [node.inputs[0], recip], node.outputs, {},
                                      node.name, node.opset)
        return graph


def _reciprocal(node: Node) -> Value | None:
    """1 / c as a constant of the divisor's type, where `node` is a Div this pass rewrites."""
    if node.op != "Div" or not is_plain(node) or len(node.inputs) != 2:
        return None
    x, c = node.inputs
    if x is None or c is None or not c.is_const or c.type.dtype not in (dt.F32, dt.F64):
        return None
    if x.type.dtype is not c.type.dtype:
        return None
    with np.errstate(divide="ignore", over="ignore"):
        recip = (1.0 / c.const.astype(np.float64)).astype(c.type.dtype.numpy)
    tiny = np.finfo(c.type.dtype.numpy).tiny
    normal = np.all(np.isfinite(c.const) & (np.abs(c.const) >= tiny)
                    & np.isfinite(recip) & (np.abs(recip) >= tiny))
    return const_value(recip, c.type.dtype) if normal else None
