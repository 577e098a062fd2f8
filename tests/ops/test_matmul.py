"""Matrix products against onnxruntime: MatMul, Gemm, Einsum, Det; edge shapes, dtypes, threads,
fused epilogues, and clear errors for inputs that do not fit."""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import check_model, check_node, make_model, run_ort
from ember.errors import ShapeError


def normal(shape, rng, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# -- MatMul -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mnk", [(1, 1, 1), (1, 3, 17), (3, 17, 64), (17, 64, 3), (64, 1, 17),
                                 (64, 64, 64), (17, 3, 1), (3, 64, 17)])
def test_matmul_sizes(mnk, rng):
    m, n, k = mnk
    check_node("MatMul", {"a": normal((m, k), rng), "b": normal((k, n), rng)})


@pytest.mark.parametrize("shapes", [((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                                    ((4,), (2, 4, 5)), ((2, 3, 6, 4), (4,)), ((1,), (1, 3))])
def test_matmul_1d(shapes, rng):
    check_node("MatMul", {"a": normal(shapes[0], rng), "b": normal(shapes[1], rng)})


@pytest.mark.parametrize("shapes", [((2, 1, 3, 4), (5, 4, 6)), ((3, 4), (2, 4, 5)),
                                    ((2, 3, 4), (4, 5)), ((1, 3, 4), (2, 4, 5)),
                                    ((2, 1, 3, 4), (1, 2, 4, 2)), ((2, 2, 3, 4), (2, 2, 4, 3))])
def test_matmul_batch_broadcast(shapes, rng):
    check_node("MatMul", {"a": normal(shapes[0], rng), "b": normal(shapes[1], rng)})


@pytest.mark.parametrize("shapes", [((3, 0), (0, 4)), ((0, 3), (3, 4)), ((3, 4), (4, 0)),
                                    ((0, 2, 3), (3, 4)), ((2, 0), (0,)), ((0,), (0, 3))])
def test_matmul_empty(shapes, rng):
    y, = check_node("MatMul", {"a": normal(shapes[0], rng), "b": normal(shapes[1], rng)})
    if shapes[0][-1] == 0:
        assert not y.any()          # an empty sum is zero


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64, np.float64])
def test_matmul_dtypes(dtype, rng):
    a = rng.integers(0, 100, (2, 5, 7)).astype(dtype)
    b = rng.integers(0, 100, (7, 3)).astype(dtype)
    check_node("MatMul", {"a": a, "b": b})


def test_matmul_int_overflow_wraps():
    big = np.array([[2**30, 2**30], [3, -2**31 + 5]], np.int32)
    check_node("MatMul", {"a": big, "b": big})
    big64 = np.array([[2**62, 2**62], [7, -2**63 + 1]], np.int64)
    check_node("MatMul", {"a": big64, "b": big64})


def test_matmul_nan_inf(rng):
    a = normal((3, 4), rng)
    a[0, 1], a[1, 2] = np.nan, 0.0
    b = normal((4, 5), rng)
    b[2, 3], b[3, 0] = np.inf, -np.inf
    check_node("MatMul", {"a": a, "b": b})


def test_matmul_long_rows_and_constant_weights(rng):
    # N larger than one column block (and K long): blocks of 256 columns plus a remainder.
    check_node("MatMul", {"a": normal((5, 600), rng)}, initializers={"w": normal((600, 700), rng)},
               rtol=1e-4, atol=1e-4)   # 600-term fp32 sums: summation order differs from ORT


# -- Gemm ---------------------------------------------------------------------------------------

C_SHAPES = [None, (), (1,), (5,), (3, 1), (1, 5), (1, 1), (3, 5)]


@pytest.mark.parametrize("trans", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("c_shape", C_SHAPES)
def test_gemm_trans_and_bias(trans, c_shape, rng):
    ta, tb = trans
    ins = {"a": normal((4, 3) if ta else (3, 4), rng), "b": normal((5, 4) if tb else (4, 5), rng)}
    if c_shape is not None:
        ins["c"] = normal(c_shape, rng)
    check_node("Gemm", ins, {"transA": ta, "transB": tb, "alpha": 0.5, "beta": 2.0})


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (-1.5, 0.25), (0.0, 1.0), (2.0, 0.0)])
def test_gemm_alpha_beta(alpha, beta, rng):
    check_node("Gemm", {"a": normal((17, 64), rng), "b": normal((33, 64), rng),
                        "c": normal((33,), rng)},
               {"alpha": alpha, "beta": beta, "transB": 1})


def test_gemm_beta_zero_ignores_c(rng):
    c = np.full((3, 4), np.nan, np.float32)
    check_node("Gemm", {"a": normal((3, 5), rng), "b": normal((5, 4), rng), "c": c}, {"beta": 0.0})


