"""ONNX quantization ops against onnxruntime: QuantizeLinear / DequantizeLinear (per tensor,
per axis, blocked), DynamicQuantizeLinear, ConvInteger, QLinearConv, MatMulInteger,
QLinearMatMul; saturation, ties to even, zero points, empty tensors; and a QDQ model."""
import numpy as np
import pytest
from onnx import helper

from conftest import check_model, check_node, make_model

F32 = np.float32


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16])
@pytest.mark.parametrize("opset", [10, 13, 21])
def test_quantize_per_tensor(dtype, opset, rng):
    if opset < 21 and dtype in (np.int16, np.uint16):
        pytest.skip("16-bit zero points arrive with opset 21")
    x = rng.uniform(-300, 300, (3, 7)).astype(F32)
    x.flat[:6] = [0.5, 1.5, 2.5, -0.5, -1.5, 1e9]       # ties to even, saturation
    zp = np.array(3 if dtype != np.uint16 else 1000, dtype)
    check_node("QuantizeLinear", {"x": x}, initializers={"s": np.array(0.5, F32), "z": zp},
               opset=opset)


def test_quantize_default_uint8_and_int32_input(rng):
    check_node("QuantizeLinear", {"x": rng.uniform(-5, 300, (10,)).astype(F32)},
               initializers={"s": np.array(1.25, F32)})
    # (onnxruntime has no int32 QuantizeLinear)
    check_node("QuantizeLinear", {"x": rng.integers(-500, 500, (2, 5)).astype(np.int32)},
               initializers={"s": np.array(2.0, F32), "z": np.array(-3, np.int8)}, opset=13,
               oracle="reference")


@pytest.mark.parametrize("axis, shape", [(1, (2, 3, 4)), (0, (3, 5)), (-1, (2, 4)),
                                         (2, (1, 2, 5))])
def test_quantize_dequantize_per_axis(axis, shape, rng):
    n = shape[axis]
    x = rng.uniform(-3, 3, shape).astype(F32)
    s = rng.uniform(0.01, 0.05, n).astype(F32)
    z = rng.integers(-20, 20, n).astype(np.int8)
    check_node("QuantizeLinear", {"x": x}, {"axis": axis}, initializers={"s": s, "z": z}, opset=13)
    q = rng.integers(-128, 128, shape).astype(np.int8)
    check_node("DequantizeLinear", {"q": q}, {"axis": axis}, initializers={"s": s, "z": z},
               opset=13)


def test_blocked(rng):
    x = rng.uniform(-3, 3, (3, 7)).astype(F32)
    s = rng.uniform(0.01, 0.05, (3, 3)).astype(F32)
    z = rng.integers(0, 255, (3, 3)).astype(np.uint8)
    check_node("QuantizeLinear", {"x": x}, {"axis": 1, "block_size": 3},
               initializers={"s": s, "z": z}, opset=21, oracle="reference")
    q = rng.integers(0, 255, (3, 7)).astype(np.uint8)
    check_node("DequantizeLinear", {"q": q}, {"axis": 1, "block_size": 3},
               initializers={"s": s, "z": z}, opset=21, oracle="reference")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32])
def test_dequantize(dtype, rng):
    info = np.iinfo(dtype)
    q = rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, (4, 6)).astype(dtype)
    q.flat[:2] = [info.min, info.max] if dtype != np.int32 else [-1000, 1000]
    check_node("DequantizeLinear", {"q": q},
               initializers={"s": np.array(0.037, F32), "z": np.array(5, dtype)})
    check_node("DequantizeLinear", {"q": q}, initializers={"s": np.array(0.5, F32)})


def test_runtime_scale_and_empty(rng):
    check_node("QuantizeLinear", {"x": rng.standard_normal((2, 3)).astype(F32),
                                  "s": np.array(0.02, F32), "z": np.array(-7, np.int8)})
    check_node("QuantizeLinear", {"x": np.zeros((0, 3), F32)},
               initializers={"s": np.array(0.1, F32), "z": np.array(1, np.uint8)})
    check_node("DequantizeLinear", {"q": np.zeros((3, 0), np.int8)},
               initializers={"s": np.array(0.1, F32)})


@pytest.mark.parametrize("values", [[-1.0, 0.0, 2.5, 7.25], [0.5, 1.0, 3.0], [-2.0, -0.5],
                                    [0.0, 0.0]])
def test_dynamic_quantize(values):
    x = np.array(values, F32)
    check_node("DynamicQuantizeLinear", {"x": x}, n_outputs=3)


# -- integer convolutions and products -------------------------------------------------------
@pytest.mark.parametrize("xdt, wdt", [(np.uint8, np.uint8), (np.uint8, np.int8),
                                      (np.int8, np.int8)])
