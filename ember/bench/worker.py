"""One runtime in its own process, driven by the harness over stdin/stdout, one JSON per line.

    python -m ember.bench.worker RUNTIME --model M.onnx --inputs in.npz --threads N --workdir D

On start it loads the model and answers {"ok": true, "load_s": ..., "version": ...}. Then, per
request line:
    {"op": "time", "runs": k, "warm_s": w}
                                     -> untimed runs for w seconds (optional), then
                                        {"ok": true, "times": [seconds per run, ...]}
    {"op": "outputs", "path": P}     -> runs once, saves the outputs to P (.npz, graph order)
    {"op": "rss"}                    -> {"ok": true, "peak_rss_mib": ...}
A failure answers {"ok": false, "error": ..., "user_error": bool, "problems": [...]}; the
worker exits when stdin closes. Whatever a library prints goes to stderr (the harness's log
file): stdout carries the protocol alone.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ember.bench.runners import RUNNERS, Runner
from ember.errors import EmberError

#: the inputs archive keys each input as this prefix + its name
INPUT_KEY_PREFIX = "in."


def peak_rss_mib() -> float:
    """This process's peak resident set so far, in MiB.

    VmHWM, not getrusage's ru_maxrss where Linux has it: a child started by fork/vfork + exec
    inherits its parent's ru_maxrss, so that would report the harness's peak, not the worker's.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024          # kB
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / (1 << 20)   # macOS: bytes


def protocol_stream() -> TextIO:
    """Keep the real stdout for the protocol; point fd 1 at stderr for everything else."""
    fd = os.dup(sys.stdout.fileno())
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return os.fdopen(fd, "w", encoding="utf-8")


def failure(e: BaseException) -> dict[str, Any]:
    user = isinstance(e, EmberError)
    return {"ok": False, "error": str(e) if user else f"{e.__class__.__name__}: {e}",
            "user_error": user, "problems": list(e.problems) if user else []}


def time_runs(runner: Runner, runs: int, warm_s: float = 0.0) -> list[float]:
    # The collector stays out of the timed calls, for every runtime alike.
    gc.collect()
    gc.disable()
    try:
        end = time.perf_counter() + warm_s
        while time.perf_counter() < end:
            runner.run()
        times = []
        for _ in range(runs):
            start = time.perf_counter_ns()
            runner.run()
            times.append((time.perf_counter_ns() - start) * 1e-9)
        return times
    finally:
        gc.enable()


def handle(runner: Runner, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "time":
        return {"ok": True, "times": time_runs(runner, int(request["runs"]),
                                               float(request.get("warm_s", 0.0)))}
    if op == "outputs":
        outputs = runner.run()
        np.savez(request["path"], *[np.asarray(a) for a in outputs])
        return {"ok": True, "count": len(outputs)}
    if op == "rss":
        return {"ok": True, "peak_rss_mib": peak_rss_mib()}
    return {"ok": False, "error": f"unknown request {op!r}", "user_error": False, "problems": []}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ember.bench.worker")
    parser.add_argument("runtime", choices=sorted(RUNNERS))
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    out = protocol_stream()

    def send(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    with np.load(args.inputs, allow_pickle=False) as archive:
        feeds = {key[len(INPUT_KEY_PREFIX):]: archive[key] for key in archive.files}
    rss_before = peak_rss_mib()
    runner = RUNNERS[args.runtime]()
    start = time.perf_counter()
    try:
        details = runner.load(args.model, args.threads, args.workdir, feeds)
    except Exception as e:
        send(failure(e))
        return 1
    send({"ok": True, "load_s": time.perf_counter() - start, "version": runner.version(),
          "details": details, "rss_before_load_mib": rss_before})
    for line in sys.stdin:
        try:
            reply = handle(runner, json.loads(line))
        except Exception as e:
            reply = failure(e)
        send(reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
