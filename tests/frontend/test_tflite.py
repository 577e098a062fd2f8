"""TFLite import: real trained models against their reference outputs, one small model per
operator against the TFLite interpreter (ai-edge-litert, reference kernels), and broken or
unsupported models refused with a clear error."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import ember
from ember import cli
from ember.errors import ModelFormatError, ShapeError, UnsupportedError
from ember.frontend.tflite import import_tflite
from ember.graph.printer import print_graph
from ember.passes.pipeline import run_pipeline
from tflite_builder import TflBuilder

DATA = Path(__file__).resolve().parents[1] / "data" / "tflite"
SHARED = Path(os.environ.get("EMBER_SHARED_MODELS")
              or Path(__file__).resolve().parents[3] / "shared" / "models")


def litert(data: bytes, feeds: list[np.ndarray]) -> list[np.ndarray]:
    """The TFLite interpreter's outputs, with its reference kernels."""
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    interp = interpreter_module.Interpreter(
        model_content=data,
        experimental_op_resolver_type=interpreter_module.OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    for detail, x in zip(interp.get_input_details(), feeds):
        interp.set_tensor(detail["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def check(data: bytes, feeds: list[np.ndarray], rtol: float = 1e-5, atol: float = 1e-5,
          want: list[np.ndarray] | None = None) -> None:
    got = ember.compile(data)(*feeds)
    got = list(got) if isinstance(got, tuple) else [got]
    want = litert(data, feeds) if want is None else want
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- real trained models ----------------------------------------------------------------------
def compare_with_reference(model: Path, io_dir: Path) -> None:
    x = np.load(io_dir / f"{model.stem}.input.npy")
    want = np.load(io_dir / f"{model.stem}.output.npy")
    check(str(model), [x], want=[want])


@pytest.mark.parametrize("name", ["kws_ref_model_float32", "vww_96_float",
                                  "pretrainedResnet_float", "ad01_fp32"])
def test_mlperf_tiny_models(name):
    compare_with_reference(DATA / f"{name}.tflite", DATA)


def shared(path: str) -> Path:
    model = SHARED / path
    if not model.is_file():
        pytest.skip(f"{model} is absent (set EMBER_SHARED_MODELS to the shared models folder)")
    return model


@pytest.mark.parametrize("path", ["mlperf_tiny/ic/pretrainedResnet_large_float.tflite",
                                  "tflite_micro/hello_world_float.tflite"])
def test_shared_float_models(path):
    model = shared(path)
    compare_with_reference(model, model.parents[1 if "mlperf" in path else 0] / "reference_io")


@pytest.mark.parametrize("path, problems", [
    ("tflite_micro/audio_preprocessor_float.tflite", ["CUSTOM(SignalWindow)", "CUSTOM(SignalRfft)"]),
    ("tflite_micro/trained_lstm_int8.tflite",
     ["UNIDIRECTIONAL_SEQUENCE_LSTM): op is not supported on quantized tensors"])])
def test_shared_models_refused(path, problems):
    with pytest.raises(UnsupportedError) as info:
        ember.compile(str(shared(path)))
    listed = "\n".join(info.value.problems)
    for text in problems:
        assert text in listed


def test_nhwc_layers_run_without_transposes():
    # (choose-layout off: its own channels-last regions add transposes at their borders)
    graph = run_pipeline(import_tflite((DATA / "vww_96_float.tflite").read_bytes()),
                         channels_last=False)
    text = print_graph(graph)
    assert "Transpose" not in text.split("\n", 2)[2]    # only the 3-channel input keeps one
    assert text.count("Transpose") == 1


# -- one operator at a time -------------------------------------------------------------------
def conv_model(opcode: str, x_shape, w: np.ndarray, out_shape, bias: bool = True,
               options: str = "Conv2DOptions", **fields) -> bytes:
    m = TflBuilder()
    x, y = m.tensor(x_shape), m.tensor(out_shape)
    b = m.tensor(data=rand(w.shape[0] if opcode == "CONV_2D" else w.shape[3], seed=9)) \
        if bias else -1
    m.op(opcode, [x, m.tensor(data=w), b], [y], options, **fields)
    return m.finish([x], [y])


@pytest.mark.parametrize("padding, stride, dilation, act, out_hw", [
    (0, 1, 1, 0, (7, 6)), (1, 1, 1, 1, (5, 4)), (0, 2, 1, 3, (4, 3)), (1, 2, 1, 2, (3, 2)),
    (0, 1, 2, 0, (7, 6)), (1, 3, 1, 0, (2, 2))])
def test_conv_2d(padding, stride, dilation, act, out_hw):
    w = rand(5, 3, 3, 4, seed=1)
    data = conv_model("CONV_2D", [2, 7, 6, 4], w, [2, *out_hw, 5], Padding=padding, StrideW=stride,
                      StrideH=stride, DilationWFactor=dilation, DilationHFactor=dilation,
                      FusedActivationFunction=act)
    check(data, [rand(2, 7, 6, 4)])


def test_conv_2d_fused_tanh_and_no_bias():
    # The interpreter's conv ignores a fused TANH (it only clamps) and wants a bias; Ember
    # follows the schema: tanh of the interpreter's result without activation, zero bias.
    w, x = rand(6, 1, 1, 3, seed=1), rand(1, 4, 4, 3)
    plain = conv_model("CONV_2D", [1, 4, 4, 3], w, [1, 4, 4, 6], Padding=1, StrideW=1, StrideH=1)
    want = litert(plain, [x])[0] - rand(6, seed=9)           # take the bias back out
    data = conv_model("CONV_2D", [1, 4, 4, 3], w, [1, 4, 4, 6], bias=False, Padding=1,
                      StrideW=1, StrideH=1, FusedActivationFunction=4)
    check(data, [x], want=[np.tanh(want)])


@pytest.mark.parametrize("shape", [(1, 9, 8, 3), (2, 5, 5, 1)])
def test_hybrid_conv_2d(shape):
    # int8 weights on float activations: TFLite quantizes the input per batch item.
    w = np.random.default_rng(4).integers(-127, 128, (4, 3, 3, shape[3])).astype(np.int8)
    m = TflBuilder()
    x, y = m.tensor(list(shape)), m.tensor([shape[0], *shape[1:3], 4])
    weights = m.tensor(data=w, quant=([0.02], [0]))
    m.op("CONV_2D", [x, weights, m.tensor(data=rand(4, seed=2))], [y], "Conv2DOptions",
         Padding=0, StrideW=1, StrideH=1, FusedActivationFunction=1)
    check(m.finish([x], [y]), [rand(*shape) * 3])


@pytest.mark.parametrize("multiplier, padding, stride, act", [
    (1, 0, 1, 3), (2, 1, 1, 0), (1, 0, 2, 1), (3, 1, 2, 2)])
def test_depthwise_conv_2d(multiplier, padding, stride, act):
    c, h, w = 3, 8, 7
    out = (-(-h // stride), -(-w // stride)) if padding == 0 else \
        ((h - 3) // stride + 1, (w - 3) // stride + 1)
    data = conv_model("DEPTHWISE_CONV_2D", [1, h, w, c], rand(1, 3, 3, c * multiplier, seed=1),
                      [1, *out, c * multiplier], options="DepthwiseConv2DOptions",
                      Padding=padding, StrideW=stride, StrideH=stride,
                      DepthMultiplier=multiplier, FusedActivationFunction=act,
                      DilationWFactor=1, DilationHFactor=1)
    check(data, [rand(1, h, w, c)])


@pytest.mark.parametrize("opcode, padding, kernel, stride, act, out_hw", [
    ("AVERAGE_POOL_2D", 0, 3, 2, 0, (4, 3)), ("AVERAGE_POOL_2D", 1, 2, 2, 1, (3, 3)),
    ("MAX_POOL_2D", 0, 2, 1, 0, (7, 6)), ("MAX_POOL_2D", 1, 3, 2, 3, (3, 2))])
def test_pools(opcode, padding, kernel, stride, act, out_hw):
    m = TflBuilder()
    x, y = m.tensor([2, 7, 6, 3]), m.tensor([2, *out_hw, 3])
    m.op(opcode, [x], [y], "Pool2DOptions", Padding=padding, StrideW=stride, StrideH=stride,
         FilterWidth=kernel, FilterHeight=kernel, FusedActivationFunction=act)
    check(m.finish([x], [y]), [rand(2, 7, 6, 3)])


@pytest.mark.parametrize("x_shape, keep, bias, out_shape", [
    ([3, 8], False, True, [3, 5]), ([2, 3, 8], True, True, [2, 3, 5]),
    ([2, 3, 8], False, False, [6, 5]), ([1, 2, 2, 2], False, True, [1, 5])])
def test_fully_connected(x_shape, keep, bias, out_shape):
    m = TflBuilder()
    x, y = m.tensor(x_shape), m.tensor(out_shape)
    b = m.tensor(data=rand(5, seed=2)) if bias else -1
    m.op("FULLY_CONNECTED", [x, m.tensor(data=rand(5, 8, seed=1)), b], [y],
         "FullyConnectedOptions", KeepNumDims=keep, FusedActivationFunction=1)
    check(m.finish([x], [y]), [rand(*x_shape)])


@pytest.mark.parametrize("opcode, options, act", [
    ("ADD", "AddOptions", 1), ("SUB", "SubOptions", 3), ("MUL", "MulOptions", 0),
    ("DIV", "DivOptions", 2), ("MAXIMUM", None, None), ("MINIMUM", None, None),
    ("SQUARED_DIFFERENCE", None, None), ("POW", None, None)])
def test_binary(opcode, options, act):
    m = TflBuilder()
    a, b, y = m.tensor([2, 3, 4]), m.tensor([3, 1]), m.tensor([2, 3, 4])
    fields = {} if options is None else {"FusedActivationFunction": act}
    m.op(opcode, [a, b], [y], options, **fields)
    check(m.finish([a, b], [y]), [rand(2, 3, 4), rand(3, 1, seed=1) + 2.5])


@pytest.mark.parametrize("opcode", ["LOGISTIC", "TANH", "RELU", "RELU6", "RELU_N1_TO_1",
                                    "HARD_SWISH", "EXP", "ABS", "NEG", "FLOOR", "SQRT",
                                    "RSQRT", "LOG", "SIN", "COS", "RELU_0_TO_1"])
def test_unary(opcode):
    m = TflBuilder()
    x, y = m.tensor([2, 5, 3]), m.tensor([2, 5, 3])
    m.op(opcode, [x], [y])
    check(m.finish([x], [y]), [rand(2, 5, 3) * 4])


def test_cast():
    m = TflBuilder()
    x, y = m.tensor([2, 5]), m.tensor([2, 5], np.int32)
    m.op("CAST", [x], [y])
    check(m.finish([x], [y]), [rand(2, 5) * 10])


def test_softmax_beta_and_leaky_relu():
    m = TflBuilder()
    x, s, y = m.tensor([3, 7]), m.tensor([3, 7]), m.tensor([3, 7])
    m.op("SOFTMAX", [x], [s], "SoftmaxOptions", Beta=0.5)
    m.op("LEAKY_RELU", [s], [y], "LeakyReluOptions", Alpha=0.2)
    check(m.finish([x], [y, s]), [rand(3, 7) * 3])


@pytest.mark.parametrize("opcode, axes, keep, out_shape", [
    ("MEAN", [1, 2], False, [2, 3]), ("MEAN", [-1], True, [2, 4, 5, 1]),
    ("SUM", [0, 3], False, [4, 5]), ("REDUCE_MAX", [2], True, [2, 4, 1, 3])])
def test_reductions(opcode, axes, keep, out_shape):
    m = TflBuilder()
    x, y = m.tensor([2, 4, 5, 3]), m.tensor(out_shape)
    m.op(opcode, [x, m.tensor(data=np.array(axes, np.int32))], [y], "ReducerOptions",
         KeepDims=keep)
    check(m.finish([x], [y]), [rand(2, 4, 5, 3)])


def test_reshape_squeeze_expand_transpose():
    m = TflBuilder()
    x, r, s, e, t, r2 = (m.tensor(s) for s in ([2, 1, 6], [3, 1, 4], [3, 4], [3, 1, 4],
                                                 [4, 1, 3], [12]))
    m.op("RESHAPE", [x, m.tensor(data=np.array([3, -1, 4], np.int32))], [r])
    m.op("SQUEEZE", [r], [s], "SqueezeOptions", SqueezeDims=[1])
    m.op("EXPAND_DIMS", [s, m.tensor(data=np.array([1], np.int32))], [e])
    m.op("TRANSPOSE", [e, m.tensor(data=np.array([2, 1, 0], np.int32))], [t])
    m.op("RESHAPE", [t], [r2], "ReshapeOptions", NewShape=[-1])     # shape from the options
    check(m.finish([x], [r2, s]), [rand(2, 1, 6)])


def test_pad_and_concatenation():
    m = TflBuilder()
    x, p, v, q, c = (m.tensor(s) for s in ([1, 3, 2, 2], [1, 4, 5, 2], [], [1, 4, 5, 2],
                                           [1, 4, 5, 4]))
    pads = m.tensor(data=np.array([[0, 0], [1, 0], [1, 2], [0, 0]], np.int32))
    m.op("PAD", [x, pads], [p])
    m.op("PADV2", [x, pads, v], [q])
    m.op("CONCATENATION", [p, q], [c], "ConcatenationOptions", Axis=-1)
    check(m.finish([x, v], [c]), [rand(1, 3, 2, 2), np.array(-3.5, np.float32)])


@pytest.mark.parametrize("begin, end, strides, masks, out_shape", [
    ([1, 0, 2], [3, 4, 6], [1, 2, 1], {}, [2, 2, 4]),
    ([-1, 3, 0], [0, 0, 0], [-1, -1, 2], {"BeginMask": 1, "EndMask": 5}, [4, 3, 3]),
    ([0, 1, 0], [0, 2, 0], [1, 1, 1], {"ShrinkAxisMask": 2, "BeginMask": 5, "EndMask": 5}, [4, 6]),
    ([0, 2], [0, 5], [1, 1], {"EllipsisMask": 1}, [4, 5, 3]),
    ([0, 0, 1], [0, 0, 3], [1, 1, 1], {"NewAxisMask": 2, "BeginMask": 1, "EndMask": 1},
     [4, 1, 2, 6]),
    ([1, 1, 1], [2, 2, 2], [1, 1, 1], {"Offset": True}, [2, 2, 2])])
def test_strided_slice(begin, end, strides, masks, out_shape):
    m = TflBuilder()
    x, y = m.tensor([4, 5, 6]), m.tensor(out_shape)
    consts = [m.tensor(data=np.array(v, np.int32)) for v in (begin, end, strides)]
    m.op("STRIDED_SLICE", [x, *consts], [y], "StridedSliceOptions", **masks)
    check(m.finish([x], [y]), [rand(4, 5, 6)])


def test_float16_weights_dequantized_and_cast():
    m = TflBuilder()
    x, w, y = m.tensor([2, 3]), m.tensor([2, 3]), m.tensor([2, 3])
    m.op("DEQUANTIZE", [m.tensor(data=rand(2, 3, seed=5).astype(np.float16))], [w])
    m.op("ADD", [x, w], [y], "AddOptions")
    check(m.finish([x], [y]), [rand(2, 3)])


def test_quantize_float_to_float_is_a_no_op():
    # (The interpreter refuses this form; TFLite converters leave it between float ops.)
    m = TflBuilder()
    x, y = m.tensor([2, 3]), m.tensor([2, 3])
    m.op("QUANTIZE", [x], [y])
    x0 = rand(2, 3)
    check(m.finish([x], [y]), [x0], want=[x0])


def test_nhwc_chain():
    # conv -> depthwise -> conv with a residual add: values, and no Transpose between layers.
    m = TflBuilder()
    x, a, b, c, y = (m.tensor([1, 6, 6, 4]) for _ in range(5))
    conv = dict(Padding=0, StrideW=1, StrideH=1, FusedActivationFunction=1)
    bias = [m.tensor(data=rand(4, seed=s)) for s in (4, 5, 6)]
    m.op("CONV_2D", [x, m.tensor(data=rand(4, 3, 3, 4, seed=1)), bias[0]], [a], "Conv2DOptions",
         **conv)
    m.op("DEPTHWISE_CONV_2D", [a, m.tensor(data=rand(1, 3, 3, 4, seed=2)), bias[1]], [b],
         "DepthwiseConv2DOptions", DepthMultiplier=1, **conv)
    m.op("CONV_2D", [b, m.tensor(data=rand(4, 1, 1, 4, seed=3)), bias[2]], [c], "Conv2DOptions",
         **conv)
    m.op("ADD", [c, a], [y], "AddOptions")
    data = m.finish([x], [y])
    check(data, [rand(1, 6, 6, 4)])
    text = print_graph(run_pipeline(import_tflite(data), channels_last=False))
    assert text.count("Transpose") == 2, text      # the model's input and output only


# -- entry points -----------------------------------------------------------------------------
def test_cli_compile_and_inspect(tmp_path, capsys):
    path = tmp_path / "model.tflite"
    path.write_bytes((DATA / "ad01_fp32.tflite").read_bytes())
    assert cli.main(["inspect", str(path), "--after", "cancel-transposes"]) == 0
    assert "Gemm(" in capsys.readouterr().out
    assert cli.main(["compile", str(path), "-o", str(tmp_path / "out")]) == 0
    x = np.load(DATA / "ad01_fp32.input.npy")
    np.testing.assert_allclose(ember.load(tmp_path / "out")(x),
                               np.load(DATA / "ad01_fp32.output.npy"), rtol=1e-5, atol=1e-5)


def test_found_by_content_not_suffix(tmp_path):
    path = tmp_path / "model.bin"           # no .tflite suffix: the "TFL3" identifier decides
    path.write_bytes((DATA / "kws_ref_model_float32.tflite").read_bytes())
    assert ember.compile(path).inputs[0].shape == (1, 49, 10, 1)


# -- broken and unsupported models ------------------------------------------------------------
def small_model(**changes) -> bytes:
    m = TflBuilder()
    x, y = m.tensor([2, 3]), m.tensor(changes.get("out_shape", [2, 3]))
    m.op("ADD", [x, changes.get("b", m.tensor(data=rand(2, 3)))], [y], "AddOptions")
    return m.finish([x], [y])


def test_truncated_and_corrupt_files(tmp_path):
    data = small_model()
    for broken in (data[:len(data) // 2], data[:12], b"", data[:8] + bytes(range(256)) * 4):
        with pytest.raises(ModelFormatError):
            ember.compile(broken)
    path = tmp_path / "not.tflite"
    path.write_bytes(b"this is no model")
    with pytest.raises(ModelFormatError, match="TFL3"):
        ember.compile(path)


def test_bad_tensor_index():
    with pytest.raises(ModelFormatError, match=r"operator 0: input tensor index 99 is out of range"):
        ember.compile(small_model(b=99))


def test_declared_shape_mismatch():
    with pytest.raises(ShapeError, match=r"operator 0', op ADD.*declares tensor 1 "):
        ember.compile(small_model(out_shape=[3, 3]))


def test_bad_buffer_size():
    m = TflBuilder()
    x, y = m.tensor([2, 3]), m.tensor([2, 3])
    w = m.tensor(data=rand(2, 3))
    m.tensors[w].shape = [4, 3]                  # the buffer holds 6 floats, the shape says 12
    m.op("ADD", [x, w], [y], "AddOptions")
    with pytest.raises(ModelFormatError, match="buffer 1 holds 24 bytes"):
        ember.compile(m.finish([x], [y]))


def test_unsupported_ops_listed_together():
    m = TflBuilder()
    x, a, b, y = (m.tensor([1, 4, 4, 2]) for _ in range(4))
    m.op("LOCAL_RESPONSE_NORMALIZATION", [x], [a])
    m.op("CUSTOM:MyOp", [a], [b])
    m.op("RELU", [x], [y])
    m.op("TANH", [b], [m.tensor([1, 4, 4, 2])])
    with pytest.raises(UnsupportedError) as info:
        ember.compile(m.finish([x], [y]))
    assert info.value.problems == [
        "operator 0 (LOCAL_RESPONSE_NORMALIZATION): op is not supported",
        "operator 1 (CUSTOM(MyOp)): op is not supported"]
