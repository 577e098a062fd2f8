"""Pooling against onnxruntime: Max/Average/Lp pools, their Global forms, MaxUnpool."""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import check_model, check_node, make_model, run_ort
from ember.errors import EmberError

WINDOWS = [
    # (x shape, attrs)
    ((1, 1, 9), {"kernel_shape": [3]}),
    ((2, 3, 10), {"kernel_shape": [2], "strides": [3], "pads": [1, 1]}),
    ((2, 3, 7, 9), {"kernel_shape": [3, 3]}),
    ((1, 2, 8, 7), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 2, 1]}),
    ((1, 2, 9, 9), {"kernel_shape": [2, 2], "strides": [3, 4]}),            # stride > kernel
    ((1, 2, 7, 8), {"kernel_shape": [1, 1], "strides": [2, 2]}),            # 1x1
    ((2, 2, 1, 5), {"kernel_shape": [1, 3], "pads": [0, 1, 0, 1]}),         # size-1 axis
    ((1, 2, 8, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 1, 5, 6), {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1],
                    "ceil_mode": 1}),                                       # last window dropped
    ((1, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2], "pads": [1, 1, 0, 0, 1, 1]}),
]
AUTO_PADS = [
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 7, 8), {"kernel_shape": [2, 3], "strides": [2, 3], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 7, 8), {"kernel_shape": [2, 3], "strides": [2, 3], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 7, 8), {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "VALID"}),
]


def _x(rng, shape, dtype=np.float32):
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("x_shape,attrs", WINDOWS + AUTO_PADS)
def test_max_pool(x_shape, attrs, rng):
    check_node("MaxPool", {"x": _x(rng, x_shape)}, attrs, n_outputs=2)


@pytest.mark.parametrize("x_shape,attrs", [
    ((1, 2, 9, 9), {"kernel_shape": [3, 2], "dilations": [2, 3]}),
    ((1, 1, 10, 9), {"kernel_shape": [2, 2], "dilations": [2, 2], "strides": [2, 1],
                     "pads": [1, 1, 1, 0], "ceil_mode": 1}),
    ((1, 1, 11), {"kernel_shape": [3], "dilations": [3], "pads": [2, 2]}),
])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_dilations(op, x_shape, attrs, rng):
    check_node(op, {"x": _x(rng, x_shape)}, attrs, n_outputs=2 if op == "MaxPool" else 1,
               opset=19)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_max_pool_storage_order(dims, rng):
    shape = (2, 2, 5, 6, 7)[:2 + dims]
    attrs = {"kernel_shape": [2] * dims, "strides": [2] * dims, "storage_order": 1,
             "pads": [1] * dims + [0] * dims}
    check_node("MaxPool", {"x": _x(rng, shape)}, attrs, n_outputs=2)


@pytest.mark.parametrize("dtype", [np.float64, np.int8, np.uint8])
def test_max_pool_dtypes(dtype, rng):
    check_node("MaxPool", {"x": _x(rng, (2, 3, 7, 6), dtype)},
               {"kernel_shape": [3, 2], "pads": [1, 1, 1, 0], "strides": [2, 1]}, n_outputs=2)


def test_max_pool_nan_inf():
    # NaN taps are skipped; a window of only -inf gives the lowest finite value (onnxruntime).
    x = np.array([[[1, np.nan, 3, -np.inf, np.inf, 5, np.nan, 2, -np.inf, -np.inf]]], np.float32)
    check_node("MaxPool", {"x": x}, {"kernel_shape": [2], "strides": [2]})


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("x_shape,attrs", WINDOWS + AUTO_PADS)
def test_average_pool(count_include_pad, x_shape, attrs, rng):
    check_node("AveragePool", {"x": _x(rng, x_shape)},
               {**attrs, "count_include_pad": count_include_pad})


