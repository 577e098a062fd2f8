"""Per-kernel threads: a kernel with little work runs on one thread, the rest on the model's."""
from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.lower.schedule import PARALLEL_MIN_FLOPS, Schedule, kernel_schedule

pytestmark = pytest.mark.parallel_threshold


def test_small_kernels_run_serially():
    two = Schedule(threads=2)
    assert kernel_schedule(two, PARALLEL_MIN_FLOPS - 1).threads == 1
    assert kernel_schedule(two, PARALLEL_MIN_FLOPS) == two
    assert kernel_schedule(Schedule(threads=1), 10 * PARALLEL_MIN_FLOPS).threads == 1


def test_only_the_big_kernel_of_a_model_is_parallel():
    # a 256x256x256 MatMul (33.6 MFLOP) and a Relu over 256 values (256 "flops")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]),
         helper.make_node("ReduceSum", ["y"], ["s"], keepdims=0),
         helper.make_node("Relu", ["s"], ["out"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 256])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = ember.compile(model, threads=2)
    parallel = re.findall(r"ember_parallel\(k\d+_\w+_part", compiled.source)
    assert len(parallel) == 1
    x = rng.standard_normal((256, 256)).astype(np.float32)
    np.testing.assert_allclose(compiled(x), max(float((x @ w).sum()), 0.0), rtol=1e-4)
