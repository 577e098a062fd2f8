"""Regressions found by tools/fuzz_models.py: each hostile model gives a clear EmberError that
names the node and op (or compiles and computes the right thing), never another exception,
a crash or an out-of-bounds access in the generated C."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.errors import EmberError, GraphError, ModelFormatError, ShapeError, UnsupportedError

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def build(node: onnx.NodeProto, inputs: dict[str, tuple[int, tuple[int, ...]]],
          inits: dict[str, np.ndarray] | None = None, opset: int = 17) -> onnx.ModelProto:
    vis = [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()]
    outs = [onnx.ValueInfoProto(name=n) for n in node.output if n]
    graph = helper.make_graph([node], "fuzz", vis, outs,
                              [numpy_helper.from_array(a, n) for n, a in (inits or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def expect(model: "onnx.ModelProto | bytes", error: type[EmberError], *texts: str) -> None:
    with pytest.raises(error) as info:
        ember.compile(model)
    message = str(info.value)
    for text in texts:
        assert text in message, message


# -- signatures checked even for ops newer than the model's opset, and variadic inputs --------

def test_required_input_empty_when_op_is_newer_than_opset():
    # CenterCropPad is opset 18; at opset 17 there was no schema to check the node against.
    node = helper.make_node("CenterCropPad", ["", "s"], ["y"], name="crop")
    model = build(node, {}, {"s": np.array([2, 2], np.int64)}, opset=17)
    expect(model, GraphError, "'crop'", "CenterCropPad", "required input 0")


def test_required_input_empty_at_opset_1():
    node = helper.make_node("NegativeLogLikelihoodLoss", ["", "t"], ["y"], name="nll")
    expect(build(node, {"t": (I64, (3,))}, opset=1), GraphError, "'nll'", "required input 0")


@pytest.mark.parametrize("op,inputs", [("Einsum", ["", "b"]), ("Concat", ["a", ""])])
def test_empty_variadic_input(op, inputs):
    attrs = {"equation": "ij,jk->ik"} if op == "Einsum" else {"axis": 0}
    node = helper.make_node(op, inputs, ["y"], name="v", **attrs)
    ins = {n: (F, (2, 2)) for n in inputs if n}
    expect(build(node, ins), GraphError, "'v'", op, "is empty")


def test_op_newer_than_opset_still_compiles():
    node = helper.make_node("CenterCropPad", ["x", "s"], ["y"], name="crop")
    m = ember.compile(build(node, {"x": (F, (4, 5))}, {"s": np.array([2, 3], np.int64)}, opset=17))
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    np.testing.assert_array_equal(m(x), x[1:3, 1:4])


# -- corrupt protobuf text and opset versions ----------------------------------------------------

def _relu_bytes() -> bytes:
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    return build(node, {"x": (F, (2,))}).SerializeToString()


def test_op_type_not_utf8():
    data = _relu_bytes().replace(b"Relu", b"\xb0elu")
    expect(data, ModelFormatError, "not valid UTF-8")


@pytest.mark.parametrize("version", [-1, 1 << 40])
def test_opset_version_out_of_range(version):
    model = onnx.load_from_string(_relu_bytes())
    model.opset_import[0].version = version
    expect(model, ModelFormatError, f"opset version {version}")


# -- shapes and attribute values ------------------------------------------------------------------

def test_loss_with_no_classes():
    # N*D targets but C = 0: every target would index past the scores (a heap overflow).
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["y"], name="nll")
    expect(build(node, {"x": (F, (3, 0)), "t": (I64, (3,))}), ShapeError, "'nll'", "C = 0")


def test_loss_with_float_targets():
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["x", "t"], ["y"], name="sce")
    expect(build(node, {"x": (F, (3, 4)), "t": (F, (3,))}), ShapeError, "'sce'", "target")


@pytest.mark.parametrize("limit", [np.inf, np.nan])
def test_range_with_non_finite_limit(limit):
    node = helper.make_node("Range", ["s", "l", "d"], ["y"], name="range")
    inits = {"s": np.array(0, np.float32), "l": np.array(limit, np.float32),
             "d": np.array(1, np.float32)}
    expect(build(node, {}, inits), ShapeError, "'range'", "finite")


def test_range_with_empty_start():
    node = helper.make_node("Range", ["s", "l", "d"], ["y"], name="range")
    inits = {"s": np.zeros(0, np.int64), "l": np.array(4, np.int64), "d": np.array(1, np.int64)}
    expect(build(node, {}, inits), ShapeError, "'range'", "scalars")


@pytest.mark.parametrize("op,attrs,text", [
    ("BitShift", {"direction": "SIDEWAYS"}, "direction 'SIDEWAYS'"),
    ("Gelu", {"approximate": "bogus"}, "approximate 'bogus'"),
])
def test_unknown_mode_string(op, attrs, text):
    dtype = TensorProto.UINT8 if op == "BitShift" else F
    names = ["a", "b"] if op == "BitShift" else ["a"]
    node = helper.make_node(op, names, ["y"], name="m", **attrs)
    expect(build(node, {n: (dtype, (3,)) for n in names}, opset=20), UnsupportedError,
           "'m'", text)


@pytest.mark.parametrize("op,indices,axis", [
    ("Gather", np.array([[0, 7]], np.int64), 0),
    ("GatherElements", np.array([[0, 1, 2], [-6, 0, 0]], np.int64), 0),
    ("GatherND", np.array([[4, 0]], np.int64), None),
])
def test_constant_index_out_of_range(op, indices, axis):
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node(op, ["x", "i"], ["y"], name="g", **attrs)
    expect(build(node, {"x": (F, (4, 3))}, {"i": indices}), ShapeError, "'g'", op,
           "out of range")


def test_constant_negative_index_in_range_still_works():
    node = helper.make_node("Gather", ["x", "i"], ["y"], name="g", axis=0)
    m = ember.compile(build(node, {"x": (F, (4, 3))}, {"i": np.array([-1, 0], np.int64)}))
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(m(x), x[[-1, 0]])


# -- pools: explicit padding of a whole window or more ------------------------------------------

@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
def test_pool_pads_not_smaller_than_kernel_are_refused(op):
    # A 2x2 window padded by 1000 would make a huge output of pure padding windows.
    node = helper.make_node(op, ["x"], ["y"], name="pool", kernel_shape=[2, 2],
                            pads=[1000, 0, 0, 0])
    expect(build(node, {"x": (F, (1, 1, 4, 4))}), ShapeError, "'pool'", op, "smaller than the kernel")


# -- folding an op Ember has no kernel for: sized by ONNX shape inference first -----------------

def test_huge_constant_of_an_op_without_kernel_is_refused_before_folding(monkeypatch):
    import ember.frontend.onnx as importer

    def never(node):
        raise AssertionError("the evaluator ran")
    monkeypatch.setattr(importer, "evaluate_node", never)
    # Pretend ConstantOfShape has no kernel, so only ONNX shape inference can size its result.
    real_get_op = importer.get_op
    monkeypatch.setattr(importer, "get_op",
                        lambda op: None if op == "ConstantOfShape" else real_get_op(op))
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill")
    model = build(node, {}, {"shape": np.array([2**20, 2**20], np.int64)})
    expect(model, UnsupportedError, "'fill'", "ConstantOfShape", "too large to fold")
