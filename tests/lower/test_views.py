"""View ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout) share their input's
buffer instead of copying it — except where the caller's output buffer must hold the bytes."""
import re

import numpy as np
from onnx import helper

import ember
from conftest import check_model, make_model


def _kernels(model) -> list[str]:
    return re.findall(r"static void k\d+_(\w+)\(", model.source)


def test_views_inside_the_graph_cost_no_kernel_and_no_arena(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Flatten", ["a"], ["b"], axis=1),
             helper.make_node("Unsqueeze", ["b", "ax"], ["c"]),
             helper.make_node("Identity", ["c"], ["d"]),
             helper.make_node("Sigmoid", ["d"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], {"ax": np.array([0], np.int64)})
    check_model(model, {"x": x})
    compiled = ember.compile(model, opt_level=0)       # no fusion: only the views are at stake
    assert _kernels(compiled) == ["relu", "sigmoid"]
    assert compiled.arena_bytes == 128                 # one 96-byte buffer, 64-byte aligned


def test_view_that_is_a_graph_output_is_copied(rng):
    x = rng.standard_normal((2, 6)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Reshape", ["a", "s"], ["y"]),
             helper.make_node("Neg", ["a"], ["z"])]
    model = make_model(nodes, {"x": x}, ["y", "z"], {"s": np.array([3, 4], np.int64)})
    check_model(model, {"x": x})
    assert "reshape" in _kernels(ember.compile(model, opt_level=0))


def test_views_of_inputs_and_constants(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    w = rng.standard_normal((12,)).astype(np.float32)
    nodes = [helper.make_node("Reshape", ["x", "s"], ["xv"]),
             helper.make_node("Reshape", ["w", "s"], ["wv"]),
             helper.make_node("Mul", ["xv", "wv"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], {"s": np.array([2, 6], np.int64), "w": w})
    check_model(model, {"x": x})
