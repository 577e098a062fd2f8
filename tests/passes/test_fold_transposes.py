"""fold-transposes: golden before/after graphs, what must stay, and folded products against
onnxruntime (through the whole pipeline, one and two threads)."""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import make_model, run_ort
from pass_helpers import apply, before_after, golden, graph_of, verify_passes  # noqa: F401
from ember.errors import EmberError
from ember.frontend.onnx import import_onnx
from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType, Value, const_value
from ember.ops.registry import get_op
from ember.passes.fold_transposes import FoldTransposes
from ember.passes.pipeline import pass_names, run_pipeline

N = helper.make_node
HEADS = [0, 2, 1, 3]          # [1, S, H, D] -> [1, H, S, D]
HEADS_T = [0, 2, 3, 1]        # [1, S, H, D] -> [1, H, D, S]


def shape_const(*dims):
    return np.array(dims, np.int64)


def attention_scores():
    """BERT's scores: Q and K projections split into heads, Q.K^T per head."""
    nodes = [N("Reshape", ["q", "heads"], ["qh"]), N("Transpose", ["qh"], ["qt"], perm=HEADS),
             N("Reshape", ["k", "heads"], ["kh"]), N("Transpose", ["kh"], ["kt"], perm=HEADS_T),
             N("MatMul", ["qt", "kt"], ["y"])]
    return nodes, {"heads": shape_const(1, 5, 3, 4)}


def test_attention_scores_golden():
    nodes, inits = attention_scores()
    graph = graph_of(nodes, {"q": (1, 5, 12), "k": (1, 5, 12)}, ["y"], inits)
    before, after = before_after(FoldTransposes(), graph)
    assert before == golden("""
        graph(%0: f32[1,5,12], %1: f32[1,5,12]) {
          %2 = Reshape(%0, const i64[4]) {allowzero=0} : f32[1,5,3,4]
          %3 = Transpose(%2) {perm=[0, 2, 1, 3]} : f32[1,3,5,4]
          %4 = Reshape(%1, const i64[4]) {allowzero=0} : f32[1,5,3,4]
          %5 = Transpose(%4) {perm=[0, 2, 3, 1]} : f32[1,3,4,5]
          %6 = MatMul(%3, %5) : f32[1,3,5,5]
          return %6
        }
        """)
    # The MatMul reads the Reshapes (views of q and k) at permuted strides.
    assert after == golden("""
        graph(%0: f32[1,5,12], %1: f32[1,5,12]) {
          %2 = Reshape(%0, const i64[4]) {allowzero=0} : f32[1,5,3,4]
          %3 = Reshape(%1, const i64[4]) {allowzero=0} : f32[1,5,3,4]
          %4 = MatMul(%2, %3) {perm0=[0, 2, 1, 3], perm1=[0, 2, 3, 1]} : f32[1,3,5,5]
          return %4
        }
        """)
    assert apply(FoldTransposes(), graph) == after      # a second run changes nothing


def test_what_stays():
    # %3 has a second reader (Relu); %5 is a graph output; %7 feeds Gemm's C. The default perm
    # (no attribute) of the last one folds as [1, 0] into the MatMul reading it.
    nodes = [N("Transpose", ["a"], ["t1"], perm=[1, 0]), N("MatMul", ["t1", "b"], ["y1"]),
             N("Relu", ["t1"], ["r"]),
             N("Transpose", ["a"], ["t2"], perm=[1, 0]), N("MatMul", ["b", "t2"], ["y2"]),
             N("Transpose", ["c"], ["t3"]), N("Gemm", ["a", "a", "t3"], ["y3"], transB=1),
             N("Transpose", ["b"], ["t4"]), N("MatMul", ["t4", "b"], ["y4"])]
    graph = graph_of(nodes, {"a": (4, 4), "b": (4, 4), "c": (4, 4)},
                     ["y1", "r", "y2", "t2", "y3", "y4"])
    assert apply(FoldTransposes(), graph) == golden("""
        graph(%0: f32[4,4], %1: f32[4,4], %2: f32[4,4]) {
          %3 = Transpose(%0) {perm=[1, 0]} : f32[4,4]
          %4 = MatMul(%3, %1) : f32[4,4]
          %5 = Relu(%3) : f32[4,4]
          %6 = Transpose(%0) {perm=[1, 0]} : f32[4,4]
          %7 = MatMul(%1, %6) : f32[4,4]
          %8 = Transpose(%2) : f32[4,4]
          %9 = Gemm(%0, %0, %8) {alpha=1, beta=1, transA=0, transB=1} : f32[4,4]
          %10 = MatMul(%1, %1) {perm0=[1, 0]} : f32[4,4]
          return %4, %5, %7, %6, %9, %10
        }
        """)


