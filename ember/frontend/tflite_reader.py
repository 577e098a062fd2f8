"""Read a .tflite flatbuffer into plain Python objects, checking its structure.

The flatbuffer is untrusted: the `tflite` package's generated readers follow its offsets
blindly, so everything is read here once, inside one guard, into small dataclasses whose
indices are all checked. The converter (tflite.py) then never touches the flatbuffer.
"""
from __future__ import annotations

import inspect
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from ember.errors import ModelFormatError

#: the file identifier TFLite flatbuffers carry at bytes 4..8
IDENTIFIER = b"TFL3"
_CUSTOM = 32            # BuiltinOperator.CUSTOM

#: TensorType code -> (name, numpy dtype or None when Ember has no such element type)
TENSOR_TYPES: dict[int, tuple[str, np.dtype | None]] = {
    code: (name, np.dtype(np_type) if np_type else None) for code, name, np_type in (
        (0, "FLOAT32", "<f4"), (1, "FLOAT16", "<f2"), (2, "INT32", "<i4"), (3, "UINT8", "u1"),
        (4, "INT64", "<i8"), (5, "STRING", None), (6, "BOOL", "?"), (7, "INT16", "<i2"),
        (8, "COMPLEX64", None), (9, "INT8", "i1"), (10, "FLOAT64", "<f8"),
        (11, "COMPLEX128", None), (12, "UINT64", "<u8"), (13, "RESOURCE", None),
        (14, "VARIANT", None), (15, "UINT32", "<u4"), (16, "UINT16", "<u2"), (17, "INT4", None),
        (18, "BFLOAT16", None))}


@dataclass(frozen=True)
class Quantization:
    scale: np.ndarray            # float32, one per tensor or per channel
    zero_point: np.ndarray       # int64, same length as scale (or empty)
    dimension: int               # the channel axis for per-channel parameters


@dataclass
class TflTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    type_code: int
    data: np.ndarray | None      # constant contents, shaped; None for a run-time tensor
    quantization: Quantization | None
    is_variable: bool
    sparse: bool

    @property
    def type_name(self) -> str:
        return TENSOR_TYPES.get(self.type_code, (f"<unknown type {self.type_code}>", None))[0]

    @property
    def dtype(self) -> np.dtype | None:
        return TENSOR_TYPES.get(self.type_code, ("", None))[1]

    def describe(self) -> str:
        return f"tensor {self.index} ({self.type_name}{list(self.shape)})"


@dataclass
class TflOperator:
    index: int
    opcode: str                  # builtin name (CONV_2D), or CUSTOM(<name>)
    inputs: list[int]            # tensor indices; -1 for an omitted optional input
    outputs: list[int]
    options_type: str            # BuiltinOptions name ("Conv2DOptions"), "NONE" when absent
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TflModel:
    version: int
    tensors: list[TflTensor]
    operators: list[TflOperator]
    inputs: list[int]
    outputs: list[int]
    subgraphs: int


def is_tflite(data: bytes) -> bool:
    return len(data) >= 8 and data[4:8] == IDENTIFIER


