"""The packed GEMM's run-time operand paths, against onnxruntime: A read in place (unit column
stride: kernels/gemm.py RowsInPlace) or packed (rows a multiple of 4 KiB apart, or strided
columns), and the transposing packs (A with unit column stride, B with unit row stride: B^T
row-major), on ragged edges, size-1 dims, odd strides from folded Transposes and broadcast
batches."""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import make_model, run_ort
from ember.lower.schedule import Schedule, a_rows_in_place, gemm_tiles

TOL = {"rtol": 1e-4, "atol": 1e-4}      # sums of up to ~1100 products in another order


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def check(nodes, feeds, threads=1, inits=None):
    model = make_model(nodes, feeds, ["y"], inits)
    compiled = ember.compile(model, threads=threads)
    np.testing.assert_allclose(compiled.run(feeds)["y"], run_ort(model, feeds)[0], **TOL)
    return compiled.source


def matmul(a="a", b="b"):
    return helper.make_node("MatMul", [a, b], ["y"])


def test_in_place_choice():
    t = gemm_tiles(Schedule(), 128, 128, 32)
    assert a_rows_in_place(t, 32) and a_rows_in_place(t, 384) and a_rows_in_place(t, 1023)
    assert not a_rows_in_place(t, 1024) and not a_rows_in_place(t, 3072)
    assert a_rows_in_place(gemm_tiles(Schedule(vector_bytes=4), 8, 8, 8), 1024)   # scalar tiles


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mnk", [(1, 1, 1), (1, 33, 5), (5, 16, 1), (7, 17, 3), (13, 40, 257),
                                 (25, 3, 700), (128, 32, 128), (6, 100, 1200)])
def test_a_in_place(mnk, threads, rng):
    """Ragged M (m % 6) and N, K of 1, and K over several kc slices (700, 1200)."""
    m, n, k = mnk
    source = check([matmul()], {"a": normal(rng, m, k), "b": normal(rng, k, n)}, threads)
    assert f"ember_sgemm_ukr{6 if m >= 6 else m}_16a(kc, " in source


@pytest.mark.parametrize("mnk", [(7, 20, 1024), (13, 35, 2048)])
def test_a_rows_4k_apart_are_packed(mnk, rng):
    """Rows a multiple of 4 KiB apart: A packed by the vector transpose (ragged M and N)."""
    m, n, k = mnk
    source = check([matmul()], {"a": normal(rng, m, k), "b": normal(rng, k, n)})
    assert "_16a(kc, " not in source and "ember_pack_a_6(" in source


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("seq,heads,dim", [(128, 12, 32), (37, 3, 7), (1, 2, 5), (9, 1, 1),
                                           (50, 2, 64)])
def test_attention_operands(seq, heads, dim, threads, rng):
    """Q.K^T with Q (A) read in place at row stride heads*dim and K^T (B) packed by the
    transposing pack (row stride 1, column stride heads*dim), then P.V with P in place."""
    shape = helper.make_tensor("s", 7, [4], [1, seq, heads, dim])
    nodes = [helper.make_node("Reshape", [x, "s"], [x + "4"]) for x in "qkv"]
    nodes += [helper.make_node("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
              helper.make_node("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
              helper.make_node("MatMul", ["qt", "kt"], ["s0"]),
              helper.make_node("Softmax", ["s0"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "vt"], ["y"])]
    feeds = {x: normal(rng, 1, seq, heads * dim) for x in "qkv"}
    model = make_model(nodes, feeds, ["y"])
    model.graph.initializer.append(shape)
    compiled = ember.compile(model, threads=threads)
    np.testing.assert_allclose(compiled.run(feeds)["y"], run_ort(model, feeds)[0], **TOL)


@pytest.mark.parametrize("k,n", [(1, 1), (3, 5), (4, 16), (33, 17), (300, 37), (700, 64)])
def test_b_transposed_pack(k, n, rng):
    """B = Transpose(x): row stride 1, column stride k. Ragged panels (n % 16), k not a
    multiple of 4, and k over several kc slices."""
    feeds = {"a": normal(rng, 9, k), "x": normal(rng, n, k)}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]), matmul("a", "t")]
    check(nodes, feeds)


@pytest.mark.parametrize("a_perm,b_perm", [([0, 2, 1], None), ([0, 2, 1], [0, 2, 1]),
                                           (None, [0, 2, 1])])
def test_strided_operands_with_broadcast_batch(a_perm, b_perm, rng):
    """Transposed operands (A column stride != 1, B row stride 1) and a batch of one operand
    broadcast (its batch stride 0) against the other's."""
    a = normal(rng, 1, 19, 11) if a_perm else normal(rng, 1, 11, 19)
    b = normal(rng, 3, 21, 19) if b_perm else normal(rng, 3, 19, 21)
    nodes, names = [], []
    for x, perm in (("a", a_perm), ("b", b_perm)):
        if perm:
            nodes.append(helper.make_node("Transpose", [x], [x + "t"], perm=perm))
        names.append(x + "t" if perm else x)
    check(nodes + [matmul(*names)], {"a": a, "b": b}, threads=2)


def test_a_in_place_odd_row_stride_and_broadcast(rng):
    """A = a slice of heads (row stride 3*5 = 15 floats, not a multiple of 4) broadcast over
    B's batch of 4."""
    a = normal(rng, 1, 23, 3, 5)
    nodes = [helper.make_node("Transpose", ["a"], ["at"], perm=[0, 2, 1, 3]), matmul("at", "b")]
    source = check(nodes, {"a": a, "b": normal(rng, 4, 3, 5, 18)})
    assert "_16a(kc, " in source


def test_non_finite_values_propagate(rng):
    """NaN and Inf in A read in place and in B packed by the transpose."""
    a, x = normal(rng, 8, 30), normal(rng, 20, 30)
    a[1, 5], a[7, 29], x[3, 4], x[19, 0] = np.nan, np.inf, -np.inf, np.nan
    feeds = {"a": a, "x": x}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]), matmul("a", "t")]
    got = ember.compile(make_model(nodes, feeds, ["y"])).run(feeds)["y"]
    want = a.astype(np.float64) @ x.T.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], **TOL)
