"""Property tests (Hypothesis): broadcasting inference agrees with numpy, and compiled kernels
agree with numpy on random broadcastable shapes, including size-0 and size-1 dims."""
import numpy as np
from hypothesis import given, settings, strategies as st

from conftest import check_node
from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType, Value
from ember.lower.indexing import broadcast_shape
from ember.ops.registry import get_op

dims = st.integers(min_value=0, max_value=4)
shapes = st.lists(dims, min_size=0, max_size=4).map(tuple)


@st.composite
def broadcastable_pair(draw):
    out = draw(st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple))
    def operand():
        rank = draw(st.integers(0, len(out)))
        tail = out[len(out) - rank:]
        return tuple(1 if draw(st.booleans()) else d for d in tail)
    return operand(), operand()


@given(shapes, shapes)
def test_broadcast_shape_matches_numpy(a, b):
    try:
        expected = np.broadcast_shapes(a, b)
    except ValueError:
        expected = None
    assert broadcast_shape(a, b) == expected


@given(shapes, shapes)
def test_add_infer_matches_numpy_or_refuses(a, b):
    node = Node("Add", [Value(TensorType(dt.F32, a)), Value(TensorType(dt.F32, b))],
                [Value(TensorType(dt.F32, ()))], opset=17)
    try:
        expected = np.broadcast_shapes(a, b)
    except ValueError:
        try:
            get_op("Add").infer(node)
        except Exception as e:
            assert e.__class__.__name__ == "ShapeError"
        else:
            raise AssertionError("non-broadcastable shapes were accepted")
        return
    assert get_op("Add").infer(node)[0].shape == expected


@settings(max_examples=15, deadline=None)
@given(broadcastable_pair(), st.sampled_from(["Sub", "Div", "Max"]))
def test_compiled_binary_matches_onnxruntime(shapes_, op):
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 2, shapes_[0]).astype(np.float32)
    b = rng.uniform(0.5, 2, shapes_[1]).astype(np.float32)
    check_node(op, {"a": a, "b": b})
