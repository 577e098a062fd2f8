"""The `ember` command line: compile, run, inspect, help, and how errors are reported.

Most tests run the CLI as a process (`python -m ember.cli`); the error-path details call
ember.cli.main() in-process, which is the same code without the interpreter start-up.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember import cli

W = np.array([0.5, -1.0, 2.0, 3.0], np.float32)


def write_model(path: Path, out_names=("y", "z")) -> Path:
    """y = relu(x * w) + x, z = sigmoid(y); x has a symbolic batch dim."""
    nodes = [helper.make_node("Mul", ["x", "w"], ["a"], name="scale"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "x"], [out_names[0]], name="residual"),
             helper.make_node("Sigmoid", [out_names[0]], [out_names[1]], name="squash")]
    graph = helper.make_graph(
        nodes, "cli-test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ("N", 4))],
        [onnx.ValueInfoProto(name=n) for n in out_names], [numpy_helper.from_array(W, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def expected(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.maximum(x * W, 0) + x
    return y, 1 / (1 + np.exp(-y))


def ember_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ember.cli", *args], cwd=cwd,
                          capture_output=True, text=True)


@pytest.fixture
def onnx_path(tmp_path: Path) -> Path:
    return write_model(tmp_path / "net.onnx")


def test_version_and_help(tmp_path):
    version = subprocess.run([sys.executable, "-m", "ember", "--version"], capture_output=True,
                             text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"ember {ember.__version__}"
    top = ember_cli("--help", cwd=tmp_path)
    assert top.returncode == 0
    for word in ("compile", "run", "inspect", "examples:"):
        assert word in top.stdout


@pytest.mark.parametrize("command, options", [
    ("compile", ["--output", "--input-shape", "--threads", "--target"]),
    ("run", ["--input", "--random", "--save"]),
    ("inspect", ["--after", "--input-shape", "fuse-elementwise"])])
def test_command_help(command, options, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    for option in options:
        assert option in out, option


@pytest.mark.parametrize("args, text", [([], "usage:"),
                                        (["inspect", "m.onnx", "--after", "nope"], "invalid choice"),
                                        (["compile", "m.onnx", "--threads", "0"], "positive"),
                                        (["compile", "m.onnx", "--input-shape", "x"], "NAME=")])
def test_usage_errors(args, text, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2 and text in capsys.readouterr().err


def test_compile_then_run(onnx_path, tmp_path):
    out = tmp_path / "build" / "net"
    proc = ember_cli("compile", str(onnx_path), "-o", str(out), "--input-shape", "x=3x4",
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for text in ("'x': float32 [3, 4]", "'y': float32 [3, 4]", "'z'", "kernels:", "arena:",
                 f"weights: {ember.load(out).weight_bytes} bytes", str(out)):
        assert text in proc.stdout, text
    assert {p.name for p in out.iterdir()} == {"model.so", "weights.bin", "model.c", "manifest.json"}

    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = ember_cli("run", str(out), "--input", f"x={tmp_path / 'x.npy'}", "--save",
                     str(tmp_path / "outs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    y, z = expected(x)
    np.testing.assert_allclose(np.load(tmp_path / "outs" / "y.npy"), y, rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "outs" / "z.npy"), z, rtol=1e-5)
    assert "'y': float32 [3, 4]" in proc.stdout
    assert f"max {y.max():.6g}" in proc.stdout
    # The loaded artifact is the same model the Python API loads.
    np.testing.assert_allclose(ember.load(out)(x)[0], y, rtol=1e-5)


def test_run_random_and_unnamed_input(onnx_path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compile", str(onnx_path), "--input-shape", "x=2x4"]) == 0
    assert (tmp_path / "net.ember" / "manifest.json").is_file()     # the default output dir
    assert cli.main(["run", "net.ember", "--random", "--seed", "3"]) == 0
    assert "random inputs (seed 3)" in capsys.readouterr().out
    x = np.ones((2, 4), np.float32)
    np.save(tmp_path / "ones.npy", x)
    assert cli.main(["run", "net.ember", "--input", "ones.npy"]) == 0   # one input: no name
    y, _ = expected(x)
    assert f"min {y.min():.6g}  max {y.max():.6g}" in capsys.readouterr().out


def test_run_reports_input_problems(onnx_path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compile", str(onnx_path), "--input-shape", "x=2x4"]) == 0
    np.save(tmp_path / "wrong.npy", np.zeros((5, 5), np.float32))
    np.savez(tmp_path / "arch.npz", x=np.zeros((2, 4), np.float32))
    (tmp_path / "junk.npy").write_text("not numpy")
    capsys.readouterr()
    for args, text in ((["run", "net.ember"], "--random"),
                       (["run", "net.ember", "--input", "wrong.npy"], "shape [5, 5]"),
                       (["run", "net.ember", "--input", "q=wrong.npy"], "names no input"),
                       (["run", "net.ember", "--input", "missing.npy"], "missing.npy"),
                       (["run", "net.ember", "--input", "arch.npz"], ".npz"),
                       (["run", "net.ember", "--input", "junk.npy"], "junk.npy"),
                       (["run", str(tmp_path / "nothing-here"), "--random"], "nothing-here")):
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("ember: error: ") and err.count("\n") == 1, err
        assert text in err, (text, err)


def test_compile_never_overwrites_unnamed_output(onnx_path, tmp_path):
    first = ember_cli("compile", str(onnx_path), "--input-shape", "x=1x4", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    manifest = tmp_path / "net.ember" / "manifest.json"
    manifest.write_text("keep me")
    again = ember_cli("compile", str(onnx_path), "--input-shape", "x=1x4", cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    assert manifest.read_text() == "keep me"
    # Naming it with -o is the explicit permission to replace it.
    named = ember_cli("compile", str(onnx_path), "--input-shape", "x=1x4", "-o", "net.ember",
                      cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    assert json.loads(manifest.read_text())["inputs"][0]["shape"] == [1, 4]


def test_compile_refuses_foreign_directories_and_files(onnx_path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    foreign = tmp_path / "src"
    foreign.mkdir()
    (foreign / "model.c").write_text("/* my own code */")
    (tmp_path / "file").write_text("a file")
    for target, text in ((foreign, "holds no Ember model"), (tmp_path / "file", "not a directory")):
        assert cli.main(["compile", str(onnx_path), "--input-shape", "x=1x4", "-o", str(target)]) == 2
        assert text in capsys.readouterr().err
    assert (foreign / "model.c").read_text() == "/* my own code */"
    assert (tmp_path / "file").read_text() == "a file"


def test_compile_replaces_symlinks_instead_of_writing_through_them(onnx_path, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["compile", str(onnx_path), "--input-shape", "x=1x4", "-o", str(out)]) == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("outside")
    (out / "model.c").unlink()
    (out / "model.c").symlink_to(victim)
    assert cli.main(["compile", str(onnx_path), "--input-shape", "x=1x4", "-o", str(out)]) == 0
    assert victim.read_text() == "outside"
    assert not (out / "model.c").is_symlink()


def test_saved_output_names_cannot_escape(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_model(tmp_path / "evil.onnx", out_names=("../../escape", "Y/../.."))
    assert cli.main(["compile", str(path), "--input-shape", "x=1x4"]) == 0
    (tmp_path / "saved").mkdir()
    assert cli.main(["run", "evil.ember", "--random", "--save", "saved"]) == 0
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [
        "Y_.._...npy", "_.._escape.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.ember", "evil.onnx", "saved"]


def test_output_file_names_are_safe_and_distinct():
    names = cli.output_file_names(["y", "Y", "a/b", "..", "", "x\n\x1b", "y"])
    assert names == ["y.npy", "Y_2.npy", "a_b.npy", "output3.npy", "output4.npy", "x__.npy",
                     "y_3.npy"]


def test_parse_input_shape():
    assert cli.parse_input_shape("x=1x3x224x224") == ("x", (1, 3, 224, 224))
    assert cli.parse_input_shape("a=b=2,3") == ("a=b", (2, 3))
    assert cli.parse_input_shape("s=") == ("s", ())
    for bad in ("x", "=1x2", "x=1xA", "x=-1x2"):
        with pytest.raises(Exception):
            cli.parse_input_shape(bad)


def test_inspect_shows_nodes_costs_and_memory_plan(onnx_path, tmp_path):
    proc = ember_cli("inspect", str(onnx_path), "--input-shape", "x=2x4", "--after",
                     "eliminate-dead", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "after eliminate-dead: 4 node(s)" in out
    assert "[0] %1 = Mul(%0, const f32[4]) : f32[2,4]" in out
    assert "# node 'scale': 8 flops, reads 48 bytes, writes 32 bytes" in out
    assert re.search(r"memory plan: peak arena \d+ bytes, weights \d+ bytes in 1 constant", out)
    # Mul's and Relu's results live in the arena; Mul's dies where Relu reads it, so Relu
    # writes in place over it: one buffer holds both, from node 0 until Add reads it.
    rows = {value: (int(offset), int(size), (int(first), int(last))) for value, offset, size,
            first, last in re.findall(r"^  (%\d+(?:=%\d+)*) +(\d+) +(\d+)  \[(\d+), (\d+)\]$",
                                      out, re.M)}
    assert rows == {"%1=%2": (0, 32, (0, 2))}


def test_inspect_full_pipeline_shows_fusion(onnx_path, tmp_path, capsys):
    assert cli.main(["inspect", str(onnx_path), "--input-shape", "x=2x4"]) == 0
    out = capsys.readouterr().out
    assert "after all passes" in out
    assert "fused: 'Mul scale', 'Relu relu', 'Add residual'" in out


def test_user_errors_are_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compile", "missing.onnx"]) == 2
    assert cli.main(["inspect", str(tmp_path)]) == 2        # a directory, not a model file
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("ember: error: ") for line in err)
    assert "cannot read model file" in err[0]


def test_unsupported_ops_print_their_list(tmp_path):
    nodes = [helper.make_node(op, ["x"], [f"y{k}"], name=f"n{k}")
             for k, op in enumerate(["NotAnOp", "AlsoNotAnOp"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2,))],
                              [onnx.ValueInfoProto(name="y0"), onnx.ValueInfoProto(name="y1")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "u.onnx")
    proc = ember_cli("compile", "u.onnx", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("ember: error: ") and "2 problem(s)" in lines[0]
    assert "NotAnOp" in lines[1] and "AlsoNotAnOp" in lines[2] and len(lines) == 3


def test_internal_errors_say_bug_and_hide_traceback(onnx_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("oops")
    monkeypatch.setattr(ember, "compile", broken)
    assert cli.main(["compile", str(onnx_path), "-o", "x"]) == 1
    err = capsys.readouterr().err
    assert "this is a bug in Ember" in err and "ZeroDivisionError" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert cli.main(["--debug", "compile", str(onnx_path), "-o", "x"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert cli.main(["compile", "--debug", str(onnx_path), "-o", "x"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_verbose_reports_each_stage(onnx_path, tmp_path):
    proc = ember_cli("compile", "-v", str(onnx_path), "-o", str(tmp_path / "out"),
                     "--input-shape", "x=3x4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for stage in ("import", "optimize", "lower", "cc"):
        assert f"ember: {stage}" in proc.stderr, stage
    assert "time:    import" in proc.stdout
