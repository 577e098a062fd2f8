"""Expand an op Ember has no kernel for into the ONNX function that defines it.

Many ONNX ops (Attention, RMSNormalization, MeanVarianceNormalization, Range, ...) are
specified by a function body over simpler ops. When Ember has no OpDef for such an op, the
importer replaces the node by that body, so it compiles as long as the simpler ops do.
"""
from __future__ import annotations

from typing import Any

import onnx
from onnx import AttributeProto, helper

from ember.graph.evaluate import make_attr, node_proto
from ember.graph.ir import Node, TensorType


def function_body(node: Node, input_types: list[TensorType | None]) -> onnx.FunctionProto | None:
    """The function defining `node` at its opset, or None when the op has none."""
    try:
        schema = onnx.defs.get_schema(node.op, node.opset, node.domain)
    except onnx.defs.SchemaError:
        return None
    if schema.has_function:
        return schema.function_body
    if not schema.has_context_dependent_function:
        return None
    proto = node_proto(node)
    types = [helper.make_tensor_type_proto(t.dtype.onnx, t.shape).SerializeToString()
             for t in input_types if t is not None]
    try:
        body = schema.get_context_dependent_function(proto.SerializeToString(), types)
    except Exception:   # the schema refuses this context: leave the op unsupported
        return None
    fn = onnx.FunctionProto()
    fn.ParseFromString(body)
    return fn if fn.node else None


def bound_nodes(fn: onnx.FunctionProto, attrs: dict[str, Any]) -> list[onnx.NodeProto]:
    """The body's nodes with attribute references (`ref_attr_name`) replaced by the caller's
    attribute values, or by the function's defaults, or dropped when neither exists."""
    defaults = {a.name: a for a in fn.attribute_proto}
    out = []
    for n in fn.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        del copy.attribute[:]
        for a in n.attribute:
            if not a.ref_attr_name:
                copy.attribute.append(a)
            elif a.ref_attr_name in attrs and attrs[a.ref_attr_name] is not None:
                copy.attribute.append(make_attr(a.name, attrs[a.ref_attr_name]))
            elif a.ref_attr_name in defaults:
                resolved = AttributeProto()
                resolved.CopyFrom(defaults[a.ref_attr_name])
                resolved.name = a.name
                copy.attribute.append(resolved)
        out.append(copy)
    return out


def function_opsets(fn: onnx.FunctionProto) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): o.version for o in fn.opset_import}
