"""int8 TFLite models, bit for bit: one small model per operator, compiled twice and checked
against two oracles: Ember's default numerics against TFLite Micro's interpreter, and
int8_numerics="litert" against ai-edge-litert's reference kernels (which differ from TFLite
Micro's in FULLY_CONNECTED: single rounding); then the real MLPerf Tiny and TFLite Micro int8
models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ember
from ember.errors import UnsupportedError
from ember.frontend.tflite_reader import read_model
from ember.ops.quant import quantize_multiplier
from test_tflite import DATA, litert, shared
from tflite_builder import TflBuilder


def micro(data: bytes, feeds: list[np.ndarray]) -> list[np.ndarray]:
    """TFLite Micro's outputs (the `tflite-micro` package's interpreter)."""
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    interp = runtime.Interpreter.from_bytes(data, arena_size=8 << 20)
    for k, x in enumerate(feeds):
        interp.set_input(x, k)
    interp.invoke()
    return [interp.get_output(k) for k in range(len(read_model(data).outputs))]


def run(data: "bytes | str", feeds: list[np.ndarray], numerics: str = "micro") -> list[np.ndarray]:
    got = ember.compile(data, int8_numerics=numerics)(*feeds)
    return list(got) if isinstance(got, tuple) else [got]


def assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_array_equal(g, w)


def check(data: bytes, feeds: list[np.ndarray], with_litert: bool = True) -> None:
    """Bit-exact with TFLite Micro and (with its numerics) with ai-edge-litert."""
    if with_litert:
        assert_same(run(data, feeds, "litert"), litert(data, feeds))
    assert_same(run(data, feeds), micro(data, feeds))


def q8(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, shape).astype(np.int8)


def qtensor(m: TflBuilder, shape, scale: float, zero: int) -> int:
    return m.tensor(list(shape), np.int8, quant=([scale], [zero]))


# -- convolutions ---------------------------------------------------------------------------
def conv_model(depthwise: bool, x_shape, kernel, out_c, out_hw, per_channel=True, bias=True,
               **fields) -> bytes:
    rng = np.random.default_rng(1)
    n, h, w, c = x_shape
    in_scale, in_zero = 0.05, 7
    w_shape = [1, *kernel, out_c] if depthwise else [out_c, *kernel, c]
    weights = rng.integers(-127, 128, w_shape).astype(np.int8)
    w_scale = rng.uniform(0.002, 0.01, out_c if per_channel else 1)
    taps = kernel[0] * kernel[1] * (1 if depthwise else c)
    out_scale = float(in_scale * w_scale.mean() * np.sqrt(taps) * 60 * 70 / 50)
    m = TflBuilder()
    x = qtensor(m, x_shape, in_scale, in_zero)
    y = qtensor(m, [n, *out_hw, out_c], out_scale, -5)
    wt = m.tensor(data=weights, quant=(list(w_scale), [0] * w_scale.size, 3 if depthwise else 0))
    b = m.tensor(data=rng.integers(-3000, 3000, out_c).astype(np.int32),
                 quant=(list(in_scale * np.resize(w_scale, out_c)), [0] * out_c)) if bias else -1
    if depthwise:
        m.op("DEPTHWISE_CONV_2D", [x, wt, b], [y], "DepthwiseConv2DOptions",
             DepthMultiplier=out_c // c, **fields)
    else:
        m.op("CONV_2D", [x, wt, b], [y], "Conv2DOptions", **fields)
    return m.finish([x], [y])


@pytest.mark.parametrize("padding, stride, dilation, act, out_hw, per_channel", [
    (0, 1, 1, 0, (7, 6), True), (1, 1, 1, 1, (5, 4), True), (0, 2, 1, 3, (4, 3), False),
    (1, 2, 1, 2, (3, 2), True), (0, 1, 2, 1, (7, 6), True)])
def test_conv_2d(padding, stride, dilation, act, out_hw, per_channel):
    data = conv_model(False, [2, 7, 6, 4], (3, 3), 5, out_hw, per_channel, Padding=padding,
                      StrideW=stride, StrideH=stride, DilationWFactor=dilation,
                      DilationHFactor=dilation, FusedActivationFunction=act)
    check(data, [q8(2, 7, 6, 4)])


def test_conv_2d_pointwise_without_bias():
    # (ai-edge-litert's int8 CONV_2D requires a bias; TFLite Micro's does not)
    data = conv_model(False, [1, 5, 5, 8], (1, 1), 6, (5, 5), bias=False, Padding=1, StrideW=1,
                      StrideH=1)
    check(data, [q8(1, 5, 5, 8)], with_litert=False)


@pytest.mark.parametrize("multiplier, padding, stride, act", [
    (1, 0, 1, 3), (2, 1, 1, 0), (1, 0, 2, 1)])
def test_depthwise_conv_2d(multiplier, padding, stride, act):
    c, h, w = 3, 8, 7
    out = (-(-h // stride), -(-w // stride)) if padding == 0 else \
        ((h - 3) // stride + 1, (w - 3) // stride + 1)
    data = conv_model(True, [1, h, w, c], (3, 3), c * multiplier, out, Padding=padding,
                      StrideW=stride, StrideH=stride, FusedActivationFunction=act,
                      DilationWFactor=1, DilationHFactor=1)
    check(data, [q8(1, h, w, c)])


@pytest.mark.parametrize("x_shape, keep, bias, act, out_shape", [
    ([3, 8], False, True, 1, [3, 5]), ([2, 3, 8], True, True, 0, [2, 3, 5]),
    ([1, 2, 2, 2], False, False, 3, [1, 5])])
def test_fully_connected(x_shape, keep, bias, act, out_shape):
    rng = np.random.default_rng(3)
    m = TflBuilder()
    x, y = qtensor(m, x_shape, 0.1, -3), qtensor(m, out_shape, 0.35, 4)
    w = m.tensor(data=rng.integers(-127, 128, (5, 8)).astype(np.int8), quant=([0.01], [0]))
    b = m.tensor(data=rng.integers(-500, 500, 5).astype(np.int32), quant=([0.001], [0])) \
        if bias else -1
    m.op("FULLY_CONNECTED", [x, w, b], [y], "FullyConnectedOptions", KeepNumDims=keep,
         FusedActivationFunction=act)
    check(m.finish([x], [y]), [q8(*x_shape, seed=4)])


# -- elementwise, pools, softmax ------------------------------------------------------------
@pytest.mark.parametrize("b_shape, scales, act", [
    ([2, 3, 4], (0.1, 0.05, 0.12), 0), ([3, 1], (0.02, 0.2, 0.15), 1),
    ([4], (0.3, 0.3, 0.05), 3)])
def test_add(b_shape, scales, act):
    m = TflBuilder()
    a, b, y = (qtensor(m, shape, s, z) for shape, s, z in
               (([2, 3, 4], scales[0], 3), (b_shape, scales[1], -10), ([2, 3, 4], scales[2], -2)))
    m.op("ADD", [a, b], [y], "AddOptions", FusedActivationFunction=act)
    check(m.finish([a, b], [y]), [q8(2, 3, 4), q8(*b_shape, seed=1)])


@pytest.mark.parametrize("opcode, padding, kernel, stride, act, out_hw", [
    ("AVERAGE_POOL_2D", 0, 3, 2, 0, (4, 3)), ("AVERAGE_POOL_2D", 1, 2, 2, 1, (3, 3)),
    ("MAX_POOL_2D", 0, 2, 1, 0, (7, 6)), ("MAX_POOL_2D", 1, 3, 2, 3, (3, 2))])
def test_pools(opcode, padding, kernel, stride, act, out_hw):
    m = TflBuilder()
    x, y = qtensor(m, [2, 7, 6, 3], 0.04, 9), qtensor(m, [2, *out_hw, 3], 0.04, 9)
    m.op(opcode, [x], [y], "Pool2DOptions", Padding=padding, StrideW=stride, StrideH=stride,
         FilterWidth=kernel, FilterHeight=kernel, FusedActivationFunction=act)
    check(m.finish([x], [y]), [q8(2, 7, 6, 3)])


@pytest.mark.parametrize("scale, beta, shape", [
    (0.1, 1.0, [3, 7]), (0.0039, 1.0, [2, 1, 12]), (0.5, 1.0, [4, 10]), (0.08, 0.5, [1, 300])])
def test_softmax(scale, beta, shape):
    m = TflBuilder()
    x, y = qtensor(m, shape, scale, 11), qtensor(m, shape, 1 / 256, -128)
    m.op("SOFTMAX", [x], [y], "SoftmaxOptions", Beta=beta)
    feed = q8(*shape)
    feed[0, ..., :3] = 127          # ties for the maximum
    check(m.finish([x], [y]), [feed])


def test_quantize_requantize_dequantize_reshape_pad():
    m = TflBuilder()
    x = m.tensor([2, 3, 4])
    q = qtensor(m, [2, 3, 4], 0.02, -3)
    r = qtensor(m, [2, 3, 4], 0.05, 20)
    s = qtensor(m, [6, 4], 0.05, 20)
    p = qtensor(m, [7, 6], 0.05, 20)
    f = m.tensor([7, 6])
    m.op("QUANTIZE", [x], [q])
    m.op("QUANTIZE", [q], [r])
    m.op("RESHAPE", [r, m.tensor(data=np.array([6, 4], np.int32))], [s])
    m.op("PAD", [s, m.tensor(data=np.array([[0, 1], [2, 0]], np.int32))], [p])
    m.op("DEQUANTIZE", [p], [f])
    x0 = np.random.default_rng(5).uniform(-4, 4, (2, 3, 4)).astype(np.float32)
    x0.flat[:4] = [0.01, -0.01, 0.03, 100.0]      # ties at +-0.5 steps, saturation
    data = m.finish([x], [f, q])
    check(data, [x0])


def test_multiplier_as_tflite_computes_it():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.75) == (3 << 29, 0)
    assert quantize_multiplier(1 - 2 ** -40) == (1 << 30, 1)        # rounds up to 2**31: halved
    assert quantize_multiplier(2.0 ** -40) == (0, 0)                # shift below -31
    assert quantize_multiplier(2.0 ** 40, single_rounding=True) == ((1 << 31) - 1, 30)


# -- real models ----------------------------------------------------------------------------
INT8_MODELS = ["kws_ref_model_int8", "vww_96_int8", "pretrainedResnet_int8", "ad01_int8"]


@pytest.mark.parametrize("name", INT8_MODELS)
def test_mlperf_tiny_int8_models(name):
    """Reference outputs from ai-edge-litert; for ad01 (only FULLY_CONNECTED layers) TFLite
    Micro's output differs in a few places, and is stored beside it."""
    model = str(DATA / f"{name}.tflite")
    x = np.load(DATA / f"{name}.input.npy")
    assert_same(run(model, [x], "litert"), [np.load(DATA / f"{name}.output.npy")])
    micro_out = DATA / f"{name}.micro_output.npy"
    want = np.load(micro_out if micro_out.exists() else DATA / f"{name}.output.npy")
    assert_same(run(model, [x]), [want])


