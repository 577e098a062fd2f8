"""TFLite import: a .tflite flatbuffer -> Graph of Ember's ONNX-style ops, static shapes.

The flatbuffer is read and checked by tflite_reader.py; each builtin operator is converted by
its function in tflite_ops.py into ONNX-style nodes, typed as they are made. TFLite is NHWC:
convolutions and pools run in NCHW between a Transpose pair, which the cancel-transposes pass
removes between consecutive layers.

Like the ONNX importer, structure problems (bad indices, buffers, shapes) raise at once,
naming the operator; unsupported ops and features are gathered over the whole model and
raised together in one UnsupportedError. An operator whose run-time tensors are quantized
(int8 models) is converted by its function in tflite_qops.py into Ember's TFLite-numerics ops,
which keep NHWC and compute bit-exact with TFLite's reference kernels; an op with no such
converter is listed as unsupported. A "hybrid" CONV_2D (int8 weights, float activations) is a
float operator, which tflite_ops.py reproduces as TFLite computes it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ember.errors import EmberError, GraphError, ModelFormatError, ShapeError, UnsupportedError
from ember.frontend.onnx import check_dims, infer_types, schema_defaults
from ember.frontend.tflite_reader import (TflModel, TflOperator, TflTensor, default_options,
                                          is_tflite, read_model)
from ember.graph import dtypes as dt
from ember.graph.ir import Graph, Node, TensorType, Value, const_value
from ember.ops.registry import get_op

#: the ONNX opset the converted nodes follow (attribute defaults, inputs vs. attributes)
OPSET = 18


def is_tflite_source(source: Any) -> bool:
    """True for .tflite bytes or a path to a .tflite file (by its identifier, else suffix)."""
    if isinstance(source, (bytes, bytearray)):
        return is_tflite(bytes(source))
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = Path(source)
    try:
        with path.open("rb") as f:
            return is_tflite(f.read(8)) or path.suffix.lower() == ".tflite"
    except OSError:
        return path.suffix.lower() == ".tflite"


def load_tflite(source: "str | os.PathLike | bytes") -> tuple[bytes, str]:
    """The file's bytes and a label for messages."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "<bytes>"
    try:
        return Path(source).read_bytes(), str(source)
    except OSError as e:
        raise ModelFormatError(f"cannot read model file: {e.strerror}", model=str(source)) from None


def import_tflite(data: bytes, input_shapes: dict[str, tuple[int, ...]] | None = None,
                  label: str = "<model>", litert_numerics: bool = False) -> Graph:
    """int8 operators compute as TFLite Micro's kernels do, or with `litert_numerics` as
    ai-edge-litert's reference kernels do (its FULLY_CONNECTED rounds once; see ops/quant.py)."""
    try:
        return _Converter(read_model(data), dict(input_shapes or {}), litert_numerics).run()
    except EmberError as e:
        raise e.with_model(label) from None


class OpSkipped(Exception):
    """A converter met an input an earlier problem left untyped: skip it quietly."""


