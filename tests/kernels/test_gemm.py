"""The packed float32 GEMM (ember/kernels/gemm.py) through MatMul, Gemm and Conv, at sizes that
cross every blocking boundary (mr, nr, kc, mc, nc, thread parts), against onnxruntime.

Tolerances: fp32 sums of up to ~1200 products in a different order (and fused multiply-adds)
stay within rtol 1e-4 / atol 1e-4 of onnxruntime for standard-normal data."""
import numpy as np
import onnx
import pytest
from onnx import helper

import ember
from conftest import make_model, run_ort
from ember.kernels.gemm import pack_a, pack_b
from ember.lower.schedule import Schedule, gemm_tiles


@pytest.fixture(autouse=True)
def nchw_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are of the NCHW kernels: choose-layout must not move their convs."""
    monkeypatch.setenv("EMBER_LAYOUT", "nchw")


TOL = {"rtol": 1e-4, "atol": 1e-4}


def compare(model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int = 1) -> None:
    got = ember.compile(model, threads=threads).run(feeds)
    want = run_ort(model, feeds)
    for (name, actual), expected in zip(got.items(), want):
        np.testing.assert_allclose(actual, expected, err_msg=name, **TOL)


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_pack_layouts():
    a = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    packed = pack_a(a, 6)
    np.testing.assert_array_equal(packed[:18].reshape(3, 6), a[:6].T)   # panel 0: k-major
    np.testing.assert_array_equal(packed[18:], a[6])                    # short last panel
    b = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    packed = pack_b(b, 4)
    np.testing.assert_array_equal(packed[:12].reshape(3, 4), b[:, :4])
    np.testing.assert_array_equal(packed[12:].reshape(3, 4), np.pad(b[:, 4:], ((0, 0), (0, 3))))


def test_tiles_fit_caches():
    t = gemm_tiles(Schedule(threads=2), 1024, 1024, 1024)
    assert (t.mr, t.nr) == (6, 16) and t.kc * t.nr * 4 <= 24 * 1024        # 3/4 of L1
    assert t.mc % t.mr == 0 and t.nc % t.nr == 0 and t.m_parts * t.n_parts == 2


# M = 1 takes the one-row microkernel (k unrolled by 4): K = 6 and 1030 leave a remainder,
# 1030 also spans two K slices, N = 37 ends in a half panel
SIZES = [(1, 1, 1), (1, 10, 512), (1, 24, 6), (1, 37, 1030), (5, 17, 3), (6, 16, 256),
         (7, 33, 257), (13, 100, 600), (250, 40, 300), (40, 3000, 20)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mnk", SIZES)
def test_matmul_runtime_operands(mnk, threads, rng):
    m, n, k = mnk
    feeds = {"a": normal(rng, m, k), "b": normal(rng, k, n)}
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    compare(make_model([node], feeds, ["y"]), feeds, threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mnk", SIZES)
def test_matmul_constant_weights(mnk, threads, rng):
    """B constant (packed at compile time), then A constant."""
    m, n, k = mnk
    a, b = normal(rng, m, k), normal(rng, k, n)
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    compare(make_model([node], {"a": a}, ["y"], {"b": b}), {"a": a}, threads)
    compare(make_model([node], {"b": b}, ["y"], {"a": a}), {"b": b}, threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shapes", [((2, 12, 37, 32), (2, 12, 32, 37)), ((3, 1, 7, 300), (5, 300, 9)),
                                    ((4, 20, 16), (16, 40))])
def test_batched_matmul(shapes, threads, rng):
    feeds = {"a": normal(rng, *shapes[0]), "b": normal(rng, *shapes[1])}
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    compare(make_model([node], feeds, ["y"]), feeds, threads)


@pytest.mark.parametrize("trans", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("const_b", [False, True])
def test_gemm_transposes_alpha_beta(trans, const_b, rng):
    m, n, k = 9, 35, 270
    a = normal(rng, *((k, m) if trans[0] else (m, k)))
    b = normal(rng, *((n, k) if trans[1] else (k, n)))
    c = normal(rng, n)
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=trans[0], transB=trans[1],
                            alpha=0.5, beta=2.0)
    feeds = {"a": a} if const_b else {"a": a, "b": b}
    inits = {"b": b, "c": c} if const_b else {"c": c}
    compare(make_model([node], feeds, ["y"], inits), feeds, threads=2)


@pytest.mark.parametrize("k", [40, 700])
def test_fused_bias_relu_residual(k, rng):
    """MatMul + Add + Relu + Add fuse into the GEMM; with k > kc the partial sums go through
    the output before the epilogue."""
    x, r = normal(rng, 30, k), normal(rng, 30, 50)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["a"]), helper.make_node("Add", ["a", "r"], ["y"])]
    model = make_model(nodes, {"x": x, "r": r}, ["y"], {"w": normal(rng, k, 50), "b": normal(rng, 50)})
    compare(model, {"x": x, "r": r}, threads=2)


def test_nan_and_inf_propagate(rng):
    a, b = normal(rng, 8, 300), normal(rng, 300, 20)
    a[1, 5], a[3, 299], b[7, 4] = np.nan, np.inf, -np.inf
    got = ember.compile(make_model([helper.make_node("MatMul", ["a", "b"], ["y"])],
                                   {"a": a}, ["y"], {"b": b})).run({"a": a})["y"]
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], **TOL)


CONVS = [   # (x shape, w shape, attrs)
    ((1, 16, 9, 9), (8, 16, 1, 1), {}),                                         # 1x1: no im2col
    ((2, 7, 11, 13), (13, 7, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 32, 15, 15), (20, 32, 3, 3), {"strides": [2, 2], "pads": [0, 1, 2, 1]}),
    ((1, 40, 10, 10), (7, 40, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),   # k > kc
    ((1, 8, 12, 12), (12, 4, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    ((1, 3, 30, 30), (16, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    ((1, 16, 8, 8), (8, 16, 1, 1), {"strides": [2, 2]}),
    ((2, 6, 50), (5, 6, 5), {"pads": [2, 2], "strides": [3]}),                  # 1-D
    ((1, 64, 7, 7), (70, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 144, 1, 1), (6, 144, 1, 1), {}),                                      # one position
    ((1, 40, 7, 7), (24, 40, 1, 1), {}),                 # 7x7 maps: positions on the M side
    # last panel of B at most one vector wide: the one-vector microkernel (K in one slice
    # or two, 8 columns exactly)
    ((1, 96, 14, 14), (22, 96, 1, 1), {}),
    ((1, 500, 8, 9), (13, 500, 1, 1), {}),
    ((1, 16, 14, 14), (32, 16, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 8, 7, 7), (12, 4, 3, 3), {"group": 2, "pads": [1, 0, 1, 2]}),
    ((1, 1, 49, 10), (64, 1, 10, 4), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),  # DS-CNN
    # im2col packed per block at stride 2 with outputs rows wider than a panel (whole panel
    # rows take a vectorized copy), MobileNetV2's first conv in small
    ((1, 3, 70, 70), (8, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 41, 75), (5, 2, 3, 3), {"strides": [2, 2], "dilations": [1, 2], "pads": [0, 3, 1, 0]}),
    # 1x1 over a large multiple of 16 positions: the input rows read in place
    ((2, 5, 96, 96), (7, 5, 1, 1), {}),
    ((1, 8, 128, 64), (10, 4, 1, 1), {"group": 2}),
    ((1, 3, 8192), (13, 3, 1), {}),                                             # 1-D
    # small im2col matrices, gathered whole through a table (the cases above with strides
    # 2 and K x N past schedule._GATHER_MAX_ELEMENTS pack theirs per block)
    ((2, 6, 9, 7), (10, 3, 3, 2), {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1],
                                   "dilations": [1, 2]}),
    ((1, 5, 11, 1), (9, 5, 3, 1), {"strides": [2, 1], "pads": [1, 0, 1, 0]}),   # width 1
    ((3, 2, 13), (7, 2, 4), {"strides": [2], "pads": [3, 1]}),                 # 1-D, batch 3
    ((1, 2, 8, 8), (5, 2, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),   # 16 positions
    ((1, 3, 17, 17), (19, 3, 3, 3), {"strides": [2, 2], "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", range(len(CONVS)))
def test_conv_as_gemm(case, threads, rng):
    """With bias and a Swish epilogue, which reads the biased sum twice."""
    xs, ws, attrs = CONVS[case]
    x = normal(rng, *xs)
    inits = {"w": normal(rng, *ws), "b": normal(rng, ws[0])}
    node = helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)
    swish = [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    compare(make_model([node, *swish], {"x": x}, ["y"], inits), {"x": x}, threads)


def test_conv_residual_epilogue_and_runtime_weights(rng):
    """A residual Add fused into the conv (indexed by position), and weights fed at run time."""
    x, w = normal(rng, 1, 24, 10, 10), normal(rng, 24, 24, 3, 3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["y"])]
    compare(make_model(nodes, {"x": x}, ["y"], {"w": w}), {"x": x}, threads=2)
    compare(make_model(nodes, {"x": x, "w": w}, ["y"]), {"x": x, "w": w})


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cin", [96, 500])
def test_pointwise_one_panel_at_a_time(cin, threads, rng):
    """A 1x1 conv with few output channels (16: micro-tiles of 6, 6, 4 rows) packs one
    nr-column panel of B at a time (schedule.b_block_columns): ragged last panel (99
    positions), K in one slice or two (500 > kc), a residual Add after the bias."""
    x, r = normal(rng, 1, cin, 9, 11), normal(rng, 1, 16, 9, 11)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("Add", ["c", "r"], ["y"])]
    inits = {"w": normal(rng, 16, cin, 1, 1), "b": normal(rng, 16)}
    compare(make_model(nodes, {"x": x, "r": r}, ["y"], inits), {"x": x, "r": r}, threads)


ROWS_IN_PLACE = [   # (x shape, w shape, attrs, microkernel suffix): B read from the padded,
    # phase-split image in place; "p": output rows of whole vectors mapped onto its rows,
    # "o": virtual positions over its rows, the padding columns' sums dropped
    ((1, 16, 32, 32), (32, 16, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, "p"),
    ((1, 8, 33, 31), (7, 8, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, "p"),  # odd sizes
    ((1, 36, 17, 15), (9, 36, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, "p"),  # 4.5 panels
    ((2, 24, 16, 16), (14, 12, 3, 3), {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]}, "p"),
    ((1, 64, 8, 8), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}, "p"),                 # K in 2 slices
    ((1, 6, 16, 16), (5, 6, 3, 3), {"pads": [1, 1, 1, 1]}, "p"),
    ((1, 12, 64), (10, 12, 3), {"pads": [1, 1]}, "p"),                            # 1-D
    ((1, 7, 9, 9), (8, 7, 2, 2), {"strides": [1, 1], "pads": [0, 0, 0, 0]}, "p"),  # no padding
    ((1, 6, 5, 40), (5, 6, 3, 3), {"pads": [1, 1, 1, 1]}, "p"),   # 2 threads: bands split a row
    ((2, 16, 28, 28), (32, 16, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, "o"),
    ((1, 24, 20, 21), (9, 24, 3, 3), {"strides": [2, 2], "dilations": [2, 2], "pads": [2, 2, 2, 2]},
     "o"),
    ((1, 20, 19, 40), (11, 20, 3, 3), {"strides": [2, 3], "pads": [0, 2, 1, 0]}, "o"),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", range(len(ROWS_IN_PLACE)))
def test_conv_rows_in_place(case, threads, rng):
    """Bias and a residual Add + Relu epilogue; the in-place microkernel is the one used."""
    xs, ws, attrs, suffix = ROWS_IN_PLACE[case]
    x = normal(rng, *xs)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)
    model = make_model([conv], {"x": x}, ["c"], {"w": normal(rng, *ws), "b": normal(rng, ws[0])})
    out_shape = run_ort(model, {"x": x})[0].shape
    r = normal(rng, *out_shape)
    nodes = [conv, helper.make_node("Add", ["c", "r"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    model = make_model(nodes, {"x": x, "r": r}, ["y"], {"w": normal(rng, *ws), "b": normal(rng, ws[0])})
    assert f"_16{suffix}(kc, aq, bq" in ember.compile(model, threads=threads).source
    compare(model, {"x": x, "r": r}, threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", [0, 8, 9])
def test_conv_rows_in_place_nan_inf(case, threads, rng):
    """NaN and Inf in the image reach exactly the outputs whose windows hold them; none
    leaks through the zero padding, the dropped columns or a band's edge."""
    xs, ws, attrs, _ = ROWS_IN_PLACE[case]
    x, w = normal(rng, *xs), normal(rng, *ws)
    x[0, 1, 3, 5], x[0, 2, -1, -1], x[0, 0, 0, 0] = np.nan, np.inf, -np.inf
    x[0, 3, xs[2] // 2, 7] = np.nan                  # on the rows both bands copy
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    model = make_model([node], {"x": x}, ["y"], {"w": w})
    got = ember.compile(model, threads=threads).run({"x": x})["y"]
    want = run_ort(model, {"x": x})[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], **TOL)


@pytest.mark.parametrize("case, banded", [(0, True), (1, True), (8, True), (3, False), (9, False)])
def test_conv_rows_banded(case, banded):
    """With 2 threads, one image and output rows of whole vectors, each thread copies the
    padded rows its own band of output rows reads, into its own buffer: no barrier. A batch
    (case 3) or virtual positions (case 9) keep the shared copy and its barrier."""
    xs, ws, attrs, _ = ROWS_IN_PLACE[case]
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    model = make_model([node], {"x": np.zeros(xs, np.float32)}, ["y"],
                       {"w": np.zeros(ws, np.float32)})
    source = ember.compile(model, threads=2).source
    kernel = source[source.index("static void k0_conv("):source.index("static void k0_conv_part(")]
    assert ("band_end" in kernel) == banded
    assert ("ember_barrier(part" in kernel) != banded
