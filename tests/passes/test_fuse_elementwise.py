"""fuse-elementwise: golden before/after graphs, and fused models against onnxruntime."""
import numpy as np
import pytest
from onnx import helper

from conftest import check_model, make_model
from pass_helpers import apply, before_after, golden, graph_of, verify_passes  # noqa: F401
from ember.passes.fuse_elementwise import FuseElementwise

N = helper.make_node


def swish_nodes():
    return [N("Mul", ["x", "a"], ["m"]), N("Add", ["m", "b"], ["y"]),
            N("Sigmoid", ["y"], ["s"]), N("Mul", ["y", "s"], ["out"])]


SWISH_INITS = {"a": np.full((3,), 1.5, np.float32), "b": np.linspace(-1, 1, 3).astype(np.float32)}


def test_swish_dag_golden():
    graph = graph_of(swish_nodes(), {"x": (2, 3)}, ["out"], SWISH_INITS)
    before, after = before_after(FuseElementwise(), graph)
    assert before == golden("""
        graph(%0: f32[2,3]) {
          %1 = Mul(%0, const f32[3]) : f32[2,3]
          %2 = Add(%1, const f32[3]) : f32[2,3]
          %3 = Sigmoid(%2) : f32[2,3]
          %4 = Mul(%2, %3) : f32[2,3]
          return %4
        }
        """)
    assert after == golden("""
        graph(%0: f32[2,3]) {
          %1 = FusedElementwise(%0, const f32[3], const f32[3]) {program={s0=Mul(x0,x1); s1=Add(s0,x2); s2=Sigmoid(s1); s3=Mul(s1,s2)}} : f32[2,3]
          return %1
        }
        """)
    assert graph.nodes[0].attrs["fused_from"] == ["Mul", "Add", "Sigmoid", "Mul"]


def test_graph_output_and_shared_value_stay():
    # %2 is a graph output and %3 has a reader outside any chain: both keep their buffers.
    nodes = [N("Exp", ["x"], ["e"]), N("Neg", ["e"], ["n"]), N("Abs", ["n"], ["a"]),
             N("Relu", ["a"], ["r"]), N("Sqrt", ["a"], ["q"]), N("Add", ["r", "q"], ["out"])]
    graph = graph_of(nodes, {"x": (4,)}, ["n", "out"])
    assert apply(FuseElementwise(), graph) == golden("""
        graph(%0: f32[4]) {
          %1 = FusedElementwise(%0) {program={s0=Exp(x0); s1=Neg(s0)}} : f32[4]
          %2 = FusedElementwise(%1) {program={s0=Abs(x0); s1=Relu(s0); s2=Sqrt(s0); s3=Add(s1,s2)}} : f32[4]
          return %1, %2
        }
        """)


def test_broadcast_smaller_intermediate_not_fused():
    # %1 has 3 elements, the output 6: fusing would compute Exp twice per element of %1.
    nodes = [N("Exp", ["b"], ["e"]), N("Add", ["x", "e"], ["out"])]
    graph = graph_of(nodes, {"x": (2, 3), "b": (3,)}, ["out"])
    assert apply(FuseElementwise(), graph) == golden("""
        graph(%0: f32[2,3], %1: f32[3]) {
          %2 = Exp(%1) : f32[3]
          %3 = Add(%0, %2) : f32[2,3]
          return %3
        }
        """)


def test_non_elementwise_breaks_chain_and_clip_operands():
    nodes = [N("Relu", ["x"], ["r"]), N("Transpose", ["r"], ["t"], perm=[1, 0]),
             N("Neg", ["t"], ["n"]), N("Clip", ["n", "", "hi"], ["out"])]
    graph = graph_of(nodes, {"x": (2, 3)}, ["out"], {"hi": np.array(0.5, np.float32)})
    assert apply(FuseElementwise(), graph) == golden("""
        graph(%0: f32[2,3]) {
          %1 = Relu(%0) : f32[2,3]
          %2 = Transpose(%1) {perm=[1, 0]} : f32[3,2]
          %3 = FusedElementwise(%2, const f32[]) {program={s0=Neg(x0); s1=Clip(s0,x1){bounds=['max']}}} : f32[3,2]
          return %3
        }
        """)


def test_max_steps():
    nodes = [N("Neg", ["x"], ["a"]), N("Neg", ["a"], ["b"]), N("Neg", ["b"], ["out"])]
    graph = graph_of(nodes, {"x": (2,)}, ["out"])
    assert apply(FuseElementwise(max_steps=2), graph) == golden("""
        graph(%0: f32[2]) {
          %1 = Neg(%0) : f32[2]
          %2 = FusedElementwise(%1) {program={s0=Neg(x0); s1=Neg(s0)}} : f32[2]
          return %2
        }
        """)


# ---- fused models against onnxruntime -----------------------------------------------------

def test_swish_values(rng):
    x = rng.standard_normal((5, 3)).astype(np.float32)
    check_model(make_model(swish_nodes(), {"x": x}, ["out"], SWISH_INITS), {"x": x})


@pytest.mark.parametrize("shapes", [((2, 3, 4), (4,), (3, 1)), ((1, 5), (5,), ()),
                                    ((0, 3), (3,), (1, 3)), ((4,), (1, 4), (1, 1, 4))])
def test_broadcasting_chain_values(shapes, rng):
    x, y, z = (rng.uniform(0.5, 2, s).astype(np.float32) for s in shapes)
    nodes = [N("Mul", ["x", "y"], ["m"]), N("Sub", ["m", "z"], ["s"]), N("Tanh", ["s"], ["t"]),
             N("Div", ["t", "y"], ["d"]), N("Max", ["d", "x", "z"], ["out"])]
    feeds = {"x": x, "y": y, "z": z}
    check_model(make_model(nodes, feeds, ["out"]), feeds)


def test_mixed_dtypes_values(rng):
    # A comparison feeds Where; a Cast changes the dtype inside the fused loop.
    x = rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [N("Greater", ["x", "zero"], ["g"]), N("Cast", ["x"], ["c"], to=7),
             N("Cast", ["c"], ["cf"], to=1), N("Where", ["g", "x", "cf"], ["w"]),
             N("Abs", ["w"], ["out"]), N("Not", ["g"], ["out2"])]
    check_model(make_model(nodes, {"x": x}, ["out", "out2"],
                           {"zero": np.array(0.0, np.float32)}), {"x": x})


def test_int_chain_values(rng):
    x = rng.integers(-50, 50, (4, 5)).astype(np.int32)
    nodes = [N("Mul", ["x", "k"], ["m"]), N("Mod", ["m", "p"], ["r"]), N("Abs", ["r"], ["a"]),
             N("Add", ["a", "x"], ["out"])]
    inits = {"k": np.array(3, np.int32), "p": np.array([7, -5, 3, 11, 2], np.int32)}
    check_model(make_model(nodes, {"x": x}, ["out"], inits), {"x": x})


def test_nan_propagates(rng):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -1.0, 2.0], np.float32)
    nodes = [N("Relu", ["x"], ["r"]), N("Max", ["r", "x"], ["m"]), N("Sigmoid", ["m"], ["out"])]
    check_model(make_model(nodes, {"x": x}, ["out"]), {"x": x})
