"""Elementwise ops against onnxruntime: unary, activations, broadcasting binary ops, edge values."""
import numpy as np
import pytest

from conftest import check_node

UNARY_FLOAT = ["Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round",
               "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh",
               "Atanh", "Erf", "Sign", "Relu", "Sigmoid", "Tanh", "Softplus", "Softsign",
               "Elu", "Selu", "LeakyRelu", "HardSigmoid", "HardSwish", "Celu", "Mish",
               "ThresholdedRelu", "IsNaN", "IsInf"]
DOMAIN = {"Log": (0.1, 5), "Sqrt": (0, 5), "Asin": (-1, 1), "Acos": (-1, 1), "Acosh": (1, 5),
          "Atanh": (-0.9, 0.9), "Reciprocal": (0.5, 4)}


@pytest.mark.parametrize("op", UNARY_FLOAT)
@pytest.mark.parametrize("shape", [(3, 5), (1,), (0, 4), (2, 1, 7)])
def test_unary_float(op, shape, rng):
    lo, hi = DOMAIN.get(op, (-4, 4))
    x = rng.uniform(lo, hi, shape).astype(np.float32)
    check_node(op, {"x": x}, opset=18 if op != "Mish" else 18)


@pytest.mark.parametrize("op", ["Relu", "Abs", "Neg", "Sigmoid", "Tanh", "Exp", "IsNaN", "IsInf"])
def test_unary_nan_inf(op):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5], np.float32)
    check_node(op, {"x": x})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less",
                                "Greater", "LessOrEqual", "GreaterOrEqual"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)),
                                    ((1,), (5, 2)), ((0, 3), (1, 3)), ((), (2, 2))])
def test_binary_broadcast(op, shapes, rng):
    a = rng.uniform(0.5, 2, shapes[0]).astype(np.float32)
    b = rng.uniform(0.5, 2, shapes[1]).astype(np.float32)
    check_node(op, {"a": a, "b": b})


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8, np.uint8])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Greater"])
def test_binary_int(op, dtype, rng):
    a = rng.integers(1, 50, (4, 5)).astype(dtype)
    b = rng.integers(1, 7, (5,)).astype(dtype)
    check_node(op, {"a": a, "b": b})


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod(fmod, rng):
    a = rng.integers(-20, 20, (6,)).astype(np.int32)
    b = np.array([3, -3, 7, -7, 5, 2], np.int32)
    check_node("Mod", {"a": a, "b": b}, {"fmod": fmod})


def test_variadic(rng):
    xs = {f"x{k}": rng.standard_normal(s).astype(np.float32)
          for k, s in enumerate([(2, 3), (3,), (1, 3)])}
    for op in ("Sum", "Mean", "Max", "Min"):
        check_node(op, xs)


def test_where_and_logic(rng):
    c = rng.integers(0, 2, (3, 4)).astype(bool)
    check_node("Where", {"c": c, "x": rng.standard_normal((3, 4)).astype(np.float32),
                         "y": rng.standard_normal((4,)).astype(np.float32)})
    d = rng.integers(0, 2, (4,)).astype(bool)
    for op in ("And", "Or", "Xor"):
        check_node(op, {"c": c, "d": d})
    check_node("Not", {"c": c})


@pytest.mark.parametrize("to", [1, 6, 7, 9, 11, 3, 2])
def test_cast(to, rng):
    x = rng.uniform(-100, 100, (3, 5)).astype(np.float32)
    check_node("Cast", {"x": x}, {"to": to})


def test_clip_forms(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    lo, hi = np.array(-0.5, np.float32), np.array(0.7, np.float32)
    check_node("Clip", {"x": x, "lo": lo, "hi": hi})
    check_node("Clip", {"x": x}, initializers={"hi": hi}, input_names=["x", "", "hi"])
    check_node("Clip", {"x": x}, {"min": -0.2, "max": 0.3}, opset=6)


def test_prelu_gelu(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    check_node("PRelu", {"x": x}, initializers={"s": rng.standard_normal((3, 1)).astype(np.float32)})
    check_node("Gelu", {"x": x}, opset=20)
    check_node("Gelu", {"x": x}, {"approximate": "tanh"}, opset=20)


@pytest.mark.parametrize("op", ["Add", "Mul", "Relu", "Sigmoid", "Max"])
def test_float16(op, rng):
    """fp16 computes through _Float16: within fp16 rounding of onnxruntime's result."""
    a = rng.standard_normal((3, 7)).astype(np.float16)
    b = rng.standard_normal((7,)).astype(np.float16)
    feeds = {"a": a} if op in ("Relu", "Sigmoid") else {"a": a, "b": b}
    check_node(op, feeds, rtol=2e-3, atol=1e-3)
