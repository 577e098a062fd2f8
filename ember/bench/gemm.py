"""sgemm GFLOP/s of Ember's packed GEMM next to numpy's BLAS, and this core's peak.

    python -m ember.bench.gemm            # prints a table; --json PATH writes it
    make bench                            # the same, as a section of bench/results/latest.*

The peak is derived, not looked up: clock (a chain of dependent integer adds retires one add
per cycle) x flops per cycle (a loop of independent vector FMAs, no loads, counts how many
lanes of fused multiply-add this core retires per cycle; rounded to a power of two). Both runs
are single-threaded: numpy's BLAS is pinned to one thread by the environment of this process,
which `section()` starts fresh for that reason.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

#: (label, M, N, K, constant operand): square sizes with both operands fed at run time, then
#: the zoo's products as the models run them, weights constant (packed at compile time):
#: conv layers as GEMM have M = output channels, N = output positions, K = inputs x taps.
SHAPES = [
    ("square 64", 64, 64, 64, None),
    ("square 256", 256, 256, 256, None),
    ("square 1024", 1024, 1024, 1024, None),
    ("mlp fc1", 1, 512, 784, "b"),
    ("bert q/k/v/out projection", 128, 384, 384, "b"),
    ("bert ffn up", 128, 1536, 384, "b"),
    ("bert ffn down", 128, 384, 1536, "b"),
    ("bert attention scores (x12 heads)", 128, 128, 32, None),
    ("resnet18 conv3x3 64ch 56x56", 64, 3136, 576, "a"),
    ("resnet18 conv3x3 256ch 14x14", 256, 196, 2304, "a"),
    ("resnet18 conv3x3 512ch 7x7", 512, 49, 4608, "a"),
    ("mobilenetv2 1x1 96->24 56x56", 24, 3136, 96, "a"),
]

_PEAK_C = r"""
#include <stdint.h>
#include <time.h>
typedef float v8 __attribute__((vector_size(32)));
static double now(void) {
    struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec;
}
/* Dependent adds: one per cycle; the empty asm keeps each in a register, in order. */
double ember_clock_ghz(int64_t n) {
    uint64_t x = 0; double t0 = now();
    for (int64_t i = 0; i < n; ++i) {
        x += 1; __asm__ volatile("" : "+r"(x)); x += 1; __asm__ volatile("" : "+r"(x));
        x += 1; __asm__ volatile("" : "+r"(x)); x += 1; __asm__ volatile("" : "+r"(x));
    }
    return 4.0 * n / (now() - t0) * 1e-9 + (double)(x & 0);
}
/* Twelve independent FMA chains (more than latency x throughput on any current core); m and
 * c come through volatile so the compiler cannot fold the chains. */
double ember_fma_gflops(int64_t n) {
    volatile float vm = 1.0f, vc = 1e-9f;
    const float ms = vm, cs = vc;
    const v8 m = {ms, ms, ms, ms, ms, ms, ms, ms}, c = {cs, cs, cs, cs, cs, cs, cs, cs};
    v8 a[12];
    for (int j = 0; j < 12; ++j) a[j] = c * (float)j;
    double t0 = now();
    for (int64_t i = 0; i < n; ++i)
        for (int j = 0; j < 12; ++j) a[j] = a[j] * m + c;
    double dt = now() - t0; float s = 0;
    for (int j = 0; j < 12; ++j) s += a[j][0];
    return 2.0 * 8 * 12 * n / dt * 1e-9 + (double)(s * 0);
}
"""


@functools.lru_cache(maxsize=1)
def _probes() -> ctypes.CDLL:
    from ember.options import default_cache_dir
    from ember.runtime.toolchain import build_shared_library
    flags = ["-O3", "-march=native", "-std=gnu11", "-fPIC", "-shared", "-ffp-contract=fast"]
    lib = ctypes.CDLL(str(build_shared_library(_PEAK_C, flags, default_cache_dir())))
    lib.ember_clock_ghz.restype = lib.ember_fma_gflops.restype = ctypes.c_double
    lib.ember_clock_ghz.argtypes = lib.ember_fma_gflops.argtypes = [ctypes.c_int64]
    return lib


def clock_ghz() -> float:
    """The core's clock now (it boosts and throttles: each row of the table takes its own)."""
    return max(_probes().ember_clock_ghz(100_000_000) for _ in range(2))


def measure_peak() -> dict[str, Any]:
    """This core's clock and fp32 FMA rate, and the peak they give."""
    ghz = clock_ghz()
    fma = max(_probes().ember_fma_gflops(50_000_000) for _ in range(3))
    per_cycle = 2 ** round(math.log2(fma / ghz))
    return {"clock_ghz": ghz, "measured_fma_gflops": fma, "flops_per_cycle": per_cycle,
            "peak_gflops": ghz * per_cycle,
            "how": f"clock (dependent-add chain; {ghz:.2f} GHz at the start, measured again "
                   f"in each round of each row) x {per_cycle} fp32 flop/cycle (independent 8-lane "
                   f"FMAs measured at {fma:.1f} GFLOP/s = {fma / ghz:.1f}/cycle, rounded to a power "
                   f"of two): {ghz * per_cycle:.1f} GFLOP/s per core at the start"}


