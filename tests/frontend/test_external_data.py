"""Initializers stored in external data files load; locations escaping the model's folder do not."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import ember
from conftest import make_model


def _model_with_weight():
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    return make_model([node], {"x": np.zeros((2, 64), np.float32)}, ["y"], {"w": w}), w


def test_external_data_loads(tmp_path):
    model, w = _model_with_weight()
    path = tmp_path / "m.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.data", size_threshold=0)
    assert (tmp_path / "weights.data").exists()
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    np.testing.assert_allclose(ember.compile(path)(x), x @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("location", ["../outside.data", "/etc/passwd", "missing.data"])
def test_bad_external_location_is_refused(tmp_path, location):
    model, _ = _model_with_weight()
    init = model.graph.initializer[0]
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", location
    (tmp_path / "inner").mkdir()
    path = tmp_path / "inner" / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ember.EmberError, match="external"):
        ember.compile(path)
