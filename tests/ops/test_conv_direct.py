"""The direct convolution for few input channels (ember/ops/conv_direct.py) against onnxruntime."""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import check_conv_chain, make_model, run_ort


@pytest.fixture(autouse=True)
def nchw_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are of the NCHW kernels: choose-layout must not move their convs."""
    monkeypatch.setenv("EMBER_LAYOUT", "nchw")


MARK = "static const int32_t offs["      # only the direct kernel declares its tap table


def _check(rng, x_shape, kernel, attrs=None, c_out=8, bias=True, after=None, x=None,
           threads=1, direct=True):
    """Conv (one group) [-> `after` ops], compiled by Ember and compared with ORT."""
    x = rng.standard_normal(x_shape).astype(np.float32) if x is None else x
    inits = {"w": rng.standard_normal((c_out, x_shape[1]) + tuple(kernel)).astype(np.float32)}
    if bias:
        inits["b"] = rng.standard_normal(c_out).astype(np.float32)
    return check_conv_chain(x, inits, attrs or {}, after, threads, MARK, direct)


CASES = [
    # (x shape, kernel, attrs, output channels)
    ((1, 3, 32, 32), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}, 32),   # MobileNetV2
    ((1, 1, 17, 19), (3, 3), {"pads": [1, 1, 1, 1]}, 8),
    ((2, 2, 18, 21), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}, 6),    # batch 2
    ((1, 3, 19, 33), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}, 5),    # odd sizes
    ((1, 4, 12, 40), (3, 3), {}, 9),                                           # no padding
    ((1, 3, 15, 26), (3, 3), {"pads": [0, 2, 1, 0]}, 4),                       # asymmetric
    ((1, 2, 14, 37), (3, 3), {"pads": [2, 0, 0, 1], "strides": [2, 2]}, 7),
    ((1, 3, 23, 45), (7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}, 16),   # ResNet
    ((1, 2, 11, 30), (5, 5), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, 4),
    ((1, 3, 10, 40), (3, 2), {"strides": [2, 3], "pads": [1, 1, 0, 1]}, 3),    # stride 3
    ((1, 4, 9, 64), (1, 1), {}, 12),                                           # 1x1
    ((1, 2, 1, 24), (1, 3), {"pads": [0, 1, 0, 1]}, 4),                        # one row
    ((1, 3, 7, 20), (3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 8),
    ((1, 3, 5, 18), (3, 3), {"pads": [3, 1, 4, 1]}, 4),                        # pads > kernel
]


@pytest.mark.parametrize("x_shape,kernel,attrs,c_out", CASES)
def test_conv_direct(x_shape, kernel, attrs, c_out, rng):
    _check(rng, x_shape, kernel, attrs, c_out)


def test_conv_direct_1d_no_bias(rng):
    _check(rng, (2, 3, 50), (5,), {"pads": [2, 1], "strides": [2]}, c_out=10, bias=False)


@pytest.mark.parametrize("x_shape,kernel,attrs", [
    ((1, 5, 16, 32), (3, 3), {"pads": [1, 1, 1, 1]}),           # 5 input channels
    ((1, 3, 16, 12), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),   # output 6 wide
])
def test_conv_direct_not_taken(x_shape, kernel, attrs, rng):
    _check(rng, x_shape, kernel, attrs, direct=False)


def test_conv_direct_groups_not_taken(rng):
    x = rng.standard_normal((1, 4, 8, 32)).astype(np.float32)
    w = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], group=2, pads=[1, 1, 1, 1])],
                       {"x": x}, ["y"], {"w": w})
    compiled = ember.compile(model)
    assert MARK not in compiled.source
    np.testing.assert_allclose(compiled.run({"x": x})["y"], run_ort(model, {"x": x})[0],
                               rtol=1e-4, atol=1e-5)


def test_conv_direct_relu_and_row_epilogue(rng):
    """An epilogue operand broadcast along the columns only, then Relu."""
    row = rng.standard_normal((9, 1)).astype(np.float32)
    _check(rng, (1, 3, 18, 34), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}, c_out=6,
           after=[("Add", {"row": row}), ("Relu", {})])


def test_conv_direct_nan_inf_threads_bn_clip(rng):
    """Non-finite inputs at the row ends and inside, 2 threads, BatchNorm + Clip epilogue."""
    x = rng.standard_normal((2, 3, 20, 36)).astype(np.float32)
    x[0, 0, 3, 0], x[0, 1, 4, 35], x[1, 2, 0, 9], x[1, 0, 19, 16] = np.nan, np.inf, -np.inf, np.nan
    bn = {"scale": rng.standard_normal(12).astype(np.float32),
          "bias": rng.standard_normal(12).astype(np.float32),
          "mean": rng.standard_normal(12).astype(np.float32),
          "var": rng.random(12).astype(np.float32) + 0.5}
    after = [("BatchNormalization", bn),
             ("Clip", {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)})]
    attrs = {"pads": [1, 1, 1, 1], "strides": [2, 2]}
    single = _check(np.random.default_rng(1), x.shape, (3, 3), attrs, c_out=12, x=x, after=after)
    threaded = _check(np.random.default_rng(1), x.shape, (3, 3), attrs, c_out=12, x=x,
                      after=after, threads=2)
    np.testing.assert_array_equal(single, threaded)
    # the NaN at (3, 0) reaches output rows 1-2, column 0 only
    assert np.isnan(single[0, :, 1:3, 0]).all() and np.isfinite(single[0, :, :, 1:17]).all()
