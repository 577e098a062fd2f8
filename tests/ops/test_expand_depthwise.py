"""A 1x1 expansion fused into the 3x3 depthwise conv that reads it (passes/fuse_expand_depthwise.py,
ops/expand_depthwise.py; in blocked NCHWc regions ops/expand_depthwise_nchwc.py), against
onnxruntime."""
import numpy as np
import pytest
from onnx import helper

import ember
import ember.passes.choose_layout as choose_layout
from conftest import make_model, run_ort
from ember.lower import schedule

FUSED = "expanddepthwiseconv"       # the fused kernels' names end so
BLOCKED = "nchwcexpanddepthwiseconv("


@pytest.fixture(autouse=True)
def every_map_fuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fusion pays on large maps only (schedule.expand_depthwise_pays); these test maps are
    small. They are still larger than choose-layout's 28x28, which would take them first."""
    monkeypatch.setattr(schedule, "_EXPAND_DEPTHWISE_MIN_BYTES", 0)


def _chain(rng, cin, c, h, w, stride, act="clip", dw_act=True, bias=True, batch=1,
           extra_reader=False, dw_attrs=None):
    """x -> Conv 1x1 (cin -> c) -> act -> depthwise 3x3 Conv -> [Clip 0..6]: model and input."""
    def const(shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    inits = {"we": const((c, cin, 1, 1)), "wd": const((c, 1, 3, 3)), "be": const((c,), 1.0),
             "bd": const((c,), 1.0), "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "we", "be"] if bias else ["x", "we"], ["e"])]
    mid = "e"
    if act == "clip":
        nodes.append(helper.make_node("Clip", ["e", "lo", "hi"], ["a"]))
        mid = "a"
    elif act == "relu":
        nodes.append(helper.make_node("Relu", ["e"], ["a"]))
        mid = "a"
    attrs = {"group": c, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [stride] * 2}
    attrs.update(dw_attrs or {})
    nodes.append(helper.make_node("Conv", [mid, "wd", "bd"] if bias else [mid, "wd"], ["d"],
                                  **attrs))
    outputs = ["d"]
    if dw_act:
        nodes.append(helper.make_node("Clip", ["d", "lo", "hi"], ["y"]))
        outputs = ["y"]
    if extra_reader:
        outputs.append(mid)
    x = rng.standard_normal((batch, cin, h, w)).astype(np.float32) * 2
    return make_model(nodes, {"x": x}, outputs, inits), x


def _check(model, x, threads=1, fused=True, blocked=False):
    compiled = ember.compile(model, threads=threads)
    assert (FUSED in compiled.source) == fused
    assert (BLOCKED in compiled.source) == blocked
    got = compiled.run({"x": x})
    for name, want in zip(got, run_ort(model, {"x": x})):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("cin,c,h,w,stride,act,dw_act,bias,batch", [
    (16, 96, 20, 112, 2, "clip", True, True, 1),     # MobileNetV2's, rows cut short
    (24, 144, 15, 56, 1, "relu", False, True, 1),    # 56 columns: two vectors and one over
    (3, 10, 29, 29, 2, None, True, False, 1),        # odd sizes, no bias, no activation
    (5, 7, 40, 21, 1, "clip", False, True, 2),       # fewer channels than a block; batch 2
    (16, 12, 1, 800, 2, "clip", True, True, 1),      # one input row
    (4, 8, 30, 30, 2, "relu", True, True, 1),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_expand_depthwise(cin, c, h, w, stride, act, dw_act, bias, batch, threads, rng,
                          monkeypatch):
    """NCHW (channels not multiples of 8, or blocked regions turned off)."""
    monkeypatch.setattr(choose_layout, "nchwc_region_pays", lambda pointwise, expansions: False)
    model, x = _chain(rng, cin, c, h, w, stride, act, dw_act, bias, batch)
    _check(model, x, threads)


@pytest.mark.parametrize("cin,c,h,w,stride,act,dw_act,bias,batch", [
    (16, 96, 20, 112, 2, "clip", True, True, 1),     # MobileNetV2's, rows cut short
    (24, 144, 15, 56, 1, "relu", False, True, 1),    # 6 x 2 tiles of the expansion
    (8, 24, 29, 31, 2, None, True, False, 2),        # 3 x 3 tiles, ragged; no bias; batch 2
    (16, 40, 31, 29, 1, "clip", False, True, 1),     # 12 x 1 tiles, ragged columns
    (32, 16, 1, 800, 2, "clip", True, True, 1),      # one input row
])
@pytest.mark.parametrize("threads", [1, 2])
def test_expand_depthwise_blocked(cin, c, h, w, stride, act, dw_act, bias, batch, threads, rng):
    """In a blocked NCHWc region (channels multiples of 8, the map past 28x28)."""
    model, x = _chain(rng, cin, c, h, w, stride, act, dw_act, bias, batch)
    _check(model, x, threads, blocked=True)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cin,c,blocked", [(6, 13, False), (8, 16, True)])
def test_expand_depthwise_nan_inf(stride, cin, c, blocked, rng):
    """NaN and infinities pass through the expansion's clamp as through Clip."""
    model, x = _chain(rng, cin, c, 31, 33, stride)
    x.flat[::17], x.flat[5::23], x.flat[9::29] = np.nan, np.inf, -np.inf
    _check(model, x, threads=2, blocked=blocked)


@pytest.mark.parametrize("change", [
    {"extra_reader": True},                            # the expanded map is read elsewhere too
    {"dw_attrs": {"strides": [3, 3]}},
    {"dw_attrs": {"pads": [0, 0, 0, 0]}},
    {"dw_attrs": {"dilations": [2, 2], "pads": [2, 2, 2, 2]}},
])
def test_expand_depthwise_not_fused(change, rng):
    model, x = _chain(rng, 4, 8, 30, 30, 1, **change)
    _check(model, x, fused=False)


def test_expand_depthwise_small_map_not_fused(monkeypatch, rng):
    """Under the real threshold only a large expanded map (MobileNetV2's 4.8 MB) is fused."""
    monkeypatch.setattr(schedule, "_EXPAND_DEPTHWISE_MIN_BYTES", 4 << 20)
    model, x = _chain(rng, 4, 8, 30, 30, 2)
    _check(model, x, fused=False)
    assert schedule.expand_depthwise_pays(4 * 96 * 112 * 112)


@pytest.mark.parametrize("runtime_weights,stride,message", [
    (True, 1, "expand weights and bias must be constants"),
    (False, 3, "stride must be 1 or 2"),
])
def test_expand_depthwise_node_checks(runtime_weights, stride, message, rng):
    """The internal op named in a model file is checked like any other: a clear error."""
    from ember.errors import EmberError
    x = rng.standard_normal((1, 4, 30, 30)).astype(np.float32)
    weights = {"we": rng.standard_normal((8, 4)).astype(np.float32),
               "wd": rng.standard_normal((8, 9)).astype(np.float32)}
    inputs = {"x": x, "we": weights.pop("we")} if runtime_weights else {"x": x}
    node = helper.make_node("ExpandDepthwiseConv", ["x", "we", "", "wd"], ["y"], stride=stride)
    with pytest.raises(EmberError, match=message):
        ember.compile(make_model([node], inputs, ["y"], weights))
