"""Resize and Upsample against onnxruntime (the ONNX reference where onnxruntime differs)."""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import check_node, make_model
from ember.errors import EmberError

NO_ROI = np.zeros(0, np.float32)
TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
              "half_pixel_symmetric"]


def resize(x, attrs, scales=None, sizes=None, roi=NO_ROI, opset=19, **kw):
    """Check one Resize node whose roi/scales/sizes are constants."""
    inits = {"roi": roi, "scales": np.array(scales if scales is not None else [], np.float32)}
    names = ["x", "roi", "scales"]
    if sizes is not None:
        inits["sizes"] = np.array(sizes, np.int64)
        names.append("sizes")
    return check_node("Resize", {"x": x}, attrs, initializers=inits, input_names=names,
                      opset=opset, **kw)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("scales", [[1, 1, 2, 1.5], [1, 1, 0.5, 0.75]])
def test_modes_and_transforms(mode, transform, scales, rng):
    x = rng.standard_normal((1, 2, 4, 6)).astype(np.float32)
    # onnxruntime lacks half_pixel_symmetric; with a fractional output width (6 * 0.75),
    # align_corners follows the ONNX reference (it divides by the unfloored width, as the
    # conformance suite expects), where onnxruntime divides by the floored one.
    fractional = transform == "align_corners" and scales[-1] == 0.75
    oracle = "reference" if transform == "half_pixel_symmetric" or fractional else "ort"
    resize(x, {"mode": mode, "coordinate_transformation_mode": transform}, scales, oracle=oracle)


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor",
                                          "ceil"])
@pytest.mark.parametrize("sizes", [[1, 1, 7, 9], [1, 1, 3, 2]])
def test_nearest_modes(nearest_mode, sizes, rng):
    x = rng.standard_normal((1, 1, 4, 5)).astype(np.float32)
    for transform in ("half_pixel", "asymmetric", "align_corners"):
        resize(x, {"mode": "nearest", "nearest_mode": nearest_mode,
                   "coordinate_transformation_mode": transform}, sizes=sizes)


@pytest.mark.parametrize("exclude_outside", [0, 1])
@pytest.mark.parametrize("a", [-0.75, -0.5])
def test_cubic_options(exclude_outside, a, rng):
    x = rng.standard_normal((2, 1, 5, 4)).astype(np.float32)
    for scales in ([1, 1, 1.6, 2.5], [1, 1, 0.6, 0.5]):
        resize(x, {"mode": "cubic", "cubic_coeff_a": a, "exclude_outside": exclude_outside},
               scales)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_tf_crop_and_resize(mode, rng):
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    roi = np.array([0, 0, 0.3, -0.2, 1, 1, 0.8, 1.3], np.float32)   # reaches outside: extrapolates
    attrs = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize",
             "extrapolation_value": 7.5}
    resize(x, attrs, sizes=[1, 2, 4, 7], roi=roi)
    resize(x, attrs, sizes=[1, 2, 1, 1], roi=roi)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("sizes", [[1, 1, 3, 4], [1, 1, 9, 5], [1, 1, 2, 11]])
def test_antialias(mode, sizes, rng):
    x = rng.standard_normal((1, 1, 10, 9)).astype(np.float32)
    resize(x, {"mode": mode, "antialias": 1}, sizes=sizes, oracle="reference")


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("axes,sizes", [([2, 3], [7, 3]), ([3, 1], [5, 2]), ([3], [2])])
def test_axes_and_aspect_policy(policy, axes, sizes, rng):
    x = rng.standard_normal((1, 3, 4, 6)).astype(np.float32)
    resize(x, {"mode": "nearest", "axes": axes, "keep_aspect_ratio_policy": policy},
           sizes=sizes, oracle="reference")


