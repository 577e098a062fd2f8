"""Indexing ops against onnxruntime: Gather, GatherElements, GatherND, scatters, OneHot, Compress."""
import numpy as np
import pytest

import ember
from conftest import check_node, make_model
from ember.errors import EmberError
from onnx import helper

DTYPES = [np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64, np.uint16, np.bool_]


def _data(rng, shape, dtype=np.float32):
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(0, 100, shape).astype(dtype)


def _run(op, inputs, attrs=None, initializers=None, opset=17, names=None):
    """Ember's outputs alone (for cases onnxruntime rejects, like out-of-range indices)."""
    names = names or list(inputs) + list(initializers or {})
    model = make_model([helper.make_node(op, names, ["y"], **(attrs or {}))], inputs, ["y"],
                       initializers, opset)
    return ember.compile(model).run(inputs)["y"]


@pytest.mark.parametrize("shape,axis,ishape", [
    ((5, 4), 0, (3,)), ((5, 4), 1, (2, 3)), ((3, 4, 5), -1, ()), ((3, 4, 5), 1, (2, 2)),
    ((1,), 0, (4,)), ((3, 0, 2), 0, (2,)), ((4, 3), 0, (0,)), ((2, 3, 1), 2, (1, 5))])
def test_gather(shape, axis, ishape, rng):
    n = shape[axis]
    idx = rng.integers(-n, n, ishape).astype(np.int64) if n else np.zeros(ishape, np.int64)
    check_node("Gather", {"x": _data(rng, shape), "i": idx}, {"axis": axis})


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_dtypes(dtype, rng):
    idx = np.array([[2, -1], [0, 1]], np.int32)
    check_node("Gather", {"x": _data(rng, (3, 5), dtype), "i": idx}, {"axis": 0})


def test_gather_constant_indices(rng):
    check_node("Gather", {"x": _data(rng, (4, 6))}, {"axis": 1},
               initializers={"i": np.array([5, 0, -2], np.int64)})


def test_gather_out_of_range_is_safe(rng):
    x = _data(rng, (4, 3))
    idx = np.array([0, 4, -5, 1 << 40, -(1 << 62), 3], np.int64)
    y = _run("Gather", {"x": x, "i": idx}, {"axis": 0})
    np.testing.assert_array_equal(y[[0, 5]], x[[0, 3]])


@pytest.mark.parametrize("shape,ishape,axis", [
    ((3, 4), (3, 4), 1), ((3, 4), (2, 4), 0), ((3, 4), (3, 2), -1), ((2, 3, 4), (2, 5, 4), 1),
    ((4,), (7,), 0), ((3, 3), (0, 3), 0)])
def test_gather_elements(shape, ishape, axis, rng):
    n = shape[axis]
    idx = rng.integers(-n, n, ishape).astype(np.int64)
    check_node("GatherElements", {"x": _data(rng, shape), "i": idx}, {"axis": axis})


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.bool_])
def test_gather_elements_dtypes(dtype, rng):
    idx = rng.integers(0, 4, (3, 4)).astype(np.int32)
    check_node("GatherElements", {"x": _data(rng, (4, 4), dtype), "i": idx}, {"axis": 0})


def test_gather_elements_out_of_range_is_safe(rng):
    x = _data(rng, (2, 3))
    idx = np.array([[0, 9, -1], [1 << 50, 2, -4]], np.int64)
    y = _run("GatherElements", {"x": x, "i": idx}, {"axis": 1})
    assert y[0, 0] == x[0, 0] and y[0, 2] == x[0, 2] and y[1, 1] == x[1, 2]


@pytest.mark.parametrize("dshape,ishape,batch_dims", [
    ((2, 2), (2, 2), 0), ((2, 2), (2, 1), 0), ((2, 2, 2), (2, 2), 0), ((2, 2, 2), (2, 1, 2), 0),
    ((2, 2, 2), (2, 1), 1), ((2, 3, 4, 5), (2, 3, 2), 2), ((3, 4, 5), (3, 2, 2), 1),
    ((4, 5), (0, 2), 0), ((3, 4), (3, 1), 1)])
def test_gather_nd(dshape, ishape, batch_dims, rng):
    k = ishape[-1]
    dims = np.array(dshape[batch_dims:batch_dims + k])
    idx = (rng.integers(0, 1 << 20, ishape) % np.maximum(dims, 1)).astype(np.int64)
    idx[..., :1] -= dims[:1] * (rng.random(ishape[:-1] + (1,)) < 0.5)   # some negative
    check_node("GatherND", {"x": _data(rng, dshape), "i": idx}, {"batch_dims": batch_dims})


def test_gather_nd_out_of_range_is_safe(rng):
    x = _data(rng, (3, 4))
    idx = np.array([[0, 1], [3, 0], [-4, 0], [2, 1 << 40], [2, -1]], np.int64)
    y = _run("GatherND", {"x": x, "i": idx})
    np.testing.assert_array_equal(y[[0, 4]], [x[0, 1], x[2, 3]])


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64, np.uint8])
def test_scatter_elements(reduction, dtype, rng):
    x = _data(rng, (3, 5), dtype) % 7 if dtype != np.float32 else _data(rng, (3, 5))
    # distinct columns per row for "none" (duplicates are ambiguous there), repeats otherwise
    idx = (np.stack([rng.permutation(5)[:3] for _ in range(3)]) if reduction == "none"
           else rng.integers(-5, 5, (3, 3))).astype(np.int64)
    upd = _data(rng, (3, 3), dtype) % 5 if dtype != np.float32 else _data(rng, (3, 3))
    check_node("ScatterElements", {"x": x, "i": idx, "u": upd}, {"axis": 1,
               "reduction": reduction}, opset=18)