@pytest.mark.parametrize("name", ["hello_world_int8", "micro_speech_quantized", "person_detect",
                                  "mobilenet_v2_quantized_1x3x224x224"])
def test_tflite_micro_int8_models(name):
    model = shared(f"tflite_micro/{name}.tflite")
    ref = Path(model).parent / "reference_io" / f"{name}.input.npy"
    compiled = ember.compile(str(model))
    x = np.load(ref) if ref.exists() else q8(*compiled.inputs[0].shape)
    assert_same([compiled(x)], micro(model.read_bytes(), [x]))


# -- refusals -------------------------------------------------------------------------------
def test_unsupported_ops_on_quantized_tensors_listed():
    m = TflBuilder()
    x, y = qtensor(m, [2, 3], 0.1, 3), qtensor(m, [2, 3], 0.2, -1)
    m.op("ADD", [x, x], [y], "AddOptions")
    m.op("GATHER_ND", [y, x], [m.tensor([2], np.int8)])
    m.op("EXP", [y], [qtensor(m, [2, 3], 1 / 128, 0)])
    with pytest.raises(UnsupportedError) as info:
        ember.compile(m.finish([x], [y]))
    assert info.value.problems == [
        "operator 1 (GATHER_ND): op is not supported on quantized tensors",
        "operator 2 (EXP): op is not supported on quantized tensors"]


