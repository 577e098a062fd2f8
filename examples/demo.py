"""Ember demo (`make demo`): build a small CNN, compile it to C, run it, check it, report.

Steps: build `small_cnn` from ember.zoo and save it as ONNX; compile it with a cold cache;
run it on a random image; compare with the ONNX reference evaluator; time it; save the
compiled artifact and load it back. Exits 1 if Ember's answer differs from the reference.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

import ember
from ember.zoo import random_inputs, small_cnn

OUT_DIR = Path(__file__).resolve().parent.parent / "build" / "demo"
RTOL, ATOL = 1e-4, 1e-5
TIMED_RUNS = 50


def describe(model: onnx.ModelProto) -> str:
    ops = Counter(n.op_type for n in model.graph.node)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    sig = ", ".join(f"{i.name} {[d.dim_value for d in i.type.tensor_type.shape.dim]}"
                    for i in model.graph.input)
    return (f"{model.graph.name}: {len(model.graph.node)} nodes, {params:,} parameters, "
            f"input {sig}\n  ops: " + ", ".join(f"{op} x{n}" for op, n in ops.items()))


def median_latency(m: ember.CompiledModel, feeds: dict[str, np.ndarray]) -> float:
    m.run(feeds)                                            # warm up caches
    times = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        m.run(feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    model = small_cnn()
    onnx_path = OUT_DIR / "small_cnn.onnx"
    onnx.save(model, onnx_path)
    print(f"model     {describe(model)}")
    print(f"          saved as {onnx_path}")

    with tempfile.TemporaryDirectory() as cache:            # cold cache: a real compile
        start = time.perf_counter()
        m = ember.compile(str(onnx_path), cache_dir=cache)
        compile_s = time.perf_counter() - start
        artifact = m.save(OUT_DIR / "small_cnn.ember")
    print(f"compile   {compile_s:.2f} s (ONNX -> C -> shared library, cold cache)")

    feeds = random_inputs(model, seed=0)
    got = m.run(feeds)
    want = ReferenceEvaluator(model).run(None, feeds)
    name = m.outputs[0].name
    err = float(np.max(np.abs(got[name] - want[0])))
    ok = bool(np.allclose(got[name], want[0], rtol=RTOL, atol=ATOL))
    print(f"output    {name} {list(got[name].shape)}: class {int(got[name].argmax())} "
          f"p={float(got[name].max()):.4f}")
    print(f"accuracy  max |ember - onnx reference| = {err:.2e} "
          f"({'OK' if ok else 'FAIL'}: rtol {RTOL}, atol {ATOL})")
    print(f"latency   {median_latency(m, feeds) * 1e6:.0f} us (median of {TIMED_RUNS} runs, "
          "1 thread)")
    print(f"memory    arena {m.arena_bytes:,} B (activations), weights {m.weight_bytes:,} B")

    reloaded = ember.load(artifact)
    same = np.array_equal(reloaded.run(feeds)[name], got[name])
    print(f"artifact  {artifact}/ ({', '.join(sorted(p.name for p in artifact.iterdir()))}); "
          f"ember.load gives {'identical' if same else 'DIFFERENT'} outputs")
    return 0 if ok and same else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ember.EmberError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
