"""QLinearConv and ConvInteger through the int16 GEMM (ops/qconv_gemm.py) and the depthwise
path against onnxruntime, bit for bit: odd and size-1 dims, groups, depthwise (with and
without a channel multiplier, past one channel block), strides, dilations, asymmetric pads,
1-d convs, batches, several output-channel blocks, uint8/int8 activations and weights,
per-channel weight zero points, 2 threads; and the shapes that keep the scalar loop (3-d
convs, weights known only at run time)."""
import numpy as np
import onnxruntime as ort
import pytest

import ember
from conftest import check_node, make_model
from onnx import helper

F32 = np.float32

#: x shape, w shape, attributes
CASES = {
    "odd-channels": ((1, 5, 7, 9), (7, 5, 3, 3), {"pads": [1, 1, 1, 1]}),
    "size-1": ((1, 1, 1, 1), (1, 1, 1, 1), {}),
    "groups-even": ((1, 6, 5, 5), (9, 2, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),
    "groups-odd": ((1, 6, 5, 4), (4, 3, 3, 3), {"group": 2, "pads": [0, 1, 2, 1]}),
    "depthwise": ((1, 8, 6, 5), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    "depthwise-multiplier": ((1, 4, 5, 5), (8, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),
    "depthwise-blocks": ((1, 70, 3, 4), (70, 1, 3, 3), {"group": 70, "pads": [1, 1, 1, 1],
                                                          "strides": [1, 2]}),
    "stride-dilation": ((1, 3, 9, 8), (5, 3, 3, 2), {"strides": [2, 2], "dilations": [2, 1],
                                                     "pads": [1, 0, 2, 1]}),
    "stride-leftover": ((1, 2, 7, 7), (3, 2, 1, 1), {"strides": [3, 3]}),
    "same-upper": ((1, 3, 6, 7), (4, 3, 4, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 1]}),
    "conv-1d": ((1, 3, 10), (4, 3, 3), {"pads": [1, 1], "strides": [2]}),
    "batch-blocks": ((2, 4, 6, 6), (37, 4, 3, 3), {"pads": [1, 1, 1, 1]}),
    "pointwise-long": ((1, 33, 4, 5), (17, 33, 1, 1), {}),
    "rows": ((1, 784, 1, 1), (20, 784, 1, 1), {}),
    "conv-3d": ((1, 2, 4, 4, 3), (3, 2, 2, 2, 2), {"pads": [1, 0, 1, 0, 1, 0]}),
}


def _qlinear_inits(rng, x_dtype, w_shape, per_channel: bool) -> dict:
    lo = 0 if x_dtype == np.uint8 else -128
    oc = w_shape[0]
    # |w| < 64: onnxruntime's uint8 x int8 kernel (AVX2) saturates pairs of products at int16
    ws = (rng.uniform(0.002, 0.02, oc) if per_channel else np.array(0.01)).astype(F32)
    return {"xs": np.array(0.05, F32), "xz": np.array(lo + 131, x_dtype),
            "w": rng.integers(-63, 64, w_shape).astype(np.int8), "ws": ws,
            "wz": np.zeros(ws.shape, np.int8), "ys": np.array(0.3, F32),
            "yz": np.array(lo + 117, x_dtype),
            "b": rng.integers(-3000, 3000, oc).astype(np.int32)}


def _x(rng, dtype, shape) -> np.ndarray:
    lo = 0 if dtype == np.uint8 else -128
    return rng.integers(lo, lo + 256, shape).astype(dtype)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
def test_qlinear_conv_shapes(case, x_dtype, rng):
    xs, ws, attrs = CASES[case]
    check_node("QLinearConv", {"x": _x(rng, x_dtype, xs)}, attrs,
               initializers=_qlinear_inits(rng, x_dtype, ws, per_channel=case != "size-1"),
               opset=10)


def test_qlinear_conv_saturates_and_rounds(rng):
    """Outputs past both ends of the range, and no bias."""
    inits = _qlinear_inits(rng, np.uint8, (6, 4, 3, 3), per_channel=True)
    inits["ys"] = np.array(0.02, F32)
    del inits["b"]
    check_node("QLinearConv", {"x": _x(rng, np.uint8, (1, 4, 5, 6))}, {"pads": [1, 1, 1, 1]},
               initializers=inits, opset=10)


@pytest.mark.parametrize("case", ["odd-channels", "depthwise", "stride-dilation", "conv-1d",
                                  "batch-blocks", "groups-odd"])
@pytest.mark.parametrize("w_dtype", [np.uint8, np.int8])
def test_conv_integer_shapes(case, w_dtype, rng):
    xs, ws, attrs = CASES[case]
    if w_dtype == np.uint8:
        w = rng.integers(0, 256, ws).astype(np.uint8)
        wz = np.array(137, np.uint8)
    else:
        w = rng.integers(-63, 64, ws).astype(np.int8)
        wz = np.array(0, np.int8)
    check_node("ConvInteger", {"x": _x(rng, np.uint8, xs)}, attrs,
               initializers={"w": w, "xz": np.array(121, np.uint8), "wz": wz}, opset=10)


@pytest.mark.parametrize("case", ["odd-channels", "depthwise", "groups-odd"])
def test_conv_integer_per_channel_zero_points(case, rng):
    """(onnxruntime's ConvInteger takes one weight zero point only)"""
    xs, ws, attrs = CASES[case]
    inits = {"w": rng.integers(0, 256, ws).astype(np.uint8), "xz": np.array(121, np.uint8),
             "wz": rng.integers(100, 156, ws[0]).astype(np.uint8)}
    check_node("ConvInteger", {"x": _x(rng, np.uint8, xs)}, attrs, initializers=inits, opset=10,
               oracle="reference")


def test_conv_integer_run_time_weights(rng):
    """Weights as a graph input: the scalar loop."""
    x = _x(rng, np.uint8, (1, 3, 5, 5))
    w = rng.integers(0, 256, (4, 3, 3, 3)).astype(np.uint8)
    check_node("ConvInteger", {"x": x, "w": w}, {"pads": [1, 1, 1, 1]},
               initializers={"xz": np.array(7, np.uint8), "wz": np.array(200, np.uint8)}, opset=10)


@pytest.mark.parametrize("case", ["batch-blocks", "depthwise-blocks", "rows"])
def test_qlinear_conv_two_threads(case, rng):
    xs, ws, attrs = CASES[case]
    inits = _qlinear_inits(rng, np.uint8, ws, per_channel=True)
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
    x = _x(rng, np.uint8, xs)
    model = make_model([helper.make_node("QLinearConv", names, ["y"], **attrs)], {"x": x}, ["y"],
                       inits, opset=10)
    got = ember.compile(model, threads=2).run({"x": x})["y"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(got, sess.run(None, {"x": x})[0])
