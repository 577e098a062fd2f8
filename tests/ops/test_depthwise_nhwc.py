"""NhwcDepthwiseConv (ember/ops/depthwise_nhwc.py, an internal op) against onnxruntime's
Conv(group = C) on the same data in NCHW."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from conftest import make_model, run_ort
from ember.driver import build, optimize
from ember.errors import ShapeError
from ember.graph import dtypes as dt
from ember.graph.ir import Graph, Node, TensorType, Value, const_value
from ember.options import CompileOptions
from ember.ops.registry import get_op
from ember.targets import Target

#: a host target whose kernels are written as for a core without float SIMD (`ember export`)
SCALAR = Target("scalar-test", "native", 4, "host, scalar kernels")


def _graph(x_shape, kernel, attrs, w, b, after=()):
    """x [N*H*W, C] -> NhwcDepthwiseConv -> the `after` ops ((op, const operand or None))."""
    n, c, h, wd = x_shape
    x = Value(TensorType(dt.F32, (n * h * wd, c)), "x")
    kh, kw = kernel
    full = {"image": [n, h, wd], "kernel_shape": [kh, kw], "strides": [1, 1],
            "pads": [0, 0, 0, 0], "dilations": [1, 1]}
    full.update(attrs)
    wv = const_value(w.reshape(c, kh * kw).T.copy(), dt.F32, "w")
    ins = [x, wv] + ([const_value(b, dt.F32, "b")] if b is not None else [])
    node = Node("NhwcDepthwiseConv", ins, [], full, name="dw")
    out_type = get_op("NhwcDepthwiseConv").infer(node)[0]
    y = Value(out_type, "y")
    node.outputs = [y]
    y.producer = node
    nodes = [node]
    for k, (op, operand) in enumerate(after):
        extra = [const_value(a, dt.F32, f"k{k}_{i}") for i, a in enumerate(_operands(operand))]
        z = Value(out_type, f"z{k}")
        nodes.append(Node(op, [y] + extra, [z], {}, name=f"e{k}", opset=17))
        y = z
    return Graph(nodes, [x], [y], "nhwc")


def _ort(x_nchw, w, b, kernel, attrs, after):
    c = x_nchw.shape[1]
    inits = {"w": w.reshape(c, 1, *kernel)}
    if b is not None:
        inits["b"] = b
    names = ["x", "w"] + (["b"] if b is not None else [])
    conv_attrs = {k: v for k, v in attrs.items() if k != "image"}
    nodes = [helper.make_node("Conv", names, ["y"], group=c, kernel_shape=list(kernel),
                              **conv_attrs)]
    prev = "y"
    for k, (op, operand) in enumerate(after):
        extra = []
        for i, arr in enumerate(_operands(operand)):
            # NHWC operands in NCHW form: [C] broadcast over positions, or a whole [P, C]
            if arr.ndim == 1:
                arr = arr.reshape(c, 1, 1)
            elif arr.ndim == 2:
                n_out, oh, ow = _out_dims(x_nchw.shape, kernel, attrs)
                arr = arr.reshape(n_out, oh, ow, c).transpose(0, 3, 1, 2)
            inits[f"k{k}_{i}"] = np.ascontiguousarray(arr)
            extra.append(f"k{k}_{i}")
        nodes.append(helper.make_node(op, [prev] + extra, [f"z{k}"]))
        prev = f"z{k}"
    model = make_model(nodes, {"x": x_nchw}, [prev], inits)
    return run_ort(model, {"x": x_nchw})[0]


def _operands(operand) -> tuple:
    """An `after` op's constant operands: None, one array, or a tuple of them."""
    if operand is None:
        return ()
    return operand if isinstance(operand, tuple) else (operand,)


def _out_dims(x_shape, kernel, attrs):
    n, _, h, w = x_shape
    st, pads = attrs.get("strides", [1, 1]), attrs.get("pads", [0, 0, 0, 0])
    dil = attrs.get("dilations", [1, 1])
    oh = (h + pads[0] + pads[2] - dil[0] * (kernel[0] - 1) - 1) // st[0] + 1
    ow = (w + pads[1] + pads[3] - dil[1] * (kernel[1] - 1) - 1) // st[1] + 1
    return n, oh, ow


