"""Normalizations against onnxruntime: Softmax family, Layer/Instance/Group/Batch norm, LpNorm,
LRN, MeanVarianceNormalization."""
import re

import numpy as np
import pytest

from conftest import check_node


def normal(shape, rng, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# -- Softmax, LogSoftmax, Hardmax ---------------------------------------------------------------

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [0, 1, -1, None])
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_family(op, axis, opset, rng):
    x = normal((2, 3, 5), rng) * 4
    check_node(op, {"x": x}, {} if axis is None else {"axis": axis}, opset=opset)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_edges(op, rng):
    n, inf = np.nan, np.inf
    x = np.array([[-inf, -inf, -inf], [n, 1, 2], [1, n, 3], [inf, 1, 0], [1, -inf, 0],
                  [1000, 999, -1000], [2, 2, 1]], np.float32)
    check_node(op, {"x": x}, opset=13)
    check_node(op, {"x": np.zeros((0, 4), np.float32)}, opset=13)
    check_node(op, {"x": np.zeros((3, 0), np.float32)}, opset=13)
    check_node(op, {"x": normal((1,), rng)}, opset=13)
    check_node(op, {"x": normal((4, 7), rng, np.float64)}, {"axis": 0}, opset=13,
               oracle="reference" if op == "Hardmax" else "ort")   # no double Hardmax in ORT


def test_softmax_long_row(rng):
    check_node("Softmax", {"x": normal((2, 30000), rng) * 10}, opset=13)
    check_node("LogSoftmax", {"x": normal((2, 30000), rng) * 10}, opset=13)


# -- LayerNormalization -------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [-1, 1, 0, -2])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm(axis, with_bias, rng):
    x = normal((2, 3, 6), rng) * 3 + 1
    block = x.shape[axis:]
    inits = {"s": normal(block, rng)}
    if with_bias:
        inits["b"] = normal(block, rng)
    check_node("LayerNormalization", {"x": x}, {"axis": axis, "epsilon": 1e-3}, n_outputs=3,
               initializers=inits)


def test_layer_norm_broadcast_params_and_outputs(rng):
    x = normal((2, 3, 4), rng)
    # Scale broadcast over the normalized dims; only Y and InvStdDev requested.
    check_node("LayerNormalization", {"x": x}, {"axis": 1}, initializers={"s": normal((4,), rng)})
    check_node("LayerNormalization", {"x": x, "s": normal((1, 4), rng)}, {"axis": 1},
               initializers={"b": normal((3, 1), rng)})
    from conftest import check_model, make_model
    from onnx import helper
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y", "", "inv"])
    model = make_model([node], {"x": x}, ["y", "inv"], {"s": normal((4,), rng)})
    check_model(model, {"x": x})


def test_layer_norm_double_and_empty(rng):
    check_node("LayerNormalization", {"x": normal((3, 5), rng, np.float64)},
               initializers={"s": normal((5,), rng, np.float64)})
    check_node("LayerNormalization", {"x": np.zeros((0, 5), np.float32)},
               initializers={"s": normal((5,), rng)})


def test_layer_norm_bad_scale(rng):
    from ember.errors import EmberError
    with pytest.raises(EmberError, match="broadcast"):
        check_node("LayerNormalization", {"x": normal((2, 3), rng)},
                   initializers={"s": normal((4,), rng)})


# -- InstanceNormalization, GroupNormalization ----------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 4, 7), (3, 2, 1), (2, 3, 2, 2, 2)])
def test_instance_norm(shape, rng):
    x = normal(shape, rng) * 2 + 1
    check_node("InstanceNormalization", {"x": x}, {"epsilon": 1e-3},
               initializers={"s": normal(shape[1:2], rng), "b": normal(shape[1:2], rng)})


@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("shape,groups", [((2, 4, 3, 3), 2), ((1, 6, 5), 3), ((2, 3, 4), 1),
                                          ((2, 4, 2, 2), 4)])
def test_group_norm(opset, shape, groups, rng):
    x = normal(shape, rng) * 2 + 1
    pshape = (groups,) if opset == 18 else shape[1:2]
    check_node("GroupNormalization", {"x": x}, {"num_groups": groups, "epsilon": 1e-4},
               initializers={"s": normal(pshape, rng), "b": normal(pshape, rng)}, opset=opset)


