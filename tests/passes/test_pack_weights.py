"""pack-weights: golden before/after, and the packed Gemm still matches onnxruntime."""
import numpy as np
from onnx import helper

from conftest import check_model, make_model
from pass_helpers import apply, golden, graph_of
from ember.passes.pack_weights import PackWeights


def _linear(trans_b: int):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((10, 64) if trans_b else (64, 10)).astype(np.float32)
    b = rng.standard_normal((10,)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=trans_b)
    return [node], {"w": w, "b": b}


def test_transposed_constant_b_is_stored_transposed():
    nodes, inits = _linear(1)
    graph = graph_of(nodes, {"x": (1, 64)}, ["y"], inits)
    after = apply(PackWeights(), graph)
    assert after == golden("""
        graph(%0: f32[1,64]) {
          %1 = Gemm(%0, const f32[64,10], const f32[10]) {alpha=1, beta=1, transA=0, transB=0} : f32[1,10]
          return %1
        }
        """)
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].const, inits["w"].T)


def test_packed_gemm_matches_onnxruntime():
    nodes, inits = _linear(1)
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    check_model(make_model(nodes, {"x": x}, ["y"], inits), {"x": x})


def test_untransposed_or_runtime_b_is_left_alone():
    nodes, inits = _linear(0)
    graph = graph_of(nodes, {"x": (1, 64)}, ["y"], inits)
    assert "transB=0" in apply(PackWeights(), graph)
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    graph = graph_of([node], {"x": (1, 64), "w": (10, 64)}, ["y"])
    assert "transB=1" in apply(PackWeights(), graph)