def test_average_pool_double(rng):
    # onnxruntime has no double AveragePool or Global pools: the reference evaluator checks them
    check_node("AveragePool", {"x": _x(rng, (2, 3, 7, 6), np.float64)},
               {"kernel_shape": [3, 2], "pads": [1, 1, 1, 0], "count_include_pad": 1},
               oracle="reference", rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("x_shape,attrs", [WINDOWS[1], WINDOWS[3], WINDOWS[9], AUTO_PADS[1]])
def test_lp_pool(p, x_shape, attrs, rng):
    check_node("LpPool", {"x": _x(rng, x_shape)}, {**attrs, "p": p})


def test_lp_pool_ceil_dilations(rng):
    check_node("LpPool", {"x": _x(rng, (1, 2, 9, 8))},
               {"kernel_shape": [2, 2], "dilations": [2, 1], "strides": [2, 2], "ceil_mode": 1,
                "p": 2}, opset=18)


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 5, 6), (1, 2, 3, 1, 4), (2, 3, 1, 1)])
def test_global_pools(op, shape, rng):
    check_node(op, {"x": _x(rng, shape)})


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool"])
def test_global_pools_double(op, rng):
    check_node(op, {"x": _x(rng, (2, 3, 4, 5), np.float64)}, oracle="reference", rtol=1e-12,
               atol=1e-12)


def test_global_lp_pool_p(rng):
    check_node("GlobalLpPool", {"x": _x(rng, (2, 3, 4, 5))}, {"p": 3})


def test_pool_empty_batch(rng):
    check_node("MaxPool", {"x": _x(rng, (0, 2, 5, 5))}, {"kernel_shape": [2, 2]})


def test_pool_threads(rng):
    x = _x(rng, (2, 3, 9, 8))
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = make_model([node], {"x": x}, ["y", "i"])
    single, threaded = (ember.compile(model, threads=t).run({"x": x}) for t in (1, 2))
    for name in ("y", "i"):
        np.testing.assert_array_equal(single[name], threaded[name])


@pytest.mark.parametrize("x_shape,attrs", [
    ((1, 2, 6, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((2, 1, 7, 5), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1]}),
    ((1, 2, 9), {"kernel_shape": [3], "strides": [3]}),
])
@pytest.mark.parametrize("with_shape", [False, True])
def test_max_unpool(x_shape, attrs, with_shape, rng):
    """MaxPool's values and indices fed to MaxUnpool, optionally with an explicit output shape."""
    x = _x(rng, x_shape)
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], **attrs)
    inputs, inits = ["p", "i"], {}
    if with_shape:
        inputs.append("s")
        inits["s"] = np.array(x_shape, np.int64)
    unpool = helper.make_node("MaxUnpool", inputs, ["y"], **{k: v for k, v in attrs.items()})
    check_model(make_model([pool, unpool], {"x": x}, ["y"], inits), {"x": x})