class _Converter:
    def __init__(self, model: TflModel, input_shapes: dict[str, tuple[int, ...]],
                 litert_numerics: bool = False) -> None:
        # The op tables import this module.
        from ember.frontend.tflite_ops import CONVERTERS
        from ember.frontend.tflite_qops import QUANT_CONVERTERS
        self.converters: dict[str, Callable[[OpContext], None]] = CONVERTERS
        self.quant_converters: dict[str, Callable[[OpContext], None]] = QUANT_CONVERTERS
        self.model = model
        self.input_shapes = input_shapes
        self.litert_numerics = litert_numerics
        self.values: dict[int, Value] = {}          # tensor index -> its Value once known
        self.unknown: set[int] = set()              # tensors an earlier problem left untyped
        self.nodes: list[Node] = []
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def run(self) -> Graph:
        m = self.model
        if m.version != 3:
            raise ModelFormatError(f"TFLite schema version {m.version} is not supported (3 is)")
        graph = Graph(inputs=self._inputs())
        for op in m.operators:
            self._convert(op)
        if self.problems:
            raise UnsupportedError(f"{len(self.problems)} problem(s) stop compilation",
                                   problems=self.problems)
        graph.nodes = self.nodes
        graph.outputs = [self.value(i, "a graph output") for i in m.outputs]
        return graph

    def _inputs(self) -> list[Value]:
        tensors = [self.model.tensors[i] for i in self.model.inputs]
        names = [t.name for t in tensors]
        for name in self.input_shapes:
            if name not in names:
                raise ShapeError(f"input_shapes names {name!r}, which is not an input of the "
                                 f"model (inputs: {', '.join(repr(n) for n in names)})")
        inputs = []
        for t in tensors:
            if t.index in self.values:
                raise GraphError(f"{t.describe()} is listed twice as a graph input")
            dtype = _dtype(t)
            if dtype is None:
                self.problem(f"graph input {t.describe()}: element type is not supported")
                self.unknown.add(t.index)
                continue
            shape = self.input_shapes.get(t.name, t.shape)
            if len(shape) != len(t.shape):
                raise ShapeError(f"input {t.name!r} has rank {len(t.shape)} but input_shapes "
                                 f"gives {list(shape)}")
            check_dims(shape, dtype.itemsize, f"input {t.name!r}")
            value = Value(TensorType(dtype, tuple(shape)), t.name)
            self.values[t.index] = value
            inputs.append(value)
        return inputs

    def value(self, index: int, reader: str) -> Value:
        """The Value of tensor `index`: defined earlier, or a constant from its buffer."""
        if index in self.values:
            return self.values[index]
        if index in self.unknown:
            raise OpSkipped()
        t = self.model.tensors[index]
        if t.data is None or t.is_variable:
            if t.is_variable:
                raise UnsupportedError(f"{t.describe()} is a variable (stateful models are not "
                                       "supported)")
            if t.sparse:
                raise UnsupportedError(f"{t.describe()} is sparse (not supported)")
            if _dtype(t) is None:
                raise UnsupportedError(f"{t.describe()}: element type {t.type_name} is not "
                                       "supported")
            raise GraphError(f"{reader} reads {t.describe()}, which no earlier operator "
                             "produces and which is neither a graph input nor a constant")
        value = const_value(t.data, _dtype(t), t.name)
        self.values[index] = value
        return value

    def _convert(self, op: TflOperator) -> None:
        where = f"operator {op.index} ({op.opcode})"
        ctx = OpContext(self, op)
        quantized = ctx.quantized()
        convert = (self.quant_converters if quantized else self.converters).get(op.opcode)
        try:
            if convert is None:
                raise UnsupportedError("op is not supported" + (" on quantized tensors"
                                                                 if quantized else ""))
            for k in op.outputs:
                if k in self.values or k in self.unknown:
                    raise GraphError(f"output {self.model.tensors[k].describe()} is already "
                                     "defined by an earlier operator or input")
            convert(ctx)
            unset = [k for k in op.outputs if k not in self.values]
            if unset:
                raise EmberError(f"internal error: output tensor {unset[0]} was not converted; "
                                 "please report it")
            return
        except OpSkipped:
            pass
        except UnsupportedError as e:
            self.problem(f"{where}: {e.message}")
        except EmberError as e:
            if e.node is not None:
                raise
            raise type(e)(e.message, node=f"operator {op.index}", op=op.opcode) from None
        self.nodes[len(self.nodes) - ctx.emitted:] = []   # drop a half-converted operator
        self.unknown.update(op.outputs)


def _dtype(t: TflTensor) -> dt.DType | None:
    return None if t.dtype is None else dt.from_numpy(t.dtype.newbyteorder("="))


