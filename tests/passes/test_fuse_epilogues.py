"""fuse-epilogues: golden before/after graphs, and fused kernels against onnxruntime."""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import check_model, make_model
from pass_helpers import (apply, before_after, golden, graph_of, needs_ops,  # noqa: F401
                          verify_passes)
from ember.graph import dtypes as dt
from ember.graph.ir import Node, Value, const_value
from ember.passes.fuse_epilogues import FuseEpilogues

N = helper.make_node


def weights(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_conv_bias_relu_residual_golden(rng):
    needs_ops("Conv")
    nodes = [N("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), N("Add", ["c", "b"], ["a"]),
             N("Relu", ["a"], ["r"]), N("Add", ["r", "skip"], ["out"])]
    inits = {"w": weights(rng, 4, 3, 3, 3), "b": weights(rng, 1, 4, 1, 1)}
    graph = graph_of(nodes, {"x": (1, 3, 5, 5), "skip": (1, 4, 5, 5)}, ["out"], inits)
    before, after = before_after(FuseEpilogues(), graph)
    assert before == golden("""
        graph(%0: f32[1,3,5,5], %1: f32[1,4,5,5]) {
          %2 = Conv(%0, const f32[4,3,3,3]) {auto_pad='NOTSET', group=1, pads=[1, 1, 1, 1]} : f32[1,4,5,5]
          %3 = Add(%2, const f32[1,4,1,1]) : f32[1,4,5,5]
          %4 = Relu(%3) : f32[1,4,5,5]
          %5 = Add(%4, %1) : f32[1,4,5,5]
          return %5
        }
        """)
    # The Conv has no bias: `_` holds its place, so the epilogue operands follow it.
    assert after == golden("""
        graph(%0: f32[1,3,5,5], %1: f32[1,4,5,5]) {
          %2 = Conv(%0, const f32[4,3,3,3], _, const f32[1,4,1,1], %1) {auto_pad='NOTSET', epilogue={s0=Add(x0,x1); s1=Relu(s0); s2=Add(s1,x2)}, group=1, pads=[1, 1, 1, 1]} : f32[1,4,5,5]
          return %2
        }
        """)
    assert graph.nodes[0].attrs["fused_from"] == ["Add", "Relu", "Add"]
    assert apply(FuseEpilogues(), graph) == after      # a second run changes nothing


def test_dag_epilogues_golden(rng):
    needs_ops("MatMul")
    # Swish reads the MatMul's output twice: the whole DAG fuses. After the second MatMul,
    # the Relu's output is also read by a Transpose: only the Relu fuses.
    nodes = [N("MatMul", ["x", "w"], ["m"]), N("Sigmoid", ["m"], ["s"]), N("Mul", ["m", "s"], ["y"]),
             N("MatMul", ["y", "w2"], ["m2"]), N("Relu", ["m2"], ["r"]),
             N("Exp", ["r"], ["e"]), N("Transpose", ["r"], ["t"]), N("Add", ["e", "t"], ["out"])]
    graph = graph_of(nodes, {"x": (3, 3)}, ["out"],
                     {"w": weights(rng, 3, 3), "w2": weights(rng, 3, 3)})
    assert apply(FuseEpilogues(), graph) == golden("""
        graph(%0: f32[3,3]) {
          %1 = MatMul(%0, const f32[3,3]) {epilogue={s0=Sigmoid(x0); s1=Mul(x0,s0)}} : f32[3,3]
          %2 = MatMul(%1, const f32[3,3]) {epilogue={s0=Relu(x0)}} : f32[3,3]
          %3 = Exp(%2) : f32[3,3]
          %4 = Transpose(%2) : f32[3,3]
          %5 = Add(%3, %4) : f32[3,3]
          return %5
        }
        """)


def test_stops_at_shared_values_outputs_and_type_changes(rng):
    needs_ops("MatMul", "Gemm")
    # MatMul -> Relu is a graph output: only the Relu fuses. Gemm's output has two readers:
    # nothing fuses. MatMul -> Add broadcasting to a bigger shape, and Cast: nothing fuses.
    nodes = [N("MatMul", ["x", "w"], ["m"]), N("Relu", ["m"], ["r"]), N("Neg", ["r"], ["n"]),
             N("Gemm", ["x", "w"], ["g"]), N("Exp", ["g"], ["e1"]), N("Abs", ["g"], ["e2"]),
             N("MatMul", ["x", "w"], ["m2"]), N("Add", ["m2", "big"], ["big2"]),
             N("MatMul", ["x", "w"], ["m3"]), N("Cast", ["m3"], ["i"], to=6)]
    graph = graph_of(nodes, {"x": (2, 3), "big": (5, 2, 4)}, ["r", "n", "e1", "e2", "big2", "i"],
                     {"w": weights(rng, 3, 4)})
    assert apply(FuseEpilogues(), graph) == golden("""
        graph(%0: f32[2,3], %1: f32[5,2,4]) {
          %2 = MatMul(%0, const f32[3,4]) {epilogue={s0=Relu(x0)}} : f32[2,4]
          %3 = Neg(%2) : f32[2,4]
          %4 = Gemm(%0, const f32[3,4]) {alpha=1, beta=1, transA=0, transB=0} : f32[2,4]
          %5 = Exp(%4) : f32[2,4]
          %6 = Abs(%4) : f32[2,4]
          %7 = MatMul(%0, const f32[3,4]) : f32[2,4]
          %8 = Add(%7, %1) : f32[5,2,4]
          %9 = MatMul(%0, const f32[3,4]) : f32[2,4]
          %10 = Cast(%9) {to=6} : i32[2,4]
          return %2, %3, %5, %6, %8, %10
        }
        """)


def test_residual_from_a_later_branch_moves_the_kernel(rng):
    needs_ops("MatMul")
    # The Add reads %4, computed after %2's Relu: the fused MatMul runs after it.
    nodes = [N("MatMul", ["x", "w"], ["m"]), N("Relu", ["m"], ["r"]),
             N("Exp", ["x2"], ["e"]), N("Add", ["r", "e"], ["out"])]
    graph = graph_of(nodes, {"x": (2, 3), "x2": (2, 4)}, ["out"], {"w": weights(rng, 3, 4)})
    assert apply(FuseEpilogues(), graph) == golden("""
        graph(%0: f32[2,3], %1: f32[2,4]) {
          %2 = Exp(%1) : f32[2,4]
          %3 = MatMul(%0, const f32[3,4], %2) {epilogue={s0=Relu(x0); s1=Add(s0,x1)}} : f32[2,4]
          return %3
        }
        """)


# ---- fused kernels against onnxruntime ----------------------------------------------------

def kernels(model) -> int:
    return ember.compile(model).manifest["kernels"]


def test_gemm_bias_relu_values(rng):
    needs_ops("Gemm")
    a = weights(rng, 4, 5)
    nodes = [N("Gemm", ["a", "w", "c"], ["g"], transB=1, alpha=0.5), N("Add", ["g", "b"], ["s"]),
             N("Relu", ["s"], ["out"])]
    inits = {"w": weights(rng, 6, 5), "c": weights(rng, 6), "b": weights(rng, 4, 1)}
    model = make_model(nodes, {"a": a}, ["out"], inits)
    check_model(model, {"a": a})
    assert kernels(model) == 1


def test_residual_block_values(rng):
    needs_ops("Conv")
    x = weights(rng, 1, 4, 6, 6)
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), N("Relu", ["c1"], ["r1"]),
             N("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             N("Add", ["c2", "x"], ["s"]), N("Relu", ["s"], ["out"])]
    inits = {"w1": weights(rng, 4, 4, 3, 3), "b1": weights(rng, 4),
             "w2": weights(rng, 4, 4, 3, 3), "b2": weights(rng, 4)}
    model = make_model(nodes, {"x": x}, ["out"], inits)
    check_model(model, {"x": x})
    assert kernels(model) == 2


@pytest.mark.parametrize("act", [("Clip", {}), ("LeakyRelu", {"alpha": 0.1}), ("Sigmoid", {}),
                                 ("HardSwish", {}), ("Tanh", {})])
def test_matmul_activation_values(act, rng):
    needs_ops("MatMul")
    op, attrs = act
    x = weights(rng, 2, 3, 5)
    extra = ["lo", "hi"] if op == "Clip" else []
    nodes = [N("MatMul", ["x", "w"], ["m"]), N("Mul", ["m", "k"], ["s"]),
             N(op, ["s"] + extra, ["out"], **attrs)]
    inits = {"w": weights(rng, 5, 4), "k": weights(rng, 3, 1),
             "lo": np.array(0, np.float32), "hi": np.array(0.6, np.float32)}
    if op != "Clip":
        del inits["lo"], inits["hi"]
    model = make_model(nodes, {"x": x}, ["out"], inits)
    check_model(model, {"x": x})
    assert kernels(model) == 1


def test_conv_transpose_epilogue_values(rng):
    needs_ops("ConvTranspose")
    x = weights(rng, 1, 4, 3, 3)
    nodes = [N("ConvTranspose", ["x", "w"], ["c"], strides=[2, 2], group=2),
             N("Add", ["c", "b"], ["a"]), N("Elu", ["a"], ["out"])]
    inits = {"w": weights(rng, 4, 3, 2, 2), "b": weights(rng, 6, 1, 1)}
    model = make_model(nodes, {"x": x}, ["out"], inits)
    check_model(model, {"x": x})
    assert kernels(model) == 1


def test_matmul_gelu_dag_values(rng):
    needs_ops("MatMul")
    # BERT's GELU: x * 0.5 * (1 + erf(x / sqrt(2))) after the bias Add, in the MatMul kernel.
    x = weights(rng, 1, 4, 6)
    nodes = [N("MatMul", ["x", "w"], ["m"]), N("Add", ["m", "b"], ["h"]),
             N("Div", ["h", "sqrt2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["p"]),
             N("Mul", ["h", "p"], ["q"]), N("Mul", ["q", "half"], ["out"])]
    inits = {"w": weights(rng, 6, 8), "b": weights(rng, 8), "sqrt2": np.array(2 ** 0.5, np.float32),
             "one": np.array(1, np.float32), "half": np.array(0.5, np.float32)}
    model = make_model(nodes, {"x": x}, ["out"], inits)
    check_model(model, {"x": x})
    assert kernels(model) == 1


def test_extends_an_existing_epilogue(rng):
    needs_ops("MatMul")
    nodes = [N("MatMul", ["x", "w"], ["m"]), N("Add", ["m", "b"], ["out"])]
    graph = graph_of(nodes, {"x": (2, 3)}, ["out"], {"w": weights(rng, 3, 4), "b": weights(rng, 4)})
    apply(FuseEpilogues(), graph)
    # A later rewrite leaves another elementwise op after the fused kernel: it joins too, its
    # operand numbered after the existing ones.
    y = Value(graph.outputs[0].type)
    graph.nodes.append(Node("Mul", [graph.outputs[0], const_value(weights(rng, 2, 1), dt.F32)],
                            [y], opset=17))
    graph.outputs = [y]
    assert apply(FuseEpilogues(), graph) == golden("""
        graph(%0: f32[2,3]) {
          %1 = MatMul(%0, const f32[3,4], const f32[4], const f32[2,1]) {epilogue={s0=Add(x0,x1); s1=Mul(s0,x2)}} : f32[2,4]
          return %1
        }
        """)
    assert graph.nodes[0].attrs["fused_from"] == ["Add", "Mul"]
