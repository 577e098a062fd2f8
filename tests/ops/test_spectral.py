"""DFT against onnxruntime (and the ONNX reference for what onnxruntime computes differently).

Ember sums in double; onnxruntime transforms fp32 in fp32, whose round-off grows with the
signal's magnitude, so fp32 cases compare with atol 1e-4 (outputs here are O(1) to O(10)).
"""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import check_node, make_model
from ember.errors import ShapeError

FP32 = {"rtol": 1e-4, "atol": 1e-4}


def dft(x, opset=20, axis=None, length=None, oracle="ort", **attrs):
    """A DFT node; axis and dft_length as constants (an input at opset 20, else an attribute)."""
    inits, names = {}, ["x", "", ""]
    if length is not None:
        inits["length"], names[1] = np.array(length, np.int64), "length"
    if axis is not None and opset >= 20:
        inits["axis"], names[2] = np.array(axis, np.int64), "axis"
    elif axis is not None:
        attrs["axis"] = axis
    while names[-1] == "":
        names.pop()
    tol = FP32 if x.dtype == np.float32 else {}
    return check_node("DFT", {"x": x}, attrs, initializers=inits, input_names=names,
                      opset=opset, oracle=oracle, **tol)


def signal(rng, shape, parts, dtype=np.float32):
    return rng.standard_normal((*shape, parts)).astype(dtype)


@pytest.mark.parametrize("inverse", [0, 1])
@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("axis", [1, 2, -2, -3])
def test_dft_full(axis, parts, inverse, rng):
    dft(signal(rng, (2, 7, 6), parts), axis=axis, inverse=inverse)


@pytest.mark.parametrize("axis", [1, 2])
def test_dft_opset17_axis_attribute(axis, rng):
    dft(signal(rng, (3, 5, 4), 2), opset=17, axis=axis)
    dft(signal(rng, (3, 5, 4), 1), opset=17, axis=axis, inverse=1)


@pytest.mark.parametrize("n", [1, 2, 7, 8])
def test_dft_rfft(n, rng):
    dft(signal(rng, (3, n), 1), axis=1, onesided=1)


@pytest.mark.parametrize("length", [3, 8, 13])
@pytest.mark.parametrize("onesided", [0, 1])
def test_dft_length_pads_or_truncates(length, onesided, rng):
    dft(signal(rng, (2, 8, 3), 1), axis=1, length=length, onesided=onesided)
    dft(signal(rng, (2, 8, 3), 2), axis=1, length=length, inverse=1)


@pytest.mark.parametrize("length", [None, 9, 10, 4])
def test_dft_irfft(length, rng):
    # onnxruntime's inverse one-sided DFT is not the IRFFT the spec now defines.
    x = signal(rng, (2, 6, 3), 2)
    dft(x, axis=1, length=length, inverse=1, onesided=1, oracle="reference")


@pytest.mark.parametrize("inverse", [0, 1])
def test_dft_float64(inverse, rng):
    dft(signal(rng, (2, 16), 2, np.float64), axis=1, inverse=inverse)


def test_dft_long_transform_is_accurate(rng):
    # A table of twiddles indexed by (j*k) mod L keeps a 1000-point transform accurate.
    x = signal(rng, (1, 1000), 1, np.float64)
    got = dft(x, axis=1)[0]
    want = np.fft.fft(x[0, :, 0])
    np.testing.assert_allclose(got[0, :, 0] + 1j * got[0, :, 1], want, rtol=1e-9, atol=1e-9)


def test_dft_empty_batch(rng):
    dft(np.zeros((0, 5, 2), np.float32), axis=1)


@pytest.mark.parametrize("shape,attrs,inits,match", [
    ((2, 5, 3), {}, {}, r"\[\.\.\., 1\]"),
    ((2, 5, 1), {}, {"axis": -1}, "axis -1 is outside"),
    ((2, 5, 1), {}, {"axis": 2}, "axis 2 is outside"),
    ((2, 5, 1), {}, {"length": 0}, "dft_length 0"),
    ((2, 1, 2), {"inverse": 1, "onesided": 1}, {}, "dft_length 0"),
])
def test_dft_rejects_bad_nodes(shape, attrs, inits, match):
    x = np.zeros(shape, np.float32)
    names = ["x", "length" if "length" in inits else "", "axis" if "axis" in inits else ""]
    while names[-1] == "":
        names.pop()
    inits = {k: np.array(v, np.int64) for k, v in inits.items()}
    node = helper.make_node("DFT", names, ["y"], **attrs)
    with pytest.raises(ShapeError, match=match):
        ember.compile(make_model([node], {"x": x}, ["y"], inits, opset=20))