def _check(rng, x_shape, kernel, attrs=None, bias=True, after=(), x=None, threads=1,
           target="host", fused=None):
    attrs = dict(attrs or {})
    n, c, h, wd = x_shape
    x = rng.standard_normal(x_shape).astype(np.float32) if x is None else x
    w = rng.standard_normal((c, kernel[0] * kernel[1])).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32) if bias else None
    after = [(op, operand(_out_dims(x_shape, kernel, attrs), c) if callable(operand) else operand)
             for op, operand in after]
    options = CompileOptions(target=target, threads=threads)
    graph = optimize(_graph(x_shape, kernel, attrs, w, b, after), options)
    if fused is not None:     # how many nodes the pipeline left (epilogues fused: 1)
        assert [nd.op for nd in graph.nodes] == ["NhwcDepthwiseConv"] * fused
    compiled = build(graph, options)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(n * h * wd, c)
    got = compiled.run({"x": x_nhwc})
    got = next(iter(got.values()))
    want = _ort(x, w, b, kernel, attrs, after)
    no, _, oh, ow = want.shape
    want = want.transpose(0, 2, 3, 1).reshape(no * oh * ow, c)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return compiled


P1, S2 = {"pads": [1, 1, 1, 1]}, {"pads": [1, 1, 1, 1], "strides": [2, 2]}
CASES = [
    # (x shape NCHW, kernel, attrs)
    ((1, 16, 9, 11), (3, 3), P1),
    ((1, 16, 10, 10), (3, 3), P1),                                   # even
    ((2, 24, 10, 9), (3, 3), S2),                                    # N = 2, stride 2
    ((1, 32, 7, 7), (3, 3), S2),
    ((1, 16, 11, 13), (3, 3), S2),                                   # odd, stride 2
    ((1, 16, 7, 7), (3, 3), {}),                                     # no padding
    ((1, 8, 13, 12), (5, 5), {"pads": [4, 4, 4, 4], "dilations": [2, 2]}),
    ((1, 16, 9, 10), (3, 3), {"pads": [0, 0, 1, 1]}),                # asymmetric
    ((1, 16, 9, 10), (3, 3), {"pads": [0, 0, 1, 1], "strides": [2, 2]}),
    ((1, 8, 5, 4), (3, 3), {"pads": [4, 3, 5, 6]}),                  # pads past the kernel
    ((1, 8, 3, 2), (2, 2), {"pads": [1, 9, 0, 11]}),                 # many all-pad columns
    ((1, 16, 8, 9), (3, 1), {"pads": [1, 0, 1, 0]}),                 # 3x1
    ((1, 16, 8, 9), (1, 3), {"pads": [0, 1, 0, 1], "strides": [1, 2]}),
    ((1, 16, 11, 12), (3, 2), {"dilations": [2, 3], "strides": [2, 3], "pads": [1, 2, 0, 1]}),
    ((1, 16, 1, 9), (3, 3), P1),                                     # H = 1
    ((1, 16, 9, 1), (3, 3), P1),                                     # W = 1
    ((1, 16, 1, 1), (3, 3), P1),
    ((1, 1, 6, 7), (3, 3), P1),                                      # C = 1: scalar only
    ((1, 5, 6, 7), (3, 3), S2),
    ((1, 8, 6, 7), (3, 3), P1),                                      # one vector
    ((1, 13, 6, 7), (3, 3), P1),                                     # vector + scalar tail
    ((2, 40, 6, 7), (3, 3), P1),                                     # 2 blocks + 1 vector
    ((1, 64, 25, 5), (3, 3), P1),                                    # DS-CNN
    ((1, 96, 14, 14), (3, 3), S2),
    ((1, 16, 12, 13), (7, 7), {"pads": [3, 3, 3, 3]}),
]


@pytest.mark.parametrize("x_shape,kernel,attrs", CASES)
def test_nhwc_depthwise(x_shape, kernel, attrs, rng):
    _check(rng, x_shape, kernel, attrs)


@pytest.mark.parametrize("x_shape,kernel,attrs", [CASES[0], CASES[2], CASES[20]])
def test_no_bias(x_shape, kernel, attrs, rng):
    _check(rng, x_shape, kernel, attrs, bias=False)


