"""The benchmark harness: JSON fields, output agreement with onnxruntime, missing peers, CLI
errors and the zoo's Markdown. Runs are few (--runs 3): nothing here asserts on timings."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ember import cli
from ember.bench import harness, worker, zoo
from ember.bench.models import BenchError, BenchModel
from ember.bench.report import Section, busy_note, format_table, write_json
from ember.bench.runners import OnnxRuntimeRunner, OpenVinoRunner
from ember.bench.stats import geomean, max_abs_diff, split_runs, summarize

QUICK = ["--runs", "3", "--warmup", "1", "--min-seconds", "0"]
ORT_ONLY = harness.Settings(runs=3, warmup=1, peers=("onnxruntime",))


def ember_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ember.cli", "bench", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_json_has_every_field_and_ember_matches_onnxruntime(tmp_path):
    out = tmp_path / "mlp.json"
    proc = ember_bench("mlp", *QUICK, "--peers", "onnxruntime", "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[mlp t=1] round 3/3" in proc.stderr           # progress goes to stderr
    doc = json.loads(out.read_text())
    assert doc["kind"] == "ember-bench" and doc["model"] == "mlp"
    assert (doc["threads"], doc["runs"], doc["warmup"]) == (1, 3, 1)
    assert doc["inputs"] == {"input": {"dtype": "float32", "shape": [1, 784]}}
    machine = doc["machine"]
    for key in ("cpu", "cores", "date", "python", "versions", "git"):
        assert key in machine, key
    assert machine["versions"]["onnxruntime"] and machine["versions"]["numpy"]
    results = {r["runtime"]: r for r in doc["results"]}
    assert list(results) == ["ember", "onnxruntime"]
    for r in results.values():
        assert r["status"] == "ok" and r["runs"] == 3 and len(r["times_ms"]) == 3
        assert 0 < r["median_ms"] <= r["p90_ms"] and r["load_s"] > 0 and r["peak_rss_mib"] > 0
        assert r["ratio"] > 0
    assert results["onnxruntime"]["ratio"] == 1.0 and results["onnxruntime"]["max_abs_diff"] == 0
    assert results["ember"]["max_abs_diff"] < 1e-4
    assert results["ember"]["details"]["kernels"] >= 1
    # The printed table: one row per runtime that ran.
    lines = proc.stdout.splitlines()
    assert "median ms" in lines[1] and "ratio vs ORT" in lines[1]
    assert lines[2].split()[0] == "ember" and lines[3].split()[0] == "onnxruntime"


def test_missing_peers_are_reported_not_fatal(monkeypatch):
    monkeypatch.setattr(OpenVinoRunner, "modules", ("ember_no_such_module",))
    settings = harness.Settings(runs=3, warmup=1, peers=("onnxruntime", "openvino"))
    result = harness.bench_model("mlp", settings)
    ov = result.results[2]
    assert (ov.runtime, ov.status) == ("openvino", "not installed")
    assert "ember_no_such_module" in ov.reason and ov.times_s == []
    assert result.get("ember").ratio is not None
    table = format_table(result)
    assert "openvino: not installed: needs ember_no_such_module" in table


def test_without_onnxruntime_there_are_no_ratios(monkeypatch):
    monkeypatch.setattr(OnnxRuntimeRunner, "modules", ("ember_no_such_module",))
    result = harness.bench_model("mlp", ORT_ONLY)
    mine = result.get("ember")
    assert mine.stats()["runs"] == 3 and mine.ratio is None and mine.max_abs_diff is None
    assert any("onnxruntime did not run" in n for n in result.notes)
    assert "onnxruntime did not run" in format_table(result)


def failing(message: str, user_error: bool = False):
    def action():
        raise harness.WorkerError(message, user_error, ["a problem"])
    return action


def test_a_failing_peer_is_dropped_but_failing_ember_is_an_error(tmp_path):
    model = BenchModel("m", "zoo", tmp_path / "m.onnx", {})
    session = harness._Session(model, ORT_ONLY, tmp_path, lambda line: None)
    session.results["onnxruntime"] = harness.RuntimeResult("onnxruntime", "ok")
    assert session.call("onnxruntime", failing("RuntimeError: boom")) is None
    assert (session.results["onnxruntime"].status,
            session.results["onnxruntime"].reason) == ("failed", "RuntimeError: boom")
    with pytest.raises(BenchError, match="unsupported op") as info:
        session.call("ember", failing("model 'm': unsupported op\n  - a problem", True))
    assert info.value.problems == ["a problem"]
    with pytest.raises(RuntimeError, match="Ember failed on m: the ember worker exited"):
        session.call("ember", failing("the ember worker exited with status -11"))


def write_symbolic_model(path: Path) -> Path:
    """y = relu(x) with a symbolic batch dim."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ("N", 4))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ("N", 4))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_model_file_with_input_shape(tmp_path):
    path = write_symbolic_model(tmp_path / "relu.onnx")
    result = harness.bench_model(str(path), ORT_ONLY, {"x": (3, 4)})
    assert result.model.source == "file" and result.model.inputs_json()["x"]["shape"] == [3, 4]
    assert result.get("ember").max_abs_diff == 0


