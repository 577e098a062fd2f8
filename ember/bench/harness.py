"""Drive one worker process per runtime through warm-up, interleaved timed rounds and checks.

Round r asks each live worker in turn (starting one further along each round) for a batch
of timed runs, so a slow drift of the machine (heat, a neighbour's load) hits every runtime
alike. Then each worker's outputs are compared with onnxruntime's, and its peak RSS read.
A peer that is missing or fails is reported, never fatal; Ember failing is an error.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ember.bench.models import BenchError, BenchModel, prepare_model
from ember.bench.runners import PEERS, REFERENCE, RUNNERS
from ember.bench.worker import INPUT_KEY_PREFIX
from ember.bench.stats import max_abs_diff, split_runs, summarize

#: timed runs are spread over at most this many interleaved rounds: the machine's speed can
#: switch between two states for seconds at a time (per-round medians of ResNet-8 0.29 or
#: 0.38-0.40 ms within one run), and with 10 rounds one runtime could draw 6 slow rounds and
#: another 3 (ResNet-8 at 1 thread read 1.07 of onnxruntime's time, 0.86-0.95 in other runs)
ROUNDS = 30
#: idle seconds before each batch of timed runs: the previous runtime's thread pool stops
#: spinning first (onnxruntime's keeps a core busy ~50 ms after its last run), so no runtime
#: starts a batch on a busy machine (Ember's 2-thread ResNet-8 ran 0.55 ms right after an
#: onnxruntime batch, 0.34 ms alone); single-threaded runtimes have no pool to wait for
SETTLE_S = 0.2
SETTLE_ONE_THREAD_S = 0.02
#: untimed running before each batch of timed runs: after an idle pause this VM runs a model
#: slowly for tens of milliseconds (the MLP at 2 threads: 85 us per call at first, 45 after
#: 20 ms, 28 after 50 ms of calls; onnxruntime's alike), so without it a runtime's batch is
#: timed largely during the ramp, and the quicker runtime, whose batch of the same run count
#: ends sooner, more so
BATCH_WARM_S = 0.1
#: variables that size the thread pools of OpenMP, MKL, OpenBLAS and friends
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    threads: int = 1
    runs: int = 50
    warmup: int = 5
    peers: tuple[str, ...] = PEERS
    seed: int = 0
    #: timed runs go past `runs` until the slowest runtime has run about this long: a small
    #: model's 50 runs take 5 ms, where one scheduling hiccup moves the median
    min_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.threads < 1 or self.runs < 1 or self.warmup < 0 or self.min_seconds < 0:
            raise BenchError(f"need threads >= 1, runs >= 1 and warmup >= 0; got threads "
                             f"{self.threads}, runs {self.runs}, warmup {self.warmup}")
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            raise BenchError(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")


@dataclass
class RuntimeResult:
    runtime: str
    #: "ok", "not installed" or "failed"
    status: str
    reason: str | None = None
    version: str | None = None
    load_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    peak_rss_mib: float | None = None
    rss_before_load_mib: float | None = None
    #: largest |this runtime's output - onnxruntime's| over every output element
    max_abs_diff: float | None = None
    #: median latency / onnxruntime's median latency
    ratio: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def stats(self) -> dict[str, float | int] | None:
        return summarize(self.times_s) if self.times_s else None

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "times_s"}
        d.update(self.stats() or {})
        d["times_ms"] = [round(t * 1e3, 6) for t in self.times_s]
        return d


@dataclass
class ModelResult:
    model: BenchModel
    settings: Settings
    results: list[RuntimeResult]
    notes: list[str]

    def get(self, runtime: str) -> RuntimeResult | None:
        return next((r for r in self.results if r.runtime == runtime and r.ok), None)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model.name, "source": self.model.source,
                "inputs": self.model.inputs_json(), "threads": self.settings.threads,
                "runs": self.settings.runs, "warmup": self.settings.warmup,
                "seed": self.settings.seed, "results": [r.to_json() for r in self.results],
                "notes": self.notes}


class WorkerError(Exception):
    def __init__(self, message: str, user_error: bool = False,
                 problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.user_error = user_error
        self.problems = problems or []


class Worker:
    """A live worker process for one runtime; `request` sends one line and reads one back."""

    def __init__(self, runtime: str, model: BenchModel, inputs: Path, threads: int,
                 workdir: Path) -> None:
        self.runtime = runtime
        self.log_path = workdir / f"{runtime}.log"
        env = dict(os.environ, **{v: str(threads) for v in THREAD_VARIABLES})
        # The worker imports the same Ember as this process, installed or not.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ember.bench.worker", runtime, "--model", str(model.path),
                 "--inputs", str(inputs), "--threads", str(threads), "--workdir", str(workdir)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        self.ready = self._read()

    def request(self, **message: Any) -> dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass                      # the worker is gone: _read says why
        return self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            status = self.proc.wait()
            raise WorkerError(f"the {self.runtime} worker exited with status {status}"
                              + self._log_tail())
        reply = json.loads(line)
        if not reply.get("ok"):
            raise WorkerError(reply.get("error", "unknown failure"), reply.get("user_error", False),
                              reply.get("problems"))
        return reply

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return (": " + " | ".join(lines[-3:])) if lines else ""

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Session:
    """The workers of one benchmark, and what happened to each runtime."""

    def __init__(self, model: BenchModel, settings: Settings, workdir: Path,
                 progress: Progress) -> None:
        self.model, self.settings, self.workdir, self.progress = model, settings, workdir, progress
        self.tag = f"[{model.name} t={settings.threads}]"
        self.results: dict[str, RuntimeResult] = {}
        self.workers: dict[str, Worker] = {}

    def start(self, runtime: str, inputs: Path) -> None:
        reason = RUNNERS[runtime].missing()
        if reason:
            self.results[runtime] = RuntimeResult(runtime, "not installed", reason)
            self.progress(f"{self.tag} {runtime}: skipped, {reason}")
            return
        self.progress(f"{self.tag} {runtime}: loading")
        self.results[runtime] = RuntimeResult(runtime, "ok")
        self.call(runtime, lambda: self._spawn(runtime, inputs))

    def _spawn(self, runtime: str, inputs: Path) -> None:
        worker = Worker(runtime, self.model, inputs, self.settings.threads, self.workdir)
        self.workers[runtime] = worker
        r = self.results[runtime]
        r.load_s, r.version = worker.ready["load_s"], worker.ready["version"]
        r.details, r.rss_before_load_mib = worker.ready["details"], worker.ready["rss_before_load_mib"]
        self.progress(f"{self.tag} {runtime}: loaded in {r.load_s:.2f} s")

    def call(self, runtime: str, action: Callable[[], Any]) -> Any:
        """Run `action` on a runtime's worker; a peer that fails is dropped, Ember is fatal."""
        try:
            return action()
        except WorkerError as e:
            worker = self.workers.pop(runtime, None)
            if worker:
                worker.close()
            if runtime == "ember":
                if e.user_error:      # Ember's own message, rebuilt: its head, then its problems
                    suffix = "".join(f"\n  - {p}" for p in e.problems)
                    head = str(e)[:len(str(e)) - len(suffix)] if str(e).endswith(suffix) else str(e)
                    raise BenchError(head, problems=e.problems) from None
                raise RuntimeError(f"Ember failed on {self.model.name}: {e}") from None
            self.results[runtime].status, self.results[runtime].reason = "failed", str(e)
            self.progress(f"{self.tag} {runtime}: failed, {str(e).splitlines()[0]}")
            return None

    def time_all(self, runs: int, offset: int, warm_s: float = 0.0) -> dict[str, list[float]]:
        """A batch of `runs` timed runs from each live worker, the first one `offset` along,
        each after `warm_s` seconds of untimed runs."""
        live = list(self.workers)
        order = live[offset % len(live):] + live[:offset % len(live)] if live else []
        batches = {}
        for runtime in order:
            time.sleep(SETTLE_S if self.settings.threads > 1 else SETTLE_ONE_THREAD_S)
            reply = self.call(runtime, lambda: self.workers[runtime].request(op="time", runs=runs,
                                                                      warm_s=warm_s))
            if reply is not None:
                batches[runtime] = reply["times"]
        return batches

    def finish(self, runtime: str) -> list[np.ndarray] | None:
        """The runtime's outputs (run once more), and its peak RSS after all its runs."""
        path = self.workdir / f"{runtime}-outputs.npz"
        if self.call(runtime, lambda: self.workers[runtime].request(op="outputs", path=str(path))):
            reply = self.call(runtime, lambda: self.workers[runtime].request(op="rss"))
            if reply is not None:
                self.results[runtime].peak_rss_mib = reply["peak_rss_mib"]
                with np.load(path, allow_pickle=False) as archive:
                    return [archive[k] for k in archive.files]
        return None

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()


