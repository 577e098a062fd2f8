"""ONNX import: ModelProto -> Graph with static shapes, constants propagated.

Everything here treats the model as untrusted: structure problems raise GraphError or
ModelFormatError at once; unsupported ops, dtypes and attributes are collected over the
whole model and raised together in one UnsupportedError.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, helper, numpy_helper

from ember.errors import (EmberError, GraphError, ModelFormatError, ShapeError,
                          UnsupportedError)
from ember.graph import dtypes as dt
from ember.frontend.control_flow import ControlFlow, Subgraph
from ember.frontend.decompose import bound_nodes, function_body, function_opsets
from ember.graph.evaluate import evaluate_node, static_output_bytes
from ember.graph.ir import Graph, Node, TensorType, Value, topological_order
from ember.ops.registry import get_op

#: the largest tensor Ember will type or allocate (bytes); a bigger dim is a broken model
MAX_TENSOR_BYTES = 1 << 34
#: constants larger than this are computed at run time rather than folded into the weights
MAX_FOLD_BYTES = 1 << 26
#: ops whose value is not a function of their inputs: never folded, never merged
NONDETERMINISTIC_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli"}
_DEFAULT_DOMAINS = ("", "ai.onnx")
#: function-body expansions allowed in one model (a guard against self-referencing bodies)
_MAX_EXPANSIONS = 100_000
#: opset versions past this are corrupt (ONNX is near 25); the schema lookup takes a C int
_MAX_OPSET = 10_000


def load_model(source: "str | os.PathLike | bytes | onnx.ModelProto") -> tuple[onnx.ModelProto, str]:
    """Parse a model from a path, bytes or an in-memory ModelProto; returns it and a label."""
    if isinstance(source, onnx.ModelProto):
        return source, source.graph.name or "<ModelProto>"
    if isinstance(source, (bytes, bytearray)):
        return _parse(bytes(source), "<bytes>"), "<bytes>"
    path = Path(source)
    label = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"cannot read model file: {e.strerror}", model=label) from None
    model = _parse(data, label)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise ModelFormatError(f"cannot load external tensor data: {e}", model=label) from None
    return model, label


def _parse(data: bytes, label: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelFormatError(f"not a valid ONNX protobuf ({e.__class__.__name__}: {e}); "
                               "the file may be truncated or not an ONNX model", model=label) from None
    if not model.HasField("graph"):
        raise ModelFormatError("not an ONNX model: it has no graph (empty or truncated file?)",
                               model=label)
    _check_text(model, label)
    return model


def _check_text(model: onnx.ModelProto, label: str) -> None:
    """Names and op types must be text: protobuf hands invalid UTF-8 through as bytes."""
    g = model.graph
    texts = [g.name, *(o.domain for o in model.opset_import)]
    for n in g.node:
        texts += [n.op_type, n.domain, n.name, *n.input, *n.output, *(a.name for a in n.attribute)]
    texts += [v.name for v in (*g.input, *g.output, *g.value_info, *g.initializer)]
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ModelFormatError(f"the name {bad!r} is not valid UTF-8 text (a corrupt file?)",
                               model=label)


def import_onnx(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None,
                label: str = "<model>") -> Graph:
    try:
        return _Importer(model, dict(input_shapes or {})).run()
    except EmberError as e:
        raise e.with_model(label) from None


def default_opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    return versions[0] if versions else 1


class _Importer(ControlFlow):
    def __init__(self, model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> None:
        self.model = model
        self.g = model.graph
        self.input_shapes = input_shapes
        self.opset = default_opset(model)
        self.values: dict[str, Value] = {}
        self.problems: list[str] = []
        self.expansions = 0
        # Names an If branch may use beyond the graph's own: an If created inside a function
        # body or another branch sees that body's values (lexical scoping).
        self.scopes: dict[int, Mapping[str, Value | None]] = {}
        self.runtime_inputs: set[str] = set()

    def run(self) -> Graph:
        for o in self.model.opset_import:
            if not 0 <= o.version <= _MAX_OPSET:
                raise ModelFormatError(f"opset version {o.version} of domain "
                                       f"{o.domain or 'ai.onnx'!r} is not a valid version")
        graph = Graph(name=self.g.name)
        self._initializers()
        graph.inputs = self._inputs()
        work = self._nodes()[::-1]        # a stack: expansions are typed before what follows
        nodes: list[Node] = []
        while work:
            node = work.pop()
            expansion = self._type_node(node)
            if expansion:
                work.extend(reversed(expansion))
            else:
                nodes.append(node)
        if self.problems:
            error = UnsupportedError(f"{len(self.problems)} problem(s) stop compilation",
                                     problems=self.problems)
            error.runtime_inputs = sorted(self.runtime_inputs)
            raise error
        graph.nodes = [n for n in nodes if not all(v.is_const for v in n.outputs)]
        graph.outputs = self._outputs()
        return graph

    # -- values ---------------------------------------------------------------------------
    def _define(self, name: str, value: Value, what: str) -> None:
        if name in self.values:
            raise GraphError(f"the name {name!r} is defined twice (again by {what})")
        self.values[name] = value

    def _initializers(self) -> None:
        for init in self.g.initializer:
            self._define(init.name, self._tensor_value(init, f"initializer {init.name!r}"),
                         f"initializer {init.name!r}")
        for sparse in self.g.sparse_initializer:
            self.problems.append(f"sparse initializer {sparse.values.name!r} is not supported")

    def _tensor_value(self, tensor: onnx.TensorProto, what: str) -> Value:
        dtype = dt.from_onnx(tensor.data_type)
        dims = tuple(tensor.dims)
        check_dims(dims, dtype.itemsize if dtype else 1, what)
        if dtype is None:
            raise UnsupportedError(f"{what}: element type {dt.onnx_type_name(tensor.data_type)} "
                                   "is not supported")
        try:
            array = numpy_helper.to_array(tensor)
        except Exception as e:  # onnx raises several types for corrupt payloads
            raise ModelFormatError(f"{what}: tensor data does not match its shape "
                                   f"{list(dims)} and type ({e})") from None
        if array.shape != dims or array.dtype != dtype.numpy:
            raise ModelFormatError(f"{what}: tensor data does not match its shape {list(dims)}")
        return Value(TensorType(dtype, dims), tensor.name, np.asarray(array, order="C"))

    def _inputs(self) -> list[Value]:
        inputs = []
        known = {i.name for i in self.g.input}
        for name in self.input_shapes:
            if name not in known:
                raise ShapeError(f"input_shapes names {name!r}, which is not an input of the model "
                                 f"(inputs: {', '.join(repr(n) for n in known)})")
        listed: set[str] = set()
        for vi in self.g.input:
            if vi.name in listed:
                raise GraphError(f"graph input {vi.name!r} is listed twice")
            listed.add(vi.name)
            if vi.name in self.values:      # an initializer with a default value
                continue
            value = Value(self._input_type(vi), vi.name)
            self._define(vi.name, value, f"graph input {vi.name!r}")
            inputs.append(value)
        return inputs

    def _input_type(self, vi: onnx.ValueInfoProto) -> TensorType:
        if vi.type.WhichOneof("value") != "tensor_type":
            raise UnsupportedError(f"graph input {vi.name!r}: only tensor inputs are supported "
                                   f"(got {vi.type.WhichOneof('value')})")
        tt = vi.type.tensor_type
        dtype = dt.from_onnx(tt.elem_type)
        if dtype is None:
            raise UnsupportedError(f"graph input {vi.name!r}: element type "
                                   f"{dt.onnx_type_name(tt.elem_type)} is not supported")
        if vi.name in self.input_shapes:
            shape = self.input_shapes[vi.name]
            if tt.HasField("shape") and len(tt.shape.dim) != len(shape):
                raise ShapeError(f"input {vi.name!r} has rank {len(tt.shape.dim)} but input_shapes "
                                 f"gives {list(shape)}")
        else:
            if not tt.HasField("shape"):
                raise ShapeError(f"input {vi.name!r} has no shape; give it with input_shapes")
            shape = []
            for k, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value"):
                    shape.append(d.dim_value)
                else:
                    sym = d.dim_param or "?"
                    raise ShapeError(f"input {vi.name!r} dim {k} is symbolic ({sym!r}); bind it "
                                     f"with input_shapes, e.g. {{{vi.name!r}: (1, ...)}}")
            shape = tuple(shape)
        check_dims(shape, dtype.itemsize, f"input {vi.name!r}")
        return TensorType(dtype, tuple(shape))

    def _outputs(self) -> list[Value]:
        outs = []
        for vi in self.g.output:
            if vi.name not in self.values:
                raise GraphError(f"graph output {vi.name!r} is produced by no node, input or "
                                 "initializer")
            outs.append(self.values[vi.name])
        return outs

    # -- nodes ----------------------------------------------------------------------------
    def _nodes(self) -> list[Node]:
        nodes: list[Node] = []
        pending: list[tuple[Node, list[str]]] = []
        produced: dict[str, Node] = {}
        for proto in self.g.node:
            node = self._node(proto)
            for name in proto.output:
                if not name:
                    continue
                if name in self.values or name in produced:
                    raise GraphError(f"the name {name!r} is defined twice (again as an output)",
                                     node=proto.name, op=proto.op_type)
                produced[name] = node
            pending.append((node, list(proto.input)))
            nodes.append(node)
        available = list(self.values.values())    # graph inputs and initializers
        # Wire inputs now that every producer is known (a model may list nodes out of order).
        for node, names in pending:
            for k, name in enumerate(names):
                if not name:
                    continue
                if name in self.values:
                    node.inputs[k] = self.values[name]
                elif name in produced:
                    src = produced[name]
                    node.inputs[k] = src.outputs[src.attrs["__outnames"].index(name)]
                else:
                    raise GraphError(f"input {name!r} is produced by no node, input or initializer",
                                     node=node.name, op=node.op)
        for node in nodes:
            for name, v in zip(node.attrs.pop("__outnames"), node.outputs):
                if name:
                    self.values[name] = v
        try:
            return topological_order(nodes, available)
        except ValueError as e:
            stuck: Node = e.args[0]
            raise GraphError("the graph has a cycle through this node", node=stuck.name,
                             op=stuck.op) from None

    def _node(self, proto: onnx.NodeProto, opset: int | None = None) -> Node:
        domain = "" if proto.domain in _DEFAULT_DOMAINS else proto.domain
        if opset is None:
            opset = next((o.version for o in self.model.opset_import if (o.domain or "") == domain
                          or (domain == "" and o.domain == "ai.onnx")), 0)
        schema = _schema(proto.op_type, opset, domain)
        # An op newer than the model's opset is still compiled, so its signature is checked
        # against the op's newest schema: no OpDef should see a malformed node.
        signature = schema or _schema(proto.op_type, None, domain)
        if signature is not None:
            _check_signature(proto, signature)
        attrs = self._attrs(proto, schema)
        outputs = [Value(TensorType(dt.F32, ()), name) for name in proto.output]
        node = Node(proto.op_type, [None] * len(proto.input), outputs, attrs, proto.name,
                    opset, domain)
        node.attrs["__outnames"] = list(proto.output)
        return node

    def _attrs(self, proto: onnx.NodeProto, schema: "onnx.defs.OpSchema | None") -> dict[str, Any]:
        attrs = _defaults(schema)
        for a in proto.attribute:
            if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) or a.ref_attr_name:
                attrs[a.name] = Subgraph(a.g if a.type == AttributeProto.GRAPH else None)
            else:
                try:
                    attrs[a.name] = _attr_value(a)
                except Exception:
                    raise ModelFormatError(f"attribute {a.name!r} is malformed", node=proto.name,
                                           op=proto.op_type) from None
        return attrs

    def _expand(self, node: Node) -> list[Node] | None:
        """`node` replaced by the nodes of its ONNX function body, or None when it has none."""
        self.expansions += 1
        if self.expansions > _MAX_EXPANSIONS:
            return None
        fn = function_body(node, [v.type if v is not None else None for v in node.inputs])
        if fn is None:
            return None
        opsets = function_opsets(fn)
        env: dict[str, Value | None] = dict(zip(fn.input, node.inputs))
        return self._instantiate(node, bound_nodes(fn, node.attrs), env.get, env,
                                 dict(zip(fn.output, node.outputs)), env,
                                 lambda proto: opsets.get(proto.domain or "", node.opset))

    def _instantiate(self, outer: Node, protos: Iterable[onnx.NodeProto],
                     resolve: Callable[[str], Value | None], local: dict[str, Value | None],
                     results: dict[str, Value], scope: Mapping[str, Value | None],
                     opset_of: Callable[[onnx.NodeProto], int | None]) -> list[Node]:
        """Nodes for a body (a function or an If branch) that replaces `outer`.

        Inputs are found by `resolve`; every value the body defines is recorded in `local`;
        the body values named in `results` become the outer node's own output values, so its
        readers need no rewiring. An If inside the body sees `scope`.
        """
        nodes = []
        for proto in protos:
            inner = self._node(proto, opset_of(proto))
            inner.attrs.pop("__outnames")
            inner.name = f"{outer.name}/{proto.name or proto.op_type}"
            inner.inputs = [resolve(name) if name else None for name in proto.input]
            for k, name in enumerate(proto.output):
                if name in results and results[name].producer is outer:
                    inner.outputs[k] = results[name]
                    results[name].producer = inner
                local[name] = inner.outputs[k]
            if isinstance(inner.attrs.get("body") or inner.attrs.get("then_branch"), Subgraph):
                self.scopes[id(inner)] = scope
            nodes.append(inner)
        return nodes

    def _type_node(self, node: Node) -> list[Node] | None:
        """Infer output types; fold the node when all its inputs are constants.

        Returns the nodes to type instead when the op is expanded into its function body.
        """
        where = f"node {node.name!r} ({node.op}, opset {node.opset})"
        if any(v is not None and v.type is _UNKNOWN for v in node.inputs):
            _mark_unknown(node)       # an earlier problem already explains this node
            return
        if node.domain:
            self.problems.append(f"{where}: domain {node.domain!r} is not supported")
            return _mark_unknown(node)
        if node.op == "If" and node.input(0) is not None and node.inputs[0].is_const:
            return self.inline_branch(node, where)
        if node.op == "Scan" and node.opset >= 9:
            return self.unroll_scan(node, where)
        subgraphs = [k for k, v in node.attrs.items() if isinstance(v, Subgraph)]
        opdef = get_op(node.op)
        foldable = (node.op not in NONDETERMINISTIC_OPS and not subgraphs
                    and all(v is None or v.is_const for v in node.inputs))
        if opdef is None and not foldable and not subgraphs:
            expansion = self._expand(node)
            if expansion:
                return expansion
        if opdef is None and not foldable:
            self.problems.append(f"{where}: op {node.op} is not supported")
            return _mark_unknown(node)
        if subgraphs:
            self.problems.append(f"{where}: subgraph attributes ({', '.join(subgraphs)}) are "
                                 "not supported")
            return _mark_unknown(node)
        if opdef is not None:
            problems = opdef.check(node)
            if problems:
                self.problems.extend(f"{where}: {p}" for p in problems)
                return _mark_unknown(node)
            try:
                infer_types(node)
            except UnsupportedError as e:
                self.problems.append(f"{where}: {e.message}")
                # The graph inputs a node's parameters (shape, axes, k ...: never input 0, the
                # data) are computed from: binding their values, as the ONNX backend does
                # (ember/backend.py), may make the node static.
                self.runtime_inputs.update(_graph_inputs_behind(node.inputs[1:]))
                return _mark_unknown(node)
        if opdef is None:
            # No infer() bounded the result: where ONNX shape inference can size it, refuse a
            # constant too large to fold before the evaluator allocates it.
            size = static_output_bytes(node)
            if size is not None and size > MAX_FOLD_BYTES:
                self.problems.append(f"{where}: op {node.op} is not supported (and its constant "
                                     f"result, {size} bytes, is too large to fold)")
                return _mark_unknown(node)
        if foldable and (opdef is None or
                         all(v.type.nbytes <= MAX_FOLD_BYTES for v in node.outputs)):
            self._fold(node, where)

    def _fold(self, node: Node, where: str) -> None:
        try:
            results = evaluate_node(node)
        except Exception as e:
            if get_op(node.op) is None:
                self.problems.append(f"{where}: op {node.op} is not supported "
                                     f"(and could not be folded: {e.__class__.__name__})")
                _mark_unknown(node)
            return
        for v, array in zip(node.outputs, results):
            dtype = dt.from_numpy(array.dtype)
            if dtype is None:
                self.problems.append(f"{where}: constant of element type {array.dtype} "
                                     "is not supported")
                return _mark_unknown(node)
            v.type = TensorType(dtype, tuple(array.shape))
            v.const = array


_UNKNOWN = TensorType(dt.F32, (-1,))


def schema_defaults(op_type: str, opset: int) -> dict[str, Any]:
    """Every attribute default the ONNX schema of `op_type` (default domain) has at `opset`."""
    return _defaults(_schema(op_type, opset, ""))


def _defaults(schema: "onnx.defs.OpSchema | None") -> dict[str, Any]:
    if schema is None:
        return {}
    return {name: _attr_value(a.default_value) for name, a in schema.attributes.items()
            if a.default_value.type != AttributeProto.UNDEFINED}


def infer_types(node: Node) -> None:
    """Set the types of `node`'s outputs with its OpDef's infer(), sizes checked.

    ShapeError/UnsupportedError from infer() pass through; any other exception is a bug in
    Ember and is reported as one, naming the node.
    """
    try:
        types = get_op(node.op).infer(node)
    except EmberError:
        raise
    except Exception as e:   # a bug in Ember: say where it happened, not a bare trace
        raise EmberError(f"internal error inferring types ({e.__class__.__name__}: {e}); "
                         "please report it", node=node.name, op=node.op) from e
    for v, t in zip(node.outputs, types):
        check_dims(t.shape, t.dtype.itemsize, f"output of node {node.name!r}")
        v.type = t


def _graph_inputs_behind(values: list[Value | None]) -> set[str]:
    """Names of the graph inputs that `values` are computed from."""
    found: set[str] = set()
    seen: set[int] = set()
    stack = [v for v in values if v is not None]
    while stack:
        v = stack.pop()
        if v.id in seen or v.is_const:
            continue
        seen.add(v.id)
        if v.producer is None:
            found.add(v.name)
        else:
            stack.extend(u for u in v.producer.inputs if u is not None)
    return found


def _mark_unknown(node: Node) -> None:
    for v in node.outputs:
        v.type = _UNKNOWN


def _schema(op_type: str, opset: int | None, domain: str) -> "onnx.defs.OpSchema | None":
    """The op's schema at `opset` (the newest one when opset is None); None when it has none."""
    try:
        if opset is None:
            return onnx.defs.get_schema(op_type, domain)
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None


