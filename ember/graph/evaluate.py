"""Compile-time evaluation of a node whose inputs are all constants (constant folding).

The ONNX reference evaluator computes it: folding happens once at compile time, never when
the compiled model runs, and it covers every op of the standard, supported by Ember or not.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ember.graph.ir import Node


def evaluate_node(node: Node) -> list[np.ndarray]:
    """Outputs of `node` computed from its constant inputs (omitted inputs stay omitted)."""
    from onnx.reference import ReferenceEvaluator

    in_names = [f"i{k}" if v is not None else "" for k, v in enumerate(node.inputs)]
    out_names = [f"o{k}" for k in range(len(node.outputs))]
    attrs = {k: _attr(v) for k, v in node.attrs.items()}
    proto = helper.make_node(node.op, in_names, out_names, domain=node.domain, **attrs)
    feeds = {name: v.const for name, v in zip(in_names, node.inputs) if v is not None}
    graph = helper.make_graph(
        [proto], "fold",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in feeds.items()],
        [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in out_names])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(node.domain, node.opset)])
    results = ReferenceEvaluator(model).run(None, feeds)
    return [np.asarray(r, order="C") for r in results]   # (ascontiguousarray makes 0-d 1-d)


def _attr(value):
    if isinstance(value, np.ndarray):
        return numpy_helper.from_array(value)
    return value
