"""fold-constants: compute at compile time every node whose inputs are all constants.

The importer already folds while it infers types; this pass catches the nodes other passes
leave with constant inputs. Like the importer it skips random ops and outputs larger than
MAX_FOLD_BYTES (those are cheaper to compute at run time than to store), and it leaves a node
alone when the reference evaluator cannot run it: the node then compiles as usual.

    before:  %1 = Add(const f32[4], const f32[4]) : f32[4]
             %2 = Mul(%0 x, %1) : f32[4]
    after:   %1 = Mul(%0 x, const f32[4]) : f32[4]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ember.frontend.onnx import NONDETERMINISTIC_OPS as NEVER_FOLD
from ember.frontend.onnx import MAX_FOLD_BYTES
from ember.graph import dtypes as dt
from ember.graph.evaluate import evaluate_node
from ember.graph.ir import Graph, Node
from ember.passes.base import Pass
from ember.passes.rewrite import is_plain


@dataclass(frozen=True)
class FoldConstants(Pass):
    name = "fold-constants"

    def run(self, graph: Graph) -> Graph:
        graph.nodes = [n for n in graph.nodes if not (foldable(n) and _fold(n))]
        return graph


def foldable(node: Node) -> bool:
    """Whether `node` may be computed at compile time (all inputs constant, a standard op)."""
    return (is_plain(node) and node.op not in NEVER_FOLD
            and all(v is None or v.is_const for v in node.inputs)
            and all(v.type.nbytes <= MAX_FOLD_BYTES for v in node.outputs)
            and onnx.defs.has(node.op))


def _fold(node: Node) -> bool:
    """Give node's outputs their constant values; False (nothing changed) when it cannot."""
    try:
        results = evaluate_node(node)
    except Exception:   # the evaluator lacks it or rejects it: the compiled kernel computes it
        return False
    if len(results) != len(node.outputs):
        return False
    arrays = []
    for v, array in zip(node.outputs, results):
        # Keep the inferred type: a fold must never change what readers see.
        if dt.from_numpy(array.dtype) is not v.type.dtype or array.shape != v.type.shape:
            return False
        arrays.append(np.asarray(array, order="C"))
    for v, array in zip(node.outputs, arrays):
        v.const = array
        v.producer = None
    return True
