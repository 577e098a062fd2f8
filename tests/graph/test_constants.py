"""Scalar (0-d) constants keep their shape through import, folding and const_value."""
import numpy as np
from onnx import helper

from conftest import check_model, make_model
from ember.frontend.onnx import import_onnx
from ember.graph import dtypes as dt
from ember.graph.ir import const_value


def test_const_value_keeps_scalars_0d():
    assert const_value(np.array(3), dt.I64).type.shape == ()
    assert const_value(np.array(3), dt.I64).const.shape == ()


def test_folded_scalars_stay_0d():
    # Shape -> Gather(scalar index) folds to a 0-d int64; Unsqueeze makes it a 1-element shape.
    x = np.zeros((2, 5), np.float32)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i"], ["n"], axis=0),
             helper.make_node("Add", ["n", "n"], ["m"]),
             helper.make_node("Unsqueeze", ["m", "ax"], ["shape"]),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], {"i": np.array(1, np.int64),
                                                "ax": np.array([0], np.int64)})
    graph = import_onnx(model)
    (reshape,) = graph.nodes
    assert reshape.inputs[1].const.tolist() == [10]
    (y,) = check_model(model, {"x": x})
    assert y.shape == (10,)
