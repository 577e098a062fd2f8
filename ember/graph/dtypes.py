"""Element types: one table mapping ONNX element types to numpy and C types."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto


@dataclass(frozen=True)
class DType:
    name: str          # short stable name used in printed IR: f32, i64, bool ...
    onnx: int          # TensorProto.DataType value
    numpy: np.dtype
    c: str             # C type name in generated code

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self.numpy.kind == "f"

    @property
    def is_signed(self) -> bool:
        return self.numpy.kind in "if"

    def __str__(self) -> str:
        return self.name


def _d(name: str, onnx_type: int, np_type: type, c: str) -> DType:
    return DType(name, onnx_type, np.dtype(np_type), c)


# _Float16 (C23, GCC 12+ and Clang on x86-64 and Arm64) computes in float and rounds on store.
F16 = _d("f16", TensorProto.FLOAT16, np.float16, "_Float16")
F32 = _d("f32", TensorProto.FLOAT, np.float32, "float")
F64 = _d("f64", TensorProto.DOUBLE, np.float64, "double")
I8 = _d("i8", TensorProto.INT8, np.int8, "int8_t")
I16 = _d("i16", TensorProto.INT16, np.int16, "int16_t")
I32 = _d("i32", TensorProto.INT32, np.int32, "int32_t")
I64 = _d("i64", TensorProto.INT64, np.int64, "int64_t")
U8 = _d("u8", TensorProto.UINT8, np.uint8, "uint8_t")
U16 = _d("u16", TensorProto.UINT16, np.uint16, "uint16_t")
U32 = _d("u32", TensorProto.UINT32, np.uint32, "uint32_t")
U64 = _d("u64", TensorProto.UINT64, np.uint64, "uint64_t")
BOOL = _d("bool", TensorProto.BOOL, np.bool_, "uint8_t")

ALL = (F16, F32, F64, I8, I16, I32, I64, U8, U16, U32, U64, BOOL)
FLOATS = (F16, F32, F64)
INTS = (I8, I16, I32, I64, U8, U16, U32, U64)
NUMERIC = FLOATS + INTS

_BY_ONNX = {d.onnx: d for d in ALL}
_BY_NUMPY = {d.numpy: d for d in ALL}


def from_onnx(elem_type: int) -> DType | None:
    """The DType for an ONNX element type, or None when Ember does not support it."""
    return _BY_ONNX.get(elem_type)


def from_numpy(dtype: np.dtype) -> DType | None:
    return _BY_NUMPY.get(np.dtype(dtype))


def onnx_type_name(elem_type: int) -> str:
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"<unknown element type {elem_type}>"
