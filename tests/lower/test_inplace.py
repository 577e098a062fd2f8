"""In-place kernels: an elementwise output takes the buffer of an operand that nothing reads
afterwards (same shape, same element size), never a graph input's, and the aliased pair loses
`restrict`."""
import re

import numpy as np
from onnx import TensorProto, helper

import ember
from conftest import make_model, run_ort
from ember.lower.memory_plan import Buffer, plan_memory


def _run(model, feeds):
    """Ember at opt_level 0 (no fusion: each node its own kernel) against onnxruntime."""
    compiled = ember.compile(model, opt_level=0)
    kept = {k: v.copy() for k, v in feeds.items()}
    got = compiled.run(feeds)
    for info, want in zip(compiled.outputs, run_ort(model, kept)):
        np.testing.assert_allclose(got[info.name], want, rtol=1e-6, atol=1e-6)
    for name, value in feeds.items():
        np.testing.assert_array_equal(value, kept[name])     # the caller's input is untouched
    return compiled


def _params(compiled, op: str) -> str:
    return re.search(rf"static void k\d+_{op}\((.*?)\)", compiled.source).group(1)


def _in_place(compiled, op: str) -> bool:
    """Whether the (first) kernel for `op` writes over an input: its out0 is not restrict."""
    return "*restrict out0" not in _params(compiled, op)


def test_chain_runs_in_one_buffer(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Neg", ["a"], ["b"]),
             helper.make_node("Abs", ["b"], ["c"]),
             helper.make_node("Sigmoid", ["c"], ["y"])]
    compiled = _run(make_model(nodes, {"x": x}, ["y"]), {"x": x})
    assert compiled.arena_bytes == 128                 # a, b, c: one 96-byte buffer
    assert _in_place(compiled, "neg") and _in_place(compiled, "abs")
    assert not _in_place(compiled, "relu")             # reads the caller's input


def test_operand_read_later_is_not_overwritten(rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    nodes = [helper.make_node("Exp", ["x"], ["a"]),
             helper.make_node("Neg", ["a"], ["b"]),       # a is read again by the Add
             helper.make_node("Add", ["a", "b"], ["c"]),  # both die here: c takes one
             helper.make_node("Mul", ["c", "c"], ["d"]),  # the same buffer twice, same offsets
             helper.make_node("Sigmoid", ["d"], ["y"])]
    compiled = _run(make_model(nodes, {"x": x}, ["y"]), {"x": x})
    assert compiled.arena_bytes == 128                 # a and b (60 bytes each) at once
    assert not _in_place(compiled, "neg")
    assert _in_place(compiled, "add") and _in_place(compiled, "mul")
    assert "restrict" not in _params(compiled, "mul")  # c read twice: both inputs alias out0


def test_broadcast_operand_and_wider_result_get_their_own_buffer(rng):
    x = rng.standard_normal((4, 8)).astype(np.float32)
    row = rng.standard_normal((1, 8)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["r"], ["a"]),              # [1, 8], broadcast below
             helper.make_node("Relu", ["x"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["c"]),          # takes b's buffer, not a's
             helper.make_node("Cast", ["c"], ["d"], to=TensorProto.DOUBLE),   # 8-byte elements
             helper.make_node("Cast", ["d"], ["y"], to=TensorProto.FLOAT)]
    compiled = _run(make_model(nodes, {"x": x, "r": row}, ["y"]), {"x": x, "r": row})
    assert _in_place(compiled, "add") and not _in_place(compiled, "cast")
    assert compiled.arena_bytes == 128 + 256          # b = c, then d beside c (a below d)


def test_int8_requantize_chain(rng):
    x = rng.integers(-128, 128, (2, 16), dtype=np.int8)
    scale = np.array(0.05, np.float32)
    zero = np.array(3, np.int8)
    nodes = [helper.make_node("Neg", ["x"], ["a"]),
             helper.make_node("DequantizeLinear", ["a", "s", "z"], ["f"]),
             helper.make_node("QuantizeLinear", ["f", "s", "z"], ["b"]),
             helper.make_node("Abs", ["b"], ["c"]),
             helper.make_node("Neg", ["c"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], {"s": scale, "z": zero})
    compiled = ember.compile(model, opt_level=0)
    np.testing.assert_array_equal(compiled.run({"x": x})["y"], run_ort(model, {"x": x})[0])
    assert _in_place(compiled, "abs")


def test_plan_memory_keeps_live_buffers_apart():
    """Lowest offset free of every buffer live at the same time, largest first."""
    buffers = [Buffer(1, 100, 0, 1), Buffer(2, 64, 1, 2), Buffer(3, 100, 2, 3), Buffer(4, 8, 3, 3)]
    plan = plan_memory(buffers, alignment=8)
    assert plan.offsets == {1: 0, 3: 0, 2: 104, 4: 104}
    assert plan.arena_bytes == 168 and plan.alignment == 8
    assert plan_memory(buffers).offsets[2] == 128      # 64-byte alignment by default
