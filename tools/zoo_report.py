"""Compile every ember.zoo model and tabulate accuracy, compile time and memory.

    python tools/zoo_report.py                    # all models, a Markdown table
    python tools/zoo_report.py -k bert -k resnet  # only models whose name contains a pattern

For each model: max absolute and relative error of Ember against onnxruntime on a seeded
random input, the worst error as a fraction of the tolerance atol + rtol * |ref| (passing
is <= 1), compile time with a cold cache (a fresh temporary cache directory) and again
with the C library cached, arena bytes and weight bytes. A model that fails to compile or
run gets its error listed under the table; the exit status is 1 if any model failed or
exceeded rtol 1e-4 / atol 1e-5.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import ember                                   # noqa: E402
from conftest import run_ort                   # noqa: E402
from ember.zoo import ZOO, random_inputs       # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
#: relative error is taken over reference values at least this large: near zero it is noise
REL_FLOOR = 1e-3


@dataclass
class Row:
    name: str
    abs_err: float = float("nan")
    rel_err: float = float("nan")
    tol_ratio: float = float("nan")
    cold_s: float = float("nan")
    cached_s: float = float("nan")
    arena: int = 0
    weights: int = 0
    ok: bool = False
    error: str = ""


def measure(name: str) -> Row:
    row = Row(name)
    model = ZOO[name]()
    feeds = random_inputs(model, seed=0)
    try:
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            compiled = ember.compile(model, cache_dir=cache)
            row.cold_s = time.perf_counter() - start
            start = time.perf_counter()
            # kept referenced: both models share one loaded library, whose global weights
            # pointer now points into this model's blob (see the runtime's ember_init)
            cached = ember.compile(model, cache_dir=cache)
            row.cached_s = time.perf_counter() - start
            got = compiled.run(feeds)
            del cached
    except Exception as e:                     # report every model, whatever breaks
        row.error = f"{type(e).__name__}: {e}"
        return row
    row.arena, row.weights = compiled.arena_bytes, compiled.weight_bytes
    row.ok = True
    row.abs_err = row.rel_err = row.tol_ratio = 0.0
    for info, want in zip(compiled.outputs, run_ort(model, feeds)):
        diff = np.abs(got[info.name].astype(np.float64) - want)
        big = np.abs(want) >= REL_FLOOR
        row.abs_err = max(row.abs_err, float(diff.max(initial=0)))
        row.rel_err = max(row.rel_err, float((diff[big] / np.abs(want[big])).max(initial=0)))
        row.tol_ratio = max(row.tol_ratio,
                            float((diff / (ATOL + RTOL * np.abs(want))).max(initial=0)))
        row.ok &= bool(np.allclose(got[info.name], want, rtol=RTOL, atol=ATOL))
    return row


def table(rows: list[Row]) -> str:
    head = (f"| model | max abs err | max rel err (ref >= {REL_FLOOR:g}) | err / tol | "
            "compile cold (s) | compile cached (s) | arena (B) | weights (B) | within tol |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r.name} | {r.abs_err:.2e} | {r.rel_err:.2e} | {r.tol_ratio:.3f} | "
                     f"{r.cold_s:.2f} | {r.cached_s:.2f} | {r.arena:,} | {r.weights:,} | "
                     f"{'yes' if r.ok else 'FAILED' if r.error else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", action="append", default=[],
                        help="only models whose name contains this (repeatable)")
    args = parser.parse_args(argv)
    names = [n for n in ZOO if not args.k or any(k in n for k in args.k)]
    import ember.driver                        # noqa: F401  the compiler's imports, untimed
    rows = []
    for name in names:
        print(f"compiling {name} ...", file=sys.stderr, flush=True)
        rows.append(measure(name))
    print(table(rows))
    failed = [r for r in rows if r.error]
    for r in failed:
        print(f"\n{r.name}: {r.error}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
