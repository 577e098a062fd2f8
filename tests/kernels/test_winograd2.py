"""Winograd F(2x2, 3x3) on small maps (ember/ops/conv_winograd2.py) against onnxruntime.

Tolerances: the transforms add up to 4 products' worth of rounding per tile on top of the
fp32 sums' (up to 64 x 16 terms, reordered): rtol 1e-4 / atol 1e-4 for standard-normal data."""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import make_model, run_ort

MARK = "float e[4][4];"      # only the F(2x2) input transform declares it
TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(autouse=True)
def nchw_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests of an NCHW kernel: choose-layout must not move their convs."""
    monkeypatch.setenv("EMBER_LAYOUT", "nchw")


CASES = [   # (x shape, output channels, pads, bias)
    ((1, 64, 8, 8), 64, [1, 1, 1, 1], True),           # ResNet-8's: 16 tiles, one panel
    ((1, 32, 7, 7), 40, [1, 1, 1, 1], True),           # odd map: the last tiles half outside
    ((2, 48, 9, 9), 40, [0, 1, 2, 1], False),          # batch 2, pads uneven, 25 tiles
    ((1, 24, 10, 10), 30, [0, 0, 0, 0], True),         # no padding
]


def _normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _model(rng, xs, cout, pads, bias, residual):
    inits = {"w": _normal(rng, cout, xs[1], 3, 3)}
    if bias:
        inits["b"] = _normal(rng, cout)
    conv = helper.make_node("Conv", ["x"] + list(inits), ["c"], pads=pads)
    oh, ow = xs[2] + pads[0] + pads[2] - 2, xs[3] + pads[1] + pads[3] - 2
    feeds = {"x": _normal(rng, *xs)}
    if not residual:
        return make_model([conv], feeds, ["c"], inits), feeds, "c"
    feeds["r"] = _normal(rng, xs[0], cout, oh, ow)
    nodes = [conv, helper.make_node("Add", ["c", "r"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    return make_model(nodes, feeds, ["y"], inits), feeds, "y"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_winograd2(case, residual, threads, rng):
    model, feeds, out = _model(rng, *CASES[case], residual)
    compiled = ember.compile(model, threads=threads)
    assert MARK in compiled.source
    np.testing.assert_allclose(compiled.run(feeds)[out], run_ort(model, feeds)[0], **TOL)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bad", [np.nan, np.inf, 3e38])
def test_winograd2_non_finite_takes_the_gemm(bad, threads, rng):
    """A NaN, Inf or huge input (in the second image only) reaches exactly the outputs whose
    windows hold it, as the direct sums do: the whole batch goes through the GEMM."""
    model, feeds, out = _model(rng, (2, 32, 8, 8), 32, [1, 1, 1, 1], True, False)
    feeds["x"][1, 3, 2, 5] = bad
    got = ember.compile(model, threads=threads).run(feeds)[out]
    want = run_ort(model, feeds)[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], **TOL)


@pytest.mark.parametrize("shape,cout", [((1, 8, 8, 8), 8), ((1, 64, 4, 4), 64),
                                        ((1, 64, 16, 16), 64)])
def test_winograd2_only_where_it_pays(shape, cout, rng):
    """Few channels (transforms dominate), 4x4 maps (4 tiles in a 16-tile panel) and maps
    F(4x4) takes keep their kernels."""
    model, feeds, out = _model(rng, shape, cout, [1, 1, 1, 1], True, False)
    compiled = ember.compile(model)
    assert MARK not in compiled.source
    np.testing.assert_allclose(compiled.run(feeds)[out], run_ort(model, feeds)[0], **TOL)
