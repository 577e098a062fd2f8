"""The host runtime: independent models sharing a cached library, save/load, input checks."""
import numpy as np
import pytest
from onnx import helper

import ember
from conftest import make_model


def _affine_model():
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    return make_model([node], {"x": np.zeros((2, 3), np.float32)}, ["y"], {"w": w}), w


def test_models_sharing_a_cached_library_keep_their_own_weights():
    model, w = _affine_model()
    a, b = ember.compile(model), ember.compile(model)
    assert a.library_path == b.library_path          # same source: one cached library
    b._weights[:] = 0                                # b's weights must not be a's
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(a(x), x @ w, rtol=1e-6)
    np.testing.assert_array_equal(b(x), np.zeros((2, 4), np.float32))


def test_save_load_roundtrip(tmp_path):
    model, w = _affine_model()
    m = ember.compile(model)
    m.save(tmp_path / "out")
    loaded = ember.load(tmp_path / "out")
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), m(x))
    assert (loaded.arena_bytes, loaded.weight_bytes) == (m.arena_bytes, m.weight_bytes)
    assert [(i.name, i.shape) for i in loaded.inputs] == [("x", (2, 3))]


def test_input_checks():
    model, _ = _affine_model()
    m = ember.compile(model)
    with pytest.raises(ember.EmberError, match="shape"):
        m(np.ones((3, 3), np.float32))
    with pytest.raises(ember.EmberError, match="missing input"):
        m.run({})
    with pytest.raises(ember.EmberError, match="unknown input"):
        m.run({"x": np.ones((2, 3), np.float32), "z": 1})


def test_concurrent_calls_from_threads_are_correct():
    from concurrent.futures import ThreadPoolExecutor
    model, w = _affine_model()
    m = ember.compile(model)
    xs = [np.full((2, 3), k, np.float32) for k in range(32)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(m, xs))
    for x, y in zip(xs, results):
        np.testing.assert_allclose(y, x @ w, rtol=1e-6)


def test_read_only_and_strided_inputs_are_accepted():
    """run() takes array addresses through a fast path for writable C-contiguous arrays; a
    read-only buffer and a non-contiguous view take the slow one and give the same result."""
    import numpy as np
    from onnx import helper

    import ember
    from conftest import make_model
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    model = ember.compile(make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": x}, ["y"]))
    read_only = np.frombuffer(x.tobytes(), np.float32).reshape(2, 3)
    strided = np.arange(12, dtype=np.float32).reshape(2, 6)[:, ::2] - 2
    for feed in (read_only, strided):
        np.testing.assert_array_equal(model.run({"x": feed})["y"], np.maximum(feed, 0))


def test_bound_call_writes_the_given_outputs():
    """bound_call (the benchmarks' call without per-call checks) reads and writes the arrays
    it was given, every time it is called, and refuses an output of the wrong type."""
    model, w = _affine_model()
    m = ember.compile(model)
    x, y = np.ones((2, 3), np.float32), np.empty((2, 4), np.float32)
    call = m.bound_call([x], [y])
    for k in range(3):
        x[:] = k
        call()
        np.testing.assert_allclose(y, x @ w, rtol=1e-6)
    with pytest.raises(ember.EmberError, match="C-contiguous float32"):
        m.bound_call([x], [np.empty((2, 4), np.float64)])
