"""fuse-qdq: QDQ models (onnxruntime.quantization.quantize_static, QuantFormat.QDQ) run as
integer ops and give onnxruntime's results with its default graph optimizations, which fuse
the same patterns into its integer kernels.

Weights are quantized with reduce_range (7-bit int8) or as uint8: onnxruntime's AVX2 U8S8
kernels (VPMADDUBSW) saturate pairs of full-range int8 products, which exact integer sums
(Ember, and onnxruntime's own unfused graph) do not; onnxruntime's docs advise reduce_range
on such machines.
"""
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import ember
from pass_helpers import apply, verify_passes  # noqa: F401
from ember.frontend.onnx import import_onnx
from ember.graph.ir import Graph
from ember.passes.fuse_qdq import FuseQdq
from ember.zoo import ZOO, random_inputs

N = helper.make_node
F32 = np.float32

#: activation type, weight type, per channel, symmetric activations, reduce_range
CONFIGS = {
    "u8s8": ("QUInt8", "QInt8", False, False, True),
    "u8s8-per-channel": ("QUInt8", "QInt8", True, False, True),
    "s8s8": ("QInt8", "QInt8", False, False, True),
    "s8s8-per-channel-symmetric": ("QInt8", "QInt8", True, True, True),
    "u8u8-per-channel-symmetric": ("QUInt8", "QUInt8", True, True, False),
}


class _Feeds(CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def quantize(model: onnx.ModelProto, calibration: list[dict], config: str, tmp_path
             ) -> onnx.ModelProto:
    act, weight, per_channel, symmetric, reduce_range = CONFIGS[config]
    src, dst = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), _Feeds(calibration), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType[act], weight_type=QuantType[weight],
                    per_channel=per_channel, reduce_range=reduce_range,
                    extra_options={"ActivationSymmetric": symmetric})
    return onnx.load(dst)


def run_ort(model: onnx.ModelProto, feeds: dict, optimize: bool = True) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def fused(model: onnx.ModelProto) -> Graph:
    graph = import_onnx(model)
    apply(FuseQdq(), graph)            # verified, every node's type re-inferred
    return graph


def ops(graph: Graph) -> Counter:
    return Counter(n.op for n in graph.nodes)


def integer_inputs(graph: Graph, op: str) -> bool:
    """Whether every `op` node reads 8-bit integers."""
    return all(n.inputs[0].type.dtype.name in ("i8", "u8") for n in graph.nodes if n.op == op)


def check_same(model: onnx.ModelProto, feeds: dict, steps: int = 0) -> None:
    """Ember's outputs equal onnxruntime's; `steps` quantization steps of the output apart
    at most where onnxruntime fuses an op Ember keeps in float (its QLinear* rounding)."""
    got = ember.compile(model).run(feeds)
    want = run_ort(model, feeds)
    for info, expected in zip(model.graph.output, want):
        step = _output_scale(model, info.name)
        if step is None:              # a float output: fp32 tolerance
            np.testing.assert_allclose(got[info.name], expected, rtol=1e-4, atol=1e-5)
        elif steps == 0:
            np.testing.assert_array_equal(got[info.name], expected, err_msg=info.name)
        else:
            assert np.abs(got[info.name] - expected).max() <= steps * step * 1.0001


def _output_scale(model: onnx.ModelProto, name: str) -> float | None:
    """The scale of the DequantizeLinear computing output `name` (None: another op does)."""
    dq = next(n for n in model.graph.node if n.output[0] == name)
    scales = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return float(scales[dq.input[1]]) if dq.op_type == "DequantizeLinear" else None


