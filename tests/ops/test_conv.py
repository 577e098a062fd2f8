"""Conv and ConvTranspose against onnxruntime: 1-3-D, groups, dilations, strides, every pad mode."""
import numpy as np
import pytest

import ember
from conftest import check_node, make_model
from ember.errors import EmberError


@pytest.fixture(autouse=True)
def nchw_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are of the NCHW kernels: choose-layout must not move their convs."""
    monkeypatch.setenv("EMBER_LAYOUT", "nchw")



def _conv(rng, x_shape, w_shape, attrs=None, bias=True, dtype=np.float32, op="Conv",
          weights_as_input=False, **tol):
    if dtype == np.float64:      # onnxruntime has no double Conv/ConvTranspose kernels
        tol = {"oracle": "reference", "rtol": 1e-10, "atol": 1e-12, **tol}
    x = rng.standard_normal(x_shape).astype(dtype)
    params = {"w": rng.standard_normal(w_shape).astype(dtype)}
    if bias:
        channels = w_shape[0] if op == "Conv" else w_shape[1] * (attrs or {}).get("group", 1)
        params["b"] = rng.standard_normal(channels).astype(dtype)
    if weights_as_input:
        return check_node(op, {"x": x, **params}, attrs, **tol)
    return check_node(op, {"x": x}, attrs, initializers=params, **tol)


CONV_CASES = [
    # (x shape, w shape, attrs)
    ((1, 1, 5), (1, 1, 3), {}),
    ((2, 3, 11), (4, 3, 4), {"strides": [3], "pads": [2, 1]}),
    ((1, 2, 7), (3, 2, 3), {"dilations": [2], "pads": [3, 3]}),
    ((2, 3, 7, 9), (5, 3, 3, 3), {}),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 4, 9, 7), (6, 4, 3, 2), {"strides": [2, 3], "pads": [1, 0, 2, 1]}),
    ((1, 3, 6, 6), (2, 3, 1, 1), {}),                                       # 1x1
    ((1, 4, 7, 7), (8, 4, 1, 1), {"strides": [2, 2]}),                      # 1x1 strided
    ((1, 2, 9, 9), (3, 2, 2, 2), {"strides": [4, 3]}),                      # stride > kernel
    ((1, 2, 4, 5), (3, 2, 2, 3), {"pads": [4, 3, 5, 4]}),                   # pads > kernel
    ((1, 2, 9, 8), (2, 2, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 0, 3]}),
    ((2, 4, 6, 7), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),       # groups=2
    ((1, 6, 7, 7), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1]}),       # depthwise
    ((1, 3, 8, 8), (6, 1, 3, 3), {"group": 3, "strides": [2, 2]}),          # multiplier 2
    ((2, 3, 1, 1), (4, 3, 1, 1), {}),                                       # size-1 spatial
    ((1, 2, 1, 6), (3, 2, 1, 3), {"pads": [0, 1, 0, 1]}),
    ((1, 2, 5, 4, 6), (3, 2, 3, 2, 3), {}),                                 # 3-D
    ((2, 4, 5, 6, 7), (4, 2, 2, 3, 3), {"group": 2, "strides": [2, 1, 2],
                                        "pads": [1, 0, 1, 0, 2, 1], "dilations": [1, 2, 1]}),
    ((1, 3, 7, 7), (2, 3, 3, 3), {"kernel_shape": [3, 3], "strides": [2, 2]}),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_CASES)
def test_conv(x_shape, w_shape, attrs, rng):
    _conv(rng, x_shape, w_shape, attrs)


@pytest.mark.parametrize("auto_pad", ["VALID", "SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("x_shape,w_shape,strides", [
    ((1, 2, 7, 8), (3, 2, 3, 3), [1, 1]),
    ((1, 2, 7, 8), (3, 2, 2, 4), [2, 3]),
    ((1, 2, 9, 9), (3, 2, 1, 2), [4, 3]),        # stride > kernel: SAME needs no pad
    ((2, 3, 6), (2, 3, 4), [2]),
])
def test_conv_auto_pad(auto_pad, x_shape, w_shape, strides, rng):
    _conv(rng, x_shape, w_shape, {"auto_pad": auto_pad, "strides": strides})


@pytest.mark.parametrize("bias", [True, False])
def test_conv_double(bias, rng):
    _conv(rng, (2, 4, 7, 6), (6, 2, 3, 3), {"group": 2, "pads": [1, 2, 0, 1]}, bias=bias,
          dtype=np.float64)


def test_conv_weights_as_input(rng):
    _conv(rng, (1, 3, 6, 5), (2, 3, 3, 2), {"pads": [1, 1, 1, 1]}, weights_as_input=True)


def test_conv_no_bias_large_channels(rng):
    # Long reductions: summation order differs from onnxruntime's GEMM.
    _conv(rng, (1, 64, 10, 10), (16, 64, 3, 3), {"pads": [1, 1, 1, 1]}, bias=False,
          rtol=1e-4, atol=1e-4)


def test_conv_empty_batch(rng):
    _conv(rng, (0, 2, 5, 5), (3, 2, 3, 3), {})


def test_conv_threads(rng):
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    node_model = make_model([_node("Conv", group=2, pads=[1, 1, 1, 1])], {"x": x}, ["y"],
                            {"w": w})
    single = ember.compile(node_model).run({"x": x})["y"]
    threaded = ember.compile(node_model, threads=3).run({"x": x})["y"]
    np.testing.assert_array_equal(single, threaded)


def _node(op, **attrs):
    from onnx import helper
    return helper.make_node(op, ["x", "w"], ["y"], **attrs)


CONV_TRANSPOSE_CASES = [
    ((1, 1, 5), (1, 2, 3), {}),
    ((2, 3, 6), (3, 2, 4), {"strides": [3], "pads": [1, 2]}),
    ((1, 2, 5), (2, 3, 3), {"strides": [2], "output_padding": [1], "dilations": [2]}),
    ((1, 2, 4, 5), (2, 3, 3, 3), {}),
    ((2, 3, 5, 4), (3, 2, 3, 2), {"strides": [2, 3], "pads": [1, 0, 2, 1]}),
    ((1, 2, 4, 4), (2, 2, 3, 3), {"strides": [2, 2], "output_padding": [1, 0]}),
    ((1, 2, 5, 6), (2, 1, 2, 3), {"dilations": [2, 2], "pads": [1, 1, 0, 2]}),
    ((1, 4, 5, 5), (4, 3, 3, 3), {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 4, 5, 5), (4, 1, 3, 3), {"group": 4, "strides": [2, 1]}),          # depthwise
    ((2, 3, 1, 1), (3, 2, 1, 1), {}),                                       # size-1 spatial
    ((1, 2, 3, 3), (2, 2, 1, 1), {"strides": [3, 2]}),                      # stride > kernel
    ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), {"strides": [2, 1, 2], "pads": [0, 1, 0, 1, 1, 0]}),
    ((1, 2, 3, 4), (2, 2, 3, 3), {"strides": [2, 2], "output_shape": [8, 9]}),
    ((1, 2, 3, 4), (2, 2, 3, 3), {"strides": [2, 2], "output_shape": [6, 8]}),
    ((1, 2, 3, 4), (2, 2, 3, 3), {"strides": [2, 2], "output_shape": [5, 7],
                                  "auto_pad": "SAME_UPPER"}),
    ((1, 2, 3, 4), (2, 2, 3, 3), {"strides": [2, 2], "output_shape": [6, 8],
                                  "auto_pad": "SAME_LOWER"}),
    ((1, 2, 3, 4), (2, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 3, 4), (2, 2, 3, 2), {"strides": [2, 3], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 4, 3), (2, 2, 2, 2), {"auto_pad": "VALID", "strides": [2, 2]}),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_TRANSPOSE_CASES)
def test_conv_transpose(x_shape, w_shape, attrs, rng):
    _conv(rng, x_shape, w_shape, attrs, op="ConvTranspose")


@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_double(bias, rng):
    # group 1: the reference evaluator mis-assembles grouped ConvTranspose outputs
    _conv(rng, (2, 4, 4, 3), (4, 2, 3, 3), {"strides": [2, 2], "pads": [1, 0, 0, 1]},
          bias=bias, dtype=np.float64, op="ConvTranspose")


def test_epilogue_goes_through_store(rng):
    """A fused epilogue (bias broadcast over channels, then Relu) is applied to every element."""
    from ember.driver import build, import_model
    from ember.graph.ir import const_value
    from ember.ops.elementwise import Program
    from ember.options import CompileOptions

    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    extra = rng.standard_normal((4, 1, 1)).astype(np.float32)
    options = CompileOptions()
    graph, _ = import_model(make_model([_node("Conv", pads=[1, 1, 1, 1])], {"x": x}, ["y"],
                                       {"w": w}), options)
    conv = graph.nodes[0]
    extra_value = const_value(extra, conv.outputs[0].type.dtype)
    program = Program([conv.outputs[0].type, extra_value.type])
    added = program.add("Add", (0, 1), {}, conv.outputs[0].type.dtype)
    program.add("Relu", (added,), {}, conv.outputs[0].type.dtype)
    conv.attrs["epilogue"] = program
    conv.inputs.append(extra_value)
    got = build(graph, options).run({"x": x})["y"]
    plain = ember.compile(make_model([_node("Conv", pads=[1, 1, 1, 1])], {"x": x}, ["y"],
                                     {"w": w})).run({"x": x})["y"]
    np.testing.assert_allclose(got, np.maximum(plain + extra, 0), rtol=1e-6, atol=1e-6)


def test_flops():
    from ember.graph import dtypes as dt
    from ember.graph.ir import Node, TensorType, Value
    from ember.ops.registry import get_op
    x = Value(TensorType(dt.F32, (2, 4, 8, 8)))
    w = Value(TensorType(dt.F32, (6, 2, 3, 3)))
    node = Node("Conv", [x, w], [Value(TensorType(dt.F32, (2, 6, 6, 6)))], {"group": 2})
    assert get_op("Conv").flops(node) == 2 * (2 * 6 * 6 * 6) * (2 * 3 * 3)


@pytest.mark.parametrize("w_shape,attrs,message", [
    ((4, 3, 3, 3), {"group": 2}, "group"),
    ((4, 2, 3, 3), {}, "input channels"),
    ((4, 4, 3, 3), {"kernel_shape": [2, 2]}, "kernel_shape"),
    ((4, 4, 9, 3), {}, "larger than the padded input"),
    ((4, 4, 3, 3), {"strides": [0, 1]}, "strides"),
    ((4, 4, 3, 3), {"pads": [1, 1]}, "pads"),
    ((4, 4, 3, 3), {"auto_pad": "SAME"}, "auto_pad"),
])
def test_conv_errors(w_shape, attrs, message, rng):
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    with pytest.raises(EmberError, match=message):
        ember.compile(make_model([_node("Conv", **attrs)], {"x": x}, ["y"], {"w": w}))


def test_conv_rejects_integers(rng):
    x = rng.integers(0, 5, (1, 1, 4, 4)).astype(np.int32)
    w = np.ones((1, 1, 2, 2), np.int32)
    with pytest.raises(EmberError, match="element type i32"):
        ember.compile(make_model([_node("Conv")], {"x": x}, ["y"], {"w": w}))


@pytest.mark.parametrize("op,w_shape", [("Conv", (3, 2, 3, 2)), ("ConvTranspose", (2, 3, 3, 2))])
def test_conv_opset1(op, w_shape, rng):
    _conv(rng, (1, 2, 5, 6), w_shape, {"pads": [1, 0, 1, 1], "strides": [2, 1]}, op=op, opset=1)
