"""Run the ONNX backend node-test suite through ember.backend and count passes.

    python tools/conformance.py                 # prints per-case failures and "N passed, M failed"
    python tools/conformance.py --write-expected   # rewrite tests/conformance/expected_failures.txt
    python tools/conformance.py -k conv         # only cases whose name contains "conv"

Each case runs in a worker process with a time limit, so a crash or hang in one case
cannot take the run down.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import sys
import warnings
from pathlib import Path

EXPECTED = Path(__file__).resolve().parent.parent / "tests" / "conformance" / "expected_failures.txt"


def load_cases(filter_: str | None = None):
    warnings.filterwarnings("ignore")
    from onnx.backend.test.case.node import collect_testcases
    cases = [c for c in collect_testcases(None) if c.kind == "node"]
    if filter_:
        cases = [c for c in cases if filter_ in c.name]
    return sorted(cases, key=lambda c: c.name)


def run_case(case) -> tuple[str, str | None]:
    """(name, None) when the case passes, else (name, a one-line reason)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    import ember.backend as backend
    from ember.errors import EmberError
    try:
        rep = backend.prepare(case.model)
        for inputs, expected in case.data_sets:
            # Some cases store tensors as TensorProto rather than numpy.
            inputs = [numpy_helper.to_array(a) if isinstance(a, TensorProto) else a for a in inputs]
            expected = [numpy_helper.to_array(a) if isinstance(a, TensorProto) else a
                        for a in expected]
            got = rep.run(inputs)
            if len(got) != len(expected):
                return case.name, f"{len(got)} outputs, expected {len(expected)}"
            for g, e in zip(got, expected):
                e = np.asarray(e)
                if g.dtype != e.dtype and not (e.dtype == object):
                    return case.name, f"dtype {g.dtype}, expected {e.dtype}"
                if g.shape != e.shape:
                    return case.name, f"shape {g.shape}, expected {e.shape}"
                if e.dtype.kind in "fc":
                    np.testing.assert_allclose(g, e, rtol=case.rtol, atol=case.atol)
                else:
                    np.testing.assert_array_equal(g, e)
    except EmberError as e:
        text = " ".join(str(e).replace(f"model {case.name!r}: ", "").split())
        return case.name, f"{e.__class__.__name__}: {text[:300]}"
    except AssertionError as e:
        return case.name, "mismatch: " + " ".join(str(e).split())[:200]
    except Exception as e:  # report, do not crash the run
        return case.name, f"{e.__class__.__name__}: " + " ".join(str(e).split())[:200]
    return case.name, None


def _worker(name: str) -> tuple[str, str | None]:
    case = next(c for c in _CASES if c.name == name)
    return run_case(case)


_CASES: list = []


def run_all(filter_: str | None = None, jobs: int | None = None) -> dict[str, str | None]:
    global _CASES
    _CASES = load_cases(filter_)
    results: dict[str, str | None] = {}
    with cf.ProcessPoolExecutor(max_workers=jobs or os.cpu_count()) as pool:
        futures = {pool.submit(_worker, c.name): c.name for c in _CASES}
        for fut in cf.as_completed(futures):
            name = futures[fut]
            try:
                results[name] = fut.result()[1]
            except Exception as e:  # a worker died (crash in generated code)
                results[name] = f"worker died: {e.__class__.__name__}"
    return results


def read_expected() -> dict[str, str]:
    out = {}
    if EXPECTED.exists():
        for line in EXPECTED.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                out[name] = reason.strip()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", dest="filter", help="only cases whose name contains this")
    ap.add_argument("-j", dest="jobs", type=int, help="worker processes (default: all cores)")
    ap.add_argument("--write-expected", action="store_true",
                    help="rewrite the expected-failures list from this run")
    ap.add_argument("-v", action="store_true", help="print every failure with its reason")
    args = ap.parse_args()
    results = run_all(args.filter, args.jobs)
    failed = {n: r for n, r in results.items() if r is not None}
    if args.v:
        for name in sorted(failed):
            print(f"FAIL {name}: {failed[name]}")
    passed = len(results) - len(failed)
    if args.write_expected:
        EXPECTED.parent.mkdir(parents=True, exist_ok=True)
        lines = ["# ONNX backend node tests that Ember does not pass yet, with the reason.",
                 "# This list only shrinks: tests/conformance/test_node_suite.py fails on a case",
                 "# that passes while listed here (remove it) or fails while not listed."]
        lines += [f"{n} {failed[n]}" for n in sorted(failed)]
        EXPECTED.write_text("\n".join(lines) + "\n")
    print(f"conformance: {passed} passed, {len(failed)} failed of {len(results)} node tests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
