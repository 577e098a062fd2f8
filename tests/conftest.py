"""Shared test helpers: build one-node models, run them on Ember and on onnxruntime, compare."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import ember
from ember.lower import schedule

DEFAULT_OPSET = 17


def make_model(nodes: list[onnx.NodeProto], inputs: dict[str, np.ndarray],
               outputs: list[str], initializers: dict[str, np.ndarray] | None = None,
               opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """A model whose graph inputs have the shapes/dtypes of `inputs`; outputs typed by inference."""
    from onnx import numpy_helper
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in inputs.items()]
    outs = [onnx.ValueInfoProto(name=n) for n in outputs]   # untyped: runtimes infer it
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "test", vis, outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(model).run(None, feeds)


def check_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 1e-4,
                atol: float = 1e-5, oracle: str = "ort") -> list[np.ndarray]:
    """Compile with Ember, run, and compare every output with the oracle ("ort" or "reference")."""
    compiled = ember.compile(model)
    got = compiled.run(feeds)
    want = run_ort(model, feeds) if oracle == "ort" else run_reference(model, feeds)
    for info, expected in zip(compiled.outputs, want):
        actual = got[info.name]
        expected = np.asarray(expected)
        assert actual.shape == expected.shape, f"{info.name}: shape {actual.shape} != {expected.shape}"
        assert actual.dtype == expected.dtype, f"{info.name}: dtype {actual.dtype} != {expected.dtype}"
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=info.name)
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=info.name)
    return [got[o.name] for o in compiled.outputs]


def check_node(op: str, inputs: dict[str, np.ndarray], attrs: dict | None = None,
               n_outputs: int = 1, initializers: dict[str, np.ndarray] | None = None,
               opset: int = DEFAULT_OPSET, input_names: list[str] | None = None,
               **tolerances) -> list[np.ndarray]:
    """One node `op` over `inputs` (graph inputs) and `initializers` (constants), checked.

    `input_names` gives the node's input order, with "" for an omitted optional input;
    by default it is the graph inputs then the initializers, in order.
    """
    names = input_names if input_names is not None else list(inputs) + list(initializers or {})
    outputs = [f"y{k}" for k in range(n_outputs)]
    node = helper.make_node(op, names, outputs, **(attrs or {}))
    model = make_model([node], inputs, outputs, initializers, opset)
    return check_model(model, inputs, **tolerances)


def check_conv_chain(x: np.ndarray, inits: dict[str, np.ndarray], attrs: dict,
                     after: list[tuple[str, dict[str, np.ndarray]]] | None, threads: int,
                     marker: str, marked: bool) -> np.ndarray:
    """Conv(x, *inits) then the `after` ops (op, {name: constant second operand}), compiled
    by Ember with `threads` and compared with onnxruntime (rtol 1e-4, atol 1e-5). `marker`
    is text only one conv kernel writes: the generated C holds it exactly when `marked`."""
    inits = dict(inits)
    nodes = [helper.make_node("Conv", ["x"] + list(inits), ["c"], **attrs)]
    last = "c"
    for k, (op, extra) in enumerate(after or []):
        inits.update(extra)
        nodes.append(helper.make_node(op, [last] + list(extra), [f"a{k}"]))
        last = f"a{k}"
    model = make_model(nodes, {"x": x}, [last], inits)
    compiled = ember.compile(model, threads=threads)
    assert (marker in compiled.source) == marked
    got = compiled.run({"x": x})[last]
    want = run_ort(model, {"x": x})[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return got


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def small_kernels_threaded_too(request, monkeypatch):
    """A test compiling with threads gets them on every kernel: the threshold that keeps a
    kernel of little work on one thread (schedule.PARALLEL_MIN_FLOPS) would leave the small
    shapes of tests serial, their split loops and barriers unexercised. Tests of the
    threshold itself are marked `parallel_threshold`."""
    if request.node.get_closest_marker("parallel_threshold") is None:
        monkeypatch.setattr(schedule, "PARALLEL_MIN_FLOPS", 0)