@pytest.mark.parametrize("attrs", [{}, {"pads": [1, 1, 1, 1]}, {"strides": [2, 1], "group": 2},
                                   {"dilations": [2, 2], "pads": [2, 1, 0, 2]},
                                   {"auto_pad": "SAME_UPPER", "strides": [2, 2]}])
def test_conv_integer(xdt, wdt, attrs, rng):
    if xdt == np.int8 and wdt == np.uint8:
        pytest.skip("onnxruntime lacks s8u8")
    x = rng.integers(0 if xdt == np.uint8 else -128, 128, (2, 4, 7, 6)).astype(xdt)
    w = rng.integers(0 if wdt == np.uint8 else -127, 128,
                     (6, 4 // attrs.get("group", 1), 3, 3)).astype(wdt)
    inits = {"w": w, "xz": np.array(3, xdt), "wz": np.array(2 if wdt == np.uint8 else 0, wdt)}
    check_node("ConvInteger", {"x": x}, attrs, initializers=inits, opset=10)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("attrs", [{}, {"pads": [1, 0, 1, 2], "strides": [1, 2]}, {"group": 4}])
def test_qlinear_conv(per_channel, dtype, attrs, rng):
    lo = 0 if dtype == np.uint8 else -128
    group = attrs.get("group", 1)
    x = rng.integers(lo, lo + 256, (1, 4, 6, 5)).astype(dtype)
    # |w| < 64: onnxruntime's uint8 x int8 kernel (AVX2) saturates pairs of products at int16
    w = rng.integers(-63, 64, (8, 4 // group, 3, 3)).astype(np.int8)
    ws = (rng.uniform(0.005, 0.02, 8) if per_channel else np.array(0.01)).astype(F32)
    inits = {"xs": np.array(0.05, F32), "xz": np.array(lo + 130, dtype), "w": w, "ws": ws,
             "wz": np.zeros(ws.shape, np.int8), "ys": np.array(0.4, F32),
             "yz": np.array(lo + 120, dtype), "b": rng.integers(-2000, 2000, 8).astype(np.int32)}
    check_node("QLinearConv", {"x": x}, attrs, initializers=inits, opset=10)


@pytest.mark.parametrize("shapes", [((3, 5), (5, 4)), ((2, 3, 5), (5, 4)), ((5,), (5, 3)),
                                    ((2, 1, 3, 5), (3, 5, 2)), ((0, 5), (5, 2))])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_matmul_integer(shapes, dtype, rng):
    lo = 0 if dtype == np.uint8 else -128
    a = rng.integers(lo, lo + 256, shapes[0]).astype(dtype)
    b = rng.integers(lo, lo + 256, shapes[1]).astype(dtype)
    check_node("MatMulInteger", {"a": a, "b": b},
               initializers={"az": np.array(lo + 100, dtype), "bz": np.array(lo + 140, dtype)},
               opset=10)


def test_matmul_integer_per_column_zero_point(rng):
    a = rng.integers(0, 256, (3, 5)).astype(np.uint8)
    b = rng.integers(0, 256, (5, 4)).astype(np.uint8)
    check_node("MatMulInteger", {"a": a, "b": b},
               initializers={"az": np.array(7, np.uint8), "bz": np.arange(4).astype(np.uint8)},
               opset=10)


@pytest.mark.parametrize("shapes", [((3, 5), (5, 4)), ((2, 3, 5), (2, 5, 4))])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_matmul(shapes, dtype, rng):
    lo = 0 if dtype == np.uint8 else -128
    a = rng.integers(lo, lo + 256, shapes[0]).astype(dtype)
    b = rng.integers(lo, lo + 256, shapes[1]).astype(dtype)
    inits = {"as": np.array(0.02, F32), "az": np.array(lo + 120, dtype),
             "bs": np.array(0.03, F32), "bz": np.array(lo + 130, dtype),
             "ys": np.array(0.5, F32), "yz": np.array(lo + 128, dtype)}
    check_node("QLinearMatMul", {"a": a, "b": b}, initializers=inits, opset=10,
               input_names=["a", "as", "az", "b", "bs", "bz", "ys", "yz"])


def test_qdq_model_runs_through_float_ops(rng):
    """DequantizeLinear -> Conv -> Relu -> QuantizeLinear, as quantization tools write it."""
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
        helper.make_node("Conv", ["xf", "wf"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["y"])]
    inits = {"xs": np.array(0.02, F32), "xz": np.array(128, np.uint8), "w": w,
             "ws": rng.uniform(0.005, 0.01, 4).astype(F32), "wz": np.zeros(4, np.int8),
             "ys": np.array(0.05, F32), "yz": np.array(0, np.uint8)}
    x = rng.integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)
    model = make_model(nodes, {"x": x}, ["y"], inits, opset=13)
    check_model(model, {"x": x})
