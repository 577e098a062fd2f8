"""eliminate-common-subexpressions: golden before/after graphs, and values after merging."""
import numpy as np
from onnx import helper

from conftest import check_model, make_model
from pass_helpers import before_after, golden, graph_of, verify_passes  # noqa: F401
from ember.passes.eliminate_common_subexpressions import EliminateCommonSubexpressions

N = helper.make_node
CSE = EliminateCommonSubexpressions


def test_repeated_nodes_and_constants_merge():
    # c1 and c2 hold the same bytes: after deduping them the two Adds are the same too.
    nodes = [N("Relu", ["x"], ["r1"]), N("Relu", ["x"], ["r2"]),
             N("Add", ["r1", "c1"], ["a1"]), N("Add", ["r2", "c2"], ["a2"]),
             N("Mul", ["a1", "a2"], ["out"])]
    c = np.arange(3, dtype=np.float32)
    graph = graph_of(nodes, {"x": (2, 3)}, ["out"], {"c1": c, "c2": c.copy()})
    before, after = before_after(CSE(), graph)
    assert before == golden("""
        graph(%0: f32[2,3]) {
          %1 = Relu(%0) : f32[2,3]
          %2 = Relu(%0) : f32[2,3]
          %3 = Add(%1, const f32[3]) : f32[2,3]
          %4 = Add(%2, const f32[3]) : f32[2,3]
          %5 = Mul(%3, %4) : f32[2,3]
          return %5
        }
        """)
    assert after == golden("""
        graph(%0: f32[2,3]) {
          %1 = Relu(%0) : f32[2,3]
          %2 = Add(%1, const f32[3]) : f32[2,3]
          %3 = Mul(%2, %2) : f32[2,3]
          return %3
        }
        """)


def test_differences_keep_nodes_apart():
    # Different attributes, constants that differ only in the sign of zero, argument order,
    # and a duplicate that is a graph output: nothing merges.
    nodes = [N("LeakyRelu", ["x"], ["l1"], alpha=0.1), N("LeakyRelu", ["x"], ["l2"], alpha=0.2),
             N("Div", ["x", "pz"], ["d1"]), N("Div", ["x", "nz"], ["d2"]),
             N("Sub", ["l1", "l2"], ["s1"]), N("Sub", ["l2", "l1"], ["s2"]),
             N("Exp", ["x"], ["e1"]), N("Exp", ["x"], ["e2"]),
             N("Sum", ["s1", "s2", "d1", "d2", "e1"], ["out"])]
    inits = {"pz": np.zeros((3,), np.float32), "nz": -np.zeros((3,), np.float32)}
    graph = graph_of(nodes, {"x": (3,)}, ["out", "e2"], inits)
    before, after = before_after(CSE(), graph)
    assert after == before == golden("""
        graph(%0: f32[3]) {
          %1 = LeakyRelu(%0) {alpha=0.1} : f32[3]
          %2 = LeakyRelu(%0) {alpha=0.2} : f32[3]
          %3 = Div(%0, const f32[3]) : f32[3]
          %4 = Div(%0, const f32[3]) : f32[3]
          %5 = Sub(%1, %2) : f32[3]
          %6 = Sub(%2, %1) : f32[3]
          %7 = Exp(%0) : f32[3]
          %8 = Exp(%0) : f32[3]
          %9 = Sum(%5, %6, %3, %4, %7) : f32[3]
          return %9, %8
        }
        """)


def test_merged_model_values(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    nodes = [N("Sigmoid", ["x"], ["s1"]), N("Sigmoid", ["x"], ["s2"]),
             N("Mul", ["s1", "w1"], ["m1"]), N("Mul", ["s2", "w2"], ["m2"]),
             N("Sub", ["m1", "m2"], ["z"]), N("Add", ["z", "s1"], ["out"])]
    w = rng.standard_normal((5,)).astype(np.float32)
    check_model(make_model(nodes, {"x": x}, ["out", "m2"], {"w1": w, "w2": w.copy()}), {"x": x})
