"""BitCast (opset 26) against onnxruntime: every byte pattern survives, the shape is kept."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import ember
from conftest import check_node, make_model
from ember.errors import ShapeError

# Same-width pairs, both directions where the types differ in kind.
PAIRS = [
    (np.float32, np.int32), (np.int32, np.float32), (np.float32, np.uint32),
    (np.uint32, np.int32), (np.float64, np.int64), (np.int64, np.float64),
    (np.uint64, np.float64), (np.int16, np.uint16), (np.uint16, np.float16),
    (np.float16, np.int16), (np.int8, np.uint8), (np.uint8, np.int8), (np.bool_, np.uint8),
]


def random_bits(shape, dtype, rng):
    """Random bytes viewed as `dtype` (NaNs and infinities included for floats)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    raw = rng.integers(0, 256, (*shape, dtype.itemsize), dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def bitcast(x, to):
    # onnxruntime has no BitCast kernel from bool.
    oracle = "reference" if x.dtype == np.bool_ else "ort"
    return check_node("BitCast", {"x": x}, {"to": helper.np_dtype_to_tensor_dtype(np.dtype(to))},
                      opset=26, oracle=oracle)[0]


@pytest.mark.parametrize("src,dst", PAIRS, ids=lambda t: np.dtype(t).name)
def test_bitcast_pairs(src, dst, rng):
    x = random_bits((3, 5, 7), src, rng)
    got = bitcast(x, dst)
    assert got.dtype == np.dtype(dst)
    np.testing.assert_array_equal(got.view(np.uint8), x.view(np.uint8))   # bit for bit


@pytest.mark.parametrize("shape", [(), (1,), (0, 4), (2, 1, 3)])
def test_bitcast_shapes(shape, rng):
    x = random_bits(shape, np.float32, rng)
    got = bitcast(x, np.uint32)
    assert got.shape == shape
    np.testing.assert_array_equal(got, x.view(np.uint32))


def test_bitcast_to_bool_reads_nonzero_as_true():
    x = np.array([0, 1, 2, 255], np.uint8)
    got = check_node("BitCast", {"x": x}, {"to": TensorProto.BOOL}, opset=26,
                     oracle="reference")[0]
    np.testing.assert_array_equal(got.view(np.uint8), [0, 1, 1, 1])


@pytest.mark.parametrize("to", [TensorProto.INT64, TensorProto.UINT8])
def test_bitcast_width_mismatch_is_rejected(to):
    node = helper.make_node("BitCast", ["x"], ["y"], to=to)
    model = make_model([node], {"x": np.zeros((2, 3), np.float32)}, ["y"], opset=26)
    with pytest.raises(ShapeError, match="widths must be equal"):
        ember.compile(model)