def _median_seconds(fn, min_seconds: float = 0.3, min_runs: int = 5) -> float:
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _ember_matmul(m: int, n: int, k: int, constant: str | None):
    """A compiled MatMul (the `constant` operand an initializer, packed at compile time; the
    others packed as it runs) and functions running it through the C entry point with no
    Python work per call, and numpy on the same operands."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    import ember
    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal((m, k)).astype(np.float32),
              "b": rng.standard_normal((k, n)).astype(np.float32)}
    feeds = {name: a for name, a in arrays.items() if name != constant}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "sgemm",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, a.shape) for name, a in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(arrays[constant], constant)] if constant else [])
    model = ember.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    a, b = arrays["a"], arrays["b"]
    y = np.empty((m, n), np.float32)
    check = model.run(feeds)["y"]
    err = float(np.max(np.abs(check - a.astype(np.float64) @ b))) if check.size else 0.0
    run_ember = model.bound_call([feeds[i.name] for i in model.inputs], [y])
    return run_ember, (lambda: np.matmul(a, b, out=y)), err


#: each shape is timed in this many rounds, Ember and numpy alternately (a short median of at
#: least 5 calls each, so at least 50 calls per row, as the model table), and each reports the
#: median of its rounds: the machine's speed switches for seconds at a time (one 0.3 s median
#: of the 1024 GEMM read 78% of peak, its rounds' median 86%; with 5 rounds the 1024 row read
#: 84% and 86% in two runs of one code, its steady rate 89-94%)
ROUNDS = 10


def measure_shapes(flops_per_cycle: int) -> list[dict[str, Any]]:
    rows = []
    for label, m, n, k, constant in SHAPES:
        ember_fn, numpy_fn, err = _ember_matmul(m, n, k, constant)
        flops = 2.0 * m * n * k
        rates: dict[str, list[float]] = {"ember": [], "numpy": [], "peak": []}
        for _ in range(ROUNDS):
            rates["ember"].append(flops / _median_seconds(ember_fn, 0.1) * 1e-9)
            rates["numpy"].append(flops / _median_seconds(numpy_fn, 0.1) * 1e-9)
            rates["peak"].append(clock_ghz() * flops_per_cycle)
        ember_gf, numpy_gf, peak = (statistics.median(rates[key])
                                    for key in ("ember", "numpy", "peak"))
        rows.append({"shape": label, "m": m, "n": n, "k": k, "constant": constant,
                     "peak_gflops": peak, "ember_gflops": ember_gf,
                     "ember_pct_peak": 100 * ember_gf / peak, "numpy_gflops": numpy_gf,
                     "numpy_pct_peak": 100 * numpy_gf / peak, "max_abs_err": err})
        print(f"  sgemm {label}: ember {ember_gf:.1f} GFLOP/s, numpy {numpy_gf:.1f}",
              file=sys.stderr, flush=True)
    return rows


def markdown(data: dict[str, Any]) -> str:
    lines = [f"Peak: {data['peak']['how']}.", "",
             "| shape (M x N x K) | peak GFLOP/s | Ember GFLOP/s | % of peak | numpy BLAS GFLOP/s "
             "| % of peak |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['shape']} ({r['m']}x{r['n']}x{r['k']}) | {r['peak_gflops']:.1f} | "
                     f"{r['ember_gflops']:.1f} | "
                     f"{r['ember_pct_peak']:.0f}% | {r['numpy_gflops']:.1f} | "
                     f"{r['numpy_pct_peak']:.0f}% |")
    lines.append("")
    lines.append(f"One thread each, median of {ROUNDS} rounds, Ember and numpy alternately, of "
                 "repeated calls. Square shapes: both operands are "
                 "run-time inputs (Ember packs both as it runs). Zoo shapes: the weights operand "
                 "is a constant, as in the models (Ember packs it at compile time).")
    return "\n".join(lines) + "\n"


def run_all() -> dict[str, Any]:
    peak = measure_peak()
    print(f"  peak: {peak['how']}", file=sys.stderr, flush=True)
    return {"peak": peak, "rows": measure_shapes(peak["flops_per_cycle"])}


#: the environment that pins numpy's BLAS (OpenBLAS, MKL, OpenMP builds) to one thread
_ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def section():
    """The GEMM part of `make bench`, measured in a fresh process pinned to one BLAS thread."""
    from ember.bench.report import Section
    env = dict(os.environ, **_ONE_BLAS_THREAD)
    proc = subprocess.run([sys.executable, "-m", "ember.bench.gemm", "--json", "-"], env=env,
                          stdout=subprocess.PIPE, text=True, check=True)
    data = json.loads(proc.stdout)
    return Section("gemm", "sgemm: Ember's packed GEMM vs numpy's BLAS", data, markdown(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ember.bench.gemm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON ('-': stdout)")
    args = parser.parse_args(argv)
    if any(os.environ.get(var) != "1" for var in _ONE_BLAS_THREAD):
        # numpy's BLAS reads these when it loads: again, in a process that has them (its
        # threads would also spin beside Ember's rounds)
        return subprocess.run([sys.executable, "-m", "ember.bench.gemm",
                               *(sys.argv[1:] if argv is None else argv)],
                              env=dict(os.environ, **_ONE_BLAS_THREAD)).returncode
    data = run_all()
    if args.json == "-":
        json.dump(data, sys.stdout, indent=2)
    else:
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
        sys.stdout.write(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
