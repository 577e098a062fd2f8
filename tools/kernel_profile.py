"""Time each kernel of a compiled model: the model's C with a clock read around every kernel call.

    .venv/bin/python tools/kernel_profile.py resnet8 --threads 2 [--runs 300] [--top 25]
    .venv/bin/python tools/kernel_profile.py model.onnx --threads 1

Each kernel's figure is the median over runs of its wall time in one call of the model (pooled
kernels included: the clock reads sit around `ember_parallel`). The sum of the medians is
printed beside the median whole-call time, so the clocks' own cost shows. A development tool:
the figures guide kernel work; `make bench` is what is reported.
"""
from __future__ import annotations

import argparse
import ctypes
import re
import statistics
import sys
import time

import numpy as np

import ember
from ember.options import CompileOptions
from ember.runtime.cpu import CompiledModel
from ember.runtime.toolchain import build_shared_library, host_flags

_CALL = re.compile(r"^(\s*)(?:(k\d+_\w+)\(|ember_parallel\((k\d+_\w+)_part,)")


def instrument(source: str) -> tuple[str, list[str]]:
    """`source` with every kernel call inside ember_run_with timed into ember_prof_ns[k], and the
    kernels' names in call order."""
    head, sep, body = source.partition("int ember_run_with(")
    names: list[str] = []
    out = []
    for line in body.splitlines():
        m = _CALL.match(line)
        if m:
            k = len(names)
            names.append(m.group(2) or m.group(3))
            indent = m.group(1)
            out.append(f"{indent}{{ int64_t t0_ = ember_prof_now();")
            out.append(line)
            out.append(f"{indent}ember_prof_ns[{k}] = ember_prof_now() - t0_; }}")
        else:
            out.append(line)
    clock = ("#include <time.h>\n"
             f"int64_t ember_prof_ns[{max(len(names), 1)}];\n"
             "static int64_t ember_prof_now(void) { struct timespec t;"
             " clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }\n")
    return "#define _POSIX_C_SOURCE 200809L\n" + head + clock + sep + "\n".join(out) + "\n", names


def kernel_notes(source: str) -> dict[str, str]:
    """What each kernel covers (its leading comment) and how it shares work (team/claim/1t)."""
    notes = {}
    for m in re.finditer(r"/\* (.*?) \*/\nstatic void (k\d+_\w+)\(", source):
        notes[m.group(2)] = m.group(1)
    modes = {}
    for m in re.finditer(r"ember_parallel\((k\d+_\w+)_part, a, \d+, (\d)\)", source):
        modes[m.group(1)] = "team" if m.group(2) == "1" else "claim"
    return {k: f"{modes.get(k, '1t'):5s} {v}" for k, v in notes.items()}


def instrumented(model, threads: int) -> tuple[CompiledModel, CompiledModel, list[str]]:
    """`model` (an onnx.ModelProto) compiled for `threads`; the same with every kernel call
    timed (built beside it in the compile cache); the kernels' names in call order."""
    options = CompileOptions(threads=threads)
    plain = ember.compile(model, options=options)
    source, names = instrument(plain.source)
    flags = host_flags(options.target.march, options.opt_level, options.threads)
    library = build_shared_library(source, flags, options.cache_dir)
    return plain, CompiledModel(library, plain._weights, plain.manifest, source), names


def profile(model, threads: int, runs: int) -> tuple[list[tuple[str, str, float]], float]:
    """(kernel name, notes, median microseconds) per kernel in call order, and the median
    microseconds of a whole call, of `model` (an onnx.ModelProto) compiled for `threads`."""
    from ember.zoo import random_inputs
    feeds = random_inputs(model)
    plain, timed, names = instrumented(model, threads)
    ns = (ctypes.c_int64 * max(len(names), 1)).in_dll(timed._lib, "ember_prof_ns")
    inputs = [np.ascontiguousarray(feeds[i.name]) for i in timed.inputs]
    outputs = [np.empty(o.shape, o.dtype) for o in timed.outputs]
    call = timed.bound_call(inputs, outputs)
    for _ in range(max(runs // 10, 3)):           # warm-up
        call()
    per_kernel: list[list[int]] = [[] for _ in names]
    whole = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        call()
        whole.append(time.perf_counter_ns() - t0)
        for k in range(len(names)):
            per_kernel[k].append(ns[k])
    notes = kernel_notes(plain.source)
    rows = [(name, notes.get(name, ""), statistics.median(v) / 1e3)
            for name, v in zip(names, per_kernel)]
    return rows, statistics.median(whole) / 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="an .onnx file or an ember.zoo name")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--top", type=int, default=30, help="show the slowest N kernels")
    args = p.parse_args(argv)

    import onnx
    from ember.zoo import ZOO
    model = ZOO[args.model]() if args.model in ZOO else onnx.load(args.model)
    rows, whole = profile(model, args.threads, args.runs)
    print(f"{args.model}: {len(rows)} kernels, {args.threads} thread(s), {args.runs} runs; "
          f"median call {whole:.1f} us, sum of kernel medians "
          f"{sum(r[2] for r in rows):.1f} us")
    for name, note, us in sorted(rows, key=lambda r: -r[2])[:args.top]:
        print(f"{us:9.1f} us  {name:>14s}  {note[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
