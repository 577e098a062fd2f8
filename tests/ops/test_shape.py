"""Shape and data-movement ops against onnxruntime (and the ONNX reference where ORT lacks one).

Compile-time arguments (shapes, axes, pads, starts ...) are initializers; the data is a graph
input, so every kernel runs as generated C.
"""
import numpy as np
import pytest
from onnx import helper

from conftest import check_model, check_node, make_model

import ember
from ember.errors import ShapeError, UnsupportedError

I64 = np.int64
INT64_MAX, INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def ints(*values):
    return np.array(values, I64)


def data(rng, shape, dtype=np.float32):
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 100, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


# -- views ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,target,allowzero", [
    ((2, 3, 4), (4, -1), 0), ((2, 3, 4), (0, -1), 0), ((2, 3, 4), (24,), 0),
    ((2, 3, 4), (0, 0, 2, 2), 0), ((1,), (), 0), ((0, 3), (3, 0), 1), ((0, 3), (-1, 3), 0),
    ((6,), (1, 2, 1, 3, 1), 0)])
def test_reshape(shape, target, allowzero, rng):
    check_node("Reshape", {"x": data(rng, shape)}, {"allowzero": allowzero},
               initializers={"s": ints(*target)}, opset=14)


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.float64, np.bool_])
def test_reshape_dtypes(dtype, rng):
    check_node("Reshape", {"x": data(rng, (4, 3), dtype)}, initializers={"s": ints(2, 0, -1)},
               opset=5)


@pytest.mark.parametrize("target", [(-1, -1), (5, -1), (7,), (0, 0, 0, 0)])
def test_reshape_bad_shape(target, rng):
    with pytest.raises(ShapeError):
        check_node("Reshape", {"x": data(rng, (2, 3))}, initializers={"s": ints(*target)})


def test_reshape_runtime_shape_is_unsupported(rng):
    with pytest.raises(UnsupportedError, match="run time"):
        check_node("Reshape", {"x": data(rng, (2, 3)), "s": ints(3, 2)})


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten(axis, rng):
    check_node("Flatten", {"x": data(rng, (2, 3, 1, 5))}, {"axis": axis}, opset=13)


def test_flatten_empty(rng):
    check_node("Flatten", {"x": data(rng, (2, 0, 5), np.int32)}, {"axis": 2})


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("shape,axes", [((1, 3, 1, 2), [0, -2]), ((1, 3, 1, 2), None),
                                        ((1,), [0]), ((3, 1, 0), [1])])
def test_squeeze(shape, axes, opset, rng):
    x = {"x": data(rng, shape)}
    if axes is None:
        check_node("Squeeze", x, opset=opset)
    elif opset < 13:
        check_node("Squeeze", x, {"axes": axes}, opset=opset)
    else:
        check_node("Squeeze", x, initializers={"a": ints(*axes)}, opset=opset)


def test_squeeze_non_unit_axis(rng):
    with pytest.raises(ShapeError):
        check_node("Squeeze", {"x": data(rng, (2, 3))}, initializers={"a": ints(0)})


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("shape,axes", [((3, 4), [0]), ((3, 4), [-1, 1]), ((), [0, 1]),
                                        ((2, 0), [4, 0, 2])])
def test_unsqueeze(shape, axes, opset, rng):
    x = {"x": data(rng, shape, np.int64)}
    if opset < 13:
        check_node("Unsqueeze", x, {"axes": axes}, opset=opset)
    else:
        check_node("Unsqueeze", x, initializers={"a": ints(*axes)}, opset=opset)


@pytest.mark.parametrize("axes", [[0, 0], [3], [-4]])
def test_unsqueeze_bad_axes(axes, rng):
    with pytest.raises(ShapeError):
        check_node("Unsqueeze", {"x": data(rng, (2,))}, initializers={"a": ints(*axes)})


