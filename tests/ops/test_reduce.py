"""Reductions against onnxruntime: Reduce*, ArgMax/ArgMin, CumSum, CumProd, TopK."""
import numpy as np
import pytest
from onnx import helper

from conftest import check_model, check_node, make_model

SUM_LIKE = ["ReduceSum", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare",
            "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMin"]


def reduce_node(op, x, axes=None, opset=18, check=None, **attrs):
    """A Reduce node with axes as an attribute or a constant input, as `opset` wants;
    `check` holds extra arguments of check_node (oracle, tolerances)."""
    since = 13 if op == "ReduceSum" else 18
    check = dict(check or {})
    if np.asarray(x).dtype.kind == "u":
        check.setdefault("oracle", "reference")   # onnxruntime lacks most unsigned reductions
    if axes is None or opset < since:
        if axes is not None:
            attrs["axes"] = axes
        return check_node(op, {"x": x}, attrs, opset=opset, **check)
    return check_node(op, {"x": x}, attrs, opset=opset,
                      initializers={"axes": np.array(axes, np.int64)}, **check)


def positive(shape, rng, dtype=np.float32):
    return rng.uniform(0.5, 2.0, shape).astype(dtype)


@pytest.mark.parametrize("op", SUM_LIKE)
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([0, 2], 0), ([-1], 1), (None, 0),
                                           ([2, 0, 1], 0)])
def test_reduce_float(op, axes, keepdims, rng):
    x = positive((3, 4, 5), rng) if op in ("ReduceLogSum", "ReduceProd") else \
        rng.standard_normal((3, 4, 5)).astype(np.float32)
    reduce_node(op, x, axes, keepdims=keepdims)


@pytest.mark.parametrize("op", SUM_LIKE)
def test_reduce_attribute_axes_old_opset(op, rng):
    x = positive((2, 3, 4), rng)
    reduce_node(op, x, [0, -1], opset=11, keepdims=0)


@pytest.mark.parametrize("op", SUM_LIKE)
def test_reduce_empty_and_scalar(op, rng):
    for shape, axes in [((2, 0, 3), [1]), ((0, 4), [1]), ((3,), [0]), ((), None)]:
        reduce_node(op, positive(shape, rng), axes)
    reduce_node(op, positive((2, 1, 3), rng), [0, 1], keepdims=1)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceMean",
                                "ReduceLogSumExp", "ReduceMax"])
def test_reduce_noop_with_empty_axes(op, rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    reduce_node(op, x, None, noop_with_empty_axes=1)
    check_node(op, {"x": x}, {"noop_with_empty_axes": 1}, opset=18,
               initializers={"axes": np.zeros(0, np.int64)})
    check_node(op, {"x": x}, {"noop_with_empty_axes": 0}, opset=18,
               initializers={"axes": np.zeros(0, np.int64)})


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2",
                                "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                                "ReduceMin"])
def test_reduce_int(op, dtype, rng):
    lo = 1 if op == "ReduceLogSum" else -9
    x = rng.integers(lo, 10, (3, 5)).astype(dtype)
    reduce_node(op, x, [1], keepdims=0)
    reduce_node(op, x, [0], keepdims=1)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceProd", "ReduceL1", "ReduceMax", "ReduceMin"])
def test_reduce_unsigned(op, dtype, rng):
    x = rng.integers(0, 10, (3, 5)).astype(dtype)
    reduce_node(op, x, [1], keepdims=0)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_reduce_max_min_small_int(dtype, rng):
    x = rng.integers(0, 100, (4, 6)).astype(dtype)
    for op in ("ReduceMax", "ReduceMin"):
        reduce_node(op, x, [1])
        reduce_node(op, np.zeros((3, 0), dtype), [1])


def test_reduce_bool_opset20():
    x = np.array([[True, False, True], [True, True, True], [False, False, False]])
    for op in ("ReduceMax", "ReduceMin"):
        reduce_node(op, x, [1], opset=20)
        # onnxruntime refuses an empty bool reduction; ONNX says False for max, True for min.
        reduce_node(op, np.zeros((2, 0), bool), [1], opset=20, check={"oracle": "reference"})


def test_reduce_double_and_long_rows(rng):
    x = rng.standard_normal((3, 4097)).astype(np.float64)
    for op in ("ReduceSum", "ReduceMean", "ReduceL2", "ReduceLogSumExp"):
        reduce_node(op, x, [1])
    x32 = rng.standard_normal((2, 100003)).astype(np.float32)
    # Both sides sum 1e5 values in a different order: the result is small next to the terms.
    reduce_node("ReduceSum", x32, [1], check={"atol": 2e-3})
    reduce_node("ReduceMean", x32, [1])


def test_reduce_inf_nan():
    n, inf = np.nan, np.inf
    x = np.array([[-inf, -inf], [inf, 1], [inf, inf], [1, -inf], [1000, 999], [-1000, -2000]],
                 np.float32)
    for op in ("ReduceLogSumExp", "ReduceMax", "ReduceMin", "ReduceSum"):
        reduce_node(op, x, [1])
    # NaN propagates (onnxruntime agrees when the NaN comes first in the row).
    y = np.array([[n, 1, 2], [n, n, n]], np.float32)
    for op in ("ReduceLogSumExp", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean"):
        reduce_node(op, y, [1])


def test_reduce_bad_axes(rng):
    from ember.errors import EmberError
    x = rng.standard_normal((2, 3)).astype(np.float32)
    with pytest.raises(EmberError, match="out of range"):
        reduce_node("ReduceSum", x, [2])
    with pytest.raises(EmberError, match="repeat"):
        reduce_node("ReduceMax", x, [1, -1])


def test_reduce_dynamic_axes_unsupported(rng):
    import ember
    from ember.errors import UnsupportedError
    x = rng.standard_normal((2, 3)).astype(np.float32)
    model = make_model([helper.make_node("ReduceSum", ["x", "a"], ["y"])],
                       {"x": x, "a": np.array([1], np.int64)}, ["y"], opset=13)
    with pytest.raises(UnsupportedError, match="non-constant"):
        ember.compile(model)


# -- ArgMax / ArgMin ---------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims,last", [(0, 1, 0), (1, 0, 0), (-1, 1, 1), (2, 0, 1)])
def test_arg(op, axis, keepdims, last, rng):
    x = rng.integers(0, 4, (3, 4, 5)).astype(np.float32)   # many ties
    check_node(op, {"x": x}, {"axis": axis, "keepdims": keepdims, "select_last_index": last},
               opset=13)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int64, np.float64])
