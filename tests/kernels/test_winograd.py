"""Winograd F(4x4, 3x3) convolution (ember/ops/conv_winograd.py) against onnxruntime.

Most cases force Winograd on (`winograd_pays` patched to True) so small shapes exercise every
edge: partial tiles, pads, odd sizes, epilogues, threads, non-finite inputs.

Tolerances: the transforms add rounding of their own (about 10x a direct fp32 sum's, see
the module docstring); weights are scaled so outputs are O(1), and 2e-5 absolute covers it."""
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import helper

import ember
from conftest import make_model, run_ort
from ember.ops import conv_direct, conv_winograd

TOL = {"rtol": 1e-4, "atol": 2e-5}


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setattr(conv_winograd, "winograd_pays", lambda *shape: True)
    # convs with few input channels would otherwise take the direct kernel, chosen first
    monkeypatch.setattr(conv_direct, "direct_conv_pays", lambda *shape: False)


def normal(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def conv_nodes(bias: bool, epilogue: str | None, attrs: dict) -> list[onnx.NodeProto]:
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    if epilogue is None:
        return [helper.make_node("Conv", inputs, ["y"], **attrs)]
    nodes = [helper.make_node("Conv", inputs, ["c"], **attrs)]
    if epilogue == "relu":
        return nodes + [helper.make_node("Relu", ["c"], ["y"])]
    if epilogue == "swish":
        return nodes + [helper.make_node("Sigmoid", ["c"], ["s"]),
                        helper.make_node("Mul", ["c", "s"], ["y"])]
    assert epilogue == "residual"       # the conv's own input added back: Cin == Cout, same size
    return nodes + [helper.make_node("Add", ["c", "x"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]


def run_case(rng, x_shape, cout, attrs=None, bias=True, epilogue=None, threads=1, x=None):
    """Compile a Conv (+ epilogue) with Ember and compare with onnxruntime; returns the source."""
    attrs = {"kernel_shape": [3, 3], **(attrs or {})}
    x = normal(rng, *x_shape) if x is None else x
    cg = x_shape[1] // attrs.get("group", 1)
    inits = {"w": normal(rng, cout, cg, 3, 3, scale=1 / (3 * cg**0.5))}
    if bias:
        inits["b"] = normal(rng, cout)
    model = make_model(conv_nodes(bias, epilogue, attrs), {"x": x}, ["y"], inits)
    compiled = ember.compile(model, threads=threads)
    got = compiled.run({"x": x})["y"]
    want = run_ort(model, {"x": x})[0]
    np.testing.assert_allclose(got, want, **TOL)
    return compiled.source


def test_transform_matrices_compute_a_correlation():
    """A^T [(G g) . (B^T d)] == the 4 outputs of a 3-tap correlation over 6 inputs, exactly."""
    at, g, bt = conv_winograd.AT, conv_winograd.G, conv_winograd.BT
    for i in range(4):
        for k in range(3):
            for col in range(6):
                got = sum(Fraction(at[i][j]) * Fraction(g[j][k]) * Fraction(bt[j][col])
                          for j in range(6))
                assert got == (1 if col == i + k else 0), (i, k, col)


SHAPES = [   # (x shape, Cout, attrs): every one runs as Winograd when forced
    ((1, 3, 8, 8), 4, {"pads": [1, 1, 1, 1]}),
    ((1, 5, 7, 9), 7, {"pads": [1, 1, 1, 1]}),             # odd sizes, partial tiles both ways
    ((1, 4, 7, 9), 3, {}),                                  # no pads: 5x7 output
    ((2, 7, 5, 5), 17, {"pads": [1, 1, 1, 1]}),             # batch 2, Cout > 16, not / 6
    ((1, 2, 1, 1), 3, {"pads": [1, 1, 1, 1]}),              # 1x1 image
    ((1, 3, 3, 3), 2, {}),                                  # one output
    ((1, 6, 10, 11), 5, {"pads": [2, 2, 2, 2]}),            # pads 2: the taps reach pure padding
    ((1, 4, 9, 6), 5, {"pads": [0, 1, 2, 0]}),              # asymmetric
    ((1, 3, 6, 13), 4, {"pads": [2, 0, 1, 2]}),
    ((1, 5, 12, 4), 6, {"auto_pad": "SAME_UPPER"}),
    ((1, 5, 11, 8), 6, {"auto_pad": "SAME_LOWER"}),
    ((1, 19, 17, 16), 22, {"pads": [1, 1, 1, 1]}),          # more than one 16-tile panel
    ((1, 40, 30, 30), 33, {"pads": [1, 1, 1, 1]}),          # 64 tiles, Cin > 32
    ((1, 2, 9, 9), 1, {"pads": [1, 1, 1, 1]}),               # one output channel
    ((2, 5, 30, 30), 9, {"pads": [1, 1, 1, 1]}),            # 2 threads: bands of tile rows
    ((1, 3, 27, 32), 4, {"pads": [1, 1, 1, 1]}),            # a last band past the image
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", range(len(SHAPES)))
def test_shapes(case, threads, rng, forced):
    x_shape, cout, attrs = SHAPES[case]
    source = run_case(rng, x_shape, cout, attrs, threads=threads)
    assert "V[36]" in source, "did not run as Winograd"


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("epilogue", ["relu", "swish", "residual"])
@pytest.mark.parametrize("threads", [1, 2])
def test_epilogues(bias, epilogue, threads, rng, forced):
    run_case(rng, (2, 9, 10, 7), 9, {"pads": [1, 1, 1, 1]}, bias, epilogue, threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_zoo_sized_conv_by_the_heuristic(threads, rng):
    """ResNet-8's second stage (32 channels, 16x16), with the real heuristic choosing."""
    assert conv_winograd.winograd_pays(32, 32, 16, 16)
    source = run_case(rng, (1, 32, 16, 16), 32, {"pads": [1, 1, 1, 1]}, epilogue="residual",
                      threads=threads)
    assert "V[36]" in source


@pytest.mark.parametrize("size", [(9, 10), (30, 30)])       # 30x30: in bands at 2 threads
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("where", ["first image", "second image"])
def test_non_finite_inputs_take_the_gemm_path(where, threads, size, rng, forced):
    """NaN and Inf stay where a direct convolution puts them (Winograd would smear them over
    whole tiles); in the second image, after the first went through Winograd."""
    x = normal(rng, 2, 6, *size)
    k = 0 if where == "first image" else 1
    x[k, 2, 4, 4], x[k, 0, 0, 9], x[k, 5, 7, 1] = np.nan, np.inf, -np.inf
    run_case(rng, x.shape, 5, {"pads": [1, 1, 1, 1]}, threads=threads, x=x)


@pytest.mark.parametrize("shape, threads, bands", [
    ((1, 16, 32, 32), 2, 2),       # ResNet-8's first stage: 2 x 32 tiles
    ((1, 16, 32, 32), 1, 1),
    ((1, 16, 32, 32), 3, 1),       # 3 x 24 tiles: 3 x 32 columns against 64
    ((1, 32, 16, 16), 2, 1),       # 2 x 8 tiles would fill 16-tile panels by half
    ((1, 8, 4, 8), 2, 1),          # one tile row
    ((1, 4, 27, 32), 2, 2),        # 7 tile rows: 4 + 3 (the second band's fourth past the map)
])
def test_bands_where_they_fill_panels(shape, threads, bands, rng, forced):
    """Bands only where their tiles fill the GEMM's panels about as well as the image's."""
    assert conv_winograd._bands(SimpleNamespace(out_sp=shape[2:]), threads) == bands
    source = run_case(rng, shape, 4, {"pads": [1, 1, 1, 1]}, threads=threads)
    assert ("of the band" in source) == (bands > 1)


def test_huge_inputs_take_the_gemm_path(rng, forced):
    x = normal(rng, 1, 4, 8, 8)
    x[0, 1, 3, 3] = 3e37       # finite, but the transforms' sums could overflow
    run_case(rng, x.shape, 4, {"pads": [1, 1, 1, 1]}, bias=False, x=x)


@pytest.mark.parametrize("attrs,applies", [
    ({"pads": [1, 1, 1, 1]}, True),
    ({"pads": [1, 1, 1, 1], "strides": [2, 2]}, False),
    ({"pads": [2, 2, 2, 2], "dilations": [2, 2]}, False),
    ({"pads": [1, 1, 1, 1], "group": 2}, False),
])
def test_applies_only_to_3x3_stride_1_one_group(attrs, applies, rng, forced):
    source = run_case(rng, (1, 4, 9, 9), 4, attrs)
    assert ("V[36]" in source) == applies


def test_runtime_or_non_finite_weights_keep_the_gemm_conv(rng, forced):
    x, w = normal(rng, 1, 4, 9, 9), normal(rng, 4, 4, 3, 3)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = make_model([node], {"x": x, "w": w}, ["y"])
    compiled = ember.compile(model)
    assert "V[36]" not in compiled.source
    np.testing.assert_allclose(compiled.run({"x": x, "w": w})["y"], run_ort(model, {"x": x, "w": w})[0],
                               **TOL)
    w[1, 2, 0, 0] = np.inf
    model = make_model([node], {"x": x}, ["y"], {"w": w})
    compiled = ember.compile(model)
    assert "V[36]" not in compiled.source
    np.testing.assert_allclose(compiled.run({"x": x})["y"], run_ort(model, {"x": x})[0], **TOL)


@pytest.mark.parametrize("shape,picked", [
    ((64, 64, 56, 56), True), ((128, 128, 28, 28), True), ((256, 256, 14, 14), True),
    ((512, 512, 7, 7), False), ((16, 16, 32, 32), True), ((32, 32, 16, 16), True),
    ((64, 64, 8, 8), False), ((3, 16, 32, 32), False), ((16, 16, 12, 12), False),
    ((32, 32, 12, 12), True), ((8, 8, 16, 16), False),
])
def test_heuristic_on_measured_shapes(shape, picked):
    """Where tools/bench_winograd.py measured Winograd faster (or not) than the GEMM conv."""
    assert conv_winograd.winograd_pays(*shape) == picked