@pytest.mark.parametrize("x_shape,kernel,attrs", [CASES[0], CASES[2], CASES[9], CASES[20],
                                                  CASES[13]])
def test_scalar_target(x_shape, kernel, attrs, rng):
    compiled = _check(rng, x_shape, kernel, attrs, target=SCALAR)
    assert "ember_vf" not in compiled.source


@pytest.mark.parametrize("x_shape,kernel,attrs", [CASES[1], CASES[2], CASES[20]])
def test_threads(x_shape, kernel, attrs, rng):
    _check(rng, x_shape, kernel, attrs, threads=2)


@pytest.mark.parametrize("c", [16, 13])
def test_nan_inf(c, rng):
    """NaN and inf reach exactly the outputs whose taps inside the image read them."""
    x = rng.standard_normal((1, c, 6, 7)).astype(np.float32)
    x[0, :, 0, 0] = np.nan
    x[0, :3, 5, 6] = np.inf
    x[0, 3:6, 2, 3] = -np.inf
    _check(rng, x.shape, (3, 3), P1, x=x)
    _check(rng, x.shape, (3, 3), S2, x=x, target=SCALAR)


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_clip(threads, rng):
    relu6 = ("Clip", (np.array(0, np.float32), np.array(6, np.float32)))
    _check(rng, (1, 24, 9, 10), (3, 3), P1, after=[relu6], threads=threads, fused=1)


def test_fused_relu_and_bias_add(rng):
    _check(rng, (1, 13, 6, 7), (3, 3), S2, bias=False, fused=1,
           after=[("Add", lambda dims, c: rng.standard_normal(c).astype(np.float32)),
                  ("Relu", None)])


@pytest.mark.parametrize("target", ["host", SCALAR])
def test_fused_residual_add(target, rng):
    def residual(dims, c):
        return rng.standard_normal((dims[0] * dims[1] * dims[2], c)).astype(np.float32)
    _check(rng, (1, 24, 8, 9), (3, 3), P1, after=[("Add", residual)], target=target, fused=1)
    _check(rng, (1, 13, 8, 9), (3, 3), S2, after=[("Add", residual)], target=target, fused=1)


def _node(x_rows=20, c=4, w_shape=(9, 4), b_shape=(4,), **attrs):
    full = {"image": [1, 4, 5], "kernel_shape": [3, 3], "strides": [1, 1],
            "pads": [1, 1, 1, 1], "dilations": [1, 1]}
    full.update(attrs)
    ins = [Value(TensorType(dt.F32, (x_rows, c))), Value(TensorType(dt.F32, w_shape))]
    if b_shape is not None:
        ins.append(Value(TensorType(dt.F32, b_shape)))
    return Node("NhwcDepthwiseConv", ins, [Value(TensorType(dt.F32, (1,)))], full, name="dw")


def test_infer_and_flops():
    op = get_op("NhwcDepthwiseConv")
    assert op.infer(_node())[0].shape == (20, 4)
    assert op.infer(_node(strides=[2, 2]))[0].shape == (6, 4)
    assert op.flops(_node(b_shape=None)) == 2 * 20 * 4 * 9
    assert op.flops(_node()) == 2 * 20 * 4 * 9 + 20 * 4


@pytest.mark.parametrize("kwargs,message", [
    ({"x_rows": 21}, "positions"),
    ({"w_shape": (3, 4)}, "weights"),
    ({"w_shape": (9, 5)}, "weights"),
    ({"b_shape": (5,)}, "bias"),
    ({"image": [1, 4]}, "image"),
    ({"image": None}, "image"),
    ({"kernel_shape": [0, 3]}, "kernel_shape"),
    ({"strides": [0, 1]}, "strides"),
    ({"pads": [1, 1, -1, 1]}, "pads"),
    ({"pads": [1, 1]}, "pads"),
    ({"pads": [0, 0, 0, 0], "kernel_shape": [5, 3], "w_shape": (15, 4)}, "larger"),
])
def test_bad_attributes(kwargs, message):
    with pytest.raises(ShapeError, match=message):
        get_op("NhwcDepthwiseConv").infer(_node(**kwargs))


def test_empty_batch(rng):
    """N = 0: no rows in, none out."""
    _check(rng, (0, 16, 4, 5), (3, 3), P1)
