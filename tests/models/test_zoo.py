"""Whole models from ember.zoo: Ember's outputs against onnxruntime, and save/load round trips."""
from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest

import ember
from conftest import run_ort
from ember.zoo import ZOO, input_ranges, random_inputs

RTOL, ATOL = 1e-4, 1e-5
#: whole networks: seconds to compile and run each; the rest are blocks or tiny nets
SLOW = {"resnet18", "mobilenet_v2", "bert_encoder"}
FAST = [name for name in ZOO if name not in SLOW]


@functools.lru_cache(maxsize=None)
def zoo_model(name: str) -> onnx.ModelProto:
    return ZOO[name]()


def assert_close(name: str, actual: np.ndarray, expected: np.ndarray) -> None:
    """allclose with the largest absolute and relative errors in the failure message."""
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    diff = np.abs(actual.astype(np.float64) - expected)
    worst = np.unravel_index(np.argmax(diff - RTOL * np.abs(expected)), diff.shape) \
        if diff.size else ()
    ok = np.allclose(actual, expected, rtol=RTOL, atol=ATOL)
    assert ok, (f"{name}: max abs error {diff.max():.3g}, max rel error "
                f"{(diff / np.maximum(np.abs(expected), ATOL)).max():.3g}; worst at {worst}: "
                f"ember {actual[worst]!r} vs onnxruntime {expected[worst]!r}")


@pytest.mark.parametrize("name", FAST)
def test_builders_are_valid_and_match_declared_shapes(name):
    model = zoo_model(name)
    onnx.checker.check_model(model, full_check=True)
    outs = run_ort(model, random_inputs(model, seed=0))
    for info, value in zip(model.graph.output, outs):
        declared = tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
        assert value.shape == declared
        assert np.isfinite(value).all()
        assert 0 < np.abs(value).max() < 100, "activations should stay O(1)"


def test_random_inputs_are_seeded_and_in_range():
    model = zoo_model("bert_tiny")
    a, b = random_inputs(model, seed=3), random_inputs(model, seed=3)
    assert set(a) == {"input_ids", "attention_mask"}
    for k in a:
        assert a[k].dtype == np.int64 and np.array_equal(a[k], b[k])
    low, high = input_ranges(model)["input_ids"]
    assert (low, high) == (0, 1000)
    assert a["input_ids"].min() >= low and a["input_ids"].max() < high
    assert not np.array_equal(a["input_ids"], random_inputs(model, seed=4)["input_ids"])


def test_builders_are_deterministic():
    assert ZOO["small_cnn"]().SerializeToString() == ZOO["small_cnn"]().SerializeToString()


#: models whose graphs the optimizing passes rewrite most (BN folding, epilogue and
#: elementwise fusion): also checked unoptimized, where every op runs as its own kernel
UNOPTIMIZED = ["small_cnn", "resnet8", "bert_tiny", "efficientnet_block", "mobilenetv3_block"]


def _cases() -> list:
    cases = [(name, 3) for name in ZOO] + [(name, 0) for name in UNOPTIMIZED]
    return [pytest.param(*c, id=f"{c[0]}-O{c[1]}",
                         marks=[pytest.mark.slow] if c[0] in SLOW else []) for c in cases]


@pytest.mark.parametrize("name,opt_level", _cases())
def test_zoo_model_matches_onnxruntime(name, opt_level):
    model = zoo_model(name)
    feeds = random_inputs(model, seed=1)
    compiled = ember.compile(model, opt_level=opt_level)
    got = compiled.run(feeds)
    want = run_ort(model, feeds)
    assert [o.name for o in compiled.outputs] == [o.name for o in model.graph.output]
    for info, expected in zip(compiled.outputs, want):
        assert_close(f"{name}/{info.name}", got[info.name], expected)


@pytest.mark.parametrize("name", ["small_cnn", "bert_tiny"])
def test_save_and_load_give_identical_outputs(name, tmp_path):
    model = zoo_model(name)
    compiled = ember.compile(model)
    saved = compiled.save(tmp_path / name)
    loaded = ember.load(saved)
    assert [(i.name, i.dtype, i.shape) for i in loaded.inputs] == \
        [(i.name, i.dtype, i.shape) for i in compiled.inputs]
    assert (loaded.arena_bytes, loaded.weight_bytes) == (compiled.arena_bytes, compiled.weight_bytes)
    for seed in (0, 1):
        feeds = random_inputs(model, seed)
        before, after = compiled.run(feeds), loaded.run(feeds)
        for o in compiled.outputs:
            np.testing.assert_array_equal(after[o.name], before[o.name])


@pytest.mark.parametrize("name", ["resnet8", "ds_cnn", "bert_tiny", "mlp"])
def test_two_threads_match_onnxruntime(name):
    """Kernels split among threads (threads=2) give the single-thread tolerances."""
    model = zoo_model(name)
    feeds = random_inputs(model, seed=2)
    compiled = ember.compile(model, threads=2)
    got = compiled.run(feeds)
    for info, expected in zip(compiled.outputs, run_ort(model, feeds)):
        assert_close(f"{name}/{info.name}", got[info.name], expected)
