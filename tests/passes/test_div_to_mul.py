"""div-to-mul: golden before/after, divisors that must keep the division, and values against
onnxruntime through the whole compiler (NaN and infinities in x included)."""
import numpy as np
import pytest
from onnx import helper

from conftest import check_model, make_model
from pass_helpers import apply, before_after, golden, graph_of, verify_passes  # noqa: F401
from ember.frontend.onnx import import_onnx
from ember.passes.div_to_mul import DivToMul

N = helper.make_node


def test_golden():
    graph = graph_of([N("Div", ["x", "c"], ["y"])], {"x": (2, 3)}, ["y"],
                     {"c": np.array(5.656854, np.float32)})
    before, after = before_after(DivToMul(), graph)
    assert before == golden("""
        graph(%0: f32[2,3]) {
          %1 = Div(%0, const f32[]) : f32[2,3]
          return %1
        }
        """)
    assert after == golden("""
        graph(%0: f32[2,3]) {
          %1 = Mul(%0, const f32[]) : f32[2,3]
          return %1
        }
        """)
    assert graph.nodes[0].inputs[1].const == np.float32(1 / float(np.float32(5.656854)))


@pytest.mark.parametrize("divisor", [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-39, 3e38, -1e-40])
def test_divisors_that_stay(divisor):
    """Zero, infinities, NaN, denormals, and a divisor whose reciprocal is a denormal."""
    c = np.array([2.0, divisor], np.float32)
    graph = graph_of([N("Div", ["x", "c"], ["y"])], {"x": (3, 2)}, ["y"], {"c": c})
    apply(DivToMul(), graph)
    assert graph.nodes[0].op == "Div"


def test_runtime_and_integer_divisors_stay():
    graph = graph_of([N("Div", ["x", "z"], ["y"])], {"x": (3,), "z": (3,)}, ["y"])
    apply(DivToMul(), graph)
    assert graph.nodes[0].op == "Div"
    feeds = {"a": np.arange(6, dtype=np.int32)}
    model = make_model([N("Div", ["a", "c"], ["y"])], feeds, ["y"], {"c": np.array(3, np.int32)})
    graph = import_onnx(model)
    apply(DivToMul(), graph)
    assert graph.nodes[0].op == "Div"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c_shape", [(), (1,), (5,), (4, 1), (2, 4, 5)])
def test_values_vs_onnxruntime(dtype, c_shape, rng):
    """Broadcast divisors of several ranks (the last raises x's rank), powers of two and not."""
    x = (rng.standard_normal((4, 5)) * 10).astype(dtype)
    x[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    c = (rng.uniform(0.1, 7.0, c_shape) * rng.choice([-1, 1], c_shape)).astype(dtype)
    c.reshape(-1)[0] = 0.25
    model = make_model([N("Div", ["x", "c"], ["y"])], {"x": x}, ["y"], {"c": c})
    check_model(model, {"x": x})


def test_attention_scale_in_epilogue_vs_onnxruntime(rng):
    """Q.K^T / sqrt(d) + mask: the scale becomes a multiplication in the MatMul's epilogue."""
    q = rng.standard_normal((1, 3, 7, 8)).astype(np.float32)
    k = rng.standard_normal((1, 3, 8, 7)).astype(np.float32)
    mask = np.where(rng.random((1, 1, 1, 7)) < 0.5, -10000.0, 0.0).astype(np.float32)
    nodes = [N("MatMul", ["q", "k"], ["s"]), N("Div", ["s", "d"], ["t"]),
             N("Add", ["t", "mask"], ["y"])]
    model = make_model(nodes, {"q": q, "k": k}, ["y"],
                       {"d": np.array(np.sqrt(8), np.float32), "mask": mask})
    check_model(model, {"q": q, "k": k})