@pytest.mark.parametrize("opset", [7, 9, 11, 13])
def test_gemm_opsets(opset, rng):
    check_node("Gemm", {"a": normal((3, 6), rng), "b": normal((6, 2), rng),
                        "c": normal((3, 2), rng)}, {"transA": 0}, opset=opset)


def test_gemm_constant_weights_float64(rng):
    check_node("Gemm", {"a": normal((7, 9), rng, np.float64)},
               {"transB": 1, "alpha": 0.75},
               initializers={"w": normal((11, 9), rng, np.float64),
                             "bias": normal((11,), rng, np.float64)})


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (2.0, 3.0)])
def test_gemm_int(dtype, alpha, beta, rng):
    # onnxruntime has no integer Gemm: the onnx reference evaluator is the oracle.
    ins = {"a": rng.integers(0, 20, (4, 3)).astype(dtype), "b": rng.integers(0, 20, (5, 4)).astype(dtype),
           "c": rng.integers(0, 20, (5,)).astype(dtype)}
    check_node("Gemm", ins, {"transA": 1, "transB": 1, "alpha": alpha, "beta": beta},
               oracle="reference")


@pytest.mark.parametrize("shapes", [((3, 0), (0, 4), (4,)), ((0, 3), (3, 4), (1, 4)),
                                    ((3, 4), (4, 0), None)])
def test_gemm_empty(shapes, rng):
    ins = {"a": normal(shapes[0], rng), "b": normal(shapes[1], rng)}
    if shapes[2] is not None:
        ins["c"] = normal(shapes[2], rng)
    check_node("Gemm", ins, {"beta": 0.5})


# -- threads and fused epilogues ----------------------------------------------------------------

def _check_threads(nodes, feeds, inits=None, threads=2):
    model = make_model(nodes, feeds, [nodes[-1].output[0]], inits)
    got = ember.compile(model, threads=threads).run(feeds)
    want = run_ort(model, feeds)[0]
    np.testing.assert_allclose(list(got.values())[0], want, rtol=1e-4, atol=1e-5)


def test_threads(rng):
    _check_threads([helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=1)],
                   {"a": normal((17, 64), rng), "b": normal((33, 64), rng), "c": normal((33,), rng)})
    _check_threads([helper.make_node("MatMul", ["a", "b"], ["y"])],
                   {"a": normal((2, 1, 9, 5), rng), "b": normal((3, 5, 7), rng)}, threads=3)
    _check_threads([helper.make_node("MatMul", ["a", "b"], ["y"])],
                   {"a": normal((1, 5), rng), "b": normal((5, 7), rng)}, threads=4)


def _check_fused(model, feeds):
    """Values match onnxruntime, and the whole graph became one kernel."""
    check_model(model, feeds)
    assert ember.compile(model).manifest["kernels"] == 1


def test_fused_epilogue(rng):
    # MatMul + bias Add + residual Add + Relu, and Gemm + Sigmoid: one kernel each after fusion.
    x, res = normal((2, 3, 8), rng), normal((2, 3, 6), rng)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Add", ["m", "bias"], ["s"]),
             helper.make_node("Add", ["s", "res"], ["t"]),
             helper.make_node("Relu", ["t"], ["y"])]
    model = make_model(nodes, {"x": x, "res": res}, ["y"],
                       {"w": normal((8, 6), rng), "bias": normal((6,), rng)})
    _check_fused(model, {"x": x, "res": res})
    vec = normal((8,), rng)
    nodes = [helper.make_node("MatMul", ["v", "w"], ["m"]),      # 1-D A: output drops M
             helper.make_node("Add", ["m", "bias"], ["y"])]
    _check_fused(make_model(nodes, {"v": vec}, ["y"],
                            {"w": normal((4, 8, 6), rng), "bias": normal((4, 1), rng)}),
                 {"v": vec})
    a = normal((5, 4), rng)
    nodes = [helper.make_node("Gemm", ["a", "b"], ["g"], transB=1, alpha=0.5),
             helper.make_node("Sigmoid", ["g"], ["y"])]
    _check_fused(make_model(nodes, {"a": a}, ["y"], {"b": normal((3, 4), rng)}), {"a": a})


# -- Einsum -------------------------------------------------------------------------------------