def test_int16_activations_and_bad_softmax_output_refused():
    m = TflBuilder()
    x = m.tensor([2, 3], np.int16, quant=([0.1], [0]))
    y = m.tensor([2, 3], np.int16, quant=([0.1], [0]))
    a = qtensor(m, [2, 3], 0.1, 0)
    s = qtensor(m, [2, 3], 0.1, 0)
    m.op("AVERAGE_POOL_2D", [x], [y], "Pool2DOptions")
    m.op("SOFTMAX", [a], [s], "SoftmaxOptions", Beta=1.0)
    with pytest.raises(UnsupportedError) as info:
        ember.compile(m.finish([x, a], [y, s]))
    assert [p.split(": ", 1)[0] for p in info.value.problems] == [
        "operator 0 (AVERAGE_POOL_2D)", "operator 1 (SOFTMAX)"]
    assert "int8 is" in info.value.problems[0] and "1/256" in info.value.problems[1]


def test_internal_ops_refused_in_onnx_models():
    import onnx
    from onnx import helper
    node = helper.make_node("TflAdd", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "g", [
        helper.make_tensor_value_info(n, onnx.TensorProto.INT8, [2]) for n in "ab"],
        [helper.make_tensor_value_info("y", onnx.TensorProto.INT8, [2])])
    with pytest.raises(UnsupportedError, match="internal to Ember"):
        ember.compile(helper.make_model(graph))
