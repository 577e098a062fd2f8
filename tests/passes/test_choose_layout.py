"""choose-layout: which convs go channels-last, the graph it makes, and values against
onnxruntime (MobileNetV2- and DS-CNN-shaped blocks, region boundaries, graph outputs)."""
import numpy as np
from onnx import helper

from conftest import check_model, make_model
from pass_helpers import before_after, golden, graph_of, needs_ops, verify_passes  # noqa: F401
from ember.passes.choose_layout import ChooseLayout
from ember.passes.pipeline import pass_names

N = helper.make_node


def _weights(rng, *shape):
    return (rng.standard_normal(shape) * 0.3).astype(np.float32)


def inverted_residual(rng, channels: int, expand: int, stride: int = 1):
    """MobileNetV2's block: 1x1 expand + Clip, 3x3 depthwise + Clip, 1x1 project (+ the input
    when the stride is 1)."""
    hidden = channels * expand
    nodes = [N("Conv", ["x", "we", "be"], ["e"]), N("Clip", ["e", "lo", "hi"], ["e6"]),
             N("Conv", ["e6", "wd", "bd"], ["d"], group=hidden, strides=[stride, stride],
               pads=[1, 1, 1, 1]),
             N("Clip", ["d", "lo", "hi"], ["d6"]), N("Conv", ["d6", "wp", "bp"], ["p"])]
    if stride == 1:
        nodes.append(N("Add", ["p", "x"], ["y"]))
    else:
        nodes.append(N("Identity", ["p"], ["y"]))
    inits = {"we": _weights(rng, hidden, channels, 1, 1), "be": _weights(rng, hidden),
             "wd": _weights(rng, hidden, 1, 3, 3), "bd": _weights(rng, hidden),
             "wp": _weights(rng, channels, hidden, 1, 1), "bp": _weights(rng, channels),
             "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    return nodes, inits


def test_small_map_block_runs_channels_last():
    needs_ops("NhwcDepthwiseConv")
    rng = np.random.default_rng(0)
    nodes = [N("Conv", ["x", "wd", "bd"], ["d"], group=8, pads=[1, 1, 1, 1]),
             N("Relu", ["d"], ["r"]), N("Conv", ["r", "wp"], ["y"])]
    inits = {"wd": _weights(rng, 8, 1, 3, 3), "bd": _weights(rng, 8),
             "wp": _weights(rng, 16, 8, 1, 1)}
    _, after = before_after(ChooseLayout(), graph_of(nodes, {"x": (1, 8, 7, 7)}, ["y"], inits))
    assert after == golden("""
        graph(%0: f32[1,8,7,7]) {
          %1 = Transpose(%0) {perm=[0, 2, 3, 1]} : f32[1,7,7,8]
          %2 = Reshape(%1, const i64[2]) {allowzero=0} : f32[49,8]
          %3 = NhwcDepthwiseConv(%2, const f32[9,8], const f32[8]) {dilations=[1, 1], image=[1, 7, 7], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]} : f32[49,8]
          %4 = Relu(%3) : f32[49,8]
          %5 = MatMul(%4, const f32[8,16]) : f32[49,16]
          %6 = Reshape(%5, const i64[4]) {allowzero=0} : f32[1,7,7,16]
          %7 = Transpose(%6) {perm=[0, 3, 1, 2]} : f32[1,16,7,7]
          return %7
        }
        """)


def test_large_maps_and_other_convs_stay_nchw():
    """A map past max_positions, a 3x3 conv with one group, a channel multiplier of 2 and
    weights computed at run time all keep their Conv (so an Add between them stays too)."""
    rng = np.random.default_rng(1)
    nodes = [N("Conv", ["x", "w1"], ["a"]), N("Conv", ["x", "w3"], ["b"], pads=[1, 1, 1, 1]),
             N("Conv", ["x", "wm"], ["m"], group=4, pads=[1, 1, 1, 1]),
             N("Conv", ["x", "wr"], ["r"]), N("Add", ["a", "b"], ["s"])]
    inits = {"w1": _weights(rng, 4, 4, 1, 1), "w3": _weights(rng, 4, 4, 3, 3),
             "wm": _weights(rng, 8, 1, 3, 3)}
    graph = graph_of(nodes, {"x": (1, 4, 30, 30), "wr": (4, 4, 1, 1)}, ["s", "m", "r"], inits)
    before, after = before_after(ChooseLayout(), graph)
    assert after == before
    small = graph_of(nodes, {"x": (1, 4, 6, 6), "wr": (4, 4, 1, 1)}, ["s", "m", "r"], inits)
    _, after = before_after(ChooseLayout(), small)
    assert after.count("MatMul") == 1 and after.count("Conv(") == 3


def test_large_map_region_runs_blocked():
    """Past 28x28, a region whose 1x1 convs schedule.nchwc_pointwise_pays takes (MobileNetV2's
    32 -> 16 at 112x112, here 30x30) runs blocked NCHWc: [N, C/8, H*W, 8]."""
    rng = np.random.default_rng(2)
    nodes = [N("Conv", ["x", "wd", "bd"], ["d"], group=32, pads=[1, 1, 1, 1]),
             N("Clip", ["d", "lo", "hi"], ["r"]), N("Conv", ["r", "wp"], ["y"])]
    inits = {"wd": _weights(rng, 32, 1, 3, 3), "bd": _weights(rng, 32),
             "wp": _weights(rng, 16, 32, 1, 1),
             "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    _, after = before_after(ChooseLayout(), graph_of(nodes, {"x": (1, 32, 30, 30)}, ["y"], inits))
    assert after == golden("""
        graph(%0: f32[1,32,30,30]) {
          %1 = Reshape(%0, const i64[4]) {allowzero=0} : f32[1,4,8,900]
          %2 = Transpose(%1) {perm=[0, 1, 3, 2]} : f32[1,4,900,8]
          %3 = NchwcDepthwiseConv(%2, const f32[4,9,8], const f32[32]) {dilations=[1, 1], image=[1, 30, 30], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]} : f32[1,4,900,8]
          %4 = Clip(%3, const f32[], const f32[]) : f32[1,4,900,8]
          %5 = NchwcConv(%4, const f32[32,16]) : f32[1,2,900,8]
          %6 = Transpose(%5) {perm=[0, 1, 3, 2]} : f32[1,2,8,900]
          %7 = Reshape(%6, const i64[4]) {allowzero=0} : f32[1,16,30,30]
          return %7
        }
        """)


def test_large_map_region_stays_nchw_where_blocked_does_not_pay(rng):
    """A large-map region holding a 1x1 conv blocked NCHWc runs no quicker (24 -> 144, as in
    MobileNetV2's 56x56 blocks) keeps every conv in NCHW; values against onnxruntime."""
    nodes, inits = inverted_residual(rng, 24, 6, 1)
    x = rng.standard_normal((1, 24, 30, 30)).astype(np.float32)
    model = make_model(nodes, {"x": x}, ["y"], inits)
    graph = graph_of(nodes, {"x": x.shape}, ["y"], inits)
    before, after = before_after(ChooseLayout(), graph)
    assert after == before
    check_model(model, {"x": x})


def test_region_with_fused_expansion_runs_blocked(rng, monkeypatch):
    """A fused 1x1 expansion into a depthwise conv (fuse-expand-depthwise, here on a small map)
    takes its whole large-map region blocked, its 24 -> 144 1x1 convs too; values against
    onnxruntime."""
    from ember.lower import schedule
    monkeypatch.setattr(schedule, "_EXPAND_DEPTHWISE_MIN_BYTES", 0)
    nodes, inits = inverted_residual(rng, 24, 6, 1)
    x = rng.standard_normal((1, 24, 30, 30)).astype(np.float32)
    source = check_model_source(make_model(nodes, {"x": x}, ["y"], inits), {"x": x})
    assert "nchwcexpanddepthwiseconv(" in source and "nchwcconv(" in source


def check_model_source(model, feeds) -> str:
    """check_model, returning the generated C."""
    import ember
    check_model(model, feeds)
    return ember.compile(model).source


def test_first_conv_stays_nchw_without_a_blocked_region():
    """A first conv (3 input channels) on a large map whose readers are not a blocked region
    (ResNet's stem: a Relu, then a 3x3 conv) keeps its Conv."""
    rng = np.random.default_rng(3)
    nodes = [N("Conv", ["x", "w1"], ["a"], strides=[2, 2], pads=[3, 3, 3, 3]),
             N("Relu", ["a"], ["r"]), N("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])]
    inits = {"w1": _weights(rng, 16, 3, 7, 7), "w2": _weights(rng, 16, 16, 3, 3)}
    before, after = before_after(ChooseLayout(), graph_of(nodes, {"x": (1, 3, 64, 64)}, ["y"],
                                                          inits))
    assert after == before


def test_layout_option_and_export_keep_nchw(rng):
    """CompileOptions.layout="nchw" (what `ember export` uses) leaves every conv as it is;
    a layout it does not know is a clear error."""
    import pytest

    import ember
    from ember.passes.pipeline import default_pipeline
    assert "choose-layout" in pass_names()
    assert "choose-layout" not in [p.name for p in default_pipeline(3, channels_last=False)]
    x = rng.standard_normal((1, 8, 7, 7)).astype(np.float32)
    model = make_model([N("Conv", ["x", "w"], ["y"])], {"x": x}, ["y"],
                       {"w": _weights(rng, 16, 8, 1, 1)})
    assert "_matmul(" in ember.compile(model).source
    assert "_matmul(" not in ember.compile(model, layout="nchw").source
    with pytest.raises(ember.EmberError, match="layout must be 'auto' or 'nchw'"):
        ember.compile(model, layout="nhwc")


def test_pointwise_chain_values_with_outputs_inside_the_region(rng):
    """1x1 convs with a residual Add and a Clip; a value inside the region is also a graph
    output (it leaves through its own transpose), another is read by a node outside."""
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"]), N("Relu", ["c1"], ["r1"]),
             N("Conv", ["r1", "w2", "b2"], ["c2"]), N("Add", ["c2", "x"], ["s"]),
             N("Clip", ["s", "lo", "hi"], ["y"]), N("Sigmoid", ["c1"], ["z"]),
             N("Conv", ["c1", "w3"], ["big"], pads=[1, 1, 1, 1])]
    inits = {"w1": _weights(rng, 16, 8, 1, 1), "b1": _weights(rng, 16),
             "w2": _weights(rng, 8, 16, 1, 1), "b2": _weights(rng, 8),
             "w3": _weights(rng, 4, 16, 3, 3),
             "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    x = rng.standard_normal((2, 8, 7, 9)).astype(np.float32)
    check_model(make_model(nodes, {"x": x}, ["y", "z", "r1", "big"], inits), {"x": x})


def test_per_channel_and_scalar_constants(rng):
    """Elementwise constants broadcast per channel ([C,1,1], [1,C,1,1]) become [C]; one of a
    single element becomes a scalar."""
    nodes = [N("Conv", ["x", "w"], ["c"]), N("Mul", ["c", "k"], ["m"]),
             N("Add", ["m", "k4"], ["a"]), N("Sub", ["a", "one"], ["y"])]
    inits = {"w": _weights(rng, 6, 5, 1, 1), "k": _weights(rng, 6, 1, 1),
             "k4": _weights(rng, 1, 6, 1, 1), "one": np.ones((1, 1, 1, 1), np.float32)}
    x = rng.standard_normal((1, 5, 4, 3)).astype(np.float32)
    check_model(make_model(nodes, {"x": x}, ["y"], inits), {"x": x})


def test_inverted_residual_blocks(rng):
    needs_ops("NhwcDepthwiseConv")
    for channels, expand, stride, size in ((8, 6, 1, 14), (16, 4, 2, 14), (24, 6, 1, 7),
                                           (5, 3, 2, 9)):
        nodes, inits = inverted_residual(rng, channels, expand, stride)
        x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        check_model(make_model(nodes, {"x": x}, ["y"], inits), {"x": x})


def test_ds_cnn_matches_onnxruntime():
    needs_ops("NhwcDepthwiseConv")
    from ember.zoo import ZOO, random_inputs
    model = ZOO["ds_cnn"]()
    check_model(model, random_inputs(model), rtol=1e-4, atol=1e-5)