def test_arg_dtypes(dtype, rng):
    x = rng.integers(0, 50, (4, 7)).astype(dtype)
    check_node("ArgMax", {"x": x}, {"axis": 1}, opset=13)
    check_node("ArgMin", {"x": x}, {"axis": 0, "keepdims": 0}, opset=11)


def test_arg_nan_and_edges():
    n = np.nan
    x = np.array([[n, 1, 2], [1, n, 3], [3, n, 1], [1, 3, n], [n, n, n]], np.float32)
    for op in ("ArgMax", "ArgMin"):
        for last in (0, 1):
            check_node(op, {"x": x}, {"axis": 1, "select_last_index": last}, opset=13)
        check_node(op, {"x": np.zeros((0, 3), np.float32)}, {"axis": 1}, opset=13)
        check_node(op, {"x": np.array([5.0], np.float32)}, {"axis": 0, "keepdims": 0}, opset=13)


# -- CumSum ------------------------------------------------------------------------------------

@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cumsum(exclusive, reverse, axis, rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    check_node("CumSum", {"x": x}, {"exclusive": exclusive, "reverse": reverse}, opset=14,
               initializers={"axis": np.array(axis, np.int64)})


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64, np.float64])
def test_cumsum_dtypes(dtype, rng):
    x = rng.integers(0, 100, (4, 6)).astype(dtype)
    check_node("CumSum", {"x": x}, {"reverse": 1}, opset=14,
               initializers={"axis": np.array(1, np.int32)},
               oracle="reference" if np.dtype(dtype).kind == "u" else "ort")


@pytest.mark.parametrize("axis", [0, 1, -2, 2])
def test_cumsum_axis_at_run_time(axis, rng):
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    check_node("CumSum", {"x": x, "axis": np.array(axis, np.int32)}, {"exclusive": 1}, opset=14)


def test_cumsum_empty(rng):
    check_node("CumSum", {"x": np.zeros((0, 3), np.float32)}, opset=14,
               initializers={"axis": np.array(1, np.int64)})


# CumProd (opset 26) shares CumSum's kernel; values near 1 keep the products in range.
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, -1])
def test_cumprod(exclusive, reverse, axis, rng):
    x = rng.uniform(0.5, 1.5, (3, 4, 5)).astype(np.float32)
    check_node("CumProd", {"x": x}, {"exclusive": exclusive, "reverse": reverse}, opset=26,
               initializers={"axis": np.array(axis, np.int64)})


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64, np.float64])
def test_cumprod_dtypes(dtype, rng):
    # Signed values and long rows: integer products wrap as the element type would.
    lo = 0 if np.dtype(dtype).kind == "u" else -9
    x = rng.integers(lo, 10, (3, 40)).astype(dtype)
    check_node("CumProd", {"x": x}, {"exclusive": 1}, opset=26,
               initializers={"axis": np.array(1, np.int32)}, oracle="reference")


def test_cumprod_axis_at_run_time_and_empty(rng):
    x = rng.uniform(0.5, 1.5, (3, 4, 2)).astype(np.float32)
    check_node("CumProd", {"x": x, "axis": np.array(-2, np.int64)}, {"reverse": 1}, opset=26)
    check_node("CumProd", {"x": np.zeros((2, 0), np.float32)}, opset=26,
               initializers={"axis": np.array(0, np.int64)})