def read_model(data: bytes) -> TflModel:
    """Parse and check a .tflite file's bytes (subgraph 0, the model's entry point)."""
    if not is_tflite(data):
        raise ModelFormatError("not a TFLite model: no 'TFL3' identifier at bytes 4..8 "
                               "(empty, truncated or another format?)")
    reader = _Reader(bytes(data))
    try:
        return reader.read()
    except ModelFormatError:
        raise
    except (struct.error, IndexError, ValueError, TypeError, OverflowError, AttributeError) as e:
        # The generated readers followed an offset outside the file: a corrupt flatbuffer.
        raise ModelFormatError(f"not a valid TFLite flatbuffer ({e.__class__.__name__} while "
                               f"reading {reader.where}); the file may be truncated or "
                               "corrupt") from None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.where = "the model header"

    def count(self, n: int, what: str) -> int:
        """A vector length read from the file; no vector holds more entries than bytes."""
        if not 0 <= n <= len(self.data):
            raise ModelFormatError(f"{what}: length {n} is impossible in a {len(self.data)}-byte "
                                   "file (a corrupt flatbuffer)")
        return n

    def read(self) -> TflModel:
        model = tflite.Model.GetRootAs(self.data, 0)
        subgraphs = self.count(model.SubgraphsLength(), "subgraphs")
        if subgraphs == 0:
            raise ModelFormatError("the model has no subgraph")
        self.where = "the operator codes"
        opcodes = [self.opcode(model.OperatorCodes(j))
                   for j in range(self.count(model.OperatorCodesLength(), "operator codes"))]
        self.where = "the buffer table"
        buffers = [model.Buffers(j) for j in range(self.count(model.BuffersLength(), "buffers"))]
        graph = model.Subgraphs(0)
        n_tensors = self.count(graph.TensorsLength(), "tensors")
        tensors = []
        for j in range(n_tensors):
            self.where = f"tensor {j}"
            tensors.append(self.tensor(j, graph.Tensors(j), buffers))
        operators = []
        for j in range(self.count(graph.OperatorsLength(), "operators")):
            self.where = f"operator {j}"
            operators.append(self.operator(j, graph.Operators(j), opcodes, n_tensors))
        self.where = "the subgraph's inputs and outputs"
        inputs = self.indices(graph.InputsAsNumpy(), n_tensors, "graph input")
        outputs = self.indices(graph.OutputsAsNumpy(), n_tensors, "graph output")
        return TflModel(model.Version(), tensors, operators, inputs, outputs, subgraphs)

    def opcode(self, code: "tflite.OperatorCode") -> str:
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == _CUSTOM:
            name = (code.CustomCode() or b"").decode("utf-8", errors="replace")
            return f"CUSTOM({name})"
        return BUILTIN_OPCODE2NAME.get(builtin, f"<unknown builtin operator {builtin}>")

    def indices(self, array: Any, n_tensors: int, what: str, optional: bool = False) -> list[int]:
        """Tensor indices from an int32 vector (the readers return 0 for an absent one)."""
        values = [] if isinstance(array, int) else [int(i) for i in array]
        for i in values:
            if not (0 <= i < n_tensors or (optional and i == -1)):
                raise ModelFormatError(f"{self.where}: {what} tensor index {i} is out of range "
                                       f"(the subgraph has {n_tensors} tensors)")
        return values

    def tensor(self, index: int, t: "tflite.Tensor", buffers: list) -> TflTensor:
        name = (t.Name() or b"").decode("utf-8", errors="replace")
        shape = t.ShapeAsNumpy()
        shape = () if isinstance(shape, int) else tuple(int(d) for d in shape)
        tensor = TflTensor(index, name, shape, t.Type(), None, self.quantization(t.Quantization()),
                           t.IsVariable(), t.Sparsity() is not None)
        if any(d < 0 for d in shape):
            raise ModelFormatError(f"{tensor.describe()}: negative dimension in its shape")
        b = t.Buffer()
        if not 0 <= b < max(len(buffers), 1):
            raise ModelFormatError(f"{tensor.describe()}: buffer index {b} is out of range "
                                   f"(the model has {len(buffers)} buffers)")
        raw = self.buffer_bytes(buffers[b]) if buffers else b""
        if raw and not tensor.sparse:
            tensor.data = self.decode(tensor, raw, b)
        return tensor

    def buffer_bytes(self, buf: "tflite.Buffer") -> bytes:
        offset, size = buf.Offset(), buf.Size()
        if offset > 1:   # models over 2 GB keep tensor data after the flatbuffer
            if offset + size > len(self.data):
                raise ModelFormatError(f"{self.where}: its data ({size} bytes at offset {offset}) "
                                       "lies past the end of the file")
            return self.data[offset:offset + size]
        n = self.count(buf.DataLength(), f"{self.where}: buffer")
        return buf.DataAsNumpy().tobytes() if n else b""

    def decode(self, tensor: TflTensor, raw: bytes, b: int) -> np.ndarray | None:
        dtype = tensor.dtype
        if dtype is None:
            return None        # the converter reports the unsupported element type
        need = math.prod(tensor.shape) * dtype.itemsize
        if len(raw) != need:
            raise ModelFormatError(f"{tensor.describe()}: buffer {b} holds {len(raw)} bytes, "
                                   f"but its shape and type need {need}")
        return np.frombuffer(raw, dtype).reshape(tensor.shape).astype(dtype.newbyteorder("="))

    def quantization(self, q: "tflite.QuantizationParameters | None") -> Quantization | None:
        if q is None or q.ScaleLength() == 0:
            return None      # float models often carry an empty table (or min/max only)
        self.count(q.ScaleLength(), f"{self.where}: quantization scales")
        zero = q.ZeroPointAsNumpy()
        zero = np.zeros(0, np.int64) if isinstance(zero, int) else zero.astype(np.int64)
        return Quantization(q.ScaleAsNumpy().astype(np.float32), zero, q.QuantizedDimension())

    def operator(self, index: int, op: "tflite.Operator", opcodes: list[str],
                 n_tensors: int) -> TflOperator:
        k = op.OpcodeIndex()
        if not 0 <= k < len(opcodes):
            raise ModelFormatError(f"operator {index}: opcode index {k} is out of range "
                                   f"(the model has {len(opcodes)} operator codes)")
        self.count(op.InputsLength(), f"operator {index}: inputs")
        self.count(op.OutputsLength(), f"operator {index}: outputs")
        inputs = self.indices(op.InputsAsNumpy(), n_tensors, "input", optional=True)
        outputs = self.indices(op.OutputsAsNumpy(), n_tensors, "output")
        kind, options = read_options(op)
        return TflOperator(index, opcodes[k], inputs, outputs, kind, options)


