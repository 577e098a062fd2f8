"""Depthwise Conv (the vectorized plane kernel of ember/ops/depthwise.py) against onnxruntime."""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import check_conv_chain, make_model, run_ort


@pytest.fixture(autouse=True)
def nchw_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are of the NCHW kernels: choose-layout must not move their convs."""
    monkeypatch.setenv("EMBER_LAYOUT", "nchw")


VECTOR_TYPE = "ember_vf"      # only the plane kernel declares it


def _check(rng, x_shape, kernel, attrs=None, bias=True, mult=1, after=None, x=None,
           threads=1, fast=True):
    """Conv (group = channels) [-> `after` ops], compiled by Ember and compared with ORT."""
    c = x_shape[1]
    x = rng.standard_normal(x_shape).astype(np.float32) if x is None else x
    inits = {"w": rng.standard_normal((c * mult, 1) + tuple(kernel)).astype(np.float32)}
    if bias:
        inits["b"] = rng.standard_normal(c * mult).astype(np.float32)
    return check_conv_chain(x, inits, dict(attrs or {}, group=c), after, threads, VECTOR_TYPE,
                            fast)


CASES = [
    # (x shape, kernel, attrs)
    ((1, 4, 9, 11), (3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 3, 10, 9), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 5, 7, 7), (3, 3), {}),                                            # no padding
    ((1, 3, 13, 17), (5, 5), {"pads": [2, 2, 2, 2]}),
    ((1, 3, 14, 15), (5, 5), {"pads": [2, 2, 2, 2], "strides": [2, 2]}),
    ((1, 3, 6, 5), (1, 1), {}),                                            # 1x1
    ((1, 3, 8, 9), (3, 1), {"pads": [1, 0, 1, 0]}),                        # 3x1
    ((1, 3, 8, 9), (1, 3), {"pads": [0, 1, 0, 1], "strides": [1, 2]}),
    ((1, 2, 9, 10), (3, 3), {"pads": [0, 2, 1, 0]}),                       # asymmetric
    ((1, 2, 9, 10), (3, 3), {"pads": [2, 0, 0, 1], "strides": [2, 1]}),
    ((1, 2, 11, 12), (3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((1, 2, 11, 12), (3, 2), {"dilations": [2, 3], "strides": [2, 3], "pads": [1, 2, 0, 1]}),
    ((1, 2, 9, 9), (2, 2), {"strides": [3, 3]}),                           # stride > kernel
    ((1, 2, 5, 4), (3, 3), {"pads": [4, 3, 5, 4]}),                        # pads > kernel
    ((1, 3, 1, 1), (3, 3), {"pads": [1, 1, 1, 1]}),                        # 1x1 plane
    ((1, 3, 1, 9), (1, 3), {"pads": [0, 1, 0, 1]}),                        # one row
    ((1, 3, 9, 1), (3, 1), {"pads": [1, 0, 1, 0]}),                        # one column
    ((1, 3, 6, 3), (3, 3), {"pads": [1, 1, 1, 1]}),                        # narrower than a vector
    ((1, 64, 25, 5), (3, 3), {"pads": [1, 1, 1, 1]}),                      # DS-CNN
    ((1, 7, 23, 37), (7, 7), {"pads": [3, 3, 3, 3]}),                      # 49 taps
    ((1, 2, 7, 8), (3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 2, 7, 8), (4, 4), {"auto_pad": "SAME_LOWER"}),
    ((1, 2, 7, 8), (3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    ((1, 1, 8, 7), (3, 3), {"pads": [1, 1, 1, 1]}),    # one channel: one group, so the GEMM (7 wide: not the direct kernel)
]


@pytest.mark.parametrize("x_shape,kernel,attrs", CASES)
def test_depthwise(x_shape, kernel, attrs, rng):
    _check(rng, x_shape, kernel, attrs, fast=x_shape[1] > 1)


@pytest.mark.parametrize("x_shape,kernel,attrs", [CASES[0], CASES[1], CASES[11]])
def test_depthwise_no_bias(x_shape, kernel, attrs, rng):
    _check(rng, x_shape, kernel, attrs, bias=False)


@pytest.mark.parametrize("mult,attrs", [(2, {"pads": [1, 1, 1, 1]}),
                                        (3, {"strides": [2, 2], "pads": [0, 1, 1, 0]})])
def test_depthwise_multiplier(mult, attrs, rng):
    _check(rng, (2, 3, 8, 7), (3, 3), attrs, mult=mult)


@pytest.mark.parametrize("x_shape,kernel,attrs", [
    ((2, 3, 17), (3,), {"pads": [1, 1]}),
    ((1, 4, 20), (5,), {"pads": [2, 1], "strides": [2], "dilations": [2]}),
    ((1, 2, 3), (3,), {"pads": [1, 1]}),
])
def test_depthwise_1d(x_shape, kernel, attrs, rng):
    _check(rng, x_shape, kernel, attrs)


def test_depthwise_3d_keeps_generic_kernel(rng):
    _check(rng, (1, 2, 4, 5, 6), (3, 3, 3), {"pads": [1] * 6}, fast=False)


@pytest.mark.parametrize("kernel,attrs", [((9, 9), {"pads": [4] * 4}),
                                          ((3, 3), {"strides": [1, 5]})])
def test_depthwise_large_kernel_or_stride_keeps_generic_kernel(kernel, attrs, rng):
    _check(rng, (1, 2, 12, 12), kernel, attrs, fast=False)


def test_depthwise_relu_epilogue(rng):
    got = _check(rng, (1, 6, 10, 9), (3, 3), {"pads": [1, 1, 1, 1]}, after=[("Relu", {})])
    assert (got == 0).any() and (got > 0).any()


@pytest.mark.parametrize("strides", [[1, 1], [2, 2]])
def test_depthwise_bn_clip_epilogue(strides, rng):
    """MobileNet's pattern: Conv, a per-channel shift (folded BatchNorm), Clip(0, 6)."""
    shift = rng.standard_normal((5, 1, 1)).astype(np.float32)
    _check(rng, (1, 5, 12, 11), (3, 3), {"pads": [1, 1, 1, 1], "strides": strides},
           after=[("Add", {"shift": shift}),
                  ("Clip", {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)})])