@pytest.mark.parametrize("opset", [7, 10, 13])
def test_dropout_inference(opset, rng):
    x = data(rng, (3, 5))
    check_node("Dropout", {"x": x}, {"ratio": 0.3} if opset < 12 else {}, opset=opset)
    # The mask is all true: onnxruntime writes all false before opset 12, the reference agrees
    # with the spec (but types the opset-7 mask bool, where the spec says T).
    if opset >= 10:
        check_node("Dropout", {"x": x}, {"ratio": 0.3} if opset < 12 else {}, n_outputs=2,
                   opset=opset, oracle="ort" if opset >= 12 else "reference")


def test_dropout_inputs(rng):
    x = data(rng, (2, 0, 3)), data(rng, (4, 3))
    check_node("Dropout", {"x": x[0]}, n_outputs=2)
    check_node("Dropout", {"x": x[1]}, initializers={"r": np.array(0.7, np.float32),
                                                     "t": np.array(False)})
    check_node("Dropout", {"x": x[1]}, n_outputs=2, initializers={
        "r": np.array(0.0, np.float32), "t": np.array(True)})
    with pytest.raises(UnsupportedError, match="training"):
        check_node("Dropout", {"x": x[1]}, initializers={"r": np.array(0.5, np.float32),
                                                         "t": np.array(True)})


# -- transposes -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,perm", [((2, 3), None), ((2, 3, 4), [1, 0, 2]),
                                        ((2, 3, 4), [2, 0, 1]), ((2, 3, 4, 5), [0, 2, 3, 1]),
                                        ((1, 7, 1, 3), [3, 1, 0, 2]), ((5,), [0]), ((), None),
                                        ((3, 0, 2), [2, 1, 0])])
def test_transpose(shape, perm, rng):
    check_node("Transpose", {"x": data(rng, shape)}, {} if perm is None else {"perm": perm})


@pytest.mark.parametrize("shape,perm,dtype", [
    ((1, 144, 784), [0, 2, 1], np.float32),          # MobileNetV2's NCHW -> NHWC, whole tiles
    ((2, 37, 50), [0, 2, 1], np.float32),            # ragged tiles on both axes
    ((50, 37), [1, 0], np.int32),
    ((2, 3, 16, 33), [0, 1, 3, 2], np.uint32),
    ((33, 48), [1, 0], np.float64),                  # 8-byte elements: element by element
    ((17, 40), [1, 0], np.uint8),
    ((1, 4, 8, 900), [0, 1, 3, 2], np.float32),      # into blocked NCHWc: 16 x 8 tiles
    ((2, 3, 899, 8), [0, 1, 3, 2], np.float32),      # out of it, a ragged last tile
    ((12, 9), [1, 0], np.float32),                   # 8 x 8 tiles, both ragged
])
def test_transpose_tiles(shape, perm, dtype, rng):
    """2-D layout changes walked in 16x16 tiles (8 on a side shorter than 16), whole tiles of
    4-byte elements transposed in 8x8 vector blocks; NaN payloads and infinities are copied
    as they are."""
    x = data(rng, shape, dtype)
    if x.dtype == np.float32:
        x.flat[::5], x.flat[1::7] = np.nan, -np.inf
    check_node("Transpose", {"x": x}, {"perm": perm})


@pytest.mark.parametrize("shape,perm", [((1, 144, 784), [0, 2, 1]), ((2, 3, 899, 8), [0, 1, 3, 2]),
                                        ((3, 40, 37), [0, 2, 1])])
def test_transpose_tiles_threads(shape, perm, rng):
    """With 2 threads the rows of tiles of every leading index are shared among them."""
    x = data(rng, shape)
    model = make_model([helper.make_node("Transpose", ["x"], ["y"], perm=perm)], {"x": x}, ["y"])
    compiled = ember.compile(model, threads=2)
    assert "ember_part_lo(" in compiled.source
    np.testing.assert_array_equal(compiled.run({"x": x})["y"], x.transpose(perm))


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float64, np.bool_])
def test_transpose_dtypes(dtype, rng):
    check_node("Transpose", {"x": data(rng, (3, 4, 2), dtype)}, {"perm": [1, 2, 0]})


