"""Time depthwise convs, pools and MobileNetV2 on Ember against onnxruntime (single thread).

    .venv/bin/python tools/bench_depthwise.py [--runs 200] [--models] [--threads 1]

Each case is a one-node model (Conv with bias followed by Clip(0, 6), as MobileNetV2 has it
after BatchNorm folding, or a pool); both runtimes run it interleaved in one process and the
medians are printed side by side. Both run into preallocated outputs (onnxruntime through
IOBinding), so output allocation is not timed. Timings on a shared machine are noisy: compare
ratios.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
from onnx import helper, numpy_helper

import ember

# (name, input shape, kernel, stride)
DEPTHWISE = [
    ("dw3 s1 144x56x56", (1, 144, 56, 56), 3, 1),
    ("dw3 s2 96x112x112", (1, 96, 112, 112), 3, 2),
    ("dw3 s1 32x112x112", (1, 32, 112, 112), 3, 1),
    ("dw3 s2 144x56x56", (1, 144, 56, 56), 3, 2),
    ("dw3 s1 192x28x28", (1, 192, 28, 28), 3, 1),
    ("dw3 s1 384x14x14", (1, 384, 14, 14), 3, 1),
    ("dw3 s1 960x7x7", (1, 960, 7, 7), 3, 1),
    ("dw3 s1 64x25x5", (1, 64, 25, 5), 3, 1),
    ("dw5 s1 240x14x14", (1, 240, 14, 14), 5, 1),
]
# (name, op, input shape, attributes)
POOLS = [
    ("maxpool 3x3 s2 64x112x112", "MaxPool", (1, 64, 112, 112),
     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("maxpool 2x2 s2 64x56x56", "MaxPool", (1, 64, 56, 56),
     {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("avgpool 3x3 s1 192x28x28", "AveragePool", (1, 192, 28, 28),
     {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0}),
    ("avgpool 2x2 s2 128x28x28", "AveragePool", (1, 128, 28, 28),
     {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("globalavg 1280x7x7", "GlobalAveragePool", (1, 1280, 7, 7), {}),
    ("globalmax 512x14x14", "GlobalMaxPool", (1, 512, 14, 14), {}),
]


def _model(nodes, x, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
        [onnx.ValueInfoProto(name=o) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def depthwise_model(shape, kernel: int, stride: int, rng) -> onnx.ModelProto:
    c = shape[1]
    inits = {"w": rng.standard_normal((c, 1, kernel, kernel)).astype(np.float32),
             "b": rng.standard_normal(c).astype(np.float32),
             "lo": np.float32(0), "hi": np.float32(6)}
    pad = kernel // 2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=c, strides=[stride] * 2,
                              pads=[pad] * 4),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    return _model(nodes, np.empty(shape), ["y"], inits)


def pool_model(op: str, shape, attrs) -> onnx.ModelProto:
    return _model([helper.make_node(op, ["x"], ["y"], **attrs)], np.empty(shape), ["y"], {})


def _ember_call(compiled, feeds: dict):
    """A call of the compiled model into preallocated outputs (what run() does, minus the
    allocation, whose page faults would dominate single-layer timings)."""
    ins = [np.ascontiguousarray(feeds[i.name]) for i in compiled.inputs]
    return compiled.bound_call(ins, [np.empty(o.shape, o.dtype) for o in compiled.outputs])


def _ort_call(sess, feeds: dict):
    """An onnxruntime run bound to preallocated inputs and outputs (IOBinding)."""
    import onnxruntime as ort
    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for out, value in zip(sess.get_outputs(), sess.run(None, feeds)):
        binding.bind_ortvalue_output(out.name, ort.OrtValue.ortvalue_from_numpy(value))
    return lambda: sess.run_with_iobinding(binding)


def compare(model: onnx.ModelProto, feeds: dict, runs: int, threads: int) -> tuple[float, float]:
    """Median seconds of one run on Ember and on onnxruntime, interleaved."""
    import onnxruntime as ort
    compiled = ember.compile(model, threads=threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    want, got = sess.run(None, feeds)[0], compiled.run(feeds)
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-3, atol=1e-3)
    run_e, run_o = _ember_call(compiled, feeds), _ort_call(sess, feeds)
    if threads > 1:
        # two thread pools taking turns on the same cores stall each other: time apart
        return _median(run_e, runs), _median(run_o, runs)
    times_e, times_o = [], []
    for _ in range(5):
        run_e(), run_o()
    for _ in range(runs):
        t0 = time.perf_counter()
        run_e()
        t1 = time.perf_counter()
        run_o()
        t2 = time.perf_counter()
        times_e.append(t1 - t0)
        times_o.append(t2 - t1)
    return statistics.median(times_e), statistics.median(times_o)


def _median(call, runs: int) -> float:
    for _ in range(5):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _report(name: str, ember_s: float, ort_s: float) -> None:
    print(f"{name:28s} ember {ember_s * 1e6:9.1f} us   ort {ort_s * 1e6:9.1f} us   "
          f"ember/ort {ember_s / ort_s:5.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", action="store_true", help="also MobileNetV2 and DS-CNN")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = [(n, depthwise_model(s, k, st, rng), s) for n, s, k, st in DEPTHWISE]
    cases += [(n, pool_model(op, s, a), s) for n, op, s, a in POOLS]
    for name, model, shape in cases:
        if args.only in name:
            feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
            _report(name, *compare(model, feeds, args.runs, args.threads))
    if args.models:
        from ember.zoo import ZOO, random_inputs
        for name in ("mobilenet_v2", "ds_cnn"):
            model = ZOO[name]()
            _report(name, *compare(model, random_inputs(model), max(args.runs // 4, 20),
                                   args.threads))


if __name__ == "__main__":
    main()
