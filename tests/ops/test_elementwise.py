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


# -- float32 vector math (ops/vecmath.py) against float64 numpy, in ulps ------------------------

def _erf64(x):
    import math
    return np.vectorize(math.erf, otypes=[np.float64])(x)


#: op -> (float64 reference, ulps allowed): the C functions measure within 3 ulps (docstring)
VECMATH_REF = {
    "Exp": (np.exp, 2), "Log": (np.log, 2), "Tanh": (np.tanh, 2), "Erf": (_erf64, 4),
    "Sigmoid": (lambda x: 1 / (1 + np.exp(-x)), 4), "Softplus": (lambda x: np.logaddexp(0, x), 4),
}
EDGES = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-40, -3e-39,
                  1.1754944e-38, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5, 0.625, -0.625, 0.921875,
                  -0.921875, 1, -1, 3.9, 4, -4.5, 9.5, 10, 20, -20, 80, 87.3, 88.72283,
                  88.722839, 88.73, 100, -87.3, -88, -100, -103.9, -103.97, -104, -110, -1e4,
                  1e4, 3.4e38, -3.4e38], np.float32)


def _run(op, x, opset=18, attrs=None, threads=1):
    import ember
    from conftest import make_model
    from onnx import helper
    model = make_model([helper.make_node(op, ["x"], ["y"], **(attrs or {}))], {"x": x}, ["y"],
                       opset=opset)
    return ember.compile(model, threads=threads).run({"x": x})["y"]


def _assert_ulps(got, want, ulps):
    """NaN where the reference is NaN, infinities and zero signs equal, finite values within
    `ulps` units in the last place (denormals count on the same integer scale)."""
    with np.errstate(over="ignore"):
        want = want.astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = ~np.isnan(want)
    np.testing.assert_array_equal(np.isinf(got[fin]), np.isinf(want[fin]))
    zero = fin & (want == 0)
    np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]))

    def ordered(a):     # float bits as integers ordered like the floats
        i = a.view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    dist = np.abs(ordered(got[fin]) - ordered(want[fin]))
    assert dist.max(initial=0) <= ulps, (got[fin][dist.argmax()], want[fin][dist.argmax()])


@pytest.mark.parametrize("op", list(VECMATH_REF))
def test_vecmath_edges(op):
    ref, ulps = VECMATH_REF[op]
    x = EDGES
    with np.errstate(all="ignore"):
        want = ref(x.astype(np.float64))
    _assert_ulps(_run(op, x), want, ulps)


@pytest.mark.parametrize("op", list(VECMATH_REF))
def test_vecmath_ranges(op, rng):
    """Uniform on [-30, 30] and log-uniform magnitudes over the whole float range."""
    ref, ulps = VECMATH_REF[op]
    mags = np.exp(rng.uniform(np.log(1e-44), np.log(3e38), 3000))
    x = np.concatenate([rng.uniform(-30, 30, 3001), mags * rng.choice([-1, 1], mags.size)])
    x = x.astype(np.float32)
    with np.errstate(all="ignore"):
        want = ref(x.astype(np.float64))
    _assert_ulps(_run(op, x), want, ulps)


@pytest.mark.parametrize("op,attrs", [("Elu", {"alpha": 0.7}), ("Selu", {}), ("Celu", {"alpha": 2.0}),
                                      ("Mish", {}), ("Softplus", {}), ("Sigmoid", {}), ("Tanh", {}),
                                      ("Erf", {}), ("Exp", {})])
def test_vecmath_activations_wide(op, attrs, rng):
    x = np.concatenate([rng.uniform(-25, 25, 517), EDGES[2:4], [0.0, -0.0]]).astype(np.float32)
    if op == "Exp":
        x = np.clip(x, -80, 80)
    check_node(op, {"x": x}, attrs, opset=18)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_wide(approximate, rng):
    x = np.concatenate([rng.uniform(-12, 12, 1001), [np.inf, -np.inf, np.nan, 0, -0.0]])
    check_node("Gelu", {"x": x.astype(np.float32)}, {"approximate": approximate}, opset=20)