def test_transpose_bad_perm(rng):
    with pytest.raises(ShapeError):
        check_node("Transpose", {"x": data(rng, (2, 3))}, {"perm": [0, 0]})


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("shape,b", [((1, 8, 2, 3), 2), ((2, 9, 1, 2), 3), ((1, 4, 3, 3), 1)])
def test_depth_to_space(mode, shape, b, rng):
    check_node("DepthToSpace", {"x": data(rng, shape)}, {"blocksize": b, "mode": mode})


@pytest.mark.parametrize("shape,b", [((1, 2, 4, 6), 2), ((2, 1, 3, 3), 3), ((1, 3, 2, 2), 1)])
def test_space_to_depth(shape, b, rng):
    check_node("SpaceToDepth", {"x": data(rng, shape)}, {"blocksize": b})
    # onnxruntime implements it for floats only
    check_node("SpaceToDepth", {"x": data(rng, shape, np.int32)}, {"blocksize": b},
               oracle="reference")


def test_space_to_depth_crd(rng):
    # mode arrived in opset 25, which onnxruntime does not run yet
    check_node("SpaceToDepth", {"x": data(rng, (1, 2, 4, 6))}, {"blocksize": 2, "mode": "CRD"},
               opset=25, oracle="reference")


def test_depth_to_space_bad_channels(rng):
    with pytest.raises(ShapeError):
        check_node("DepthToSpace", {"x": data(rng, (1, 6, 2, 2))}, {"blocksize": 2})


# -- concat / split ---------------------------------------------------------------------------
@pytest.mark.parametrize("axis,shapes", [(0, [(2, 3), (1, 3), (4, 3)]), (1, [(2, 3), (2, 1)]),
                                         (-1, [(2, 2, 3), (2, 2, 0), (2, 2, 1)]),
                                         (1, [(2, 3, 4), (2, 5, 4)]), (0, [(3,)])])
def test_concat(axis, shapes, rng):
    check_node("Concat", {f"x{k}": data(rng, s) for k, s in enumerate(shapes)}, {"axis": axis})


def test_concat_with_constant_and_bool(rng):
    check_node("Concat", {"x": data(rng, (2, 3), np.bool_)}, {"axis": 0},
               initializers={"c": np.ones((1, 3), bool)})


def test_concat_mismatch(rng):
    with pytest.raises(ShapeError):
        check_node("Concat", {"a": data(rng, (2, 3)), "b": data(rng, (3, 3))}, {"axis": 1})


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("shape,axis,split", [((6, 4), 0, [1, 2, 3]), ((2, 7), -1, [3, 0, 4]),
                                              ((2, 6, 2), 1, None)])
def test_split(shape, axis, split, opset, rng):
    x = {"x": data(rng, shape)}
    attrs = {"axis": axis}
    n = len(split) if split else 3
    if split is None:
        if opset >= 18:
            attrs["num_outputs"] = n
        check_node("Split", x, attrs, n_outputs=n, opset=opset)
    elif opset < 13:
        check_node("Split", x, {**attrs, "split": split}, n_outputs=n, opset=opset)
    else:
        check_node("Split", x, attrs, n_outputs=n, initializers={"s": ints(*split)}, opset=opset)


