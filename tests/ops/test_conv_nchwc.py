"""Blocked NCHWc convolutions (ember/ops/conv_nchwc.py: NchwcConv; depthwise_nhwc.py:
NchwcDepthwiseConv), as choose-layout makes them from ONNX Convs on maps past 28x28, against
onnxruntime on the NCHW model: tile and strip tails, several output block groups, input blocks
past one pass, fused epilogues (bias, Clip, residual Add, per-channel Mul), batches, 1 and 2
threads, NaN and Inf; and the checks on malformed nodes."""
from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import helper

import ember
import ember.passes.choose_layout as choose_layout
from conftest import make_model, run_ort
from ember.errors import ShapeError
from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType, Value, const_value
from ember.ops.registry import get_op

N = helper.make_node
LO, HI = np.array(0, np.float32), np.array(6, np.float32)


@pytest.fixture(autouse=True)
def every_region_blocked(monkeypatch):
    """Every large-map region goes blocked, whatever its convs: the kernels are under test
    here, not the heuristic (test_choose_layout.py has that)."""
    monkeypatch.setattr(choose_layout, "nchwc_region_pays", lambda pointwise, expansions: True)


def _weights(rng, *shape):
    return (rng.standard_normal(shape) * 0.3).astype(np.float32)


def _check(model, feeds, threads, blocked_ops=("NchwcConv",)):
    compiled = ember.compile(model, threads=threads)
    for op in blocked_ops:
        assert f"{op.lower()}(" in compiled.source, f"no {op} kernel"
    got = compiled.run(feeds)
    for info, want in zip(compiled.outputs, run_ort(model, feeds)):
        np.testing.assert_allclose(got[info.name], want, rtol=1e-4, atol=1e-5,
                                   err_msg=info.name)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("c_in, c_out, shape", [
    (32, 16, (1, 29, 31)),      # 2 output blocks: 6-position tiles, 899 % 6 = 5 left over
    (24, 24, (1, 30, 30)),      # 3 blocks: 3-position tiles
    (8, 8, (1, 29, 29)),        # 1 block: 12-position tiles
    (16, 48, (2, 30, 29)),      # 2 groups of 3 blocks, a batch of 2
    (144, 32, (1, 29, 30)),     # 18 input blocks: passes of 8, 8, then 2
    (8, 40, (1, 1, 800)),       # 1-D map; 5 output blocks, groups of 1
])
def test_pointwise(rng, threads, c_in, c_out, shape):
    n, h, w = shape
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    model = make_model([N("Conv", ["x", "w", "b"], ["y"])], {"x": x}, ["y"],
                       {"w": _weights(rng, c_out, c_in, 1, 1), "b": _weights(rng, c_out)})
    _check(model, {"x": x}, threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_pointwise_epilogues(rng, threads):
    """Bias-free 1x1 convs with a fused Clip, a residual Add and a per-channel Mul; one of
    the values inside the region is also a graph output."""
    x = rng.standard_normal((1, 16, 31, 29)).astype(np.float32)
    nodes = [N("Conv", ["x", "w1"], ["a"]), N("Clip", ["a", "lo", "hi"], ["a6"]),
             N("Conv", ["a6", "w2", "b2"], ["p"]), N("Add", ["p", "x"], ["s"]),
             N("Mul", ["s", "k"], ["y"])]
    inits = {"w1": _weights(rng, 24, 16, 1, 1), "w2": _weights(rng, 16, 24, 1, 1),
             "b2": _weights(rng, 16), "k": _weights(rng, 16, 1, 1), "lo": LO, "hi": HI}
    _check(make_model(nodes, {"x": x}, ["y", "a6"], inits), {"x": x}, threads)


def test_non_finite_inputs(rng):
    """NaN and +-Inf reach exactly the outputs onnxruntime gives them (NaN where an Inf meets
    a zero weight or another Inf of the other sign)."""
    x = rng.standard_normal((1, 16, 30, 30)).astype(np.float32)
    x[0, 3, 4, 5], x[0, 9, 20, 21], x[0, 12, 29, 29] = np.nan, np.inf, -np.inf
    w = _weights(rng, 16, 16, 1, 1)
    w[2, 9] = 0.0
    nodes = [N("Conv", ["x", "w"], ["a"]),
             N("Conv", ["a", "wd", "bd"], ["y"], group=16, pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"x": x}, ["y", "a"],
                       {"w": w, "wd": _weights(rng, 16, 1, 3, 3), "bd": _weights(rng, 16)})
    _check(model, {"x": x}, 1, ("NchwcConv", "NchwcDepthwiseConv"))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kernel, attrs", [
    ((3, 3), {"pads": [1, 1, 1, 1]}),
    ((3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((5, 5), {"pads": [2, 2, 2, 2]}),
    ((3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ((3, 3), {"pads": [0, 1, 1, 0], "strides": [2, 1]}),      # asymmetric
    ((3, 3), {}),                                             # no padding
])
def test_depthwise(rng, threads, kernel, attrs):
    """A depthwise conv (+ Clip) feeding a 1x1 conv, as in MobileNetV2: 24 channels (3
    blocks), a batch of 2 on an odd map (whose stride-2 output is still past 28x28)."""
    c = 24
    x = rng.standard_normal((2, c, 63, 59)).astype(np.float32)
    nodes = [N("Conv", ["x", "wd", "bd"], ["d"], group=c, kernel_shape=list(kernel), **attrs),
             N("Clip", ["d", "lo", "hi"], ["d6"]), N("Conv", ["d6", "wp"], ["y"])]
    inits = {"wd": _weights(rng, c, 1, *kernel), "bd": _weights(rng, c),
             "wp": _weights(rng, 16, c, 1, 1), "lo": LO, "hi": HI}
    model = make_model(nodes, {"x": x}, ["y"], inits)
    _check(model, {"x": x}, threads, ("NchwcConv", "NchwcDepthwiseConv"))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("c_in, c_out, kernel, attrs, batch", [
    (3, 32, (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, 1),   # MobileNetV2's first
    (3, 24, (3, 3), {"strides": [2, 2], "pads": [0, 1, 1, 0]}, 2),   # 3 x 3 tiles, batch 2
    (1, 8, (5, 5), {"pads": [2, 2, 2, 2]}, 1),                       # 12 x 1 tiles
    (4, 16, (3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, 1),
    (2, 16, (3, 2), {"strides": [2, 1]}, 1),                         # no pads, no bias
])
def test_direct_into_blocked_region(rng, threads, c_in, c_out, kernel, attrs, batch):
    """A first conv (few input channels) whose output a blocked region reads writes the
    blocked layout itself, reading its NCHW input as it is; Clip fused."""
    x = rng.standard_normal((batch, c_in, 63, 61)).astype(np.float32)
    bias = "strides" not in attrs or attrs["strides"] != [2, 1]
    nodes = [N("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"], **attrs),
             N("Clip", ["c", "lo", "hi"], ["c6"]), N("Conv", ["c6", "wp"], ["y"])]
    inits = {"w": _weights(rng, c_out, c_in, *kernel), "b": _weights(rng, c_out),
             "wp": _weights(rng, 16, c_out, 1, 1), "lo": LO, "hi": HI}
    if not bias:
        del inits["b"]
    model = make_model(nodes, {"x": x}, ["y"], inits)
    _check(model, {"x": x}, threads, ("NchwcDirectConv", "NchwcConv"))
    # one layout change, out of the region: none into it
    assert len(re.findall(r"static void k\d+_transpose\(", ember.compile(model).source)) == 1


def test_region_into_channels_last(rng):
    """A blocked region's value read by a channels-last one (a stride-2 depthwise conv from
    56x56 to 28x28, then a 1x1 conv) moves in one transpose, not two through NCHW."""
    x = rng.standard_normal((1, 16, 56, 56)).astype(np.float32)
    nodes = [N("Conv", ["x", "w1"], ["a"]),
             N("Conv", ["a", "wd"], ["d"], group=16, pads=[1, 1, 1, 1], strides=[2, 2]),
             N("Conv", ["d", "w2"], ["y"])]
    inits = {"w1": _weights(rng, 16, 16, 1, 1), "wd": _weights(rng, 16, 1, 3, 3),
             "w2": _weights(rng, 8, 16, 1, 1)}
    model = make_model(nodes, {"x": x}, ["y"], inits)
    compiled = ember.compile(model)
    assert "_matmul(" in compiled.source
    # into the blocked region, blocked to channels-last, channels-last out to NCHW
    assert len(re.findall(r"static void k\d+_transpose\(", compiled.source)) == 3
    _check(model, {"x": x}, 2, ("NchwcConv", "NchwcDepthwiseConv"))


def _node(op, x_shape, w_shape, b_shape=None, attrs=None):
    x = Value(TensorType(dt.F32, x_shape), "x")
    ins = [x, const_value(np.zeros(w_shape, np.float32), dt.F32, "w")]
    if b_shape is not None:
        ins.append(const_value(np.zeros(b_shape, np.float32), dt.F32, "b"))
    return Node(op, ins, [], attrs or {}, name="bad")


@pytest.mark.parametrize("node, message", [
    (_node("NchwcConv", (1, 2, 10, 4), (16, 8)), r"x must be \[N, C/8, H\*W, 8\]"),
    (_node("NchwcConv", (1, 2, 10), (16, 8)), r"x must be"),
    (_node("NchwcConv", (1, 0, 10, 8), (0, 8)), "at least one channel block"),
    (_node("NchwcConv", (1, 2, 10, 8), (8, 8)), r"weights must be f32\[16, CO\]"),
    (_node("NchwcConv", (1, 2, 10, 8), (16, 12)), "multiple of 8"),
    (_node("NchwcConv", (1, 2, 10, 8), (16, 8), (16,)), r"bias must be f32\[8\]"),
    (_node("NchwcDepthwiseConv", (1, 2, 12, 8), (2, 9, 8), None,
           {"image": [1, 3, 4], "kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}), None),
    (_node("NchwcDepthwiseConv", (1, 2, 12, 8), (2, 9, 8), None,
           {"image": [1, 4, 4], "kernel_shape": [3, 3]}), "positions per channel"),
    (_node("NchwcDepthwiseConv", (1, 2, 12, 8), (9, 16), None,
           {"image": [1, 3, 4], "kernel_shape": [3, 3]}), r"weights must be f32\[2, 9, 8\]"),
    (_node("NchwcDepthwiseConv", (1, 2, 12, 8), (2, 9, 8), (8,),
           {"image": [1, 3, 4], "kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
     r"bias must be f32\[16\]"),
    (_node("NchwcDepthwiseConv", (1, 2, 12), (2, 9, 8), None,
           {"image": [1, 3, 4], "kernel_shape": [3, 3]}), r"x must be \[N, C/8, H\*W, 8\]"),
    (_node("NchwcDirectConv", (1, 3, 6, 8), (16, 3, 3, 3), None, {"pads": [1, 1, 1, 1]}),
     None),
    (_node("NchwcDirectConv", (1, 3, 6, 8), (12, 3, 3, 3)), "a multiple of 8 output channels"),
    (_node("NchwcDirectConv", (1, 4, 6, 8), (16, 2, 3, 3), None, {"group": 2}),
     "of one group"),
    (_node("NchwcDirectConv", (1, 3, 6, 8), (16, 4, 3, 3)), "input channels"),
])
def test_bad_nodes(node, message):
    """Malformed internal nodes (a model file may name these ops) fail with a message naming
    the problem; a well-formed one infers its output."""
    opdef = get_op(node.op)
    if message is None:
        assert opdef.infer(node)[0].shape in ((1, 2, 12, 8), (1, 2, 48, 8))
        return
    with pytest.raises(ShapeError, match=message):
        opdef.infer(node)


def _expand_node(x_shape, c=16, cin=16, stride=1, image=(1, 3, 4)):
    consts = [const_value(np.zeros(shape, np.float32), dt.F32, name)
              for name, shape in (("we", (c, cin)), ("wd", (c, 9)))]
    attrs = {"stride": stride} | ({"image": list(image)} if image is not None else {})
    return Node("NchwcExpandDepthwiseConv", [Value(TensorType(dt.F32, x_shape), "x"),
                                             consts[0], None, consts[1]], [], attrs, name="bad")


@pytest.mark.parametrize("node, message", [
    (_expand_node((1, 2, 12, 8)), None),
    (_expand_node((1, 2, 12, 8), stride=2), None),
    (_expand_node((1, 2, 12, 8), image=None), "attribute image is required"),
    (_expand_node((1, 2, 13, 8)), r"x must be float32 \[1, C_in/8, 12, 8\]"),
    (_expand_node((1, 2, 12, 4)), "x must be float32"),
    (_expand_node((1, 2, 12, 8), cin=8), r"weights must be \[C, 16\]"),
    (_expand_node((1, 2, 12, 8), c=12), r"expanded channels \(12\) must be a multiple of 8"),
    (_expand_node((1, 2, 12, 8), stride=3), "stride must be 1 or 2"),
])
def test_bad_expand_nodes(node, message):
    opdef = get_op(node.op)
    if message is None:        # a 3x4 image: 3x4 outputs at stride 1, 2x2 at stride 2
        positions = 12 if node.attrs["stride"] == 1 else 4
        assert opdef.infer(node)[0].shape == (1, 2, positions, 8)
        return
    with pytest.raises(ShapeError, match=message):
        opdef.infer(node)