def _check_signature(proto: onnx.NodeProto, schema: onnx.defs.OpSchema) -> None:
    """Input/output counts, required inputs and attribute types, as the op's schema says.

    Checked for every op with a schema, so no OpDef has to guard against a malformed node.
    """
    def bad(message: str) -> GraphError:
        return GraphError(message, node=proto.name, op=proto.op_type)
    for kind, n, lo, hi in (("input", len(proto.input), schema.min_input, schema.max_input),
                            ("output", len(proto.output), schema.min_output, schema.max_output)):
        if not lo <= n <= hi:
            raise bad(f"has {n} {kind}(s); {proto.op_type} takes {_count_range(lo, hi)}")
    optional = onnx.defs.OpSchema.FormalParameterOption.Optional
    params = list(schema.inputs)
    for k, name in enumerate(proto.input):
        # A variadic last parameter takes every remaining input; none of them may be omitted.
        param = params[min(k, len(params) - 1)] if params else None
        if not name and param is not None and param.option != optional:
            raise bad(f"required input {k} ({param.name}) is empty")
    for a in proto.attribute:
        spec = schema.attributes.get(a.name)
        if spec is not None and not a.ref_attr_name and a.type != int(spec.type):
            raise bad(f"attribute {a.name!r} has type {_attr_type_name(a.type)}, "
                      f"but {proto.op_type} expects {_attr_type_name(int(spec.type))}")


def _count_range(lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    return f"at least {lo}" if hi >= 2**31 - 1 else f"{lo} to {hi}"


def _attr_type_name(t: int) -> str:
    try:
        return AttributeProto.AttributeType.Name(t)
    except ValueError:
        return f"<unknown attribute type {t}>"


def _attr_value(a: AttributeProto) -> Any:
    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in value]
    return value


def check_dims(shape: tuple[int, ...], itemsize: int, what: str) -> None:
    for k, d in enumerate(shape):
        if d < 0:
            raise ShapeError(f"{what}: dim {k} is negative ({d})")
    if math.prod(shape) * itemsize > MAX_TENSOR_BYTES:
        raise ShapeError(f"{what}: shape {list(shape)} needs {math.prod(shape) * itemsize} bytes, "
                         f"more than the {MAX_TENSOR_BYTES} Ember allows for one tensor")