def test_depthwise_threads(rng):
    x = rng.standard_normal((2, 5, 12, 13)).astype(np.float32)
    attrs = {"pads": [1, 1, 1, 1], "strides": [2, 1]}
    single = _check(np.random.default_rng(1), x.shape, (3, 3), attrs, mult=2, x=x)
    threaded = _check(np.random.default_rng(1), x.shape, (3, 3), attrs, mult=2, x=x, threads=2)
    np.testing.assert_array_equal(single, threaded)


def test_depthwise_nan_inf(rng):
    x = rng.standard_normal((1, 3, 8, 10)).astype(np.float32)
    x[0, 0, 2, 3], x[0, 1, 0, 0], x[0, 2, 7, 9], x[0, 2, 4, 4] = np.nan, np.inf, -np.inf, np.inf
    got = _check(rng, x.shape, (3, 3), {"pads": [1, 1, 1, 1]}, x=x)
    assert np.isnan(got[0, 0, 1:4, 2:5]).all() and np.isfinite(got[0, 0, 5:, :]).all()


def test_depthwise_empty_batch(rng):
    _check(rng, (0, 3, 6, 6), (3, 3), {"pads": [1, 1, 1, 1]}, fast=False)   # no code at all


def test_depthwise_float64_keeps_generic_kernel(rng):
    from conftest import check_node
    x = rng.standard_normal((1, 3, 6, 7))
    w = rng.standard_normal((3, 1, 3, 3))
    got = ember.compile(make_model([helper.make_node("Conv", ["x", "w"], ["y"], group=3)],
                                   {"x": x}, ["y"], {"w": w}))
    assert VECTOR_TYPE not in got.source
    check_node("Conv", {"x": x}, {"group": 3}, initializers={"w": w}, oracle="reference",
               rtol=1e-10, atol=1e-12)


