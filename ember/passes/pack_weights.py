"""pack-weights: store constant weights in the layout their kernel reads.

Gemm with a constant B and transB=1 (how PyTorch exports every Linear layer) would otherwise
transpose B into scratch on every call; the transpose is done once here instead.

    before:  %1 = Gemm(%0, const f32[10,64], const f32[10]) {transB=1, ...} : f32[1,10]
    after:   %1 = Gemm(%0, const f32[64,10], const f32[10]) {transB=0, ...} : f32[1,10]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ember.graph.ir import Graph, const_value
from ember.passes.base import Pass


@dataclass(frozen=True)
class PackWeights(Pass):
    name = "pack-weights"

    def run(self, graph: Graph) -> Graph:
        for node in graph.nodes:
            b = node.input(1)
            if node.op == "Gemm" and node.attrs.get("transB", 0) and b is not None and b.is_const:
                node.inputs[1] = const_value(np.ascontiguousarray(b.const.T), b.type.dtype)
                node.attrs["transB"] = 0
        return graph