@pytest.mark.parametrize("args, text", [
    (["nope.onnx"], "model file 'nope.onnx' does not exist"),
    (["no_such_zoo_model"], "neither a model file nor a zoo model name"),
    (["relu.onnx"], "symbolic dims ['N', 4]; give its shape with --input-shape x=DIMS"),
    (["relu.onnx", "--input-shape", "z=1x4"], "--input-shape names no input"),
    (["mlp", "--json", "missing/dir/out.json"], "its directory does not exist")])
def test_cli_user_errors_are_one_line(args, text, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_symbolic_model(tmp_path / "relu.onnx")
    assert cli.main(["bench", *args]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("ember: error: ")
    assert text in lines[0]


def test_ember_refusing_the_model_is_a_user_error(tmp_path):
    graph = helper.make_graph([helper.make_node("NotAnOp", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2,))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2,))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "bad.onnx")
    proc = ember_bench("bad.onnx", *QUICK, cwd=tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert lines[-2].startswith("ember: error: ") and "1 problem" in lines[-2]
    assert "NotAnOp" in lines[-1]


@pytest.mark.parametrize("args, text", [(["--runs", "0"], "expected an integer >= 1"),
                                        (["--runs", "many"], "expected an integer >= 1"),
                                        (["--warmup", "-1"], "expected an integer >= 0"),
                                        (["--peers", "tflite"], "unknown peer(s) 'tflite'")])
def test_cli_bad_options_exit_2(args, text, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", "mlp", *args])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert info.value.code == 2 and len(errors) == 1 and text in errors[0]


def test_zoo_driver_writes_json_markdown_and_history(tmp_path, capsys):
    extra = Section("gemm", "GEMM throughput", {"gflops": 1.5}, "| size | GFLOP/s |\n| --- | ---: |")
    argv = ["--models", "mlp", "--threads", "1", *QUICK, "--peers", "onnxruntime",
            "--out", str(tmp_path)]
    assert zoo.main(argv, sections=[lambda: extra]) == 0
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["kind"] == "ember-zoo-bench" and doc["settings"]["models"] == ["mlp"]
    assert [(e["model"], e["threads"]) for e in doc["entries"]] == [("mlp", 1)]
    assert doc["sections"]["gemm"]["data"] == {"gflops": 1.5}
    assert set(doc["summary"]["geomean_vs_ort"]["ember"]) == {"1"}
    md = (tmp_path / "latest.md").read_text()
    assert "| model | threads | Ember ms | ORT ms | Ember/ORT | max diff Ember vs ORT |" in md
    assert "| mlp | 1 |" in md and "Geometric mean of Ember/ORT: 1 thread" in md
    assert "## GEMM throughput" in md and "| size | GFLOP/s |" in md
    assert md in capsys.readouterr().out
    history = (tmp_path / "history.jsonl").read_text().splitlines()
    line = json.loads(history[0])
    assert len(history) == 1 and line["geomean_ember_vs_ort"]["1"] > 0 and line["failed"] == []


def test_zoo_driver_rejects_unknown_models(capsys):
    with pytest.raises(SystemExit) as info:
        zoo.main(["--models", "mlp,imagenet_giant"])
    assert info.value.code == 2 and "imagenet_giant" in capsys.readouterr().err


def test_stats():
    assert split_runs(50, 10) == [5] * 10 and split_runs(3, 10) == [1, 1, 1]
    assert split_runs(7, 3) == [3, 2, 2]
    s = summarize([0.001, 0.002, 0.003, 0.004, 0.010])
    assert s["median_ms"] == pytest.approx(3.0) and s["runs"] == 5
    assert s["p90_ms"] == pytest.approx(7.6) and s["min_ms"] == pytest.approx(1.0)
    assert geomean([2.0, 8.0]) == pytest.approx(4.0) and geomean([]) is None


def test_json_is_strict(tmp_path):
    write_json(tmp_path / "x.json", {"diff": math.inf, "runs": [1.5, math.nan]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"diff": "inf", "runs": [1.5, "nan"]}


def test_busy_machines_are_flagged():
    assert busy_note({"load_average": [2.5, 1, 1], "usable_cores": 2})
    assert busy_note({"load_average": [1.5, 1, 1], "usable_cores": 2})      # a test run just ended
    assert busy_note({"load_average": [0.5, 1, 1], "usable_cores": 2}) == []
    assert busy_note({}) == []


def test_max_abs_diff_handles_special_values():
    a = np.array([1.0, np.inf, np.nan, 5.0], np.float32)
    assert max_abs_diff([a], [a.copy()]) == 0
    assert max_abs_diff([a], [np.array([1.5, np.inf, np.nan, 5.0], np.float32)]) == 0.5
    assert max_abs_diff([a], [np.array([1.0, np.inf, 0.0, 5.0], np.float32)]) == math.inf
    assert max_abs_diff([a], [a[:2]]) == math.inf and max_abs_diff([a], []) == math.inf
    assert max_abs_diff([np.array([3], np.int64)], [np.array([1], np.int64)]) == 2
    assert max_abs_diff([np.zeros((0, 3))], [np.zeros((0, 3))]) == 0


def test_small_models_get_runs_enough():
    """--runs is a floor: where the warm-up says the slowest runtime would time less than
    min_seconds, the runs grow to reach it (capped), never shrink."""
    quick = {"ember": [1e-4] * 3, "onnxruntime": [2e-4] * 3}
    assert harness.planned_runs(harness.Settings(runs=50, min_seconds=1.0), quick) == 5000
    assert harness.planned_runs(harness.Settings(runs=50, min_seconds=1.0),
                                {"ember": [1e-6]}) == harness.MAX_RUNS
    assert harness.planned_runs(harness.Settings(runs=50, min_seconds=1.0), {"ember": [0.1]}) == 50
    assert harness.planned_runs(harness.Settings(runs=50), quick) == 50
    assert harness.planned_runs(harness.Settings(runs=50, min_seconds=1.0), {}) == 50


def test_each_batch_is_warmed_by_time_before_it_is_timed():
    class Counting:
        calls = 0

        def run(self):
            Counting.calls += 1
            time.sleep(0.001)
            return []
    start = time.perf_counter()
    times = worker.time_runs(Counting(), 3, warm_s=0.02)
    assert len(times) == 3 and Counting.calls > 3
    assert time.perf_counter() - start - sum(times) >= 0.02     # the untimed runs