FLAT_MARK = "restrict xz"      # only the flat kernel (ember/ops/depthwise_flat.py) declares it

FLAT_CASES = [      # stride 1, output as wide as the input, narrow: the flat kernel
    ((1, 5, 25, 5), (3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 3, 7, 7), (3, 3), {"pads": [0, 1, 2, 1]}),                 # rows padded unevenly
    ((1, 3, 6, 9), (3, 3), {"pads": [1, 0, 1, 2]}),                 # columns padded right only
    ((1, 3, 6, 9), (3, 3), {"pads": [1, 2, 1, 0]}),                 # left only
    ((1, 2, 9, 11), (5, 5), {"pads": [2, 2, 2, 2]}),
    ((1, 2, 10, 13), (3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ((1, 3, 5, 1), (3, 3), {"pads": [1, 1, 1, 1]}),                 # width 1: all shifts masked
    ((1, 3, 1, 7), (1, 3), {"pads": [0, 1, 0, 1]}),                 # one row
    ((1, 2, 4, 3), (2, 2), {"pads": [0, 0, 1, 1]}),                 # even kernel
    ((1, 3, 3, 2), (3, 3), {"pads": [3, 1, 2, 1]}),                 # pads > rows
]


@pytest.mark.parametrize("x_shape,kernel,attrs", FLAT_CASES)
def test_depthwise_flat(x_shape, kernel, attrs, rng):
    got = ember.compile(make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=x_shape[1], **attrs)],
        {"x": np.zeros(x_shape, np.float32)}, ["y"],
        {"w": np.zeros((x_shape[1], 1) + kernel, np.float32)}))
    assert FLAT_MARK in got.source
    _check(rng, x_shape, kernel, attrs)


def test_depthwise_flat_epilogue_by_row_and_column(rng):
    """An epilogue operand broadcast along the columns only: stored by (oh, ow), not flat."""
    row = rng.standard_normal((9, 1)).astype(np.float32)
    _check(rng, (2, 3, 9, 6), (3, 3), {"pads": [1, 1, 1, 1]}, mult=2,
           after=[("Add", {"row": row}), ("Relu", {})])


def test_depthwise_flat_threads_and_nan(rng):
    x = rng.standard_normal((2, 5, 6, 5)).astype(np.float32)
    x[0, 0, 2, 4], x[0, 1, 3, 0], x[1, 4, 5, 4] = np.nan, np.inf, -np.inf
    single = _check(np.random.default_rng(1), x.shape, (3, 3), {"pads": [1, 1, 1, 1]}, x=x)
    threaded = _check(np.random.default_rng(1), x.shape, (3, 3), {"pads": [1, 1, 1, 1]}, x=x,
                      threads=2)
    np.testing.assert_array_equal(single, threaded)
    assert np.isfinite(single[0, 0, :, :3]).all() and np.isfinite(single[0, 1, :, 2:]).all()


def sweep_geometries(rng, count, pads_below_kernel=False):
    """Random small 2-D window geometries: (x shape, kernel, attrs) with an output of >= 1."""
    out = []
    while len(out) < count:
        h, w = rng.integers(1, 13, 2)
        k = rng.integers(1, 6, 2)
        s = rng.integers(1, 4, 2)
        d = rng.integers(1, 3, 2)
        pads = rng.integers(0, 4, 4)
        if pads_below_kernel:        # as the pools require
            pads = np.minimum(pads, np.concatenate([k, k]) - 1)
        ext = (k - 1) * d + 1
        if np.any(np.array([h, w]) + pads[:2] + pads[2:] < ext):
            continue
        out.append(((1, int(rng.integers(1, 4)), int(h), int(w)), tuple(int(v) for v in k),
                    {"strides": s.tolist(), "dilations": d.tolist(), "pads": pads.tolist()}))
    return out


