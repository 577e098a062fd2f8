"""Compile-time evaluation of a node whose inputs are all constants (constant folding).

The ONNX reference evaluator computes it: folding happens once at compile time, never when
the compiled model runs, and it covers every op of the standard, supported by Ember or not.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

from ember.graph.ir import Node


def node_proto(node: Node) -> onnx.NodeProto:
    """`node` as an ONNX NodeProto whose inputs are named i0.. ("" when omitted), outputs o0.."""
    inputs = [f"i{k}" if v is not None else "" for k, v in enumerate(node.inputs)]
    outputs = [f"o{k}" for k in range(len(node.outputs))]
    proto = helper.make_node(node.op, inputs, outputs, domain=node.domain)
    proto.attribute.extend(make_attr(k, v) for k, v in node.attrs.items() if not k.startswith("__"))
    return proto


def make_attr(name: str, value: Any) -> AttributeProto:
    if isinstance(value, np.ndarray):
        value = numpy_helper.from_array(value)
    return helper.make_attribute(name, value)


def evaluate_node(node: Node) -> list[np.ndarray]:
    """Outputs of `node` computed from its constant inputs (omitted inputs stay omitted)."""
    from onnx.reference import ReferenceEvaluator

    proto = node_proto(node)
    feeds = {name: v.const for name, v in zip(proto.input, node.inputs) if v is not None}
    graph = helper.make_graph(
        [proto], "fold",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in feeds.items()],
        [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in proto.output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(node.domain, node.opset)])
    results = ReferenceEvaluator(model).run(None, feeds)
    return [np.asarray(r, order="C") for r in results]   # (ascontiguousarray makes 0-d 1-d)


def static_output_bytes(node: Node) -> int | None:
    """The bytes `node`'s outputs will take, by ONNX shape inference over its constant inputs;
    None when that cannot be known without computing them."""
    try:
        schema = onnx.defs.get_schema(node.op, node.opset, node.domain)
        proto = node_proto(node)
        present = [(n, v) for n, v in zip(proto.input, node.inputs) if v is not None]
        types = {n: helper.make_tensor_type_proto(v.type.dtype.onnx, v.type.shape)
                 for n, v in present}
        data = {n: numpy_helper.from_array(v.const, n) for n, v in present}
        inferred = onnx.shape_inference.infer_node_outputs(schema, proto, types, data)
    except Exception:      # no schema, or inference refuses: unknown
        return None
    total = 0
    for name in proto.output:
        tensor = inferred[name].tensor_type if name in inferred else None
        if tensor is None or not tensor.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if None in dims:
            return None
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
        except Exception:
            itemsize = 8
        total += math.prod(dims) * itemsize
    return total