def test_group_norm_bad_groups(rng):
    from ember.errors import EmberError
    with pytest.raises(EmberError, match="num_groups"):
        check_node("GroupNormalization", {"x": normal((1, 4, 2), rng)}, {"num_groups": 3},
                   initializers={"s": normal((3,), rng), "b": normal((3,), rng)}, opset=18)


# -- BatchNormalization ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4), (1, 2, 7), (0, 3, 2)])
@pytest.mark.parametrize("opset", [9, 15])
def test_batch_norm(shape, opset, rng):
    c = shape[1]
    inits = {"s": normal((c,), rng), "b": normal((c,), rng), "m": normal((c,), rng),
             "v": rng.uniform(0.5, 2, (c,)).astype(np.float32)}
    check_node("BatchNormalization", {"x": normal(shape, rng)}, {"epsilon": 1e-3}, opset=opset,
               initializers=inits)


def test_batch_norm_opset7_per_activation(rng):
    # spatial=0: one parameter per (channel, position); onnxruntime no longer runs it.
    x = normal((2, 3, 4), rng)
    p = {k: normal((3, 4), rng) for k in ("s", "b", "m")}
    p["v"] = rng.uniform(0.5, 2, (3, 4)).astype(np.float32)
    got = check_node("BatchNormalization", {"x": x}, {"spatial": 1}, opset=7,
                     initializers={k: v[:, 0].copy() for k, v in p.items()})
    import ember
    from conftest import make_model
    from onnx import helper
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=0)
    y = ember.compile(make_model([node], {"x": x}, ["y"], p, opset=7)).run({"x": x})["y"]
    want = (x - p["m"]) / np.sqrt(p["v"] + 1e-5) * p["s"] + p["b"]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    assert got[0].shape == x.shape


def test_batch_norm_training_unsupported(rng):
    from ember.errors import UnsupportedError
    inits = {k: np.ones(3, np.float32) for k in ("s", "b", "m", "v")}
    with pytest.raises(UnsupportedError, match="training_mode"):
        check_node("BatchNormalization", {"x": normal((2, 3), rng)}, {"training_mode": 1},
                   n_outputs=3, opset=15, initializers=inits)


# -- LpNormalization, LRN, MeanVarianceNormalization ---------------------------------------------

@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_lp_norm(p, axis, rng):
    x = normal((3, 4, 5), rng)
    x[0, 0, :] = 0
    x[:, 0, 0] = 0
    check_node("LpNormalization", {"x": x}, {"p": p, "axis": axis})


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn(size, rng):
    x = normal((2, 6, 3, 3), rng)
    check_node("LRN", {"x": x}, {"size": size, "alpha": 1e-2, "beta": 0.6, "bias": 1.5})
    check_node("LRN", {"x": normal((1, 3, 1, 4), rng)}, {"size": size})


def test_lrn_even_size(rng):
    # onnxruntime takes odd sizes only (and the reference evaluator's LRN loops over the wrong
    # axis): check against the formula of the ONNX spec.
    import ember
    from conftest import make_model
    from onnx import helper
    x = normal((2, 5, 3, 2), rng)
    node = helper.make_node("LRN", ["x"], ["y"], size=4, alpha=0.1, beta=0.5, bias=2.0)
    y = ember.compile(make_model([node], {"x": x}, ["y"])).run({"x": x})["y"]
    sq = np.stack([(x[:, max(0, c - 1):c + 3] ** 2).sum(axis=1) for c in range(5)], axis=1)
    np.testing.assert_allclose(y, x / (2.0 + 0.1 / 4 * sq) ** 0.5, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axes", [None, [0, 2, 3], [1], [2, 3], [-1, 0]])
def test_mvn(axes, rng):
    x = normal((2, 3, 4, 5), rng) * 3 + 2
    check_node("MeanVarianceNormalization", {"x": x}, {} if axes is None else {"axes": axes},
               opset=13)


@pytest.mark.parametrize("across", [0, 1])
@pytest.mark.parametrize("variance", [0, 1])
def test_mvn_opset1(across, variance, rng):
    x = normal((2, 3, 2, 4), rng)
    check_node("MeanVarianceNormalization", {"x": x},
               {"across_channels": across, "normalize_variance": variance}, opset=7)


# -- vectorized rows (ops/vecmath.py helpers), split over threads --------------------------------

def _check_threads(op, inputs, attrs, initializers=None, threads=2, n_outputs=1, opset=17):
    """check_node, compiled with `threads` threads; the compiled model."""
    import ember
    from conftest import make_model, run_ort
    from onnx import helper
    names = list(inputs) + list(initializers or {})
    outs = [f"y{k}" for k in range(n_outputs)]
    model = make_model([helper.make_node(op, names, outs, **attrs)], inputs, outs, initializers,
                       opset)
    compiled = ember.compile(model, threads=threads)
    got = compiled.run(inputs)
    for name, want in zip(outs, run_ort(model, inputs)):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=name)
    return compiled


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 33, 128, 1001])
@pytest.mark.parametrize("threads", [1, 2])
def test_softmax_row_lengths(op, n, threads, rng):
    _check_threads(op, {"x": normal((5, n), rng) * 5}, {"axis": -1}, threads=threads, opset=13)