def check_sweep(nodes, feeds, inits, fast=True):
    """Compile the nodes (each on its own input) as one model; compare every output with ORT.
    `fast`: every node must get the plane kernel (else only some do)."""
    model = make_model(nodes, feeds, [n.output[0] for n in nodes], inits)
    compiled = ember.compile(model)
    assert compiled.source.count(VECTOR_TYPE) >= (len(nodes) if fast else 1)
    got = compiled.run(feeds)
    for node, want in zip(nodes, run_ort(model, feeds)):
        np.testing.assert_allclose(got[node.output[0]], want, rtol=1e-4, atol=1e-5,
                                   err_msg=str(node))


def test_depthwise_sweep(rng):
    """Random geometries in one model (one compile): plane sizes, strides, dilations, pads."""
    nodes, feeds, inits = [], {}, {}
    for k, (x_shape, kernel, attrs) in enumerate(sweep_geometries(rng, 16)):
        feeds[f"x{k}"] = rng.standard_normal(x_shape).astype(np.float32)
        inits[f"w{k}"] = rng.standard_normal((x_shape[1], 1) + kernel).astype(np.float32)
        inits[f"b{k}"] = rng.standard_normal(x_shape[1]).astype(np.float32)
        nodes.append(helper.make_node("Conv", [f"x{k}", f"w{k}", f"b{k}"], [f"y{k}"],
                                      group=x_shape[1], **attrs))
    check_sweep(nodes, feeds, inits)


def test_depthwise_flat_sweep(rng):
    """Random stride-1 geometries whose output is as wide as the input (the flat kernel's)."""
    nodes, feeds, inits = [], {}, {}
    while len(nodes) < 14:
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        (kh, kw), (dh, dw) = rng.integers(1, 5, 2), rng.integers(1, 3, 2)
        left = int(rng.integers(0, (kw - 1) * dw + 1))
        pads = [int(rng.integers(0, 3)), left, int(rng.integers(0, 3)), int((kw - 1) * dw - left)]
        if h + pads[0] + pads[2] < (kh - 1) * dh + 1:
            continue
        k, c = len(nodes), int(rng.integers(1, 4)) + 1
        feeds[f"x{k}"] = rng.standard_normal((1, c, h, w)).astype(np.float32)
        inits[f"w{k}"] = rng.standard_normal((c, 1, int(kh), int(kw))).astype(np.float32)
        nodes.append(helper.make_node("Conv", [f"x{k}", f"w{k}"], [f"y{k}"], group=c,
                                      pads=pads, dilations=[int(dh), int(dw)]))
    check_sweep(nodes, feeds, inits)


SPLIT_MARK = "__builtin_shufflevector"      # the stride-2 copy splits columns by shuffles
# (these shapes now take the in-place kernel, depthwise_stride2.py, which shuffles too; the
# copy's split stays for the pools and the shapes test_depthwise_stride2_other_shapes_copy has)

SPLIT_CASES = [     # column stride 2 on rows wide enough for whole 4-float shuffle steps
    ((1, 3, 9, 17), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),        # odd width
    ((1, 2, 6, 18), (3, 3), {"pads": [0, 0, 0, 0], "strides": [2, 2]}),        # no padding
    ((1, 2, 7, 33), (3, 3), {"pads": [1, 2, 0, 1], "strides": [2, 2]}),        # asymmetric
    ((1, 2, 8, 40), (3, 3), {"pads": [1, 0, 1, 2], "strides": [1, 2]}),        # rows stride 1
    ((1, 2, 9, 37), (3, 3), {"pads": [2, 2, 2, 2], "strides": [2, 2], "dilations": [2, 2]}),
    ((1, 2, 5, 21), (2, 4), {"pads": [0, 3, 1, 0], "strides": [2, 2]}),        # even kernel
    ((1, 2, 1, 19), (1, 3), {"pads": [0, 1, 0, 1], "strides": [1, 2]}),        # one row
    ((1, 2, 11, 26), (5, 5), {"pads": [2, 2, 2, 2], "strides": [2, 2]}),
]


