"""The host thread pool (render/pool.py): kernels split among threads give the one-thread
results however the calls arrive (repeated, from several caller threads at once, in a forked
child), for both kinds of kernel (lower/parallel.py): claim (a GEMM) and team (Winograd)."""
from __future__ import annotations

import multiprocessing
import os
import sys
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember


def _model(rng):
    """A Winograd conv (a team kernel: phases and barriers), then a MatMul (a claim kernel)."""
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32) * 0.1
    m = rng.standard_normal((16, 24)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("MatMul", ["c", "m"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 16, 24])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(m, "m")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def compiled():
    rng = np.random.default_rng(0)
    model = _model(rng)
    one, two = ember.compile(model), ember.compile(model, threads=2)
    assert "ember_parallel(" in two.source and "ember_barrier(" in two.source
    return one, two


def _inputs(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 32, 16, 16)).astype(np.float32)


def test_repeated_runs_match_one_thread(compiled):
    one, two = compiled
    for seed in range(50):
        x = _inputs(seed)
        np.testing.assert_array_equal(two(x), one(x))


def test_caller_threads_at_once(compiled):
    """Callers that overlap share the pool: one at a time takes it, the others run their
    kernels' parts themselves (or wait, for a team kernel); every result is right."""
    one, two = compiled
    inputs = [_inputs(seed) for seed in range(4)]
    want = [one(x) for x in inputs]
    errors = []

    def caller(k: int) -> None:
        try:
            for _ in range(25):
                np.testing.assert_array_equal(two.run({"x": inputs[k]})["y"], want[k])
        except AssertionError as e:
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_starts_its_own_workers(compiled):
    one, two = compiled
    x = _inputs(7)
    two(x)                                    # the parent's workers are running
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                              # the child: only the forking thread survives
        ok = np.array_equal(two(x), one(x))
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="needs fork")
def test_team_kernel_leaving_its_loop_early(rng):
    """A Winograd batch whose second image holds a NaN: every part must leave the image loop
    at the same barrier and redo the batch through the GEMM (a quicker part once read the
    flag its next image's transform had set, and the parts' barriers fell out of step)."""
    x = rng.standard_normal((2, 32, 16, 16)).astype(np.float32)
    x[1, 3, 5, 7] = np.nan
    model = _model(np.random.default_rng(1))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 2
    one, two = ember.compile(model), ember.compile(model, threads=2)
    want = one(x)

    def runs() -> None:
        for _ in range(500):
            if not np.array_equal(two(x), want, equal_nan=True):
                os._exit(1)
        os._exit(0)

    child = multiprocessing.get_context("fork").Process(target=runs)   # a hang fails, not hangs
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == 0, "the threads hung" if child.exitcode is None or child.exitcode < 0 \
        else "results differ"
