"""int8 TFLite elementwise operators, activations and MEAN, bit for bit: each one-op model is
compiled twice and checked against TFLite Micro's interpreter (Ember's default numerics) and
ai-edge-litert's reference kernels (int8_numerics="litert"). Activations see all 256 input
values; scales are chosen so multipliers shift left, right, and far right."""
from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.errors import UnsupportedError
from test_tflite_int8 import check, q8, qtensor
from tflite_builder import TflBuilder

EDGES = np.array([-128, 127, 0, -1, 1, -127, 126], np.int8)


def every_int8(*shape: int, seed: int = 0) -> np.ndarray:
    """All 256 int8 values (shuffled) and then random ones, filling `shape`."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    values = rng.permutation(np.arange(-128, 128)).astype(np.int8)
    return np.resize(np.concatenate([values, q8(size, seed=seed + 1)]), shape)


def with_edges(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1)
    flat[:min(flat.size, EDGES.size)] = EDGES[:flat.size]
    return x


# -- SUB, MUL, MAXIMUM, MINIMUM -------------------------------------------------------------
BINARY_CASES = [   # a shape, b shape, (a, b, out) (scale, zero point), fused activation
    ([2, 3, 4], [2, 3, 4], ((0.1, 3), (0.05, -10), (0.12, -2)), 0),
    ([2, 3, 4], [3, 1], ((0.02, 0), (0.2, 127), (0.15, 5)), 1),
    ([3, 1, 5], [1, 4, 1], ((0.3, -128), (0.3, -128), (0.05, 0)), 3),
    ([1, 2, 3, 4, 5], [4, 1], ((0.007, 20), (1.9, -3), (0.9, 100)), 0),
    ([7], [1], ((2.5, 1), (0.001, 0), (3e-4, -7)), 0),
    ([2, 1, 3, 1, 2, 1], [1, 3, 1, 2, 1, 3], ((0.04, 2), (0.04, 2), (0.04, 2)), 2),
    ([4, 3], [4, 3], ((1e-3, 0), (2e-3, 5), (50.0, 0)), 0),    # MUL shift -24; SUB's below -31
]


def binary_model(opcode: str, a_shape, b_shape, quant, act, options: str | None) -> bytes:
    m = TflBuilder()
    out_shape = list(np.broadcast_shapes(tuple(a_shape), tuple(b_shape)))
    a, b, y = (qtensor(m, s, *q) for s, q in zip((a_shape, b_shape, out_shape), quant))
    fields = {"FusedActivationFunction": act} if options else {}
    m.op(opcode, [a, b], [y], options, **fields)
    return m.finish([a, b], [y])


@pytest.mark.parametrize("opcode, options", [("SUB", "SubOptions"), ("MUL", "MulOptions")])
@pytest.mark.parametrize("a_shape, b_shape, quant, act", BINARY_CASES)
def test_sub_mul(opcode, options, a_shape, b_shape, quant, act):
    data = binary_model(opcode, a_shape, b_shape, quant, act, options)
    check(data, [with_edges(q8(*a_shape, seed=2)), with_edges(q8(*b_shape, seed=3))])


def test_mul_by_constant_and_multiplier_above_one():
    """A constant operand (a per-channel scale), and a product scale above the output's, so the
    multiplier's shift is positive."""
    m = TflBuilder()
    x, y = qtensor(m, [2, 5, 3], 0.5, -4), qtensor(m, [2, 5, 3], 0.01, 3)
    c = m.tensor(data=np.array([-128, 5, 127], np.int8), quant=([0.08], [1]))
    m.op("MUL", [x, c], [y], "MulOptions")
    check(m.finish([x], [y]), [with_edges(q8(2, 5, 3, seed=4))])


