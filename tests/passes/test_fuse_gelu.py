"""fuse-gelu: golden before/after, the written-out forms it takes, what must stay, and values
against onnxruntime through the whole compiler (NaN and infinities included)."""
import math

import numpy as np
import pytest
from onnx import helper

from conftest import check_model, make_model
from pass_helpers import apply, before_after, golden, graph_of, verify_passes  # noqa: F401
from ember.passes.fuse_gelu import FuseGelu

N = helper.make_node
F = np.float32


def consts(sqrt2=math.sqrt(2), one=1.0, half=0.5, shape=()):
    return {"s": np.full(shape, sqrt2, F), "one": np.full(shape, one, F),
            "half": np.full(shape, half, F)}


def bert_gelu(x="x", y="y"):
    """(x * (Erf(x / sqrt 2) + 1)) * 0.5, as HuggingFace exports it."""
    return [N("Div", [x, "s"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["a"]),
            N("Mul", [x, "a"], ["m"]), N("Mul", ["m", "half"], [y])]


def test_bert_gelu_golden():
    graph = graph_of(bert_gelu(), {"x": (2, 5)}, ["y"], consts())
    before, after = before_after(FuseGelu(), graph)
    assert before == golden("""
        graph(%0: f32[2,5]) {
          %1 = Div(%0, const f32[]) : f32[2,5]
          %2 = Erf(%1) : f32[2,5]
          %3 = Add(%2, const f32[]) : f32[2,5]
          %4 = Mul(%0, %3) : f32[2,5]
          %5 = Mul(%4, const f32[]) : f32[2,5]
          return %5
        }
        """)
    assert after == golden("""
        graph(%0: f32[2,5]) {
          %1 = Gelu(%0) {approximate='none'} : f32[2,5]
          return %1
        }
        """)


VARIANTS = {
    "bert": bert_gelu(),
    # x * (1/sqrt 2), 1 + erf, 0.5 * (x * (1 + erf))
    "mul_scale": [N("Mul", ["r", "x"], ["d"]), N("Erf", ["d"], ["e"]),
                  N("Add", ["one", "e"], ["a"]), N("Mul", ["a", "x"], ["m"]),
                  N("Mul", ["half", "m"], ["y"])],
    # (x * 0.5) * (erf + 1)
    "half_first": [N("Div", ["x", "s"], ["d"]), N("Erf", ["d"], ["e"]),
                   N("Add", ["e", "one"], ["a"]), N("Mul", ["x", "half"], ["h"]),
                   N("Mul", ["h", "a"], ["y"])],
}


@pytest.mark.parametrize("form", sorted(VARIANTS))
def test_forms_fuse(form):
    inits = dict(consts(), r=np.array(1 / math.sqrt(2), F))
    graph = graph_of(VARIANTS[form], {"x": (3, 7)}, ["y"], inits)
    text = apply(FuseGelu(), graph)
    assert [n.op for n in graph.nodes] == ["Gelu"], text


@pytest.mark.parametrize("case", ["erf_read_twice", "not_sqrt2", "not_half", "broadcast_up",
                                  "intermediate_output", "different_x"])
def test_what_stays(case):
    nodes, outputs, inits, inputs = bert_gelu(), ["y"], consts(), {"x": (2, 5)}
    if case == "erf_read_twice":
        nodes.append(N("Neg", ["e"], ["z"]))
        outputs.append("z")
    elif case == "not_sqrt2":
        inits = consts(sqrt2=1.5)
    elif case == "not_half":
        inits = consts(half=0.25)
    elif case == "broadcast_up":          # a rank-3 constant turns x's [2,5] into [1,2,5]
        inits["half"] = np.full((1, 1, 1), 0.5, F)
    elif case == "intermediate_output":
        outputs.append("a")
    else:                                 # x / sqrt 2 of one tensor, times another
        nodes[3] = N("Mul", ["w", "a"], ["m"])
        inputs["w"] = (2, 5)
    graph = graph_of(nodes, inputs, outputs, inits)
    apply(FuseGelu(), graph)
    assert "Gelu" not in [n.op for n in graph.nodes]
    assert "Erf" in [n.op for n in graph.nodes]


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 17), (2, 64, 33)])
def test_values_vs_onnxruntime(shape, rng):
    x = (rng.standard_normal(shape) * 4).astype(F)
    x.reshape(-1)[0] = 0.0
    model = make_model(bert_gelu(), {"x": x}, ["y"], consts())
    check_model(model, {"x": x})


def test_edge_values_vs_onnxruntime():
    """NaN, +-Inf (-Inf gives NaN through -Inf * 0, as the formula written out does), -0,
    values near and past the point where erf(x / sqrt 2) reaches +-1, huge negatives."""
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-30, -1e-30, 5.6568, 5.6569, -5.6568,
                  -5.6569, 8.0, -8.0, 30.0, -30.0, -1e4, 1e4, -3.0, 3.0, 0.5, -0.5],
                 F).reshape(3, 7)
    model = make_model(bert_gelu(), {"x": x}, ["y"], consts())
    check_model(model, {"x": x})


def test_matmul_epilogue_vs_onnxruntime(rng):
    """The BERT FFN: MatMul + bias + Gelu, fused into the GEMM's epilogue."""
    a = rng.standard_normal((1, 13, 24)).astype(F)
    w = (rng.standard_normal((24, 40)) * 0.5).astype(F)
    b = rng.standard_normal(40).astype(F)
    nodes = [N("MatMul", ["in", "w"], ["p"]), N("Add", ["p", "b"], ["x"])] + bert_gelu()
    model = make_model(nodes, {"in": a}, ["y"], dict(consts(), w=w, b=b))
    check_model(model, {"in": a})


def test_gelu_op_edge_values(rng):
    """ember_geluf also serves the Gelu op (opset 20): dense values over the fitted range."""
    from conftest import check_node
    x = np.concatenate([np.linspace(-8, 8, 4001, dtype=F), (rng.standard_normal(999) * 3).astype(F),
                        np.array([np.nan, np.inf, -np.inf, -0.0], F)])
    check_node("Gelu", {"x": x}, {"approximate": "none"}, opset=20)
