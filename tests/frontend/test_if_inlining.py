"""If with a condition known at compile time compiles as the branch it takes."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import ember
from conftest import check_model, make_model


def _branch(name: str, op: str, extra_const: float):
    """A branch computing op(x, c) from the outer `x` and a branch-local constant."""
    c = helper.make_node("Constant", [], [f"{name}_c"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [], [extra_const]))
    body = helper.make_node(op, ["x", f"{name}_c"], [f"{name}_out"])
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)
    return helper.make_graph([c, body], name, [], [out])


def _if_model(cond: bool | None):
    """y = If(cond, then: x + 1, else: x * 3); cond a constant, or a graph input when None."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    node = helper.make_node("If", ["cond"], ["y"], then_branch=_branch("then", "Add", 1.0),
                            else_branch=_branch("else", "Mul", 3.0))
    if cond is None:
        return make_model([node], {"x": x, "cond": np.array(True)}, ["y"]), x
    return make_model([node], {"x": x}, ["y"], {"cond": np.array(cond)}), x


@pytest.mark.parametrize("cond", [True, False])
def test_constant_condition_takes_its_branch(cond):
    model, x = _if_model(cond)
    (y,) = check_model(model, {"x": x})
    np.testing.assert_array_equal(y, x + 1 if cond else x * 3)


def test_branch_returning_an_outer_value():
    x = np.ones((2,), np.float32)
    passthrough = helper.make_graph([], "then", [], [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, None)])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=passthrough,
                            else_branch=_branch("else", "Mul", 3.0))
    model = make_model([node], {"x": x}, ["y"], {"cond": np.array(True)})
    np.testing.assert_array_equal(ember.compile(model)(x), x)


def test_runtime_condition_is_reported():
    model, _ = _if_model(None)
    with pytest.raises(ember.EmberError, match="If"):
        ember.compile(model)
