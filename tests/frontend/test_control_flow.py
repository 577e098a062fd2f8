"""Control flow with static structure: If with a compile-time condition compiles as the
branch it takes; Scan over a static length is unrolled."""
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


def _scan_model(reverse_in: int, reverse_out: int, axis: int):
    """Running sum over a sequence: state' = state + x_t; scan output = state' * 2."""
    f = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
         helper.make_node("Mul", ["s_out", "two"], ["y_t"])],
        "body",
        [helper.make_tensor_value_info("s_in", f, [3]), helper.make_tensor_value_info("x_t", f, [3])],
        [helper.make_tensor_value_info("s_out", f, [3]), helper.make_tensor_value_info("y_t", f, [3])],
        [helper.make_tensor("two", f, [], [2.0])])
    node = helper.make_node("Scan", ["s0", "x"], ["s_final", "ys"], body=body, num_scan_inputs=1,
                            scan_input_directions=[reverse_in], scan_output_directions=[reverse_out],
                            scan_input_axes=[axis], scan_output_axes=[axis])
    rng = np.random.default_rng(3)
    feeds = {"s0": rng.standard_normal(3).astype(np.float32),
             "x": rng.standard_normal((4, 3) if axis == 0 else (3, 4)).astype(np.float32)}
    return make_model([node], feeds, ["s_final", "ys"]), feeds


@pytest.mark.parametrize("reverse_in,reverse_out,axis", [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)])
def test_scan_is_unrolled(reverse_in, reverse_out, axis):
    model, feeds = _scan_model(reverse_in, reverse_out, axis)
    check_model(model, feeds)