@pytest.mark.parametrize("shape,ishape,axis", [((4, 3, 2), (2, 3, 2), 0), ((4, 3), (4, 1), -1),
                                               ((5,), (0,), 0), ((2, 6), (1, 3), 1)])
def test_scatter_elements_shapes(shape, ishape, axis, rng):
    # distinct positions along the axis: the first entries of a random permutation per line
    lines = tuple(shape[axis] if a == axis % len(shape) else d for a, d in enumerate(ishape))
    idx = np.argsort(rng.random(lines), axis=axis)
    idx = np.take(idx, range(ishape[axis]), axis=axis).astype(np.int32)
    check_node("ScatterElements", {"x": _data(rng, shape), "i": idx,
                                   "u": _data(rng, ishape)}, {"axis": axis})


def test_scatter_deprecated(rng):
    idx = np.array([[1, 0, 2], [0, 2, 1]], np.int64)
    check_node("Scatter", {"x": _data(rng, (2, 3)), "i": idx, "u": _data(rng, (2, 3))},
               {"axis": 1}, opset=10)


def test_scatter_out_of_range_is_skipped(rng):
    x = _data(rng, (2, 3))
    idx = np.array([[9, -1], [-7, 1 << 45]], np.int64)
    u = np.full((2, 2), 100, np.float32)
    y = _run("ScatterElements", {"x": x, "i": idx, "u": u}, {"axis": 1}, opset=18)
    want = x.copy()
    want[0, 2] = 100
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("dshape,ishape", [((4, 4, 4), (2, 1)), ((4, 5), (3, 2)),
                                           ((6,), (4, 1)), ((3, 4, 2), (2, 2, 2))])
def test_scatter_nd(reduction, dshape, ishape, rng):
    k = ishape[-1]
    n = int(np.prod(ishape[:-1]))
    flat = rng.permutation(int(np.prod(dshape[:k])))[:n] if reduction == "none" else \
        rng.integers(0, int(np.prod(dshape[:k])), n)
    idx = np.stack(np.unravel_index(flat, dshape[:k]), -1).reshape(ishape).astype(np.int64)
    idx[..., 0] -= dshape[0] * (rng.random(ishape[:-1]) < 0.5)
    upd = _data(rng, ishape[:-1] + dshape[k:])
    check_node("ScatterND", {"x": _data(rng, dshape), "i": idx, "u": upd},
               {"reduction": reduction}, opset=18)


def test_scatter_nd_int_and_safety(rng):
    x = rng.integers(0, 9, (3, 4)).astype(np.int32)
    idx = np.array([[0, 1], [2, -1], [5, 0], [0, 1 << 33]], np.int64)
    u = np.array([7, 8, 9, 10], np.int32)
    y = _run("ScatterND", {"x": x, "i": idx, "u": u}, opset=18)
    want = x.copy()
    want[0, 1], want[2, 3] = 7, 8
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("axis", [-1, 0, 1, -2])
@pytest.mark.parametrize("idtype,vdtype", [(np.int64, np.float32), (np.float32, np.int64),
                                           (np.int32, np.int32), (np.int64, np.float64)])
def test_onehot(axis, idtype, vdtype, rng):
    idx = rng.integers(-6, 9, (3, 4)).astype(idtype)    # includes out-of-range and negative
    values = np.array([2, 5], vdtype)
    check_node("OneHot", {"i": idx, "v": values}, {"axis": axis},
               initializers={"depth": np.array(6, np.int64)},
               input_names=["i", "depth", "v"], oracle="reference")


def test_onehot_float_depth_and_bad_indices(rng):
    check_node("OneHot", {"i": np.array([2], np.int64), "v": np.array([0, 1], np.float32)},
               initializers={"depth": np.array([4.0], np.float32)},
               input_names=["i", "depth", "v"])
    idx = np.array([0.0, 3.0, np.nan, 1e30, -1.0], np.float32)
    y = _run("OneHot", {"i": idx, "v": np.array([0, 1], np.float32)},
             initializers={"depth": np.array(4, np.int64)}, names=["i", "depth", "v"])
    np.testing.assert_array_equal(y[[0, 1, 4]], np.eye(4, dtype=np.float32)[[0, 3, 3]])


@pytest.mark.parametrize("shape,cond,axis", [
    ((3, 2), [0, 1, 1], 0), ((3, 2), [0, 1], 1), ((3, 2), [0, 1, 0, 0, 1], None),
    ((2, 3, 4), [1, 0, 1, 1], -1), ((3, 2), [0, 0, 0], 0), ((4,), [1, 1], 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_compress(shape, cond, axis, dtype, rng):
    attrs = {} if axis is None else {"axis": axis}
    check_node("Compress", {"x": _data(rng, shape, dtype)}, attrs,
               initializers={"c": np.array(cond, bool)})


@pytest.mark.parametrize("op,inputs,msg", [
    ("Compress", {"x": np.zeros((3,), np.float32), "c": np.ones(3, bool)}, "condition"),
    ("OneHot", {"i": np.zeros((3,), np.int64), "d": np.array(3, np.int64),
                "v": np.zeros(2, np.float32)}, "depth")])
def test_dynamic_inputs_unsupported(op, inputs, msg):
    model = make_model([helper.make_node(op, list(inputs), ["y"])], inputs, ["y"])
    with pytest.raises(EmberError, match=msg):
        ember.compile(model)


def test_bad_shapes_fail_cleanly(rng):
    model = make_model([helper.make_node("GatherElements", ["x", "i"], ["y"], axis=0)],
                       {"x": np.zeros((3, 2), np.float32), "i": np.zeros((2, 5), np.int64)}, ["y"])
    with pytest.raises(EmberError, match="larger than data dim"):
        ember.compile(model)
