"""fold-batchnorm: golden before/after graphs, and folded models against onnxruntime.

Until a BatchNormalization op is registered the importer rejects models with one, so the
golden tests append the BN node to an imported graph by hand; the value tests wait for the op.
"""
import numpy as np
import pytest
from onnx import helper

from conftest import check_model, make_model
from pass_helpers import before_after, golden, graph_of, needs_ops, verify_passes  # noqa: F401
from ember.graph.ir import Graph, Node, Value, const_value
from ember.passes.fold_batchnorm import FoldBatchNorm

N = helper.make_node


def bn_params(rng, c):
    return {"scale": rng.uniform(0.5, 1.5, c).astype(np.float32),
            "bias": rng.uniform(-1, 1, c).astype(np.float32),
            "mean": rng.uniform(-1, 1, c).astype(np.float32),
            "var": rng.uniform(0.5, 2, c).astype(np.float32)}


def add_bn(graph: Graph, x: Value, params: dict, eps: float = 1e-3) -> Value:
    """Append BatchNormalization(x) to `graph` and make its result the graph's output."""
    y = Value(x.type, "y")
    consts = [const_value(params[k], x.type.dtype) for k in ("scale", "bias", "mean", "var")]
    graph.nodes.append(Node("BatchNormalization", [x] + consts, [y],
                            {"epsilon": eps, "momentum": 0.9, "training_mode": 0}, opset=17))
    graph.outputs = [y]
    return y