def test_gemm_flips_its_transpose_flags():
    nodes = [N("Transpose", ["a"], ["ta"], perm=[1, 0]), N("Transpose", ["b"], ["tb"], perm=[1, 0]),
             N("Gemm", ["ta", "tb", "c"], ["y"], transB=1)]
    graph = graph_of(nodes, {"a": (4, 5), "b": (4, 6), "c": (6,)}, ["y"])
    assert apply(FoldTransposes(), graph) == golden("""
        graph(%0: f32[4,5], %1: f32[4,6], %2: f32[6]) {
          %3 = Gemm(%0, %1, %2) {alpha=1, beta=1, transA=1, transB=0} : f32[5,6]
          return %3
        }
        """)


def test_one_transpose_read_twice_by_one_matmul():
    nodes = [N("Transpose", ["x"], ["t"], perm=[0, 2, 1]), N("MatMul", ["t", "t"], ["y"])]
    graph = graph_of(nodes, {"x": (2, 3, 3)}, ["y"])
    assert apply(FoldTransposes(), graph) == golden("""
        graph(%0: f32[2,3,3]) {
          %1 = MatMul(%0, %0) {perm0=[0, 2, 1], perm1=[0, 2, 1]} : f32[2,3,3]
          return %1
        }
        """)


def test_in_the_pipeline_after_epilogue_fusion():
    names = pass_names(3)
    assert names.index("fuse-epilogues") < names.index("fold-transposes") \
        < names.index("fuse-elementwise")
    # The scores MatMul keeps its fused scale (a multiplication after div-to-mul) and mask and
    # reads both transposes in place.
    nodes, inits = attention_scores()
    nodes += [N("Div", ["y", "scale"], ["s"]), N("Add", ["s", "mask"], ["out"])]
    inits["scale"] = np.array(2.0, np.float32)
    graph = graph_of(nodes, {"q": (1, 5, 12), "k": (1, 5, 12), "mask": (1, 1, 1, 5)}, ["out"],
                     inits)
    text = apply(FoldTransposes(), run_pipeline(graph, check=True))
    assert "Transpose" not in text
    assert ("MatMul(%3, %4, const f32[], %2) {epilogue={s0=Mul(x0,x1); s1=Add(s0,x2)}, "
            "perm0=[0, 2, 1, 3], perm1=[0, 2, 3, 1]} : f32[1,3,5,5]") in text


def check_folded(nodes, feeds, outputs=("y",), transposes_left=0, threads=1, inits=None):
    """Compile through the whole pipeline with `threads` and compare with onnxruntime; also
    count the Transposes left in the optimized graph."""
    model = make_model(nodes, feeds, list(outputs), inits)
    graph = run_pipeline(import_onnx(model), check=True)
    assert sum(n.op == "Transpose" for n in graph.nodes) == transposes_left
    got = ember.compile(model, threads=threads).run(feeds)
    for name, want in zip(outputs, run_ort(model, feeds)):
        assert got[name].shape == want.shape and got[name].dtype == want.dtype, name
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], want, err_msg=name)


