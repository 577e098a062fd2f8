"""tools/kernel_profile.py: the instrumented model computes what the plain one does, and every
kernel call, pooled or direct, is timed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.zoo import ZOO, random_inputs

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "kernel_profile.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("kernel_profile", _TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("threads", [1, 2])
def test_every_kernel_timed(tool, threads):
    model = ZOO["small_cnn"]()
    plain = ember.compile(model, threads=threads)
    source, names = tool.instrument(plain.source)
    assert len(names) == plain.manifest["kernels"]
    assert source.count("ember_prof_now() - t0_") == len(names)
    rows, whole = tool.profile(model, threads, runs=5)
    assert [r[0] for r in rows] == names
    assert all(us > 0 for _, _, us in rows) and whole > 0
    if threads > 1:
        assert any(note.startswith(("team", "claim")) for _, note, _ in rows)


def test_instrumented_outputs_unchanged(tool):
    model = ZOO["small_cnn"]()
    feeds = random_inputs(model)
    plain, timed, _ = tool.instrumented(model, threads=2)
    for name, want in plain.run(feeds).items():
        np.testing.assert_array_equal(timed.run(feeds)[name], want)