@pytest.mark.parametrize("dim,n", [(7, 3), (5, 4), (2, 3)])
def test_split_num_outputs_uneven(dim, n, rng):
    # ORT rejects a split with an empty last chunk; the reference gives the ONNX answer
    empty_last = -(-dim // n) * (n - 1) >= dim
    check_node("Split", {"x": data(rng, (dim, 2), np.int16)}, {"num_outputs": n},
               n_outputs=n, opset=18, oracle="reference" if empty_last else "ort")


def test_split_bad(rng):
    with pytest.raises(ShapeError):
        check_node("Split", {"x": data(rng, (5,))}, n_outputs=2, opset=13)
    with pytest.raises(ShapeError):
        check_node("Split", {"x": data(rng, (5,))}, n_outputs=2, initializers={"s": ints(2, 2)})


# -- slice ------------------------------------------------------------------------------------
SLICES = [  # starts, ends, axes, steps
    ([1, 0], [3, 10], [0, 1], [1, 1]),
    ([0], [-1], None, None),
    ([-2, INT64_MAX], [INT64_MAX, 0], [1, 2], [1, -1]),
    ([INT64_MAX, 1], [INT64_MIN, 4], [-1, 0], [-2, 2]),
    ([-100, 2], [100, 1], [0, 1], [3, 1]),           # clamped; empty along axis 1
    ([3], [1], [0], [-1]),
    ([10], [-10], [2], [-3]),                        # start past the end, negative step
    ([0, 0, 0], [1, 1, 1], None, [1, 1, 1]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_slice(starts, ends, axes, steps, rng):
    x = {"x": data(rng, (4, 5, 6))}
    inits = {"s": ints(*starts), "e": ints(*ends)}
    if axes is not None:
        inits["a"] = ints(*axes)
    if steps is not None:
        inits["t"] = ints(*steps)
    names = ["x", "s", "e", "a" if axes is not None else "", "t" if steps is not None else ""]
    while not names[-1]:
        names.pop()
    check_node("Slice", x, initializers=inits, input_names=names)


def test_slice_int32_indices_and_dtypes(rng):
    check_node("Slice", {"x": data(rng, (5, 3), np.uint8)},
               initializers={"s": np.array([4], np.int32), "e": np.array([-6], np.int32),
                             "a": np.array([0], np.int32), "t": np.array([-2], np.int32)})


def test_slice_opset9_attributes(rng):
    check_node("Slice", {"x": data(rng, (4, 6))}, {"starts": [1, -4], "ends": [100, -1],
                                                   "axes": [0, 1]}, opset=9)
    check_node("Slice", {"x": data(rng, (4, 6))}, {"starts": [1], "ends": [3]}, opset=9)


def test_slice_zero_step(rng):
    with pytest.raises(ShapeError):
        check_node("Slice", {"x": data(rng, (4,))},
                   initializers={"s": ints(0), "e": ints(3), "a": ints(0), "t": ints(0)})


# -- broadcasting copies ----------------------------------------------------------------------
@pytest.mark.parametrize("shape,target", [((3, 1), (2, 3, 4)), ((1,), (5,)), ((2, 3), (1, 1)),
                                          ((4, 1, 2), (3, 1)), ((), (2, 2)), ((1, 3), (0, 3))])
def test_expand(shape, target, rng):
    check_node("Expand", {"x": data(rng, shape, np.int32)}, initializers={"s": ints(*target)})


def test_expand_bad(rng):
    with pytest.raises(ShapeError):
        check_node("Expand", {"x": data(rng, (3,))}, initializers={"s": ints(4)})


@pytest.mark.parametrize("shape,repeats", [((2, 3), (2, 3)), ((3,), (4,)), ((2, 1, 3), (1, 5, 2)),
                                           ((2, 3), (0, 2)), ((4, 2), (1, 1))])
def test_tile(shape, repeats, rng):
    check_node("Tile", {"x": data(rng, shape)}, initializers={"r": ints(*repeats)})


def test_tile_bool(rng):
    check_node("Tile", {"x": data(rng, (2, 2), np.bool_)}, initializers={"r": ints(3, 1)})


# -- pad --------------------------------------------------------------------------------------
PADS = [[0, 1, 2, 1, 0, 3], [2, 0, 0, 0, 2, 1], [0, 0, 0, 0, 0, 0], [1, -1, 0, -1, 2, 1]]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", PADS)
def test_pad_modes(mode, pads, rng):
    x = data(rng, (3, 4, 5))
    check_node("Pad", {"x": x}, {"mode": mode}, initializers={"p": ints(*pads)}, opset=19)


def test_pad_constant_value_runtime_and_ints(rng):
    check_node("Pad", {"x": data(rng, (2, 3), np.int32), "v": np.array(-7, np.int32)},
               initializers={"p": ints(1, 2, 0, 1)}, input_names=["x", "p", "v"])
    check_node("Pad", {"x": data(rng, (2, 3))}, {"mode": "constant"},
               initializers={"p": ints(0, 0, 2, 2), "v": np.array(1.5, np.float32)})


def test_pad_opset2_attributes(rng):
    x = data(rng, (3, 4))
    check_node("Pad", {"x": x}, {"pads": [1, 0, 0, 2], "value": 2.5}, opset=2)
    check_node("Pad", {"x": x}, {"pads": [1, 1, 1, 1], "mode": "edge"}, opset=2)


@pytest.mark.parametrize("axes,pads", [([1], [1, 1]), ([-1, 0], [1, 0, 2, 1]), ([0, 2], [-1, 1, 0, 2])])
def test_pad_axes(axes, pads, rng):
    check_node("Pad", {"x": data(rng, (3, 2, 4))}, {"mode": "reflect" if min(pads) >= 0 else "constant"},
               initializers={"p": ints(*pads), "v": np.array(0, np.float32), "a": ints(*axes)},
               opset=18)


def test_pad_reflect_wide_and_crop_to_empty(rng):
    x = data(rng, (2, 3))
    check_node("Pad", {"x": x}, {"mode": "reflect"}, initializers={"p": ints(0, 2, 0, 2)})
    check_node("Pad", {"x": x}, initializers={"p": ints(0, -2, 0, -1)})
    with pytest.raises(ShapeError):
        check_node("Pad", {"x": x}, initializers={"p": ints(0, -2, 0, -2)})


@pytest.mark.parametrize("shape,target,axes", [((5, 6), (3, 8), None), ((4, 7, 3), (7, 4), [0, 1]),
                                               ((3, 4, 5), (2,), [-1]), ((4, 4), (4, 4), None)])
def test_center_crop_pad(shape, target, axes, rng):
    check_node("CenterCropPad", {"x": data(rng, shape)}, {} if axes is None else {"axes": axes},
               initializers={"s": ints(*target)}, opset=18, oracle="reference")


# -- masks and sequences ----------------------------------------------------------------------
@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("shape,k", [((4, 5), None), ((3, 3), 1), ((2, 3, 4), -1), ((5, 2), 7),
                                     ((0, 3), 0)])
def test_trilu(upper, shape, k, rng):
    inits = {} if k is None else {"k": ints(k)}
    check_node("Trilu", {"x": data(rng, shape)}, {"upper": upper}, initializers=inits)


def test_trilu_runtime_k(rng):
    for k in (-2, 0, 3):
        check_node("Trilu", {"x": data(rng, (4, 4), np.int64), "k": np.array(k, I64)},
                   {"upper": 0})


@pytest.mark.parametrize("batch_axis,time_axis", [(0, 1), (1, 0)])
def test_reverse_sequence(batch_axis, time_axis, rng):
    shape = [3, 5, 2]
    shape[batch_axis], shape[time_axis] = 4, 3
    x = data(rng, tuple(shape))
    lens = ints(1, 3, 2, 0)
    check_node("ReverseSequence", {"x": x, "lens": lens},
               {"batch_axis": batch_axis, "time_axis": time_axis}, oracle="reference")


# -- metadata and generators ------------------------------------------------------------------
@pytest.mark.parametrize("shape,attrs", [((2, 3, 4), {}), ((), {}), ((2, 0, 4), {}),
                                         ((2, 3, 4, 5), {"start": 1}),
                                         ((2, 3, 4, 5), {"start": -3, "end": -1}),
                                         ((2, 3), {"start": 5}), ((2, 3), {"end": -10})])
def test_shape(shape, attrs, rng):
    check_node("Shape", {"x": data(rng, shape)}, attrs, opset=15)


def test_size(rng):
    check_node("Size", {"x": data(rng, (2, 3, 4))})
    check_node("Size", {"x": data(rng, (0, 3))})


def test_shape_feeds_reshape(rng):
    # Shape of a static tensor is a compile-time constant, so a Reshape can use it.
    nodes = [helper.make_node("Shape", ["y"], ["s"]),
             helper.make_node("Reshape", ["x", "s"], ["z"])]
    x, y = data(rng, (6, 2)), data(rng, (3, 4))
    check_model(make_model(nodes, {"x": x, "y": y}, ["z"]), {"x": x, "y": y})


@pytest.mark.parametrize("value", [None, np.array([3], np.int32), np.array([1.5], np.float64),
                                   np.array([True])])
def test_constant_of_shape(value, rng):
    attrs = {} if value is None else {"value": helper.make_tensor(
        "v", helper.np_dtype_to_tensor_dtype(value.dtype), [1], value)}
    check_node("ConstantOfShape", {}, attrs, initializers={"s": ints(2, 3)})


@pytest.mark.parametrize("start,limit,delta,dtype", [(0, 10, 3, np.int32), (10, 1, -2, np.int64),
                                                     (1.5, 4.0, 0.5, np.float32), (5, 5, 1, np.int16),
                                                     (0.0, -1.0, 0.25, np.float64)])
def test_range(start, limit, delta, dtype):
    check_node("Range", {}, initializers={k: np.array(v, dtype) for k, v in
                                          (("a", start), ("b", limit), ("c", delta))})


@pytest.mark.parametrize("shape,k,dtype", [((4, 4), 0, None), ((3, 5), 2, 7), ((5, 3), -1, 1),
                                           ((2, 2), 5, None), ((0, 3), 0, None)])
def test_eye_like(shape, k, dtype, rng):
    attrs = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    check_node("EyeLike", {"x": data(rng, shape, np.int32)}, attrs)


def test_float16(rng):
    x = data(rng, (2, 3, 4), np.float16)
    check_node("Transpose", {"x": x}, {"perm": [2, 0, 1]})
    check_node("Pad", {"x": x}, initializers={"p": ints(0, 1, 0, 0, 1, 2)})
    check_node("Concat", {"x": x, "y": x}, {"axis": -1})


# -- kernels of nodes that import folds away --------------------------------------------------
def run_unfolded(op, inputs, attrs=None, opset=17, n_outputs=1):
    """Compile one node built by hand, so the importer cannot fold it; run it on `inputs`
    (name -> (array, is_constant)) and return the outputs."""
    from ember.driver import build
    from ember.graph import dtypes as dt
    from ember.graph.ir import Graph, Node, TensorType, Value
    from ember.ops.registry import get_op
    from ember.options import CompileOptions

    values = {n: Value(TensorType(dt.from_numpy(a.dtype), a.shape), n, a if const else None)
              for n, (a, const) in inputs.items()}
    outs = [Value(TensorType(dt.F32, ()), f"y{k}") for k in range(n_outputs)]
    node = Node(op, list(values.values()), outs, attrs or {}, opset=opset)
    for v, t in zip(outs, get_op(op).infer(node)):
        v.type, v.const = t, None        # keep the kernel even where infer knows the value
    graph = Graph([node], [v for v in values.values() if not v.is_const], outs)
    model = build(graph, CompileOptions())
    got = model.run({n: a for n, (a, const) in inputs.items() if not const})
    return [got[v.name] for v in outs]


def test_shape_and_size_kernels(rng):
    x = data(rng, (2, 0, 5))
    (s,) = run_unfolded("Shape", {"x": (x, False)}, {"start": 1}, opset=15)
    np.testing.assert_array_equal(s, ints(0, 5))
    (n,) = run_unfolded("Size", {"x": (x, False)})
    assert n.dtype == I64 and n.shape == () and n == 0


def test_generator_kernels():
    (c,) = run_unfolded("ConstantOfShape", {"s": (ints(2, 3), True)},
                        {"value": np.array([-4], np.int8)})
    np.testing.assert_array_equal(c, np.full((2, 3), -4, np.int8))
    (r,) = run_unfolded("Range", {k: (np.array(v, np.float32), True)
                                  for k, v in (("a", 1.0), ("b", 3.0), ("c", 0.25))})
    np.testing.assert_allclose(r, np.arange(1.0, 3.0, 0.25, dtype=np.float32))
    (r,) = run_unfolded("Range", {k: (np.array(v, np.int32), True)
                                  for k, v in (("a", 7), ("b", -2), ("c", -3))})
    np.testing.assert_array_equal(r, np.arange(7, -2, -3, dtype=np.int32))