@pytest.mark.parametrize("x_shape,kernel,attrs", SPLIT_CASES)
def test_depthwise_stride2_split(x_shape, kernel, attrs, rng):
    got = ember.compile(make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=x_shape[1], **attrs)],
        {"x": np.zeros(x_shape, np.float32)}, ["y"],
        {"w": np.zeros((x_shape[1], 1) + kernel, np.float32)}))
    assert SPLIT_MARK in got.source
    _check(rng, x_shape, kernel, attrs)


def test_depthwise_stride2_split_1d(rng):
    _check(rng, (2, 3, 35), (3,), {"pads": [1, 1], "strides": [2]})


def test_depthwise_stride2_split_nan_inf_threads_epilogue(rng):
    """Non-finite values at the row ends and inside the shuffled columns, 2 threads, and
    MobileNet's BatchNorm shift + Clip epilogue."""
    x = rng.standard_normal((2, 4, 11, 23)).astype(np.float32)
    x[0, 0, 3, 0], x[0, 1, 4, 22], x[1, 2, 0, 9], x[1, 3, 10, 12] = np.nan, np.inf, -np.inf, np.nan
    shift = rng.standard_normal((4, 1, 1)).astype(np.float32)
    after = [("Add", {"shift": shift}),
             ("Clip", {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)})]
    attrs = {"pads": [1, 1, 1, 1], "strides": [2, 2]}
    single = _check(np.random.default_rng(1), x.shape, (3, 3), attrs, x=x, after=after)
    threaded = _check(np.random.default_rng(1), x.shape, (3, 3), attrs, x=x, after=after,
                      threads=2)
    np.testing.assert_array_equal(single, threaded)
    assert np.isnan(single[0, 0, 1:3, 0]).all() and np.isfinite(single[0, 0, 5:, :]).all()


ROWS_MARK = "restrict zero"      # only the in-place rows kernel (ember/ops/depthwise_rows.py)

ROWS_CASES = [      # stride 1, output as wide as the input, rows of whole vectors (>= 2)
    ((1, 3, 5, 24), (3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 2, 4, 40), (5, 5), {"pads": [2, 2, 2, 2]}),
    ((1, 2, 6, 40), (3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ((1, 2, 5, 24), (3, 3), {"pads": [0, 0, 2, 2]}),                 # columns padded right only
    ((1, 2, 5, 24), (3, 3), {"pads": [1, 2, 1, 0]}),                 # left only
    ((1, 2, 5, 16), (3, 1), {"pads": [1, 0, 1, 0]}),                 # no column shift
    ((1, 2, 1, 24), (1, 3), {"pads": [0, 1, 0, 1]}),                 # one row
    ((1, 2, 2, 24), (3, 3), {"pads": [3, 1, 2, 1]}),                 # pads > rows
    ((1, 2, 3, 72), (2, 8), {"pads": [1, 7, 0, 0]}),                 # shift -7: a whole vector
]


@pytest.mark.parametrize("x_shape,kernel,attrs", ROWS_CASES)
def test_depthwise_rows(x_shape, kernel, attrs, rng):
    got = ember.compile(make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=x_shape[1], **attrs)],
        {"x": np.zeros(x_shape, np.float32)}, ["y"],
        {"w": np.zeros((x_shape[1], 1) + kernel, np.float32)}))
    assert ROWS_MARK in got.source
    _check(rng, x_shape, kernel, attrs)


def test_depthwise_rows_1d_multiplier_no_bias(rng):
    _check(rng, (2, 3, 40), (3,), {"pads": [1, 1]}, mult=2, bias=False)