def test_conv_golden(rng):
    needs_ops("Conv")
    w, b = rng.standard_normal((4, 3, 3, 3)).astype(np.float32), np.ones(4, np.float32)
    graph = graph_of([N("Conv", ["x", "w", "b"], ["c"])], {"x": (1, 3, 5, 5)}, ["c"],
                     {"w": w, "b": b})
    p = bn_params(rng, 4)
    add_bn(graph, graph.outputs[0], p)
    before, after = before_after(FoldBatchNorm(), graph)
    assert before == golden("""
        graph(%0: f32[1,3,5,5]) {
          %1 = Conv(%0, const f32[4,3,3,3], const f32[4]) {auto_pad='NOTSET', group=1} : f32[1,4,3,3]
          %2 = BatchNormalization(%1, const f32[4], const f32[4], const f32[4], const f32[4]) {epsilon=0.001, momentum=0.9, training_mode=0} : f32[1,4,3,3]
          return %2
        }
        """)
    assert after == golden("""
        graph(%0: f32[1,3,5,5]) {
          %1 = Conv(%0, const f32[4,3,3,3], const f32[4]) {auto_pad='NOTSET', group=1} : f32[1,4,3,3]
          return %1
        }
        """)
    conv = graph.nodes[0]
    s = p["scale"].astype(np.float64) / np.sqrt(p["var"].astype(np.float64) + 1e-3)
    np.testing.assert_allclose(conv.inputs[1].const, w * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(conv.inputs[2].const, (b - p["mean"]) * s + p["bias"], rtol=1e-6)


def test_matmul_and_shared_output_golden(rng):
    needs_ops("MatMul")
    # The first MatMul folds (an Add carries the shift); the second's output has another
    # reader, so its BN becomes Mul + Add.
    nodes = [N("MatMul", ["x", "w"], ["m"]), N("MatMul", ["x", "w"], ["m2"]),
             N("Neg", ["m2"], ["n"])]
    graph = graph_of(nodes, {"x": (2, 3)}, ["m", "n"],
                     {"w": rng.standard_normal((3, 4)).astype(np.float32)})
    m, m2, n = (node.outputs[0] for node in graph.nodes)
    y2 = add_bn(graph, m2, bn_params(rng, 4))
    y = add_bn(graph, m, bn_params(rng, 4))
    graph.outputs = [y, y2, n]
    assert before_after(FoldBatchNorm(), graph)[1] == golden("""
        graph(%0: f32[2,3]) {
          %1 = MatMul(%0, const f32[3,4]) : f32[2,4]
          %2 = MatMul(%0, const f32[3,4]) : f32[2,4]
          %3 = Neg(%2) : f32[2,4]
          %4 = Mul(%2, const f32[4]) : f32[2,4]
          %5 = Add(%4, const f32[4]) : f32[2,4]
          %6 = Add(%1, const f32[4]) : f32[2,4]
          return %6, %5, %3
        }
        """)


def test_standalone_golden(rng):
    graph = graph_of([N("Exp", ["x"], ["e"])], {"x": (2, 3, 4)}, ["e"])
    add_bn(graph, graph.outputs[0], bn_params(rng, 3))
    assert before_after(FoldBatchNorm(), graph)[1] == golden("""
        graph(%0: f32[2,3,4]) {
          %1 = Exp(%0) : f32[2,3,4]
          %2 = Mul(%1, const f32[3,1]) : f32[2,3,4]
          %3 = Add(%2, const f32[3,1]) : f32[2,3,4]
          return %3
        }
        """)


def test_training_mode_is_left_alone(rng):
    graph = graph_of([N("Exp", ["x"], ["e"])], {"x": (2, 3)}, ["e"])
    add_bn(graph, graph.outputs[0], bn_params(rng, 3))
    graph.nodes[-1].attrs["training_mode"] = 1
    before, after = before_after(FoldBatchNorm(), graph)
    assert after == before


# ---- folded models against onnxruntime ----------------------------------------------------

def bn_model(rng, head: list, x: np.ndarray, c: int, inits: dict, tail: list = ()):
    """head nodes produce "h"; BN(h) -> "bn"; tail nodes read "bn" and produce "out"."""
    p = bn_params(rng, c)
    nodes = head + [N("BatchNormalization", ["h", "scale", "bias", "mean", "var"], ["bn"],
                      epsilon=1e-3)] + list(tail)
    out = "out" if tail else "bn"
    return make_model(nodes, {"x": x}, [out], {**inits, **p})


def test_conv_bn_relu_values(rng):
    needs_ops("Conv", "BatchNormalization")
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    model = bn_model(rng, [N("Conv", ["x", "w"], ["h"], strides=[2, 2], pads=[1, 1, 1, 1])], x,
                     6, {"w": rng.standard_normal((6, 3, 3, 3)).astype(np.float32)},
                     [N("Relu", ["bn"], ["out"])])
    check_model(model, {"x": x})


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_bn_values(group, rng):
    needs_ops("ConvTranspose", "BatchNormalization")
    x = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    inits = {"w": rng.standard_normal((4, 6 // group, 3, 3)).astype(np.float32),
             "b": rng.standard_normal(6).astype(np.float32)}
    model = bn_model(rng, [N("ConvTranspose", ["x", "w", "b"], ["h"], group=group)], x, 6, inits)
    check_model(model, {"x": x})


@pytest.mark.parametrize("trans_b,bias_shape", [(0, None), (1, (5,)), (0, (3, 1)), (1, (3, 5))])
def test_gemm_bn_values(trans_b, bias_shape, rng):
    needs_ops("Gemm", "BatchNormalization")
    x = rng.standard_normal((3, 4)).astype(np.float32)
    inits = {"w": rng.standard_normal((5, 4) if trans_b else (4, 5)).astype(np.float32)}
    ins = ["x", "w"]
    if bias_shape is not None:
        inits["c"] = rng.standard_normal(bias_shape).astype(np.float32)
        ins.append("c")
    model = bn_model(rng, [N("Gemm", ins, ["h"], transB=trans_b, alpha=0.7, beta=1.3)], x, 5,
                     inits)
    check_model(model, {"x": x})


def test_matmul_bn_values(rng):
    needs_ops("MatMul", "BatchNormalization")
    x = rng.standard_normal((3, 4)).astype(np.float32)
    model = bn_model(rng, [N("MatMul", ["x", "w"], ["h"])], x, 5,
                     {"w": rng.standard_normal((4, 5)).astype(np.float32)},
                     [N("Sigmoid", ["bn"], ["out"])])
    check_model(model, {"x": x})


def test_standalone_bn_values(rng):
    needs_ops("BatchNormalization")
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    model = bn_model(rng, [N("Tanh", ["x"], ["h"])], x, 3, {})
    check_model(model, {"x": x})