@pytest.mark.parametrize("op,attrs,message", [
    ("MaxPool", {}, "kernel_shape is required"),
    ("MaxPool", {"kernel_shape": [9, 2]}, "larger than the padded input"),
    ("AveragePool", {"kernel_shape": [2, 2], "pads": [1, 1]}, "pads"),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [1, 0]}, "strides"),
    ("LpPool", {"kernel_shape": [2, 2], "p": 0}, "p must be"),
])
def test_pool_errors(op, attrs, message, rng):
    x = _x(rng, (1, 1, 4, 4))
    with pytest.raises(EmberError, match=message):
        ember.compile(make_model([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": x}, ["y"]))


def test_pool_rejects_integer_average(rng):
    x = _x(rng, (1, 1, 4, 4), np.int8)
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2])
    with pytest.raises(EmberError, match="element type i8"):
        ember.compile(make_model([node], {"x": x}, ["y"]))


@pytest.mark.parametrize("op,attrs,opset", [
    ("MaxPool", {"kernel_shape": [2, 2], "pads": [1, 0, 0, 1]}, 7),
    ("AveragePool", {"kernel_shape": [3, 2], "strides": [2, 1], "count_include_pad": 1}, 7),
    ("LpPool", {"kernel_shape": [2, 2], "p": 3}, 2),
    ("GlobalLpPool", {"p": 1}, 2),
])
def test_pool_old_opsets(op, attrs, opset, rng):
    check_node(op, {"x": _x(rng, (1, 2, 5, 6))}, attrs, opset=opset)


# The float32 vectorized kernels (ember/ops/window_plane.py, emit_global_pool): MaxPool without
# indices, AveragePool, the Global pools. Their generated C declares the vector type.
def _check_fast(op, x, attrs=None, fast=True, threads=1, want=None, opset=17):
    """Compile one pool node, check which kernel it got, compare with `want` (default ORT)."""
    model = make_model([helper.make_node(op, ["x"], ["y"], **(attrs or {}))], {"x": x}, ["y"],
                       opset=opset)
    compiled = ember.compile(model, threads=threads)
    assert ("ember_vf" in compiled.source) == fast
    got = compiled.run({"x": x})["y"]
    want = run_ort(model, {"x": x})[0] if want is None else want
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    return got


@pytest.mark.parametrize("x_shape,attrs", WINDOWS + AUTO_PADS + [
    ((1, 3, 112, 113), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 3, 4), {"kernel_shape": [3, 3], "pads": [2, 2, 2, 2]}),
    ((1, 2, 9, 10), {"kernel_shape": [3, 2], "dilations": [2, 3], "pads": [1, 1, 0, 1]}),
])
def test_max_pool_values_only(x_shape, attrs, rng):
    overlap = any(k > s for k, s in zip(attrs["kernel_shape"], attrs.get("strides", [1] * 3)))
    _check_fast("MaxPool", _x(rng, x_shape), attrs, fast=len(x_shape) < 5 and overlap)


SEPARABLE = "const float *restrict x0 = xp"    # the separable MaxPool's first window row


@pytest.mark.parametrize("x_shape,attrs", [
    ((1, 3, 20, 112), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 2, 9, 37), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 6, 5), {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [2, 1, 0, 1]}),
    ((1, 2, 11, 19), {"kernel_shape": [5, 5], "strides": [3, 2], "pads": [2, 4, 1, 3],
                      "ceil_mode": 1}),
    ((1, 2, 8, 33), {"kernel_shape": [1, 3], "pads": [0, 1, 0, 1]}),
    ((1, 1, 17), {"kernel_shape": [4], "strides": [2], "pads": [3, 2]}),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_max_pool_separable(x_shape, attrs, threads, rng):
    """Rows then columns (emit_separable_max): ResNet's 3x3 stride 2, a ragged last vector of
    outputs, rows narrower than a vector, windows cut by the edges on every side (ceil_mode),
    stride 1, 1-D; +-Inf against onnxruntime, then NaN taps skipped as the kernel with indices
    skips them (onnxruntime's 2-D MaxPool does not, see test_pool_nan_inf_2d)."""
    x = _x(rng, x_shape)
    x.flat[3::11], x.flat[5::13] = np.inf, -np.inf
    model = make_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], {"x": x}, ["y"])
    compiled = ember.compile(model, threads=threads)
    assert SEPARABLE in compiled.source
    np.testing.assert_array_equal(compiled.run({"x": x})["y"], run_ort(model, {"x": x})[0])
    x.flat[::7] = np.nan
    indexed = make_model([helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)], {"x": x},
                         ["y", "i"])
    want = ember.compile(indexed).run({"x": x})["y"]
    np.testing.assert_array_equal(compiled.run({"x": x})["y"], want)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [4, 4], "strides": [3, 3]},
])
def test_max_pool_plane_kernel_where_not_separable(attrs, rng):
    """Dilated windows and column strides past 2 keep the plane kernel."""
    x = _x(rng, (1, 2, 13, 17))
    model = make_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], {"x": x}, ["y"])
    compiled = ember.compile(model)
    assert SEPARABLE not in compiled.source and "padded" in compiled.source
    np.testing.assert_array_equal(compiled.run({"x": x})["y"], run_ort(model, {"x": x})[0])


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_nan_inf_2d(op, rng):
    x = _x(rng, (1, 2, 7, 9))
    x[0, 0, 1, 1], x[0, 0, 5, 7], x[0, 1, 3, 0] = np.nan, np.inf, -np.inf
    x[0, 1, 4:7, 4:7] = -np.inf             # a window of only -inf
    x[0, 1, 0:3, 6:9] = np.nan              # a window of only NaN
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    want = None
    if op == "MaxPool":
        # onnxruntime's 2-D MaxPool gives NaN or a wrong maximum depending on where a NaN
        # tap falls; Ember skips NaN taps everywhere, as its kernel with indices does.
        node = helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)
        want = ember.compile(make_model([node], {"x": x}, ["y", "i"])).run({"x": x})["y"]
        assert want[0, 1, 1, 7] == np.finfo(np.float32).min       # the NaN-only window
    _check_fast(op, x, attrs, want=want)


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("GlobalAveragePool", {}),
])
def test_fast_pool_threads(op, attrs, rng):
    x = _x(rng, (2, 3, 11, 10))
    single = _check_fast(op, x, attrs)
    np.testing.assert_array_equal(single, _check_fast(op, x, attrs, threads=2))