def test_depthwise_rows_epilogue_by_row_and_column(rng):
    """An epilogue operand broadcast along the columns only: stored by (oh, ow), not flat."""
    row = rng.standard_normal((6, 1)).astype(np.float32)
    _check(rng, (1, 3, 6, 24), (3, 3), {"pads": [1, 1, 1, 1]}, mult=2,
           after=[("Add", {"row": row}), ("Relu", {})])


def test_depthwise_rows_nan_inf_threads_epilogue(rng):
    """Non-finite values at both row ends (the shuffled lanes) and inside, 2 threads, and
    MobileNet's BatchNorm shift + Clip epilogue."""
    x = rng.standard_normal((2, 4, 7, 24)).astype(np.float32)
    x[0, 0, 3, 0], x[0, 1, 4, 23], x[1, 2, 0, 9], x[1, 3, 6, 15] = np.nan, np.inf, -np.inf, np.nan
    x[0, 0, 0, 0], x[1, 3, 6, 23] = -np.inf, np.inf   # the input's first and last (copied) rows
    shift = rng.standard_normal((4, 1, 1)).astype(np.float32)
    after = [("Add", {"shift": shift}),
             ("Clip", {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)})]
    single = _check(np.random.default_rng(1), x.shape, (3, 3), {"pads": [1, 1, 1, 1]}, x=x,
                    after=after)
    threaded = _check(np.random.default_rng(1), x.shape, (3, 3), {"pads": [1, 1, 1, 1]}, x=x,
                      after=after, threads=2)
    np.testing.assert_array_equal(single, threaded)
    # the NaN at column 0 reaches columns 0-1 of rows 2-4 only; nothing wraps to column 23
    assert np.isnan(single[0, 0, 2:5, :2]).all() and np.isfinite(single[0, 0, :, 2:]).all()
    assert np.isfinite(single[0, 1, :, :22]).all()


STRIDE2_MARK = "swapped"      # only the in-place stride-2 kernel (ember/ops/depthwise_stride2.py)

STRIDE2_CASES = [   # column stride 2 on rows of a vector at least: read in place, no copy
    ((1, 3, 8, 8), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),          # one vector
    ((2, 3, 9, 9), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 3, 10, 10), (3, 3), {"pads": [0, 0, 1, 1], "strides": [2, 2]}),
    ((1, 4, 14, 14), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),        # MobileNetV2's
    ((1, 2, 28, 28), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 2, 6, 17), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),         # 9: ragged
    ((1, 3, 5, 48), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),        # whole vectors
    ((2, 2, 7, 52), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),        # 26: ragged
    ((1, 2, 6, 49), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),        # odd sizes
    ((1, 2, 8, 50), (3, 3), {"pads": [0, 0, 1, 1], "strides": [2, 2]}),        # TF "same"
    ((1, 2, 7, 51), (3, 3), {"pads": [1, 2, 0, 1], "strides": [2, 2]}),        # asymmetric
    ((1, 2, 6, 50), (3, 3), {"pads": [0, 0, 0, 0], "strides": [2, 2]}),        # no padding
    ((1, 2, 5, 50), (3, 3), {"pads": [1, 1, 1, 1], "strides": [1, 2]}),        # rows stride 1
    ((1, 2, 10, 50), (3, 3), {"pads": [1, 1, 1, 1], "strides": [3, 2]}),       # rows stride 3
    ((1, 2, 9, 61), (3, 3), {"pads": [2, 2, 2, 2], "strides": [2, 2], "dilations": [2, 2]}),
    ((1, 2, 9, 60), (5, 5), {"pads": [2, 2, 2, 2], "strides": [2, 2]}),
    ((1, 2, 5, 53), (2, 4), {"pads": [0, 3, 1, 0], "strides": [2, 2]}),        # even kernel
    ((1, 2, 3, 64), (1, 8), {"pads": [0, 7, 0, 0], "strides": [2, 2]}),        # shift -7
    ((1, 2, 1, 48), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),        # one row
    ((1, 2, 2, 47), (3, 3), {"pads": [3, 1, 2, 1], "strides": [2, 2]}),        # pads > rows
    ((1, 2, 3, 112), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),       # MobileNetV2's
]