def test_axes_with_scales_and_roi(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    resize(x, {"mode": "nearest", "axes": [-1, 1]}, [0.6, 2.0])
    resize(x, {"mode": "linear", "axes": [3, 1]}, [0.6, 2.0], oracle="reference")
    resize(x, {"mode": "linear", "axes": [3, 2], "coordinate_transformation_mode":
               "tf_crop_and_resize"}, sizes=[4, 3],
           roi=np.array([0.1, 0.2, 0.9, 0.7], np.float32), oracle="reference")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32, np.float64])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_dtypes(dtype, mode, rng):
    if np.dtype(dtype).kind == "f":
        x = rng.standard_normal((1, 2, 3, 4)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        lo, hi = max(info.min, -1000), min(info.max, 1000)
        x = rng.integers(lo, hi, (1, 2, 3, 4), endpoint=True).astype(dtype)
    # Integer outputs are rounded half to even and saturated, as the reference does (the
    # reference's cubic weights carry float32 rounding, so large ints would differ by ulps).
    # no f64/int Resize in onnxruntime; scales with non-dyadic weights keep results off exact
    # .5 ties, where the reference's float32-rounded cubic weights could round the other way
    resize(x, {"mode": mode}, [1, 1, 1.7, 1.3], oracle="reference")


@pytest.mark.parametrize("x", [(np.arange(15) << 58 | 1).reshape(3, 5).astype(np.int64),
                               (np.arange(15) % 3 == 0).reshape(3, 5)])
def test_nearest_copies_int64_and_bool_exactly(x):
    # Neither oracle copies these (onnxruntime lacks int64/bool Resize, the reference goes
    # through float64): the expected copy is indexed by hand (asymmetric floor: y / scale).
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest", nearest_mode="floor",
                            coordinate_transformation_mode="asymmetric")
    model = make_model([node], {"x": x}, ["y"], {"s": np.array([2, 0.6], np.float32)}, opset=13)
    y = ember.compile(model).run({"x": x})["y"]
    np.testing.assert_array_equal(y, x[np.ix_([0, 0, 1, 1, 2, 2], [0, 1, 3])])


@pytest.mark.parametrize("shape,scales", [
    ((7,), [2.5]), ((3, 4, 5), [1, 1, 1.5]), ((2, 3, 4, 5, 3), [1, 2, 0.5, 1.5, 2]),
    ((1, 1, 1, 1), [1, 1, 3, 2]), ((2, 3), [1, 1])])
def test_ranks(shape, scales, rng):
    # onnxruntime's linear mode handles only some ranks and axis sets: the reference judges
    x = rng.standard_normal(shape).astype(np.float32)
    for mode in ("nearest", "linear", "cubic"):
        resize(x, {"mode": mode}, scales, opset=13, oracle="reference")


def test_empty(rng):
    resize(np.zeros((1, 0, 3), np.float32), {"mode": "linear"}, [1, 1, 2], opset=13)
    resize(rng.standard_normal((1, 2, 3)).astype(np.float32), {"mode": "linear"},
           sizes=[1, 0, 5], opset=13, oracle="reference")


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 0.6, 0.45], [1, 1, 1.7, 1]])
def test_opset10(mode, scales, rng):
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    check_node("Resize", {"x": x}, {"mode": mode},
               initializers={"s": np.array(scales, np.float32)}, opset=10)


def test_opset11_roi_and_sizes(rng):
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    resize(x, {"mode": "linear"}, scales=[], sizes=[1, 2, 6, 3], opset=11)
    resize(x, {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"},
           [1, 1, 2, 1.5], opset=11)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample(mode, rng):
    x = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    scales = [1.0, 1.0, 2.0, 1.5]
    check_node("Upsample", {"x": x}, {"mode": mode, "scales": scales}, opset=7)
    check_node("Upsample", {"x": x}, {"mode": mode},
               initializers={"s": np.array(scales, np.float32)}, opset=9)


def test_dynamic_scales_unsupported(rng):
    x = rng.standard_normal((1, 1, 2, 2)).astype(np.float32)
    s = np.array([1, 1, 2, 2], np.float32)
    model = make_model([helper.make_node("Resize", ["x", "", "s"], ["y"])], {"x": x, "s": s},
                       ["y"], opset=13)
    with pytest.raises(EmberError, match="scales computed at run time"):
        ember.compile(model)


@pytest.mark.parametrize("attrs,scales,sizes,msg", [
    ({"mode": "linear"}, [1, 1, -2, 1], None, "positive"),
    ({"mode": "linear"}, [1, 2], None, "2 values for 4 axes"),
    ({"mode": "nearest", "antialias": 1}, [1, 1, 2, 2], None, "antialias"),
    ({"mode": "area"}, [1, 1, 2, 2], None, "mode"),
    ({"mode": "linear", "axes": [2, 2]}, [2, 2], None, "repeat"),
])
def test_bad_attributes_fail_cleanly(attrs, scales, sizes, msg):
    x = np.zeros((1, 1, 2, 2), np.float32)
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], **attrs)
    model = make_model([node], {"x": x}, ["y"], {"s": np.array(scales, np.float32)}, opset=19)
    with pytest.raises(EmberError, match=msg):
        ember.compile(model)


def test_huge_tables_are_refused():
    x = np.zeros((4,), np.float32)
    model = make_model([helper.make_node("Resize", ["x", "", "", "n"], ["y"], mode="linear")],
                       {"x": x}, ["y"], {"n": np.array([1 << 21], np.int64)}, opset=13)
    with pytest.raises(EmberError, match="tables"):
        ember.compile(model)
