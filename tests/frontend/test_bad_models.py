"""Broken models: each must raise a clear EmberError, never a raw Python exception.

Every model is built here (no binary files). Each is checked through ember.compile(path) and
through the command line: exit status 2, one `ember: error:` line, no traceback, nothing on
disk overwritten.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.cli import main
from ember.errors import (EmberError, GraphError, ModelFormatError, ShapeError,
                          UnsupportedError)

F = TensorProto.FLOAT


def vi(name: str, shape=(2, 3), elem=F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=()) -> bytes:
    graph = helper.make_graph(nodes, "broken", inputs, outputs, list(inits))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    *extra_opsets])
    return proto.SerializeToString()


def good_model() -> bytes:
    return model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x")], [vi("y")])


def tensor(name: str, dims, raw: bytes | None = None, elem=F) -> TensorProto:
    """A TensorProto with the given dims and raw bytes, consistent or not."""
    t = TensorProto(name=name, data_type=elem)
    t.dims.extend(dims)
    if raw is not None:
        t.raw_data = raw
    return t


def add_with(init: TensorProto, shape=(4,)) -> bytes:
    """x + <init>: a model whose only problem is the initializer."""
    return model([helper.make_node("Add", ["x", init.name], ["y"], name="add")],
                 [vi("x", shape)], [vi("y")], [init])


HUGE = 1 << 40      # elements: 4 TiB of float32, which nothing may try to allocate

# name -> (model bytes, expected error, texts the message must contain)
CASES: dict[str, tuple[bytes, type[EmberError], tuple[str, ...]]] = {
    "truncated": (good_model()[:len(good_model()) // 2], ModelFormatError, ("truncated",)),
    "random-bytes": (np.random.default_rng(0).bytes(256), ModelFormatError, ("ONNX",)),
    "text-file": (b"name,value\nalpha,1\n# not a model\n", ModelFormatError, ("ONNX",)),
    "empty": (b"", ModelFormatError, ("no graph",)),
    "cycle": (model([helper.make_node("Add", ["x", "b"], ["a"], name="first"),
                     helper.make_node("Relu", ["a"], ["b"], name="second")],
                    [vi("x")], [vi("a")]), GraphError, ("cycle", "'first'")),
    "dangling-input": (model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")],
                             [vi("x")], [vi("y")]), GraphError, ("'ghost'", "'add'", "Add")),
    "raw-data-short": (add_with(tensor("w", [4], b"\0" * 12)), ModelFormatError, ("'w'", "[4]")),
    "raw-data-long": (add_with(tensor("w", [4], b"\0" * 20)), ModelFormatError, ("'w'",)),
    "negative-input-dim": (model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", (2, -3))],
                                 [vi("y")]), ShapeError, ("'x'", "negative")),
    "negative-initializer-dim": (add_with(tensor("w", [-1])), ShapeError, ("'w'", "negative")),
    "huge-input": (model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", (1 << 20, 1 << 20))],
                         [vi("y")]), ShapeError, ("'x'", "bytes")),
    "huge-initializer": (add_with(tensor("w", [HUGE])), ShapeError, ("'w'", "bytes")),
    "huge-constant-of-shape": (model(
        [helper.make_node("ConstantOfShape", ["s"], ["c"], name="fill"),
         helper.make_node("Add", ["x", "c"], ["y"])], [vi("x", (1,))], [vi("y")],
        [numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "s")]),
        EmberError, ("'fill'",)),
    "unknown-op": (model([helper.make_node("FrobnicateV2", ["x"], ["y"], name="frob")],
                         [vi("x")], [vi("y")]), UnsupportedError, ("FrobnicateV2", "'frob'")),
    "unknown-domain": (model([helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.evil")],
                             [vi("x")], [vi("y")], extra_opsets=[helper.make_opsetid("com.evil", 1)]),
                       UnsupportedError, ("com.evil", "'r'")),
    "several-unsupported": (model(
        [helper.make_node("FooOp", ["x"], ["a"], name="n1"),
         helper.make_node("BarOp", ["x"], ["b"], name="n2"),
         helper.make_node("BazOp", ["x"], ["c"], name="n3")],
        [vi("x")], [vi("a"), vi("b"), vi("c")]), UnsupportedError, ("FooOp", "BarOp", "BazOp")),
    "duplicate-output-name": (model([helper.make_node("Relu", ["x"], ["y"], name="one"),
                                     helper.make_node("Neg", ["x"], ["y"], name="two")],
                                    [vi("x")], [vi("y")]), GraphError, ("'y'", "twice")),
    "duplicate-input-name": (model([helper.make_node("Relu", ["x"], ["y"])],
                                   [vi("x"), vi("x")], [vi("y")]), GraphError, ("'x'", "twice")),
    "unbound-symbolic-dim": (model([helper.make_node("Relu", ["x"], ["y"])],
                                   [vi("x", (3, "batch"))], [vi("y")]),
                             ShapeError, ("'x'", "dim 1", "'batch'")),
    "output-never-produced": (model([helper.make_node("Relu", ["x"], ["y"])], [vi("x")],
                                    [vi("y"), vi("nowhere")]), GraphError, ("'nowhere'",)),
    "attribute-wrong-type": (model([helper.make_node("LeakyRelu", ["x"], ["y"], name="leaky",
                                                     alpha="0.1")], [vi("x")], [vi("y")]),
                             GraphError, ("'alpha'", "STRING", "FLOAT", "'leaky'")),
    "too-few-inputs": (model([helper.make_node("Add", ["x"], ["y"], name="lonely")], [vi("x")],
                             [vi("y")]), GraphError, ("'lonely'", "Add", "1 input")),
    "too-many-inputs": (model([helper.make_node("Relu", ["x", "x"], ["y"], name="greedy")],
                              [vi("x")], [vi("y")]), GraphError, ("'greedy'", "Relu")),
    "required-input-empty": (model([helper.make_node("Add", ["x", ""], ["y"], name="holey")],
                                   [vi("x")], [vi("y")]), GraphError, ("'holey'", "required")),
    "reshape-incompatible": (model(
        [helper.make_node("Reshape", ["x", "s"], ["y"], name="squash")], [vi("x", (2, 3))],
        [vi("y")], [numpy_helper.from_array(np.array([4, 2], np.int64), "s")]),
        ShapeError, ("'squash'", "Reshape")),
}


@pytest.fixture(params=sorted(CASES))
def case(request, tmp_path):
    data, error, texts = CASES[request.param]
    path = tmp_path / f"{request.param}.onnx"
    path.write_bytes(data)
    return path, error, texts


def test_compile_raises_clear_error(case):
    path, error, texts = case
    with pytest.raises(error) as info:
        ember.compile(path)
    message = str(info.value)
    lines = message.splitlines()
    assert len(lines) == 1 + len(info.value.problems), message
    for text in texts:
        assert text in message, f"{text!r} not in {message!r}"


def test_several_unsupported_ops_listed_in_one_error(tmp_path):
    data = CASES["several-unsupported"][0]
    with pytest.raises(UnsupportedError) as info:
        ember.compile(data)
    assert len(info.value.problems) == 3
    for op, node in (("FooOp", "n1"), ("BarOp", "n2"), ("BazOp", "n3")):
        assert any(op in p and repr(node) in p for p in info.value.problems)


def test_cli_exits_2_without_touching_disk(case, tmp_path, monkeypatch, capsys):
    path, _, _ = case
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "existing"
    out.mkdir()
    (out / "manifest.json").write_text("precious")
    model_bytes = path.read_bytes()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["compile", str(path), "-o", str(out)]) == 2
    assert main(["compile", str(path)]) == 2           # default output dir
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(line.startswith(("ember: error: ", "  - ")) for line in err.splitlines()), err
    assert err.count("ember: error: ") == 3
    assert (out / "manifest.json").read_text() == "precious"
    assert path.read_bytes() == model_bytes
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["truncated", "several-unsupported"])
def test_cli_process_exit_status(name, tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(CASES[name][0])
    proc = subprocess.run([sys.executable, "-m", "ember", "compile", str(path)], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("ember: error: ") and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad.ember").exists()


def test_huge_tensors_refused_without_allocating(tmp_path):
    """Under an address-space limit of 1 GiB more than the interpreter already uses, a
    4 TiB tensor must be refused by shape, never attempted (an attempt would raise
    MemoryError, not an EmberError)."""
    names = ["huge-input", "huge-initializer", "huge-constant-of-shape"]
    for name in names:
        (tmp_path / f"{name}.onnx").write_bytes(CASES[name][0])
    script = textwrap.dedent(f"""
        import resource, sys
        import ember, ember.driver
        from ember.errors import EmberError
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
        for name in {names!r}:
            try:
                ember.compile(name + ".onnx")
            except EmberError as e:
                assert "MemoryError" not in str(e), e
                print(name, type(e).__name__)
            else:
                sys.exit(name + " compiled")
    """)
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to measure the address space")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                          "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [w for n in names for w in (n, "ShapeError")]