def benchmark(model: BenchModel, settings: Settings, workdir: Path,
              progress: Progress = lambda line: None) -> ModelResult:
    """Time `model` on Ember and the requested peers, each in its own worker process."""
    inputs = workdir / "inputs.npz"
    # Prefixed keys: an input named "file" must not collide with savez's own parameters.
    np.savez(inputs, **{INPUT_KEY_PREFIX + name: a for name, a in model.feeds.items()})
    session = _Session(model, settings, workdir, progress)
    try:
        for runtime in ("ember", *settings.peers):
            session.start(runtime, inputs)
        warm: dict[str, list[float]] = {}
        if settings.warmup:
            progress(f"{session.tag} warm-up: {settings.warmup} run(s) each")
            warm = session.time_all(settings.warmup, 0)
        batches = split_runs(planned_runs(settings, warm), ROUNDS)
        for r, runs in enumerate(batches):
            timed = session.time_all(runs, r, BATCH_WARM_S)
            for runtime, times in timed.items():
                session.results[runtime].times_s += times
            progress(f"{session.tag} round {r + 1}/{len(batches)}: " + ", ".join(
                f"{rt} {np.median(t) * 1e3:.3f} ms" for rt, t in timed.items()))
        outputs = {rt: session.finish(rt) for rt in list(session.workers)}
    finally:
        session.close()
    results = [session.results[rt] for rt in ("ember", *settings.peers)]
    return ModelResult(model, settings, results, compare(results, outputs))


