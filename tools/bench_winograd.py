"""Time 3x3 stride-1 convs as Winograd F(4x4, 3x3) and as the GEMM convolution against
onnxruntime (one thread each): the measurements behind `winograd_pays`.

    .venv/bin/python tools/bench_winograd.py [--runs 40] [--threads 1] [--shapes 64x56,16x32x32]

Each case is a one-node model, Conv (pads 1, with bias), compiled twice by Ember (Winograd
forced on, then off). Times are CPU time of the calling thread (time.thread_time, robust while
other processes load the machine) around one run, median over interleaved rounds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import ember
from ember.ops import conv_winograd

# (input channels, output channels, plane side): ResNet-18's stages, ResNet-8's, the VGG block's
SHAPES = [(64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7), (16, 16, 32),
          (32, 32, 16), (64, 64, 8), (64, 64, 32), (64, 128, 16), (128, 128, 16)]


def conv_model(cin: int, cout: int, side: int, rng) -> onnx.ModelProto:
    w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) / (3 * cin**0.5)
    b = rng.standard_normal(cout).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, (1, cin, side, side))],
        [onnx.ValueInfoProto(name="y")],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def compile_with(model: onnx.ModelProto, winograd: bool, threads: int):
    """Ember's build of `model` with Winograd forced on or off."""
    saved = conv_winograd.winograd_pays
    conv_winograd.winograd_pays = lambda *shape: winograd
    try:
        return ember.compile(model, threads=threads)
    finally:
        conv_winograd.winograd_pays = saved


def cpu_ms(call) -> float:
    start = time.thread_time()
    call()
    return (time.thread_time() - start) * 1e3


def bench(cin: int, cout: int, side: int, runs: int, threads: int, rng) -> dict[str, float]:
    model = conv_model(cin, cout, side, rng)
    feeds = {"x": rng.standard_normal((1, cin, side, side)).astype(np.float32)}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    calls = {"winograd": compile_with(model, True, threads).run,
             "gemm": compile_with(model, False, threads).run,
             "onnxruntime": lambda f: sess.run(None, f)}
    ref = sess.run(None, feeds)[0]
    for name in ("winograd", "gemm"):
        err = np.abs(calls[name](feeds)["y"] - ref).max()
        assert err < 1e-3 * max(1.0, np.abs(ref).max()), f"{name}: error {err}"
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs + 3):                  # interleaved rounds; the first three warm up
        for name, call in calls.items():
            times[name].append(cpu_ms(lambda: call(feeds)))
    return {name: statistics.median(t[3:]) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shapes", help="CINxCOUTxSIDE or CxSIDE, comma-separated; "
                                         "default: the zoo's")
    args = parser.parse_args()
    shapes = SHAPES
    if args.shapes:
        dims = [[int(v) for v in s.split("x")] for s in args.shapes.split(",")]
        shapes = [(d[0], d[0], d[1]) if len(d) == 2 else tuple(d) for d in dims]
    rng = np.random.default_rng(0)
    print(f"{'cin>cout side':>14} {'winograd':>9} {'gemm':>8} {'ort':>8}  ms  picked  "
          "GFLOP/s w/g/o")
    for cin, cout, side in shapes:
        t = bench(cin, cout, side, args.runs, args.threads, rng)
        gflop = 2 * cin * cout * 9 * side * side / 1e6
        picked = "W" if conv_winograd.winograd_pays(cin, cout, side, side) else "G"
        rates = "/".join(f"{gflop / t[k]:.0f}" for k in ("winograd", "gemm", "onnxruntime"))
        print(f"{f'{cin}>{cout} {side}x{side}':>14} {t['winograd']:9.3f} {t['gemm']:8.3f} "
              f"{t['onnxruntime']:8.3f}      {picked:>6}  {rates}", flush=True)


if __name__ == "__main__":
    main()
