"""GridSample against onnxruntime (the ONNX reference where onnxruntime lacks volumetric cubic).

Grid values go past [-1, 1] on purpose, so every padding mode is exercised.
"""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import check_node, make_model, run_ort
from ember.errors import ShapeError

PADDINGS = ["zeros", "border", "reflection"]


def inputs(rng, x_shape, out_spatial, spread=1.3, dtype=np.float32):
    x = rng.standard_normal(x_shape).astype(dtype)
    s = len(x_shape) - 2
    grid = rng.uniform(-spread, spread, (x_shape[0], *out_spatial, s)).astype(dtype)
    return x, grid


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_gridsample_opset16(mode, padding, align, rng):
    x, grid = inputs(rng, (2, 3, 5, 7), (4, 6))
    check_node("GridSample", {"x": x, "grid": grid},
               {"mode": mode, "padding_mode": padding, "align_corners": align}, opset=16)


@pytest.mark.parametrize("opset", [20, 22])
@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_gridsample_new_mode_names(mode, opset, rng):
    x, grid = inputs(rng, (1, 2, 6, 4), (3, 5), spread=1.6)
    check_node("GridSample", {"x": x, "grid": grid}, {"mode": mode, "padding_mode": "reflection"},
               opset=opset)


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_gridsample_volumetric(mode, padding, align, rng):
    x, grid = inputs(rng, (2, 2, 3, 4, 5), (2, 3, 4))
    check_node("GridSample", {"x": x, "grid": grid},
               {"mode": mode, "padding_mode": padding, "align_corners": align}, opset=20)


@pytest.mark.parametrize("padding", ["zeros", "reflection"])
def test_gridsample_volumetric_cubic(padding, rng):
    # onnxruntime has cubic for 4-D only. (With border padding the reference clamps the
    # coordinate itself, where onnxruntime, followed here, clamps only the taps.)
    x, grid = inputs(rng, (1, 2, 3, 4, 5), (2, 2, 3))
    check_node("GridSample", {"x": x, "grid": grid}, {"mode": "cubic", "padding_mode": padding},
               opset=20, oracle="reference")


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_gridsample_float64(mode, rng):
    x, grid = inputs(rng, (1, 3, 4, 4), (5, 3), dtype=np.float64)
    check_node("GridSample", {"x": x, "grid": grid}, {"mode": mode, "padding_mode": "border"},
               opset=20)


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("padding", PADDINGS)
def test_gridsample_size_one_dims(padding, align, rng):
    # A single row: with align_corners its border has zero width (reflection degenerates).
    x, grid = inputs(rng, (1, 2, 1, 5), (3, 1), spread=2.5)
    check_node("GridSample", {"x": x, "grid": grid},
               {"mode": "linear", "padding_mode": padding, "align_corners": align}, opset=20)


def test_gridsample_far_outside(rng):
    # Coordinates many widths away reflect back and forth; border and zeros are trivial there.
    x, grid = inputs(rng, (1, 1, 4, 3), (4, 4), spread=9.0)
    for padding in PADDINGS:
        check_node("GridSample", {"x": x, "grid": grid}, {"padding_mode": padding}, opset=20)


def test_gridsample_empty_output(rng):
    x, grid = inputs(rng, (2, 3, 4, 4), (0, 3))
    check_node("GridSample", {"x": x, "grid": grid}, opset=20)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_gridsample_nan_and_huge_grid_stays_in_bounds(mode, padding, rng):
    """NaN, infinite and huge coordinates must not read outside X; the ordinary points of the
    same grid still match onnxruntime."""
    x, grid = inputs(rng, (1, 2, 5, 6), (4, 4))
    bad = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9], np.float32)
    grid[0, 0, :, 0] = bad[:4]
    grid[0, 1, :2, 1] = bad[4:]
    feeds = {"x": x, "grid": grid}
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, padding_mode=padding)
    model = make_model([node], feeds, ["y"], opset=20)
    got = ember.compile(model).run(feeds)["y"]
    want = run_ort(model, feeds)[0]
    ok = np.isfinite(grid).all(-1) & (np.abs(grid) < 10).all(-1)     # [N, H, W]
    ok = np.broadcast_to(ok[:, None], got.shape)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-4, atol=1e-5)
    if padding == "zeros":
        # A huge finite coordinate lands far outside: every tap is a zero pixel.
        np.testing.assert_array_equal(got[0, :, 1, :2], 0)


@pytest.mark.parametrize("attrs,opset,x_shape,grid_shape,match", [
    ({"mode": "linear"}, 16, (1, 1, 3, 3), (1, 2, 2, 2), "mode 'linear'"),
    ({"mode": "bilinear"}, 20, (1, 1, 3, 3), (1, 2, 2, 2), "mode 'bilinear'"),
    ({"padding_mode": "wrap"}, 20, (1, 1, 3, 3), (1, 2, 2, 2), "padding_mode"),
    ({}, 16, (1, 1, 3, 3, 3), (1, 2, 2, 2, 3), "rank 4 before opset 20"),
    ({}, 20, (1, 1, 3, 3), (1, 2, 2, 3), "does not fit"),
    ({}, 20, (2, 1, 3, 3), (1, 2, 2, 2), "does not fit"),
])
def test_gridsample_rejects_bad_nodes(attrs, opset, x_shape, grid_shape, match):
    feeds = {"x": np.zeros(x_shape, np.float32), "grid": np.zeros(grid_shape, np.float32)}
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], **attrs)
    with pytest.raises(ShapeError, match=match):
        ember.compile(make_model([node], feeds, ["y"], opset=opset))