EINSUM_CASES = [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("ij->ji", [(3, 4)]),
    ("ij->i", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ii->", [(3, 3)]),
    ("ii->i", [(3, 3)]),
    ("i,j->ij", [(3,), (4,)]),
    ("i,i", [(5,), (5,)]),
    ("ij,jk", [(2, 3), (3, 4)]),
    ("ba", [(2, 3)]),
    ("Ab,bA->A", [(2, 3), (3, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("...ii->...i", [(2, 3, 3)]),
    ("b...,b...->...", [(2, 3, 4), (2, 1, 4)]),
    ("bij , bjk -> bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij,ij->ij", [(1, 3), (2, 3)]),
    ("ij->", [(0, 3)]),
    ("ik,kj->ij", [(2, 0), (0, 3)]),
    ("", [()]),
    (",ij->ij", [(), (2, 3)]),
]


@pytest.mark.parametrize("equation,shapes", EINSUM_CASES)
def test_einsum(equation, shapes, rng):
    ins = {f"x{k}": normal(s, rng) for k, s in enumerate(shapes)}
    check_node("Einsum", ins, {"equation": equation}, opset=12)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float64])
def test_einsum_dtypes(dtype, rng):
    ins = {"a": rng.integers(-9, 9, (2, 3, 4)).astype(dtype),
           "b": rng.integers(-9, 9, (2, 4)).astype(dtype)}
    check_node("Einsum", ins, {"equation": "bij,bj->bi"}, opset=12)


def test_einsum_reference_only(rng):
    # onnxruntime's shape inference rejects '...' of different ranks and lacks int8 Einsum.
    check_node("Einsum", {"a": normal((2, 1, 3, 4), rng), "b": normal((5, 4, 2), rng)},
               {"equation": "...ij,...jk->...ik"}, opset=12, oracle="reference")
    check_node("Einsum", {"a": rng.integers(-9, 9, (3, 30)).astype(np.int8)},
               {"equation": "ij->i"}, opset=12, oracle="reference")


@pytest.mark.parametrize("equation,shapes", [
    ("ij,jk->ik", [(2, 3)]),              # terms and inputs differ in number
    ("ij->ik", [(2, 3)]),                 # output letter in no input
    ("ij->ii", [(2, 3)]),                 # output letter repeated
    ("ijk->i", [(2, 3)]),                 # term longer than the rank
    ("i.j->i", [(2, 3)]),                 # a lone '.'
    ("i......->i", [(2, 3)]),             # two ellipses
    ("i1->i", [(2, 3)]),                  # not a letter
    ("ij-i", [(2, 3)]),                   # stray '-'
    ("i->i->i", [(2,)]),                  # two arrows
    ("ij,jk->ik", [(2, 3), (4, 5)]),      # j has sizes 3 and 4
    ("...ij->ij", [(5, 2, 3)]),           # '...' dims with no '...' in the output
    ("ij->...ij", [(2, 3)]),              # output '...' without an input '...'
])
def test_einsum_malformed(equation, shapes, rng):
    ins = {f"x{k}": normal(s, rng) for k, s in enumerate(shapes)}
    model = make_model([helper.make_node("Einsum", list(ins), ["y"], equation=equation)],
                       ins, ["y"], opset=12)
    with pytest.raises(ShapeError):
        ember.compile(model)


# -- Det ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (2, 4, 4), (2, 0, 2, 2), (0, 0)])
def test_det(shape, rng):
    check_node("Det", {"x": normal(shape, rng)})


def test_det_singular_and_pivoting():
    x = np.array([[[1, 2], [2, 4]], [[0, 1], [1, 0]], [[0, 0], [0, 0]]], np.float32)
    check_node("Det", {"x": x})
    check_node("Det", {"x": x.astype(np.float64)}, oracle="reference")


# -- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,shapes,attrs", [
    ("MatMul", [(3, 4), (5, 6)], {}),
    ("MatMul", [(2, 3, 4), (3, 4, 5)], {}),
    ("MatMul", [(), (3,)], {}),
    ("Gemm", [(2, 3, 4), (4, 5)], {}),
    ("Gemm", [(3, 4), (5, 4)], {}),
    ("Gemm", [(3, 4), (4, 5), (2, 5)], {}),
    ("Gemm", [(3, 4), (4, 5), (1, 3, 5)], {}),
    ("Det", [(3, 4)], {}),
])
def test_shape_errors(op, shapes, attrs, rng):
    ins = {f"x{k}": normal(s, rng) for k, s in enumerate(shapes)}
    model = make_model([helper.make_node(op, list(ins), ["y"], **attrs)], ins, ["y"])
    with pytest.raises(ShapeError):
        ember.compile(model)


@pytest.mark.parametrize("shapes", [((3, 17), (17, 5)), ((2, 4, 8), (8, 3)), ((7,), (7, 2))])
def test_matmul_float16_accumulates_in_float(shapes, rng):
    a = rng.standard_normal(shapes[0]).astype(np.float16)
    b = rng.standard_normal(shapes[1]).astype(np.float16)
    check_node("MatMul", {"a": a, "b": b}, rtol=2e-3, atol=2e-3)