_OPTION_NAMES = {v: k for k, v in vars(tflite.BuiltinOptions).items() if not k.startswith("_")}
_SKIP = ("Init", "GetRootAs")


def read_options(op: "tflite.Operator") -> tuple[str, dict[str, Any]]:
    """The operator's builtin options as {FieldName: value}: every scalar field, and vectors
    as lists."""
    kind = _OPTION_NAMES.get(op.BuiltinOptionsType(), "NONE")
    table = op.BuiltinOptions()
    return kind, _fields(kind, table.Bytes, table.Pos) if table is not None else {}


def default_options(kind: str) -> dict[str, Any]:
    """The fields of an absent options table: the schema's defaults, as the runtime reads them."""
    return _fields(kind, _EMPTY_TABLE, flatbuffers.encode.Get(flatbuffers.packer.uoffset,
                                                              _EMPTY_TABLE, 0))


def _fields(kind: str, data: bytes, pos: int) -> dict[str, Any]:
    cls = getattr(tflite, kind, None)
    if cls is None:
        return {}
    obj = cls()
    obj.Init(data, pos)
    options: dict[str, Any] = {}
    for name, method in inspect.getmembers(cls, inspect.isfunction):
        if name.startswith(_SKIP) or name.endswith(("Length", "IsNone", "AsNumpy")):
            continue
        if hasattr(cls, name + "AsNumpy"):
            array = getattr(obj, name + "AsNumpy")()
            options[name] = [] if isinstance(array, int) else array.tolist()
        elif len(inspect.signature(method).parameters) == 1:
            options[name] = getattr(obj, name)()
    return options


def _empty_table() -> bytes:
    """A flatbuffer holding one table with no fields: every accessor returns its default."""
    b = flatbuffers.Builder(16)
    b.StartObject(0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


_EMPTY_TABLE = _empty_table()