def _model(nodes, inputs: dict[str, tuple], inits: dict[str, np.ndarray], opset: int = 17,
           outputs: tuple[str, ...] = ("y",)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


# -- quantize_static models ---------------------------------------------------------------------
def conv_relu_pool_conv(rng: np.random.Generator) -> onnx.ModelProto:
    inits = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(F32),
             "b1": rng.normal(0, 0.1, 8).astype(F32),
             "w2": rng.normal(0, 0.2, (4, 8, 3, 3)).astype(F32),
             "b2": rng.normal(0, 0.1, 4).astype(F32)}
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             N("Relu", ["c1"], ["r1"]),
             N("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             N("Conv", ["p1", "w2", "b2"], ["y"], strides=[1, 2])]
    return _model(nodes, {"x": (1, 3, 13, 12)}, inits)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_conv_relu_maxpool_conv(config, rng, tmp_path):
    calibration = [{"x": rng.standard_normal((1, 3, 13, 12)).astype(F32)} for _ in range(4)]
    model = quantize(conv_relu_pool_conv(rng), calibration, config, tmp_path)
    graph = fused(model)
    found = ops(graph)
    assert found["QLinearConv"] == 2 and "Conv" not in found, found
    assert integer_inputs(graph, "MaxPool")
    # a symmetric activation keeps its Relu (ORT runs it in float): max(q, zero point) here
    assert "Relu" not in found and found["Max"] == (1 if CONFIGS[config][3] else 0)
    # inputs past the calibrated range saturate the first QuantizeLinear
    check_same(model, {"x": (1.5 * rng.standard_normal((1, 3, 13, 12))).astype(F32)})


def matmul_gemm_moves(rng: np.random.Generator, opset: int) -> onnx.ModelProto:
    """MatMul, Relu, MatMul, Reshape, Gemm (transB, bias), Reshape, Transpose, Concat."""
    inits = {"w1": rng.normal(0, 0.3, (16, 24)).astype(F32),
             "w2": rng.normal(0, 0.3, (24, 8)).astype(F32),
             "w3": rng.normal(0, 0.3, (12, 8)).astype(F32),
             "b3": rng.normal(0, 0.3, 12).astype(F32),
             "rows": np.array([10, 8], np.int64), "split": np.array([10, 6, 2], np.int64)}
    nodes = [N("MatMul", ["x", "w1"], ["m1"]), N("Relu", ["m1"], ["r1"]),
             N("MatMul", ["r1", "w2"], ["m2"]), N("Reshape", ["m2", "rows"], ["f"]),
             N("Gemm", ["f", "w3", "b3"], ["g"], transB=1), N("Reshape", ["g", "split"], ["s"]),
             N("Transpose", ["s"], ["t"], perm=[0, 2, 1]), N("Concat", ["t", "t"], ["y"], axis=1)]
    return _model(nodes, {"x": (2, 5, 16)}, inits, opset)


@pytest.mark.parametrize("opset", [17, 21])
@pytest.mark.parametrize("config", ["u8s8", "s8s8-per-channel-symmetric",
                                    "u8u8-per-channel-symmetric"])
def test_matmul_gemm_and_data_movement(config, opset, rng, tmp_path):
    calibration = [{"x": rng.standard_normal((2, 5, 16)).astype(F32)} for _ in range(4)]
    model = quantize(matmul_gemm_moves(rng, opset), calibration, config, tmp_path)
    graph = fused(model)
    found = ops(graph)
    assert found["QLinearMatMul"] == 2 and found["QLinearConv"] == 1, found
    assert not {"MatMul", "Gemm", "Relu"} & set(found), found
    for op in ("Transpose", "Concat"):
        assert integer_inputs(graph, op), op
    check_same(model, {"x": rng.standard_normal((2, 5, 16)).astype(F32)})


# -- hand-written QDQ models --------------------------------------------------------------------
def qdq_conv(rng: np.random.Generator, activation=None, y_zp: int = 0, y_type=np.uint8,
             float_bias: bool = False, opset: int = 17,
             x_type=None) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(DQ(w) per channel, bias) [-> activation] -> Q -> DQ -> y; x is
    quantized to `x_type` (default: y's type)."""
    x_type = x_type or y_type
    w = rng.integers(-60, 61, (6, 4, 3, 3)).astype(np.int8)
    w_scale = rng.uniform(0.005, 0.02, 6).astype(F32)
    x_scale = F32(0.02)
    inits = {"xs": np.array(x_scale), "xz": np.array(130 if x_type == np.uint8 else 2, x_type),
             "w": w, "ws": w_scale,
             "wz": np.zeros(6, np.int8), "ys": np.array(0.05, F32), "yz": np.array(y_zp, y_type)}
    bias = rng.normal(0, 0.2, 6).astype(F32)
    if float_bias:
        inits["b"] = bias
    else:
        inits.update(bq=np.round(bias / (x_scale * w_scale)).astype(np.int32), bs=x_scale * w_scale,
                     bz=np.zeros(6, np.int32))
    nodes = [N("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             N("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             N("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0)]
    if not float_bias:
        nodes.append(N("DequantizeLinear", ["bq", "bs", "bz"], ["b"], axis=0))
    nodes.append(N("Conv", ["xd", "wd", "b"], ["c"], pads=[1, 1, 1, 1]))
    if activation is not None:
        nodes.append(activation)
    nodes += [N("QuantizeLinear", ["c" if activation is None else "a", "ys", "yz"], ["yq"]),
              N("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    return _model(nodes, {"x": (1, 4, 7, 6)}, inits, opset)


def _x(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"x": rng.uniform(-2.5, 2.5, (1, 4, 7, 6)).astype(F32)}


@pytest.mark.parametrize("opset", [13, 21])
def test_float_bias_is_quantized_as_onnxruntime_does(opset, rng):
    """ORT's WeightBiasQuantization: Round(bias / (x_scale * w_scale)) in float32."""
    model = qdq_conv(rng, float_bias=True, opset=opset)
    graph = fused(model)
    conv = next(n for n in graph.nodes if n.op == "QLinearConv")
    assert conv.inputs[8].type.dtype.name == "i32"
    check_same(model, _x(rng))


@pytest.mark.parametrize("activation, y_zp, y_type", [
    (N("Relu", ["c"], ["a"]), 0, np.uint8),
    (N("Relu", ["c"], ["a"]), -128, np.int8),
    (N("Clip", ["c", "lo", "hi"], ["a"]), 0, np.uint8),
])
def test_redundant_activation_goes(activation, y_zp, y_type, rng):
    model = qdq_conv(rng, activation, y_zp, y_type)
    if activation.op_type == "Clip":      # [-1, 20] quantizes past the uint8 range [0, 12.75]
        model.graph.initializer.extend([numpy_helper.from_array(np.array(-1.0, F32), "lo"),
                                        numpy_helper.from_array(np.array(20.0, F32), "hi")])
    found = ops(fused(model))
    assert found["QLinearConv"] == 1 and not {"Conv", "Relu", "Clip"} & set(found), found
    check_same(model, _x(rng))


def test_clip_inside_the_range_stays_float(rng):
    model = qdq_conv(rng, N("Clip", ["c", "lo", "hi"], ["a"]), 0, np.uint8)
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0.0, F32), "lo"),
                                    numpy_helper.from_array(np.array(6.0, F32), "hi")])
    found = ops(fused(model))
    assert found["Conv"] == 1 and found["Clip"] == 1, found
    check_same(model, _x(rng), steps=1)    # both float: summation order may flip a rounding


@pytest.mark.parametrize("case", ["output-type", "weight-axis", "conv-output-read-twice",
                                  "run-time-scale"])
def test_patterns_onnxruntime_leaves_float_stay_float(case, rng):
    if case == "output-type":          # uint8 activation quantized to int8: ORT's selector refuses
        model = qdq_conv(rng, y_type=np.int8, x_type=np.uint8)
    elif case == "weight-axis":        # per-channel weights on the input-channel axis
        model = qdq_conv(rng)
        for name, value in (("ws", rng.uniform(0.005, 0.02, 4).astype(F32)),
                            ("wz", np.zeros(4, np.int8))):
            tensor = next(t for t in model.graph.initializer if t.name == name)
            tensor.CopyFrom(numpy_helper.from_array(value, name))
        next(n for n in model.graph.node if n.output[0] == "wd").attribute[0].i = 1
    elif case == "conv-output-read-twice":      # the float Conv output is also a graph output
        model = qdq_conv(rng)
        model.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, None))
    else:                              # x's scale is a graph input
        model = qdq_conv(rng)
        scale = next(t for t in model.graph.initializer if t.name == "xs")
        model.graph.initializer.remove(scale)
        model.graph.input.append(helper.make_tensor_value_info("xs", TensorProto.FLOAT, []))
    found = ops(fused(model))
    assert found["Conv"] == 1 and "QLinearConv" not in found, found
    feeds = _x(rng) | ({"xs": np.array(0.02, F32)} if case == "run-time-scale" else {})
    check_same(model, feeds, steps=1)     # both float: summation order may flip a rounding


def test_shared_dequantize_stays_for_its_other_reader(rng):
    """DQ(x) feeds the Conv (fused) and a float Add (no Q after it)."""
    model = qdq_conv(rng)
    model.graph.node.append(N("Add", ["xd", "xd"], ["twice"]))
    model.graph.output.append(helper.make_tensor_value_info("twice", TensorProto.FLOAT, None))
    found = ops(fused(model))
    assert found["QLinearConv"] == 1 and found["Add"] == 1 and "Conv" not in found, found
    check_same(model, _x(rng))


# -- the zoo ------------------------------------------------------------------------------------
def _zoo_qdq(name: str, tmp_path) -> tuple[onnx.ModelProto, dict]:
    from onnxruntime.quantization.shape_inference import quant_pre_process
    src, pre = tmp_path / "zoo.onnx", tmp_path / "pre.onnx"
    model = ZOO[name]()
    onnx.save(model, src)
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)   # folds BatchNorm
    calibration = [random_inputs(model, seed=s) for s in range(4)]
    return (quantize(onnx.load(pre), calibration, "u8s8-per-channel", tmp_path),
            random_inputs(model, seed=10))


@pytest.mark.parametrize("name", ["mlp", "ds_cnn"])
def test_zoo_models_run_fused_and_exact(name, tmp_path):
    model, feeds = _zoo_qdq(name, tmp_path)
    found = ops(fused(model))
    assert not {"Conv", "Gemm", "MatMul", "Relu"} & set(found), found
    check_same(model, feeds)


def test_zoo_resnet8_with_float_residual_adds(tmp_path):
    """The residual Adds, the AveragePool and the Softmax stay float (Ember has no QLinearAdd,
    QLinearAveragePool or QLinearSoftmax): onnxruntime's integer versions round otherwise."""
    model, feeds = _zoo_qdq("resnet8", tmp_path)
    found = ops(fused(model))
    assert found["QLinearConv"] >= 9 and not {"Conv", "Gemm", "Relu"} & set(found), found
    check_same(model, feeds, steps=1)