# -- TopK --------------------------------------------------------------------------------------

@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis,k", [(-1, 3), (0, 2), (1, 4), (2, 5), (1, 0)])
def test_topk(largest, axis, k, rng):
    x = rng.integers(0, 5, (3, 4, 5)).astype(np.float32)   # ties: lower index first
    check_node("TopK", {"x": x}, {"axis": axis, "largest": largest}, n_outputs=2,
               initializers={"k": np.array([k], np.int64)}, opset=11)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.uint64, np.float64, np.int8])
def test_topk_dtypes(dtype, rng):
    x = rng.integers(0, 100, (5, 33)).astype(dtype)
    check_node("TopK", {"x": x}, n_outputs=2, initializers={"k": np.array([7], np.int64)}, opset=11,
               oracle="reference" if dtype == np.uint64 else "ort")


def test_topk_old_opset_attribute(rng):
    x = rng.standard_normal((4, 9)).astype(np.float32)
    check_node("TopK", {"x": x}, {"k": 3}, n_outputs=2, opset=9)


def test_topk_nan_and_long_rows(rng):
    n = np.nan
    x = np.array([[n, 1, 2, n], [1, n, 3, 3], [3, 3, 3, 3]], np.float32)
    for largest in (0, 1):
        check_node("TopK", {"x": x}, {"largest": largest}, n_outputs=2, opset=11,
                   initializers={"k": np.array([3], np.int64)})
    y = rng.integers(0, 1000, (2, 5000)).astype(np.float32)
    check_node("TopK", {"x": y}, n_outputs=2, opset=11,
               initializers={"k": np.array([5000], np.int64)})


def test_topk_unsorted_holds_the_same_elements(rng):
    # sorted=0 leaves the order unspecified: compare as sets of (value, index).
    import ember
    from conftest import run_ort
    x = rng.standard_normal((3, 10)).astype(np.float32)
    model = make_model([helper.make_node("TopK", ["x", "k"], ["v", "i"], sorted=0)], {"x": x},
                       ["v", "i"], {"k": np.array([4], np.int64)}, opset=11)
    got = ember.compile(model).run({"x": x})
    want = run_ort(model, {"x": x})
    for row in range(3):
        assert sorted(zip(got["i"][row], got["v"][row])) == sorted(zip(want[1][row], want[0][row]))


def test_topk_bad_k(rng):
    from ember.errors import EmberError
    x = rng.standard_normal((2, 3)).astype(np.float32)
    with pytest.raises(EmberError, match="outside"):
        check_node("TopK", {"x": x}, n_outputs=2, initializers={"k": np.array([4], np.int64)})


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2"])
def test_float16_reductions(op, rng):
    x = rng.standard_normal((3, 33)).astype(np.float16)
    check_node(op, {"x": x}, initializers={"axes": np.array([1], np.int64)}, opset=18,
               rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("op", SUM_LIKE)
@pytest.mark.parametrize("shape,axes,keepdims", [((49, 37), [0], 0), ((3, 4, 5, 16), [0, 2], 1),
                                                 ((6, 9), [0], 1)])
def test_reduce_leading_axes(op, shape, axes, keepdims, rng):
    """Reductions over leading axes whose kept innermost run is contiguous and 8 or more
    long keep a row of accumulators (reduce._emit_columns); NaN and infinities included."""
    import ember
    from conftest import run_ort
    x = positive(shape, rng) if op in ("ReduceLogSum", "ReduceProd") else \
        rng.standard_normal(shape).astype(np.float32)
    if op not in ("ReduceLogSum", "ReduceProd", "ReduceLogSumExp"):
        x.flat[3::29], x.flat[7::31] = np.inf, -np.inf
    if op in ("ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean"):
        x.flat[11::41] = np.nan
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    model = make_model([node], {"x": x}, ["y"], {"axes": np.array(axes, np.int64)}, opset=18)
    compiled = ember.compile(model)
    assert ("accs[j]" in compiled.source) == (op != "ReduceLogSumExp")
    # NaN wins in Ember's Max/Min, as in numpy; onnxruntime's depends on its code path
    want = (getattr(np, op[6:].lower())(x, axis=tuple(axes), keepdims=bool(keepdims))
            if op in ("ReduceMax", "ReduceMin") else run_ort(model, {"x": x})[0])
    np.testing.assert_allclose(compiled.run({"x": x})["y"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int32, np.float16])
def test_reduce_leading_axes_types(dtype, rng):
    x = (rng.standard_normal((7, 24)) * 10).astype(dtype)
    for op in ("ReduceSum", "ReduceMax", "ReduceMin"):
        reduce_node(op, x, [0], keepdims=0)
