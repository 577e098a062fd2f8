"""fold-constants: golden before/after graphs.

The importer folds every node whose inputs are constant while it infers types, so these
graphs are built directly in the IR, as a pass that exposes constants would leave them.
"""
import numpy as np

from pass_helpers import before_after, golden
from ember.graph import dtypes as dt
from ember.graph.ir import Graph, Node, TensorType, Value, const_value
from ember.passes import fold_constants
from ember.passes.fold_constants import FoldConstants


def f32(*shape: int) -> Value:
    return Value(TensorType(dt.F32, shape))


def exposed_graph() -> Graph:
    """x * -(a + b): the constant sub-expression is two nodes deep; the result is an output."""
    x, s, n, y = f32(4), f32(4), f32(4), f32(4)
    a = const_value(np.arange(4), dt.F32)
    b = const_value(np.full(4, 0.5), dt.F32)
    nodes = [Node("Add", [a, b], [s], opset=17), Node("Neg", [s], [n], opset=17),
             Node("Mul", [x, n], [y], opset=17)]
    return Graph(nodes, [x], [y, n])


def test_folds_chains_of_constants():
    graph = exposed_graph()
    before, after = before_after(FoldConstants(), graph)
    assert before == golden("""
        graph(%0: f32[4]) {
          %1 = Add(const f32[4], const f32[4]) : f32[4]
          %2 = Neg(%1) : f32[4]
          %3 = Mul(%0, %2) : f32[4]
          return %3, %2
        }
        """)
    assert after == golden("""
        graph(%0: f32[4]) {
          %1 = Mul(%0, const f32[4]) : f32[4]
          return %1, const f32[4]
        }
        """)
    np.testing.assert_array_equal(graph.outputs[1].const, [-0.5, -1.5, -2.5, -3.5])


def test_respects_size_limit(monkeypatch):
    monkeypatch.setattr(fold_constants, "MAX_FOLD_BYTES", 8)     # 4 floats are 16 bytes
    graph = exposed_graph()
    before, after = before_after(FoldConstants(), graph)
    assert after == before


def test_leaves_random_ops():
    y, z = f32(2), f32(2)
    nodes = [Node("RandomNormal", [], [y], {"shape": [2], "dtype": 1, "mean": 0.0, "scale": 1.0},
                  opset=17),
             Node("Relu", [y], [z], opset=17)]
    before, after = before_after(FoldConstants(), Graph(nodes, [], [z]))
    assert after == before