def normal(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("seq,heads,dim", [(5, 3, 4), (37, 4, 16)])
def test_attention_values(rng, threads, seq, heads, dim):
    # scores = Q.K^T (K transposed [0,2,3,1]) and context = P.V (V transposed [0,2,1,3]),
    # then back to [1, S, H*D]: only that last Transpose (not a MatMul input) stays.
    nodes = [N("Reshape", ["q", "split"], ["qh"]), N("Transpose", ["qh"], ["qt"], perm=HEADS),
             N("Reshape", ["k", "split"], ["kh"]), N("Transpose", ["kh"], ["kt"], perm=HEADS_T),
             N("Reshape", ["v", "split"], ["vh"]), N("Transpose", ["vh"], ["vt"], perm=HEADS),
             N("MatMul", ["qt", "kt"], ["s"]), N("Softmax", ["s"], ["p"], axis=-1),
             N("MatMul", ["p", "vt"], ["c"]), N("Transpose", ["c"], ["ct"], perm=HEADS),
             N("Reshape", ["ct", "merge"], ["y"])]
    inits = {"split": shape_const(1, seq, heads, dim), "merge": shape_const(1, seq, heads * dim)}
    feeds = {n: normal(rng, 1, seq, heads * dim) for n in "qkv"}
    check_folded(nodes, feeds, transposes_left=1, threads=threads, inits=inits)


@pytest.mark.parametrize("threads", [1, 2])
def test_both_operands_transposed(rng, threads):
    nodes = [N("Transpose", ["a"], ["ta"], perm=HEADS), N("Transpose", ["b"], ["tb"], perm=HEADS),
             N("MatMul", ["ta", "tb"], ["y"])]
    check_folded(nodes, {"a": normal(rng, 2, 19, 3, 7), "b": normal(rng, 2, 7, 3, 21)},
                 threads=threads)


@pytest.mark.parametrize("a_shape,perm,b_shape,transposed", [
    ((4, 2, 6), [1, 0, 2], (3, 1, 6, 5), 0),     # batch [2] of A' broadcast against B's [3, 1]
    ((3, 1, 5, 4), None, (6, 4), 1),             # B' = [4, 6] under A's batch
    ((5, 2, 1, 4), [2, 1, 0, 3], (3, 1, 4, 7), 0),  # A' = [1, 2, 5, 4]: its size-1 dim broadcast
    ((7, 5, 3), [2, 1, 0], (7, 4), 0),           # A' = [3, 5, 7] (its batch dim was the last)
])
def test_batch_broadcasting(rng, a_shape, perm, b_shape, transposed):
    attrs = {} if perm is None else {"perm": perm}
    x, w = ("b", "a") if transposed else ("a", "b")
    operands = ["a", "t"] if transposed else ["t", "b"]
    nodes = [N("Transpose", [x], ["t"], **attrs), N("MatMul", operands, ["y"])]
    feeds = {x: normal(rng, *(b_shape if transposed else a_shape)),
             w: normal(rng, *(a_shape if transposed else b_shape))}
    check_folded(nodes, feeds)


@pytest.mark.parametrize("side", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_2d_transposes(rng, side, dtype):
    # float64 and int64 take the plain strided loop nest, float32 the packed GEMM.
    mats = {"a": (9, 6), "b": (6, 11)}
    src = "ab"[side]
    feeds = {n: (normal(rng, *(s[::-1] if n == src else s)) * 4).astype(dtype)
             for n, s in mats.items()}
    operands = ["t", "b"] if side == 0 else ["a", "t"]
    nodes = [N("Transpose", [src], ["t"], perm=[1, 0]), N("MatMul", operands, ["y"])]
    check_folded(nodes, feeds)


def test_transposed_matrix_times_vector(rng):
    nodes = [N("Transpose", ["a"], ["t"], perm=[0, 2, 1]), N("MatMul", ["t", "v"], ["y"]),
             N("MatMul", ["v", "a"], ["z"])]
    check_folded(nodes, {"a": normal(rng, 4, 3, 5), "v": normal(rng, 3)}, ("y", "z"))


def test_second_reader_and_output_keep_the_transpose(rng):
    nodes = [N("Transpose", ["a"], ["t"], perm=[0, 2, 1]), N("MatMul", ["t", "b"], ["y"]),
             N("Relu", ["t"], ["r"]), N("Transpose", ["c"], ["u"], perm=[1, 0, 2]),
             N("MatMul", ["a", "u"], ["z"])]
    feeds = {"a": normal(rng, 3, 4, 5), "b": normal(rng, 3, 4, 6), "c": normal(rng, 5, 3, 6)}
    check_folded(nodes, feeds,
                 ("y", "r", "z", "u"), transposes_left=2)


@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_with_transposed_inputs(rng, threads):
    nodes = [N("Transpose", ["a"], ["ta"], perm=[1, 0]), N("Transpose", ["b"], ["tb"], perm=[1, 0]),
             N("Gemm", ["ta", "tb", "c"], ["y"], transB=1, alpha=0.5, beta=2.0),
             N("Transpose", ["b"], ["tb2"]), N("Gemm", ["a", "tb2"], ["z"], transA=1, transB=1)]
    feeds = {"a": normal(rng, 13, 17), "b": normal(rng, 13, 23), "c": normal(rng, 23)}
    check_folded(nodes, feeds, ("y", "z"), threads=threads)


def test_constant_operand_with_a_perm_is_packed_transposed(rng):
    # fold-constants folds a Transpose of a constant before this pass, but a MatMul with a
    # constant input and a perm must still read it transposed.
    w = normal(rng, 2, 6, 4)
    x = Value(TensorType(dt.F32, (2, 3, 4)))
    out = Value(TensorType(dt.F32, (2, 3, 6)))
    node = Node("MatMul", [x, const_value(w, dt.F32)], [out], {"perm1": [0, 2, 1]}, opset=17)
    op = get_op("MatMul")
    assert op.infer(node) == [out.type]
    w2 = Value(TensorType(dt.F32, (6, 4)))
    flat = Node("MatMul", [x, const_value(w[0], dt.F32)], [w2], {"perm1": [1, 0]}, opset=17)
    mat_a, mat_b = op.constant_matrices(flat, op.problem(flat))
    assert mat_a is None and np.array_equal(mat_b, w[0].T)


def test_models_cannot_set_the_perm_attributes():
    nodes = [N("MatMul", ["a", "b"], ["y"], perm0=[1, 0])]
    with pytest.raises(EmberError, match="perm0 is not an ONNX MatMul attribute"):
        graph_of(nodes, {"a": (2, 3), "b": (2, 4)}, ["y"])
