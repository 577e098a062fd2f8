"""cancel-transposes: golden before/after graphs, what must stay, and values after the rewrite."""
import numpy as np
from onnx import helper

from conftest import check_model, make_model
from pass_helpers import before_after, golden, graph_of, verify_passes  # noqa: F401
from ember.passes.cancel_transposes import CancelTransposes

N = helper.make_node
TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def nhwc_block():
    """An NCHW conv's result taken to NHWC, a residual Add with a per-channel bias and a ReLU
    there, and back to NCHW for the next conv: what the TFLite importer makes."""
    nodes = [N("Conv", ["x", "w"], ["c1"], pads=[0, 0, 0, 0]),
             N("Transpose", ["c1"], ["h1"], perm=TO_NHWC),
             N("Transpose", ["x"], ["h0"], perm=TO_NHWC),
             N("Add", ["h1", "h0"], ["s"]), N("Add", ["s", "b"], ["sb"]),
             N("Relu", ["sb"], ["r"]),
             N("Transpose", ["r"], ["n"], perm=TO_NCHW),
             N("Conv", ["n", "w"], ["out"], pads=[0, 0, 0, 0])]
    rng = np.random.default_rng(3)
    inits = {"w": rng.standard_normal((4, 4, 1, 1)).astype(np.float32),
             "b": rng.standard_normal(4).astype(np.float32)}
    return nodes, inits


def test_nhwc_chain_runs_without_transposes():
    nodes, inits = nhwc_block()
    before, after = before_after(CancelTransposes(), graph_of(nodes, {"x": (1, 4, 3, 5)}, ["out"],
                                                              inits))
    assert before == golden("""
        graph(%0: f32[1,4,3,5]) {
          %1 = Conv(%0, const f32[4,4,1,1]) {auto_pad='NOTSET', group=1, pads=[0, 0, 0, 0]} : f32[1,4,3,5]
          %2 = Transpose(%1) {perm=[0, 2, 3, 1]} : f32[1,3,5,4]
          %3 = Transpose(%0) {perm=[0, 2, 3, 1]} : f32[1,3,5,4]
          %4 = Add(%2, %3) : f32[1,3,5,4]
          %5 = Add(%4, const f32[4]) : f32[1,3,5,4]
          %6 = Relu(%5) : f32[1,3,5,4]
          %7 = Transpose(%6) {perm=[0, 3, 1, 2]} : f32[1,4,3,5]
          %8 = Conv(%7, const f32[4,4,1,1]) {auto_pad='NOTSET', group=1, pads=[0, 0, 0, 0]} : f32[1,4,3,5]
          return %8
        }
        """)
    # The bias constant is transposed back to [1,4,1,1] so it still meets channel 4.
    assert after == golden("""
        graph(%0: f32[1,4,3,5]) {
          %1 = Conv(%0, const f32[4,4,1,1]) {auto_pad='NOTSET', group=1, pads=[0, 0, 0, 0]} : f32[1,4,3,5]
          %2 = Add(%1, %0) : f32[1,4,3,5]
          %3 = Add(%2, const f32[1,4,1,1]) : f32[1,4,3,5]
          %4 = Relu(%3) : f32[1,4,3,5]
          %5 = Conv(%4, const f32[4,4,1,1]) {auto_pad='NOTSET', group=1, pads=[0, 0, 0, 0]} : f32[1,4,3,5]
          return %5
        }
        """)


def test_values_after_cancelling(rng):
    nodes, inits = nhwc_block()
    x = rng.standard_normal((1, 4, 3, 5)).astype(np.float32)
    check_model(make_model(nodes, {"x": x}, ["out"], inits), {"x": x})


def test_transposes_compose_and_unit_moves_become_reshapes():
    # Two transposes in a row compose into one; one that moves only size-1 dims is a view.
    nodes = [N("Transpose", ["x"], ["a"], perm=[1, 2, 0]), N("Transpose", ["a"], ["b"], perm=[1, 2, 0]),
             N("Transpose", ["y"], ["c"], perm=[0, 3, 1, 2])]
    graph = graph_of(nodes, {"x": (2, 3, 4), "y": (1, 5, 7, 1)}, ["b", "c"])
    _, after = before_after(CancelTransposes(), graph)
    assert after == golden("""
        graph(%0: f32[2,3,4], %1: f32[1,5,7,1]) {
          %2 = Transpose(%0) {perm=[2, 0, 1]} : f32[4,2,3]
          %3 = Reshape(%1, const i64[4]) {allowzero=0} : f32[1,1,5,7]
          return %2, %3
        }
        """)


def test_what_stays():
    # The Transpose feeding Relu has a second reader, so moving it would add one; the Add's
    # inputs disagree on the perm; an inverse pair whose result is a graph output keeps a
    # node (an identity Transpose) so the output keeps its own value.
    nodes = [N("Transpose", ["x"], ["t"], perm=TO_NHWC), N("Relu", ["t"], ["r"]),
             N("Transpose", ["x"], ["u"], perm=[0, 3, 2, 1]), N("Add", ["t", "u"], ["s"]),
             N("Transpose", ["r"], ["back"], perm=TO_NCHW)]
    graph = graph_of(nodes, {"x": (2, 3, 3, 3)}, ["s", "back"])
    _, after = before_after(CancelTransposes(), graph)
    assert after == golden("""
        graph(%0: f32[2,3,3,3]) {
          %1 = Transpose(%0) {perm=[0, 2, 3, 1]} : f32[2,3,3,3]
          %2 = Relu(%1) : f32[2,3,3,3]
          %3 = Transpose(%0) {perm=[0, 3, 2, 1]} : f32[2,3,3,3]
          %4 = Add(%1, %3) : f32[2,3,3,3]
          %5 = Transpose(%2) {perm=[0, 3, 1, 2]} : f32[2,3,3,3]
          return %4, %5
        }
        """)


def test_sinking_into_a_graph_output(rng):
    # Relu(T(x)) as a graph output: the Transpose moves after the Relu, its value kept.
    nodes = [N("Transpose", ["x"], ["t"], perm=TO_NHWC), N("Relu", ["t"], ["out"])]
    graph = graph_of(nodes, {"x": (1, 2, 3, 4)}, ["out"])
    _, after = before_after(CancelTransposes(), graph)
    assert after == golden("""
        graph(%0: f32[1,2,3,4]) {
          %1 = Relu(%0) : f32[1,2,3,4]
          %2 = Transpose(%1) {perm=[0, 2, 3, 1]} : f32[1,3,4,2]
          return %2
        }
        """)
    x = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    check_model(make_model(nodes, {"x": x}, ["out"]), {"x": x})
