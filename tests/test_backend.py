"""ember.backend: the onnx.backend API, including specialization on shape-giving inputs."""
import numpy as np
import pytest
from onnx import helper

import ember.backend as backend
from conftest import make_model


def test_run_node_and_device():
    node = helper.make_node("Relu", ["x"], ["y"])
    x = np.array([-1.0, 2.0], np.float32)
    (y,) = backend.run_node(node, [x])
    np.testing.assert_array_equal(y, [0.0, 2.0])
    assert backend.supports_device("CPU") and not backend.supports_device("CUDA")


def test_shape_given_as_input_specializes_per_value():
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    x = np.arange(6, dtype=np.float32)
    model = make_model([node], {"x": x, "shape": np.array([2, 3], np.int64)}, ["y"])
    rep = backend.prepare(model)
    for shape in ([2, 3], [3, 2], [2, 3]):
        (y,) = rep.run([x, np.array(shape, np.int64)])
        np.testing.assert_array_equal(y, x.reshape(shape))
    assert len(rep._specialized) == 2     # one compiled model per distinct shape value


def test_unsupported_without_runtime_inputs_raises_at_prepare():
    node = helper.make_node("NonMaxSuppression", ["b", "s"], ["y"])
    model = make_model([node], {"b": np.zeros((1, 2, 4), np.float32),
                                "s": np.zeros((1, 1, 2), np.float32)}, ["y"])
    with pytest.raises(backend.UnsupportedError if hasattr(backend, "UnsupportedError")
                       else Exception, match="not supported"):
        backend.prepare(model)