def test_average_pool_dilated_keeps_generic_kernel(rng):
    _check_fast("AveragePool", _x(rng, (1, 2, 9, 9)), {"kernel_shape": [2, 2], "dilations": [2, 2]},
                fast=False, opset=19)


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool"])
@pytest.mark.parametrize("shape", [(1, 3, 7, 7), (2, 2, 16, 17), (1, 2, 5), (1, 2, 1, 1),
                                   (1, 2, 3, 4, 5)])
def test_global_pools_fast(op, shape, rng):
    _check_fast(op, _x(rng, shape))


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("shape,strides", [((1, 3, 25, 5), [1, 1]), ((2, 2, 9), [3])])
def test_whole_plane_window(op, shape, strides, rng):
    """A window as large as the plane, unpadded, runs as a global pool (DS-CNN's last pool)."""
    got = _check_fast(op, _x(rng, shape), {"kernel_shape": list(shape[2:]), "strides": strides})
    assert got.shape == shape[:2] + (1,) * (len(shape) - 2)


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool"])
def test_global_pools_nan_inf(op, rng):
    x = _x(rng, (1, 5, 6, 7))
    x[0, 0, 2, 3], x[0, 1, 5, 6], x[0, 2, 0, 0] = np.nan, np.inf, -np.inf
    x[0, 3], x[0, 4] = np.nan, -np.inf
    want = None
    if op == "GlobalMaxPool":
        # NaN skipped, the lowest float for nothing else, as MaxPool (onnxruntime's
        # GlobalMaxPool answers a NaN-poisoned maximum)
        with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
            want = np.nanmax(x, axis=(2, 3), keepdims=True)
        lowest = np.finfo(np.float32).min
        want = np.where(np.isnan(want), lowest, np.maximum(want, lowest))
    _check_fast(op, x, want=want)


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_pool_sweep(seed):
    """Random geometries in one model (one compile): Max and Average pools of every mode."""
    from test_depthwise import check_sweep, sweep_geometries
    rng = np.random.default_rng(seed)
    nodes, feeds = [], {}
    for k, (x_shape, kernel, attrs) in enumerate(sweep_geometries(rng, 12, pads_below_kernel=True)):
        feeds[f"x{k}"] = _x(rng, x_shape)
        attrs = {**attrs, "kernel_shape": list(kernel), "ceil_mode": int(rng.integers(0, 2))}
        if k % 2:
            del attrs["dilations"]
            attrs["count_include_pad"] = int(rng.integers(0, 2))
        nodes.append(helper.make_node("AveragePool" if k % 2 else "MaxPool", [f"x{k}"],
                                      [f"y{k}"], **attrs))
    check_sweep(nodes, feeds, {}, fast=False)