def _compiles_to(x_shape, kernel, attrs, mark):
    return mark in ember.compile(make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=x_shape[1], **attrs)],
        {"x": np.zeros(x_shape, np.float32)}, ["y"],
        {"w": np.zeros((x_shape[1], 1) + kernel, np.float32)})).source


@pytest.mark.parametrize("x_shape,kernel,attrs", STRIDE2_CASES)
def test_depthwise_stride2(x_shape, kernel, attrs, rng):
    assert _compiles_to(x_shape, kernel, attrs, STRIDE2_MARK)
    _check(rng, x_shape, kernel, attrs)


@pytest.mark.parametrize("x_shape,kernel,attrs", [
    ((1, 2, 9, 7), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),     # under a vector
    ((1, 2, 4, 20), (3, 3), {"pads": [1, 1, 1, 40], "strides": [2, 2]}),   # edges only
    ((1, 2, 5, 60), (3, 3), {"pads": [1, 9, 1, 1], "strides": [2, 2]}),    # shift -9
])
def test_depthwise_stride2_other_shapes_copy(x_shape, kernel, attrs, rng):
    assert not _compiles_to(x_shape, kernel, attrs, STRIDE2_MARK)
    _check(rng, x_shape, kernel, attrs)


def test_depthwise_stride2_1d_multiplier_no_bias(rng):
    """One row per plane: the input's first and last elements (rows read from copies) inf."""
    x = rng.standard_normal((2, 3, 70)).astype(np.float32)
    x[0, 0, 0], x[1, 2, 69] = np.inf, -np.inf
    got = _check(rng, x.shape, (3,), {"pads": [1, 1], "strides": [2]}, mult=2, bias=False, x=x)
    assert np.isfinite(got[0, 0, 1:]).all() and np.isfinite(got[1, 5, :-1]).all()


def test_depthwise_stride2_multiplier_epilogue_by_row_and_column(rng):
    """Channel multiplier 2; an epilogue operand broadcast along the columns only (stored by
    (oh, ow), not flat)."""
    row = rng.standard_normal((4, 1)).astype(np.float32)
    _check(rng, (1, 3, 7, 50), (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}, mult=2,
           after=[("Add", {"row": row}), ("Relu", {})])


def test_depthwise_stride2_nan_inf_threads_epilogue(rng):
    """Non-finite values at both row ends (the shifted edge loads), inside, and in a column
    only the last window reads (padded), 2 threads, batch 2, BatchNorm shift + Clip."""
    x = rng.standard_normal((2, 4, 9, 52)).astype(np.float32)
    x[0, 0, 3, 0], x[0, 1, 4, 51], x[1, 2, 0, 9], x[1, 3, 8, 16] = np.nan, np.inf, -np.inf, np.nan
    x[0, 0, 0, 0], x[1, 3, 8, 51] = -np.inf, np.inf   # the input's first and last (copied) rows
    x[0, 2, :, 51] = np.nan        # read by the last window only when padded
    shift = rng.standard_normal((4, 1, 1)).astype(np.float32)
    after = [("Add", {"shift": shift}),
             ("Clip", {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)})]
    for pad in (0, 1):
        attrs = {"pads": [pad] * 4, "strides": [2, 2]}
        single = _check(np.random.default_rng(1), x.shape, (3, 3), attrs, x=x, after=after)
        threaded = _check(np.random.default_rng(1), x.shape, (3, 3), attrs, x=x, after=after,
                          threads=2)
        np.testing.assert_array_equal(single, threaded)
    assert np.isnan(single[0, 0, 1:3, 0]).all() and np.isfinite(single[0, 0, 3:, :]).all()
    assert np.isnan(single[0, 2, :, 25]).all() and np.isfinite(single[0, 2, :, :25]).all()