@pytest.mark.parametrize("opcode", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum(opcode):
    quant = ((0.05, -3),) * 3
    data = binary_model(opcode, [2, 3, 4], [3, 1], quant, 0, None)
    check(data, [with_edges(q8(2, 3, 4)), q8(3, 1, seed=1)])


# -- activations ------------------------------------------------------------------------------
SIGMOID_INPUTS = [(0.1, 3), (0.5, -128), (0.0039, 127), (0.08, 0), (1e-3, -20), (0.75, 10),
                  (2.0, 5), (0.0625, 0)]


@pytest.mark.parametrize("opcode, out", [("LOGISTIC", (1 / 256, -128)), ("TANH", (1 / 128, 0))])
@pytest.mark.parametrize("scale, zero", SIGMOID_INPUTS)
def test_logistic_tanh(opcode, out, scale, zero):
    m = TflBuilder()
    x, y = qtensor(m, [3, 100], scale, zero), qtensor(m, [3, 100], *out)
    m.op(opcode, [x], [y])
    check(m.finish([x], [y]), [every_int8(3, 100)])


RESCALE = [((0.1, 3), (0.1, 3)), ((0.1, 3), (0.05, -128)), ((0.02, -128), (0.3, 7)),
           ((0.5, 100), (0.01, -5)), ((0.05, -10), (0.0471, -128))]


@pytest.mark.parametrize("opcode", ["RELU", "RELU6"])
@pytest.mark.parametrize("quant_in, quant_out", RESCALE)
def test_relu_relu6(opcode, quant_in, quant_out):
    m = TflBuilder()
    x, y = qtensor(m, [2, 3, 43], *quant_in), qtensor(m, [2, 3, 43], *quant_out)
    m.op(opcode, [x], [y])
    data, feed = m.finish([x], [y]), [every_int8(2, 3, 43)]
    if opcode == "RELU6" and quant_in != quant_out:
        # TFLite Micro's RELU6 clamps in the input's quantization and never reads the
        # output's; ai-edge-litert requantizes: each is matched in its own numerics.
        got, want = (ember.compile(data, int8_numerics=n)(*feed) for n in ("micro", "litert"))
        assert not np.array_equal(got, want)
    check(data, feed)


@pytest.mark.parametrize("alpha", [0.2, 0.01, 1.7, -0.3])
@pytest.mark.parametrize("quant_in, quant_out", RESCALE[:4])
def test_leaky_relu(alpha, quant_in, quant_out):
    m = TflBuilder()
    x, y = qtensor(m, [5, 60], *quant_in), qtensor(m, [5, 60], *quant_out)
    m.op("LEAKY_RELU", [x], [y], "LeakyReluOptions", Alpha=alpha)
    check(m.finish([x], [y]), [every_int8(5, 60, seed=alpha > 0)])


@pytest.mark.parametrize("quant_in, quant_out", [
    ((0.1, 3), (0.08, -20)), ((0.05, -128), (0.05, -128)), ((0.3, 10), (0.2, -100)),
    ((0.02, 0), (0.011, -60)), ((1.5, -4), (1.0, -90)), ((0.004, 127), (0.003, 0))])
def test_hard_swish(quant_in, quant_out):
    m = TflBuilder()
    x, y = qtensor(m, [1, 4, 5, 13], *quant_in), qtensor(m, [1, 4, 5, 13], *quant_out)
    m.op("HARD_SWISH", [x], [y])
    check(m.finish([x], [y]), [every_int8(1, 4, 5, 13)])


# -- MEAN --------------------------------------------------------------------------------------
MEAN_CASES = [   # input shape, axes, keep_dims
    ([2, 5, 7, 3], [1, 2], True), ([2, 5, 7, 3], [2, 1], False), ([2, 5, 7, 3], [1, 2], False),
    ([2, 5, 7, 3], [3], True), ([2, 5, 7, 3], [-1, 0], False), ([3, 9], [1], False),
    ([3, 9], [0, 1], True), ([4, 1, 6], [1], False), ([2, 3, 17], [-1], True),
    ([2, 5, 7, 3], [2, 1], True), ([1, 40, 3], [1, 1], False), ([2, 3, 4, 5], [0, 1, 3], True),
    ([1, 25, 41, 2], [1, 2], True)]


@pytest.mark.parametrize("x_shape, axes, keep", MEAN_CASES)
@pytest.mark.parametrize("quant_in, quant_out", [((0.1, 3), (0.1, 3)), ((0.1, 3), (0.04, -7)),
                                                 ((0.02, -128), (0.3, 100))])
def test_mean(x_shape, axes, keep, quant_in, quant_out):
    resolved = {a % len(x_shape) for a in axes}
    out_shape = [1 if k in resolved else d for k, d in enumerate(x_shape) if keep or k not in
                 resolved]
    m = TflBuilder()
    x, y = qtensor(m, x_shape, *quant_in), qtensor(m, out_shape, *quant_out)
    m.op("MEAN", [x, m.tensor(data=np.array(axes, np.int32))], [y], "ReducerOptions",
         KeepDims=keep)
    check(m.finish([x], [y]), [with_edges(q8(*x_shape, seed=len(axes)))])


def test_chain_of_new_ops():
    """The ops feeding each other (in-place buffers between them), intermediates as outputs."""
    m = TflBuilder()
    x = qtensor(m, [1, 6, 5, 4], 0.05, -3)
    c = m.tensor(data=np.array([3, -7, 100, -128], np.int8), quant=([0.02], [1]))
    a, b, h = (qtensor(m, [1, 6, 5, 4], *q) for q in ((0.06, 2), (0.04, -10), (0.03, -60)))
    lg, r, lk = (qtensor(m, [1, 6, 5, 4], *q) for q in ((1 / 256, -128), (1 / 256, -128),
                                                         (0.004, -100)))
    t, u = qtensor(m, [1, 1, 1, 4], 0.002, -90), qtensor(m, [1, 1, 1, 4], 1 / 128, 0)
    m.op("SUB", [x, c], [a], "SubOptions")
    m.op("MUL", [a, x], [b], "MulOptions", FusedActivationFunction=1)
    m.op("HARD_SWISH", [b], [h])
    m.op("LOGISTIC", [h], [lg])
    m.op("RELU6", [lg], [r])
    m.op("LEAKY_RELU", [r], [lk], "LeakyReluOptions", Alpha=0.1)
    m.op("MEAN", [lk, m.tensor(data=np.array([1, 2], np.int32))], [t], "ReducerOptions",
         KeepDims=True)
    m.op("TANH", [t], [u])
    check(m.finish([x], [b, lg, lk, u]), [q8(1, 6, 5, 4, seed=9)])


# -- refusals -------------------------------------------------------------------------------
def test_unsupported_int8_activation_outputs_refused():
    m = TflBuilder()
    x = qtensor(m, [2, 3], 0.1, 0)
    other = qtensor(m, [2, 3], 0.2, 0)
    outs = [qtensor(m, [2, 3], 0.1, 0) for _ in range(3)]
    m.op("LOGISTIC", [x], [outs[0]])
    m.op("TANH", [x], [outs[1]])
    m.op("MAXIMUM", [x, other], [outs[2]])
    with pytest.raises(UnsupportedError) as info:
        ember.compile(m.finish([x, other], outs))
    problems = info.value.problems
    assert [p.split(": ", 1)[0] for p in problems] == [
        "operator 0 (LOGISTIC)", "operator 1 (TANH)", "operator 2 (MAXIMUM)"]
    assert "0.00390625" in problems[0] and "0.0078125" in problems[1]
