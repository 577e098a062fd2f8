"""The direct 1x1 convolution for few output channels (ember/ops/conv_pointwise.py) against
onnxruntime."""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import check_conv_chain, make_model, run_ort


@pytest.fixture(autouse=True)
def nchw_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are of the NCHW kernels: choose-layout must not move their convs."""
    monkeypatch.setenv("EMBER_LAYOUT", "nchw")


MARK = "__builtin_prefetch(xc + "      # only the pointwise kernel prefetches its input rows
CLIP = ("Clip", {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)})


def _check(rng, x_shape, c_out, attrs=None, bias=True, after=None, x=None, threads=1,
           taken=True):
    """1x1 Conv [-> `after` ops], compiled by Ember and compared with ORT."""
    x = rng.standard_normal(x_shape).astype(np.float32) if x is None else x
    kernel = (1,) * (len(x_shape) - 2)
    inits = {"w": rng.standard_normal((c_out, x_shape[1]) + kernel).astype(np.float32)}
    if bias:
        inits["b"] = rng.standard_normal(c_out).astype(np.float32)
    return check_conv_chain(x, inits, attrs or {}, after, threads, MARK, taken)


CASES = [
    # (x shape, output channels)
    ((1, 32, 16, 16), 16),          # MobileNetV2's first projection, smaller map
    ((1, 96, 12, 12), 24),          # 144 positions: a partial strip after a whole one
    ((1, 144, 9, 9), 24),           # 81 positions, strips of 16
    ((1, 7, 9, 11), 5),             # odd channels, one partial block of channels
    ((1, 13, 8, 8), 6),             # exactly one block of channels
    ((1, 5, 10, 13), 19),           # 3 blocks + 1 channel
    ((2, 9, 7, 15), 11),            # batch 2, 105 positions
    ((3, 6, 64, 1), 8),             # one column
    ((1, 20, 100), 7),              # 1-D
    ((1, 40, 35, 35), 24),          # many strips, ragged end
]


@pytest.mark.parametrize("x_shape,c_out", CASES)
def test_conv_pointwise(x_shape, c_out, rng):
    _check(rng, x_shape, c_out)


@pytest.mark.parametrize("x_shape,c_out", [((1, 32, 12, 12), 16), ((2, 11, 9, 9), 7)])
def test_conv_pointwise_no_bias_clip(x_shape, c_out, rng):
    _check(rng, x_shape, c_out, bias=False, after=[CLIP])


@pytest.mark.parametrize("x_shape,c_out,attrs", [
    ((1, 32, 7, 9), 16, {}),                                  # 63 positions: the GEMM's
    ((1, 8, 1, 1), 4, {}),                                    # size-1 map
    ((1, 16, 12, 12), 25, {}),                                # 25 output channels
    ((1, 16, 12, 12), 8, {"strides": [2, 2]}),                # stride 2
    ((1, 16, 12, 12), 8, {"pads": [1, 1, 1, 1]}),             # padded
    ((1, 3, 12, 12), 8, {}),                                  # conv_direct's (few inputs)
])
def test_conv_pointwise_not_taken(x_shape, c_out, attrs, rng):
    _check(rng, x_shape, c_out, attrs, taken=False)


def test_conv_pointwise_groups_not_taken(rng):
    x = rng.standard_normal((1, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 4, 1, 1)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], group=2)], {"x": x}, ["y"],
                       {"w": w})
    compiled = ember.compile(model)
    assert MARK not in compiled.source
    np.testing.assert_allclose(compiled.run({"x": x})["y"], run_ort(model, {"x": x})[0],
                               rtol=1e-4, atol=1e-5)


def test_conv_pointwise_runtime_residual(rng):
    """MobileNetV2's 144 -> 24 projection + the residual Add of another activation (a fused
    epilogue reading a run-time input), 1 and 2 threads."""
    x = rng.standard_normal((2, 36, 10, 13)).astype(np.float32)
    r = rng.standard_normal((2, 24, 10, 13)).astype(np.float32)
    inits = {"w": rng.standard_normal((24, 36, 1, 1)).astype(np.float32),
             "b": rng.standard_normal(24).astype(np.float32)}
    model = make_model([helper.make_node("Conv", ["x", "w", "b"], ["c"]),
                        helper.make_node("Add", ["c", "r"], ["y"])], {"x": x, "r": r}, ["y"], inits)
    want = run_ort(model, {"x": x, "r": r})[0]
    for threads in (1, 2):
        compiled = ember.compile(model, threads=threads)
        assert MARK in compiled.source
        np.testing.assert_allclose(compiled.run({"x": x, "r": r})["y"], want, rtol=1e-4, atol=1e-5)


def test_conv_pointwise_row_epilogue(rng):
    """An epilogue operand broadcast along the columns only (indexed by (oh, ow)), then Relu."""
    row = rng.standard_normal((9, 1)).astype(np.float32)
    _check(rng, (1, 10, 9, 14), 12, after=[("Add", {"row": row}), ("Relu", {})])


def test_conv_pointwise_nan_inf_threads(rng):
    """Non-finite inputs in whole and partial strips; 2 threads give the same values."""
    x = rng.standard_normal((2, 12, 11, 13)).astype(np.float32)
    x[0, 0, 0, 0], x[0, 5, 10, 12], x[1, 11, 5, 3], x[1, 2, 10, 11] = np.nan, np.inf, -np.inf, np.nan
    single = _check(np.random.default_rng(1), x.shape, 10, x=x, after=[CLIP])
    threaded = _check(np.random.default_rng(1), x.shape, 10, x=x, after=[CLIP], threads=2)
    np.testing.assert_array_equal(single, threaded)
    assert np.isnan(single[0, :, 0, 0]).all() and np.isfinite(single[0, :, 0, 1:10]).all()