#: the most timed runs min_seconds may ask for
MAX_RUNS = 10_000


def planned_runs(settings: Settings, warm: dict[str, list[float]]) -> int:
    """settings.runs, or more where the warm-up says the slowest runtime would not reach
    settings.min_seconds of timed runs."""
    slowest = max((float(np.median(t)) for t in warm.values() if t), default=0.0)
    if slowest <= 0 or not settings.min_seconds:
        return settings.runs
    return max(settings.runs, min(MAX_RUNS, math.ceil(settings.min_seconds / slowest)))


def compare(results: list[RuntimeResult], outputs: dict[str, list[np.ndarray]]) -> list[str]:
    """Fill in ratios and output differences against onnxruntime; a note if it did not run."""
    reference = next((r for r in results if r.runtime == REFERENCE and r.ok), None)
    if reference is None or outputs.get(REFERENCE) is None:
        return [f"{REFERENCE} did not run: no ratios and no output differences"]
    base = reference.stats()["median_ms"]
    for r in results:
        if r.ok and outputs.get(r.runtime) is not None:
            r.ratio = r.stats()["median_ms"] / base if base > 0 else None
            r.max_abs_diff = max_abs_diff(outputs[r.runtime], outputs[REFERENCE])
    return []


def bench_model(spec: str, settings: Settings, input_shapes: dict[str, tuple[int, ...]] | None = None,
                progress: Progress = lambda line: None) -> ModelResult:
    """Benchmark a zoo model or an .onnx file: inputs made once, workers in a temp directory."""
    with tempfile.TemporaryDirectory(prefix="ember-bench-") as tmp:
        model = prepare_model(spec, Path(tmp), input_shapes, settings.seed)
        return benchmark(model, settings, Path(tmp), progress)