class OpContext:
    """What a converter sees of one operator: its inputs, options, and node building."""

    def __init__(self, conv: _Converter, op: TflOperator) -> None:
        self.conv = conv
        self.op = op
        self.emitted = 0

    # -- inputs ---------------------------------------------------------------------------
    def quantized(self) -> bool:
        """Whether a run-time tensor the operator reads or writes carries quantization
        parameters: the operator is then an integer one."""
        tensors = self.conv.model.tensors
        return any(k >= 0 and tensors[k].quantization is not None and tensors[k].data is None
                   for k in (*self.op.inputs, *self.op.outputs))

    def tensor(self, k: int) -> TflTensor | None:
        """The k-th input's tensor; None when omitted (-1) or past the end."""
        if k >= len(self.op.inputs) or self.op.inputs[k] < 0:
            return None
        return self.conv.model.tensors[self.op.inputs[k]]

    def input(self, k: int) -> Value:
        t = self.tensor(k)
        if t is None:
            raise ModelFormatError(f"required input {k} is missing")
        return self.conv.value(t.index, f"input {k}")

    def optional(self, k: int) -> Value | None:
        t = self.tensor(k)
        return None if t is None else self.conv.value(t.index, f"input {k}")

    def const(self, k: int, what: str) -> np.ndarray:
        """Input k's value, which must be known at compile time."""
        t = self.tensor(k)
        if t is None:
            raise ModelFormatError(f"required input {k} ({what}) is missing")
        v = self.input(k)
        if not v.is_const:
            raise UnsupportedError(f"{what} (input {k}) computed at run time is not supported")
        return v.const

    def ints(self, k: int, what: str) -> list[int]:
        array = self.const(k, what)
        if array.dtype.kind not in "iu":
            raise ModelFormatError(f"{what} (input {k}) must be integers, not {array.dtype}")
        return [int(i) for i in array.reshape(-1)]

    def options(self, kind: str) -> dict[str, Any]:
        if self.op.options_type == "NONE":
            return default_options(kind)
        if self.op.options_type != kind:
            raise ModelFormatError(f"has options of type {self.op.options_type}; "
                                   f"{self.op.opcode} takes {kind}")
        return self.op.options

    def out_tensor(self, k: int = 0) -> TflTensor:
        if k >= len(self.op.outputs):
            raise ModelFormatError(f"has {len(self.op.outputs)} output(s); output {k} is needed")
        return self.conv.model.tensors[self.op.outputs[k]]

    def arity(self, lo: int, hi: int | None = None) -> None:
        n, hi = len(self.op.inputs), lo if hi is None else hi
        if not lo <= n <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise ModelFormatError(f"has {n} input(s); {self.op.opcode} takes {want}")

    # -- building -------------------------------------------------------------------------
    def emit(self, op_type: str, inputs: list[Value | None], n_outputs: int = 1,
             **attrs: Any) -> Value:
        """Add one typed node (attributes over the schema defaults); its first output."""
        attrs = {**schema_defaults(op_type, OPSET), **attrs}
        while inputs and inputs[-1] is None:      # omitted trailing optional inputs
            inputs = inputs[:-1]
        outputs = [Value(TensorType(dt.F32, ())) for _ in range(n_outputs)]
        node = Node(op_type, inputs, outputs, attrs, f"operator {self.op.index} "
                    f"({self.op.opcode})", OPSET)
        problems = get_op(op_type).check(node)
        if problems:
            raise UnsupportedError(f"{op_type}: {'; '.join(problems)}")
        try:
            infer_types(node)
        except EmberError as e:
            raise type(e)(f"{op_type}: {e.message}") from None
        self.conv.nodes.append(node)
        self.emitted += 1
        return outputs[0]

    def constant(self, array: Any, dtype: dt.DType) -> Value:
        return const_value(np.asarray(array), dtype)

    def bind(self, value: Value, k: int = 0) -> None:
        """Output k of the operator is `value`; its type must be the one the model declares."""
        t = self.out_tensor(k)
        declared = _dtype(t)
        if declared != value.type.dtype or (value.type.shape != t.shape
                                            and not self.conv.input_shapes):
            raise ShapeError(f"output {k} comes out as {value.type}, but the model declares "
                             f"{t.describe()}")
        if not value.is_const and not value.name:
            value.name = t.name
        self.conv.values[t.index] = value

    def fail(self, message: str) -> ShapeError:
        return ShapeError(message)
