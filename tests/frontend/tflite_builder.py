"""Build small .tflite models in tests with the flatbuffer builders of the `tflite` package.

    m = TflBuilder()
    x = m.tensor([1, 4, 4, 3])                       # a run-time tensor
    w = m.tensor(data=weights)                       # a constant (its buffer holds the data)
    q = m.tensor([1, 4], np.int8, quant=([0.5], [-3]))   # quantized: (scales, zero points[, axis])
    s = m.tensor([1, 8], variable=True)              # a state variable
    y = m.tensor([1, 4, 4, 8])
    m.op("CONV_2D", [x, w, -1], [y], "Conv2DOptions", Padding=0, StrideW=1, StrideH=1)
    data = m.finish(inputs=[x], outputs=[y])
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np
import tflite
from tflite.BuiltinOperator import BuiltinOperator

_TYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1, np.dtype(np.int32): 2,
          np.dtype(np.uint8): 3, np.dtype(np.int64): 4, np.dtype(np.bool_): 6,
          np.dtype(np.int16): 7, np.dtype(np.int8): 9}


@dataclass
class _Tensor:
    shape: list[int]
    type: int
    buffer: int
    name: str
    quant: tuple | None      # (scales, zero points[, quantized dimension])
    variable: bool = False   # a state tensor (an LSTM's), zero when the interpreter starts


@dataclass
class _Op:
    opcode: str
    inputs: list[int]
    outputs: list[int]
    options: str | None
    fields: dict[str, Any] = field(default_factory=dict)


class TflBuilder:
    def __init__(self) -> None:
        self.tensors: list[_Tensor] = []
        self.buffers: list[bytes] = [b""]          # buffer 0: the empty sentinel
        self.ops: list[_Op] = []

    def tensor(self, shape: list[int] | None = None, dtype: Any = np.float32,
               data: np.ndarray | None = None, name: str = "",
               quant: tuple | None = None, variable: bool = False) -> int:
        buffer = 0
        if data is not None:
            data = np.ascontiguousarray(data)
            shape, dtype = list(data.shape), data.dtype
            self.buffers.append(data.astype(data.dtype.newbyteorder("<")).tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append(_Tensor(list(shape), _TYPES[np.dtype(dtype)], buffer,
                                    name or f"t{len(self.tensors)}", quant, variable))
        return len(self.tensors) - 1

    def op(self, opcode: str, inputs: list[int], outputs: list[int], options: str | None = None,
           **fields: Any) -> None:
        self.ops.append(_Op(opcode, inputs, outputs, options, fields))

    def finish(self, inputs: list[int], outputs: list[int], version: int = 3) -> bytes:
        b = flatbuffers.Builder(1024)
        codes = sorted({op.opcode for op in self.ops})
        buffers = [self._buffer(b, data) for data in self.buffers]
        tensors = [self._tensor(b, t) for t in self.tensors]
        operators = [self._operator(b, op, codes.index(op.opcode)) for op in self.ops]
        opcodes = [self._opcode(b, name) for name in codes]
        vectors = {name: _offsets(b, items) for name, items in
                   (("Tensors", tensors), ("Operators", operators))}
        ins, outs = _ints(b, inputs), _ints(b, outputs)
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, vectors["Tensors"])
        tflite.SubGraphAddOperators(b, vectors["Operators"])
        tflite.SubGraphAddInputs(b, ins)
        tflite.SubGraphAddOutputs(b, outs)
        graph = tflite.SubGraphEnd(b)
        subgraphs, codes_vec, buffers_vec = (_offsets(b, [graph]), _offsets(b, opcodes),
                                             _offsets(b, buffers))
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, version)
        tflite.ModelAddOperatorCodes(b, codes_vec)
        tflite.ModelAddSubgraphs(b, subgraphs)
        tflite.ModelAddBuffers(b, buffers_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    # -- tables ---------------------------------------------------------------------------
    def _buffer(self, b: flatbuffers.Builder, data: bytes) -> int:
        vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if data else None
        tflite.BufferStart(b)
        if vec is not None:
            tflite.BufferAddData(b, vec)
        return tflite.BufferEnd(b)

    def _tensor(self, b: flatbuffers.Builder, t: _Tensor) -> int:
        name, shape = b.CreateString(t.name), _ints(b, t.shape)
        quant = None
        if t.quant is not None:
            scale = b.CreateNumpyVector(np.array(t.quant[0], np.float32))
            zero = b.CreateNumpyVector(np.array(t.quant[1], np.int64))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zero)
            if len(t.quant) > 2:
                tflite.QuantizationParametersAddQuantizedDimension(b, t.quant[2])
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, t.type)
        tflite.TensorAddBuffer(b, t.buffer)
        tflite.TensorAddName(b, name)
        if t.variable:
            tflite.TensorAddIsVariable(b, True)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        return tflite.TensorEnd(b)

    def _operator(self, b: flatbuffers.Builder, op: _Op, code: int) -> int:
        options = _options(b, op.options, op.fields) if op.options else None
        ins, outs = _ints(b, op.inputs), _ints(b, op.outputs)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, code)
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, op.options))
            tflite.OperatorAddBuiltinOptions(b, options)
        return tflite.OperatorEnd(b)

    def _opcode(self, b: flatbuffers.Builder, name: str) -> int:
        custom = None
        if name.startswith("CUSTOM:"):
            custom, code = b.CreateString(name[7:]), BuiltinOperator.CUSTOM
        else:
            code = getattr(BuiltinOperator, name)
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        if custom is not None:
            tflite.OperatorCodeAddCustomCode(b, custom)
        return tflite.OperatorCodeEnd(b)


def _ints(b: flatbuffers.Builder, values: list[int]) -> int:
    return b.CreateNumpyVector(np.array(values, np.int32))


def _offsets(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _options(b: flatbuffers.Builder, kind: str, fields: dict[str, Any]) -> int:
    """An options table of type `kind` (Conv2DOptions ...) with `fields` set; lists become
    int32 vectors (made first: a flatbuffer table cannot be interrupted)."""
    module = importlib.import_module(f"tflite.{kind}")
    values = {k: _ints(b, v) if isinstance(v, list) else v for k, v in fields.items()}
    getattr(module, f"{kind}Start")(b)
    for name, value in values.items():
        getattr(module, f"{kind}Add{name}")(b, value)
    return getattr(module, f"{kind}End")(b)