@pytest.mark.parametrize("op, shape", [("Softmax", (3, 64, 91)), ("LogSoftmax", (3, 64, 91)),
                                       ("LayerNormalization", (3, 29, 384))])
@pytest.mark.parallel_threshold
def test_rows_shared_among_threads(op, shape, rng):
    """Rows enough (BERT's attention softmax and LayerNorms have more) are shared among the
    threads under the real PARALLEL_MIN_FLOPS: their flops count exp and the statistics'
    passes, not one per element."""
    x = normal(shape, rng) * 3
    params = {"s": normal(shape[-1:], rng), "b": normal(shape[-1:], rng)} \
        if op == "LayerNormalization" else None
    compiled = _check_threads(op, {"x": x}, {"axis": -1}, params, opset=17)
    assert re.search(r"ember_parallel\(k\d+_\w+_part", compiled.source)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_nan_inf_in_vector_part(op, rng):
    """NaN / +-inf in the 16-wide part and in the tail of 37-long rows; a row of -inf."""
    x = normal((6, 37), rng)
    x[0, 3], x[1, 35], x[2, 5], x[3, 36], x[4, 20] = np.nan, np.nan, np.inf, np.inf, -np.inf
    x[5] = -np.inf
    check_node(op, {"x": x}, {"axis": -1}, opset=13)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_underflow(op, rng):
    """Masked scores (-10000, as BERT adds), and terms whose exp is denormal (x - max near -90)
    or just normal (-87): Softmax flushes those below the smallest normal float to 0."""
    x = normal((4, 40), rng)
    x[0, ::3] = -10000.0
    x[1, :] = -10000.0
    x[1, 17] = 1.5
    x[2, :] = np.linspace(-100.0, 0.0, 40, dtype=np.float32)
    x[3, :] = -86.9 + normal((40,), rng) * 0.01
    x[3, 39] = 0.0
    check_node(op, {"x": x}, {"axis": -1}, opset=13)


@pytest.mark.parametrize("n", [1, 7, 9, 384, 1001])
def test_layer_norm_rows_threads(n, rng):
    x = normal((3, 4, n), rng) * 2 + 3
    _check_threads("LayerNormalization", {"x": x}, {"axis": -1, "epsilon": 1e-12},
                   {"s": normal((n,), rng), "b": normal((n,), rng)}, n_outputs=3)


def test_layer_norm_large_mean(rng):
    """Two-pass double statistics: a large offset does not swamp the variance. Checked
    against float64 numpy: onnxruntime's single-pass float statistics are off here."""
    import ember
    from conftest import make_model
    from onnx import helper
    x = (normal((4, 384), rng) * 0.01 + 1000).astype(np.float32)
    s = normal((384,), rng)
    model = make_model([helper.make_node("LayerNormalization", ["x", "s"], ["y"])], {"x": x},
                       ["y"], {"s": s})
    got = ember.compile(model).run({"x": x})["y"]
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * s
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_instance_group_norm_threads(rng):
    x = normal((2, 6, 5, 7), rng)
    _check_threads("InstanceNormalization", {"x": x}, {},
                   {"s": normal((6,), rng), "b": normal((6,), rng)})
    _check_threads("GroupNormalization", {"x": x}, {"num_groups": 3},
                   {"s": normal((6,), rng), "b": normal((6,), rng)}, opset=21)
