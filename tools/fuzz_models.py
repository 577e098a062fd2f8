"""Structural fuzzer: mutate small valid ONNX models and check Ember fails cleanly on them.

Every candidate is compiled and, when it compiles, run on random inputs (integer inputs drawn
from a range that includes negative and out-of-range indices) in a worker process whose
generated C is built with AddressSanitizer. The only acceptable outcomes are "compiled and
ran" and an EmberError that is not an internal error; everything else is recorded:

    exception   a Python exception other than EmberError (or an "internal error" EmberError,
                or a ToolchainError: the C compiler failed on generated code)
    crash       the worker died (signal, AddressSanitizer report); stderr tail recorded
    hang        compile + run took longer than --timeout
    slow        compile took longer than 20 s
    memory      the worker grew by more than 2 GB while handling the candidate

    .venv/bin/python tools/fuzz_models.py --seconds 300 --jobs 2 --out /tmp/fuzz
    .venv/bin/python tools/fuzz_models.py --replay /tmp/fuzz/exception-0003.onnx

Findings go to --out as <kind>-<n>.onnx beside a summary.json (class -> count, examples).
Not run by the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import warnings

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

warnings.filterwarnings("ignore", category=RuntimeWarning)   # hostile casts are the point

SLOW_COMPILE_S = 20.0
MEMORY_LIMIT = 2 << 30

# -- seed models ----------------------------------------------------------------------------

F, I64 = np.float32, np.int64


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, tuple[Any, tuple[int, ...]]],
           outputs: list[str], inits: dict[str, np.ndarray] | None = None,
           opset: int = 17) -> onnx.ModelProto:
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(d)), s)
           for n, (d, s) in inputs.items()]
    outs = [onnx.ValueInfoProto(name=n) for n in outputs]
    initializers = [numpy_helper.from_array(np.asarray(a), n) for n, a in (inits or {}).items()]
    graph = helper.make_graph(nodes, "seed", vis, outs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _one(op: str, inputs: dict, inits: dict | None = None, n_out: int = 1,
         names: list[str] | None = None, opset: int = 17, **attrs: Any) -> onnx.ModelProto:
    names = names if names is not None else list(inputs) + list(inits or {})
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, name=f"{op.lower()}0", **attrs)
    return _model([node], inputs, outs, inits, opset)


def _w(*shape: int) -> np.ndarray:
    return np.random.default_rng(len(shape)).standard_normal(shape).astype(F)


def seed_models() -> dict[str, onnx.ModelProto]:
    x4 = {"x": (F, (1, 4, 6, 6))}
    a = np.array
    seeds = {
        "conv": _one("Conv", x4, {"w": _w(4, 2, 3, 3), "b": _w(4)}, group=2, pads=[1, 1, 1, 1],
                     strides=[1, 2], dilations=[1, 1], kernel_shape=[3, 3]),
        "conv_transpose": _one("ConvTranspose", x4, {"w": _w(4, 2, 3, 3)}, strides=[2, 2],
                               pads=[1, 1, 0, 0], output_padding=[1, 0]),
        "maxpool": _one("MaxPool", x4, kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
        "maxpool_idx": _one("MaxPool", x4, n_out=2, kernel_shape=[3, 3], dilations=[1, 1]),
        "avgpool": _one("AveragePool", x4, kernel_shape=[3, 3], ceil_mode=1,
                        count_include_pad=1, pads=[1, 1, 1, 1]),
        "lppool": _one("LpPool", x4, kernel_shape=[2, 2], p=2),
        "gap": _one("GlobalAveragePool", x4),
        "maxunpool": _one("MaxUnpool", {"x": (F, (1, 1, 2, 2)), "i": (I64, (1, 1, 2, 2))},
                          kernel_shape=[2, 2], strides=[2, 2]),
        "gemm": _one("Gemm", {"a": (F, (3, 4))}, {"b": _w(5, 4), "c": _w(5)}, transB=1,
                     alpha=0.5),
        "matmul": _one("MatMul", {"a": (F, (2, 3, 4))}, {"b": _w(4, 5)}),
        "reshape": _one("Reshape", {"x": (F, (2, 3, 4))}, {"s": a([6, -1], I64)}),
        "slice": _one("Slice", {"x": (F, (4, 5))}, {"st": a([1, 0], I64), "en": a([3, 5], I64),
                      "ax": a([0, 1], I64), "sp": a([1, 2], I64)}),
        "gather": _one("Gather", {"x": (F, (5, 3)), "i": (I64, (2, 4))}, axis=0),
        "gather_const": _one("Gather", {"x": (F, (5, 3))}, {"i": a([[0, 4], [-1, 2]], I64)},
                             axis=1),
        "gather_elements": _one("GatherElements", {"x": (F, (3, 4)), "i": (I64, (3, 2))}, axis=1),
        "gather_nd": _one("GatherND", {"x": (F, (3, 4, 2)), "i": (I64, (2, 2))}),
        "scatter_elements": _one("ScatterElements", {"x": (F, (3, 4)), "i": (I64, (2, 2)),
                                 "u": (F, (2, 2))}, axis=0),
        "scatter_nd": _one("ScatterND", {"x": (F, (4, 3)), "i": (I64, (2, 1)),
                           "u": (F, (2, 3))}),
        "pad": _one("Pad", {"x": (F, (2, 3))}, {"p": a([1, 0, 2, 1], I64)}, mode="reflect"),
        "pad_const": _one("Pad", {"x": (F, (2, 3))}, {"p": a([1, 2, 0, 1], I64),
                          "v": a(1.5, F)}),
        "resize": _one("Resize", {"x": (F, (1, 1, 4, 4))}, {"s": a([1, 1, 2, 1.5], F)},
                       names=["x", "", "s"], mode="linear"),
        "resize_sizes": _one("Resize", {"x": (F, (1, 2, 4, 4))}, {"z": a([1, 2, 3, 7], I64)},
                             names=["x", "", "", "z"], mode="nearest",
                             coordinate_transformation_mode="asymmetric"),
        "reduce_sum": _one("ReduceSum", {"x": (F, (2, 3, 4))}, {"ax": a([1, -1], I64)},
                           keepdims=0),
        "reduce_max": _one("ReduceMax", {"x": (F, (2, 3, 4))}, {"ax": a([0], I64)}, opset=18),
        "argmax": _one("ArgMax", {"x": (F, (2, 3, 4))}, axis=1, keepdims=1),
        "softmax": _one("Softmax", {"x": (F, (2, 3, 4))}, axis=-1),
        "concat": _one("Concat", {"x": (F, (2, 3)), "z": (F, (2, 5))}, axis=1),
        "split": _one("Split", {"x": (F, (6, 2))}, {"s": a([2, 4], I64)}, n_out=2, axis=0),
        "transpose": _one("Transpose", {"x": (F, (2, 3, 4))}, perm=[2, 0, 1]),
        "expand": _one("Expand", {"x": (F, (3, 1))}, {"s": a([2, 3, 4], I64)}),
        "tile": _one("Tile", {"x": (F, (2, 3))}, {"r": a([2, 1], I64)}),
        "topk": _one("TopK", {"x": (F, (3, 5))}, {"k": a([2], I64)}, n_out=2, axis=1),
        "einsum": _one("Einsum", {"a": (F, (2, 3)), "b": (F, (3, 4))}, equation="ij,jk->ik"),
        "layernorm": _one("LayerNormalization", {"x": (F, (2, 3, 4))}, {"g": _w(4), "b": _w(4)},
                          axis=-1, epsilon=1e-5),
        "onehot": _one("OneHot", {"i": (I64, (4,))}, {"d": a(5, I64), "v": a([0, 1], F)},
                       axis=-1),
        "reverse_sequence": _one("ReverseSequence", {"x": (F, (4, 3)), "l": (I64, (3,))},
                                 batch_axis=1, time_axis=0),
        "nll": _one("NegativeLogLikelihoodLoss", {"x": (F, (3, 5)), "t": (I64, (3,))},
                    reduction="mean", ignore_index=1),
        "sce": _one("SoftmaxCrossEntropyLoss", {"x": (F, (3, 5)), "t": (I64, (3,))},
                    reduction="sum"),
        "depth_to_space": _one("DepthToSpace", {"x": (F, (1, 8, 2, 3))}, blocksize=2),
        "cumsum": _one("CumSum", {"x": (F, (3, 4))}, {"ax": a(1, I64)}, exclusive=1),
        "trilu": _one("Trilu", {"x": (F, (4, 5))}, {"k": a(1, I64)}, upper=0),
        "squeeze": _one("Squeeze", {"x": (F, (2, 1, 3))}, {"ax": a([1], I64)}),
        "unsqueeze": _one("Unsqueeze", {"x": (F, (2, 3))}, {"ax": a([0, 3], I64)}),
        "flatten": _one("Flatten", {"x": (F, (2, 3, 4))}, axis=2),
        "batchnorm": _one("BatchNormalization", x4, {"s": _w(4), "b": _w(4), "m": _w(4),
                          "v": np.abs(_w(4))}),
        "instnorm": _one("InstanceNormalization", x4, {"s": _w(4), "b": _w(4)}),
        "groupnorm": _one("GroupNormalization", x4, {"s": _w(2), "b": _w(2)}, num_groups=2,
                          opset=18),
        "lrn": _one("LRN", x4, size=3),
        "range": _one("Range", {}, {"s": a(0, I64), "l": a(7, I64), "d": a(2, I64)}),
        "constant_of_shape": _one("ConstantOfShape", {}, {"s": a([2, 3], I64)}),
        "eyelike": _one("EyeLike", {"x": (F, (3, 4))}, k=1),
        "center_crop_pad": _one("CenterCropPad", {"x": (F, (5, 3))}, {"s": a([3, 6], I64)}),
        "compress": _one("Compress", {"x": (F, (3, 4))}, {"c": a([1, 0, 1], bool)}, axis=0),
        "where": _one("Where", {"c": (bool, (3, 1)), "x": (F, (1, 4)), "z": (F, (3, 4))}),
        "clip": _one("Clip", {"x": (F, (3, 4))}, {"lo": a(-1, F), "hi": a(1, F)}),
        "hardmax": _one("Hardmax", {"x": (F, (3, 4))}, axis=0),
        "space_to_depth": _one("SpaceToDepth", {"x": (F, (1, 2, 4, 6))}, blocksize=2),
        "det": _one("Det", {"x": (F, (2, 3, 3))}),
        "lpnorm": _one("LpNormalization", {"x": (F, (3, 4))}, axis=1, p=2),
        "upsample": _one("Upsample", {"x": (F, (1, 1, 2, 3))}, {"s": a([1, 1, 2, 2], F)},
                         opset=9),
    }
    from ember.zoo import ZOO
    for name in ("small_cnn", "mlp"):
        seeds[f"zoo_{name}"] = ZOO[name]()
    return seeds


# -- mutations ------------------------------------------------------------------------------

BAD_INTS = [-(1 << 63), -(1 << 31), -100, -7, -3, -2, -1, 0, 1, 2, 3, 4, 5, 7, 64, 1000,
            1 << 20, (1 << 31) - 1, 1 << 31, 1 << 40, (1 << 63) - 1]
BAD_FLOATS = [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e-30, 1e30, 2.5, -0.5]
BAD_STRINGS = ["", "bogus", "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER", "constant",
               "reflect", "edge", "wrap", "linear", "nearest", "cubic", "mean", "sum", "none",
               "half_pixel", "tf_crop_and_resize", "ij,jk->ik", "i,i", "ii->i", "...ij->ji",
               "ij->k", "i j", "ab,bc,cd->ad", "ij,jk", "->", "a...b...->", "\u00e9->\u00e9",
               "round_prefer_floor", "floor", "ceil", "DCR", "CRD", "tanh"]


def _small_int(rng: random.Random) -> int:
    return rng.choice(BAD_INTS) if rng.random() < 0.6 else rng.randint(-4, 8)


def _int_list(rng: random.Random, base: list[int]) -> list[int]:
    how = rng.random()
    if how < 0.3 and base:
        out = list(base)
        out[rng.randrange(len(out))] = _small_int(rng)
        return out
    if how < 0.5 and base:
        return list(base)[:rng.randrange(len(base))] if rng.random() < 0.5 else \
            list(base) + [_small_int(rng)]
    if how < 0.6 and base:
        out = list(base)
        rng.shuffle(out)
        return out
    return [_small_int(rng) for _ in range(rng.randint(0, 6))]


def mutate_attribute(m: onnx.ModelProto, rng: random.Random) -> str:
    node = rng.choice(m.graph.node)
    try:
        schema = onnx.defs.get_schema(node.op_type, 17)
        names = list(schema.attributes)
    except onnx.defs.SchemaError:
        names = []
    existing = {a.name: a for a in node.attribute}
    pool = sorted(set(names) | set(existing))
    if not pool:
        return "noop"
    name = rng.choice(pool)
    old = existing.get(name)
    if old is not None:
        kind = old.type
    else:
        kind = int(schema.attributes[name].type)
    if old is not None:
        node.attribute.remove(old)
    if rng.random() < 0.08 and old is not None:
        return f"drop attr {node.op_type}.{name}"
    if kind == AttributeProto.INT:
        value: Any = _small_int(rng)
    elif kind == AttributeProto.INTS:
        value = _int_list(rng, list(old.ints) if old is not None else [])
    elif kind == AttributeProto.FLOAT:
        value = rng.choice(BAD_FLOATS)
    elif kind == AttributeProto.FLOATS:
        value = [rng.choice(BAD_FLOATS) for _ in range(rng.randint(0, 5))]
    elif kind == AttributeProto.STRING:
        value = rng.choice(BAD_STRINGS)
        if rng.random() < 0.3 and old is not None:   # a small edit of the old string
            s = list(old.s.decode("utf-8", "replace"))
            if s:
                s[rng.randrange(len(s))] = rng.choice("ijk.,->ab ")
            value = "".join(s)
    elif kind == AttributeProto.TENSOR:
        value = numpy_helper.from_array(np.array([rng.choice(BAD_FLOATS)], np.float32))
    else:
        return "noop"
    if kind == AttributeProto.INTS and not value:
        node.attribute.append(helper.make_attribute(name, [], attr_type=AttributeProto.INTS))
    elif kind == AttributeProto.FLOATS and not value:
        node.attribute.append(helper.make_attribute(name, [], attr_type=AttributeProto.FLOATS))
    else:
        node.attribute.append(helper.make_attribute(name, value))
    return f"attr {node.op_type}.{name}={str(value)[:60]}"


def _pick_runtime_input(m: onnx.ModelProto, rng: random.Random) -> "onnx.ValueInfoProto | None":
    """A graph input fed at run time (not an initializer), or None when there is none."""
    inits = {t.name for t in m.graph.initializer}
    ins = [vi for vi in m.graph.input if vi.name not in inits]
    return rng.choice(ins) if ins else None


def mutate_input_shape(m: onnx.ModelProto, rng: random.Random) -> str:
    vi = _pick_runtime_input(m, rng)
    if vi is None:
        return "noop"
    dims = vi.type.tensor_type.shape.dim
    how = rng.random()
    if how < 0.25 and len(dims):
        del dims[rng.randrange(len(dims))]
    elif how < 0.45:
        dims.insert(rng.randint(0, len(dims)), onnx.TensorShapeProto.Dimension(
            dim_value=rng.choice([0, 1, 2, 3])))
    elif len(dims):
        d = dims[rng.randrange(len(dims))]
        d.dim_value = rng.choice([0, 1, 2, 3, 5, 7, 9, 1 << 16])
    return f"input {vi.name} shape {[d.dim_value for d in dims]}"


def mutate_initializer(m: onnx.ModelProto, rng: random.Random) -> str:
    if not m.graph.initializer:
        return "noop"
    t = rng.choice(m.graph.initializer)
    arr = numpy_helper.to_array(t).copy()
    how = rng.random()
    if how < 0.5 and arr.size:
        flat = arr.reshape(-1)
        k = rng.randrange(flat.size)
        if arr.dtype.kind in "iu":
            info = np.iinfo(arr.dtype)
            flat[k] = min(max(_small_int(rng), info.min), info.max)
        elif arr.dtype.kind == "f":
            flat[k] = rng.choice(BAD_FLOATS + [float(_small_int(rng))])
        else:
            flat[k] = not flat[k]
    elif how < 0.75:
        n = rng.randint(0, 6)
        if arr.dtype.kind in "iu":
            arr = np.array([_small_int(rng) for _ in range(n)]).clip(
                np.iinfo(arr.dtype).min, np.iinfo(arr.dtype).max).astype(arr.dtype)
        else:
            arr = np.random.default_rng(rng.randrange(1 << 30)).standard_normal(n).astype(
                arr.dtype)
        if rng.random() < 0.2 and arr.size:
            arr = arr[:1].reshape(())       # a scalar where a list was
    else:
        new = rng.choice([np.int32, np.float32, np.int64, np.float64, np.uint8, bool])
        arr = arr.astype(new)
    t.CopyFrom(numpy_helper.from_array(arr, t.name))
    return f"init {t.name}={arr.tolist() if arr.size < 10 else arr.shape}"


def mutate_dtype(m: onnx.ModelProto, rng: random.Random) -> str:
    vi = _pick_runtime_input(m, rng)
    if vi is None:
        return "noop"
    vi.type.tensor_type.elem_type = rng.choice([TensorProto.FLOAT, TensorProto.DOUBLE,
                                                TensorProto.INT64, TensorProto.INT32,
                                                TensorProto.INT8, TensorProto.UINT8,
                                                TensorProto.BOOL, TensorProto.FLOAT16,
                                                TensorProto.STRING, TensorProto.UINT64])
    return f"dtype {vi.name}={vi.type.tensor_type.elem_type}"


def mutate_wiring(m: onnx.ModelProto, rng: random.Random) -> str:
    node = rng.choice(m.graph.node)
    how = rng.random()
    names = [i.name for i in m.graph.input] + [t.name for t in m.graph.initializer]
    if how < 0.3 and node.input:
        k = rng.randrange(len(node.input))
        node.input[k] = ""
        return f"drop input {k} of {node.op_type}"
    if how < 0.5 and len(node.input) > 1:
        del node.input[-1]
        return f"drop last input of {node.op_type}"
    if how < 0.7 and names:
        node.input.append(rng.choice(names))
        return f"extra input of {node.op_type}"
    if how < 0.85 and node.input and names:
        k = rng.randrange(len(node.input))
        node.input[k] = rng.choice(names)
        return f"rewire input {k} of {node.op_type}"
    if len(node.output) > 1:
        node.output[rng.randrange(len(node.output))] = ""
        return f"drop output of {node.op_type}"
    node.output.append(f"extra{rng.randrange(100)}")
    return f"extra output of {node.op_type}"


def mutate_opset(m: onnx.ModelProto, rng: random.Random) -> str:
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = rng.choice([1, 6, 7, 9, 10, 11, 12, 13, 15, 18, 19, 21, 30])
            return f"opset {o.version}"
    return "noop"


def mutate_freeze_input(m: onnx.ModelProto, rng: random.Random) -> str:
    """A graph input made a constant with hostile values (indices, shapes, k, lengths ...)."""
    vi = _pick_runtime_input(m, rng)
    if vi is None:
        return "noop"
    tt = vi.type.tensor_type
    shape = tuple(d.dim_value for d in tt.shape.dim)
    dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
    values = [_small_int(rng) if rng.random() < 0.3 else rng.randint(-6, 6)
              for _ in range(int(np.prod(shape)))]
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    arr = np.array(values).clip(info.min, info.max) if info else np.array(values)
    arr = arr.astype(dtype).reshape(shape)
    m.graph.input.remove(vi)
    m.graph.initializer.append(numpy_helper.from_array(arr, vi.name))
    return f"freeze {vi.name}={arr.tolist() if arr.size < 10 else arr.shape}"


def mutate_unfreeze(m: onnx.ModelProto, rng: random.Random) -> str:
    """A constant made a graph input: parameters Ember needs at compile time become dynamic."""
    if not m.graph.initializer:
        return "noop"
    t = rng.choice(m.graph.initializer)
    m.graph.initializer.remove(t)
    m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return f"unfreeze {t.name}"


STRUCTURAL: list[tuple[float, Callable[[onnx.ModelProto, random.Random], str]]] = [
    (4.0, mutate_attribute), (1.5, mutate_input_shape), (2.5, mutate_initializer),
    (0.7, mutate_dtype), (1.0, mutate_wiring), (0.5, mutate_opset),
    (1.0, mutate_freeze_input), (0.4, mutate_unfreeze)]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            break
        how = rng.random()
        k = rng.randrange(len(b))
        if how < 0.6:
            b[k] = rng.randrange(256)
        elif how < 0.8:
            del b[k:k + rng.randint(1, 8)]
        else:
            b[k:k] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(b)


def candidate(seeds: dict[str, onnx.ModelProto], rng: random.Random) -> tuple[bytes, str]:
    name = rng.choice(sorted(seeds))
    m = onnx.ModelProto()
    m.CopyFrom(seeds[name])
    steps = []
    weights = [w for w, _ in STRUCTURAL]
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        fn = rng.choices([f for _, f in STRUCTURAL], weights)[0]
        try:
            steps.append(fn(m, rng))
        except (ValueError, TypeError, NotImplementedError, onnx.onnx_cpp2py_export.defs.SchemaError):
            steps.append("noop")      # a mutation that cannot apply to this model
    data = m.SerializeToString()
    if rng.random() < 0.1:
        data = mutate_bytes(data, rng)
        steps.append("bytes")
    return data, f"{name}: {'; '.join(steps)}"


# -- the worker: compile and run one candidate at a time ------------------------------------

WORKER = r"""
import json, sys, time, traceback
import warnings

import numpy as np
import ember
import ember.driver as driver
from ember.errors import EmberError, ToolchainError

_flags = driver.host_flags
driver.host_flags = lambda *a: _flags(*a) + ["-fsanitize=address", "-fno-omit-frame-pointer",
                                             "-O1"]

def feeds(model, rng):
    out = {}
    for info in model.inputs:
        if info.dtype.kind == "f":
            out[info.name] = rng.standard_normal(info.shape).astype(info.dtype)
        elif info.dtype.kind == "b":
            out[info.name] = rng.integers(0, 2, info.shape).astype(bool)
        else:
            lo = max(-20, int(np.iinfo(info.dtype).min))
            out[info.name] = rng.integers(lo, 20, info.shape).astype(info.dtype)
    return out

RUN_LIMIT = 1 << 26
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    data = open(req["path"], "rb").read()
    t0 = time.perf_counter()
    stage = "compile"
    result = {"kind": "ok"}
    try:
        model = ember.compile(data)
        result["compile_s"] = time.perf_counter() - t0
        stage = "run"
        print(json.dumps({"stage": "run"}), flush=True)
        if sum(int(np.prod(i.shape)) * i.dtype.itemsize
               for i in model.inputs + model.outputs) + model.arena_bytes > RUN_LIMIT:
            result["kind"] = "big"        # a legal but huge model: not worth running
            raise SystemExit
        model.run(feeds(model, np.random.default_rng(req["seed"])))
    except ToolchainError as e:
        result = {"kind": "exception", "what": "ToolchainError", "message": str(e)[-1500:]}
    except EmberError as e:
        internal = "internal error" in e.message
        result = {"kind": "exception" if internal else "ember", "what": type(e).__name__,
                  "message": str(e)[:500]}
    except SystemExit:
        pass
    except BaseException as e:
        tb = traceback.extract_tb(e.__traceback__)
        where = [f"{f.filename.split('/ember/')[-1]}:{f.lineno} {f.name}" for f in tb[-3:]]
        result = {"kind": "exception", "what": type(e).__name__, "message": str(e)[:300],
                  "where": where}
    result["stage"] = stage
    result.setdefault("compile_s", time.perf_counter() - t0)
    print(json.dumps(result), flush=True)
"""


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Worker:
    """A Python process compiling and running candidates; restarted when it dies or hangs."""

    def __init__(self, workdir: Path, python: str) -> None:
        self.workdir, self.python = workdir, python
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ)
        # libstdc++ preloaded too: ASan's C++ throw interceptor needs it loaded at start,
        # or the first exception thrown inside onnx's C++ aborts the worker.
        env["LD_PRELOAD"] = " ".join(
            subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True,
                           text=True).stdout.strip() for lib in ("libasan.so", "libstdc++.so"))
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:exitcode=99"
        env.setdefault("EMBER_CACHE_DIR", str(self.workdir / "cache"))
        self.stderr = open(self.workdir / f"stderr-{id(self)}.txt", "w+")
        self.proc = subprocess.Popen([self.python, "-c", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env=env, cwd=str(Path(__file__).resolve().parents[1]))
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _stderr_tail(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        text = self.stderr.read()
        keep = [ln for ln in text.splitlines() if "ERROR: AddressSanitizer" in ln or
                ln.strip().startswith("#") or "SUMMARY" in ln]
        return "\n".join(keep[:12]) or text[-1500:]

    def handle(self, path: Path, seed: int, timeout: float) -> dict[str, Any]:
        if self.proc is None:
            self.start()
        base = _rss(self.proc.pid)
        self.stderr.seek(0)
        self.stderr.truncate()
        self.proc.stdin.write(json.dumps({"path": str(path), "seed": seed}) + "\n")
        self.proc.stdin.flush()
        lines: list[str] = []
        reader = threading.Thread(target=self._read, args=(lines,), daemon=True)
        reader.start()
        start, peak = time.monotonic(), 0
        while reader.is_alive():
            reader.join(0.1)
            peak = max(peak, _rss(self.proc.pid) - base)
            if peak > MEMORY_LIMIT:
                self.stop()
                return {"kind": "memory", "what": f"grew {peak >> 20} MiB",
                        "stage": self._stage(lines)}
            if time.monotonic() - start > timeout:
                self.stop()
                return {"kind": "hang", "what": f"over {timeout:.0f} s",
                        "stage": self._stage(lines)}
        result = next((json.loads(ln) for ln in lines if '"kind"' in ln), None)
        if result is None:
            code = self.proc.wait()
            tail = self._stderr_tail()
            self.proc = None
            return {"kind": "crash", "what": f"exit {code}", "message": tail,
                    "stage": self._stage(lines)}
        if result["kind"] in ("ok", "ember", "big") and result.get("compile_s", 0) > SLOW_COMPILE_S:
            result = {**result, "kind": "slow", "what": f"compile {result['compile_s']:.1f} s"}
        result["peak_mb"] = peak >> 20
        return result

    @staticmethod
    def _stage(lines: list[str]) -> str:
        return "run" if any('"stage": "run"' in ln for ln in lines) else "compile"

    def _read(self, lines: list[str]) -> None:
        while True:
            line = self.proc.stdout.readline() if self.proc else ""
            if not line:
                return
            lines.append(line)
            if '"kind"' in line:
                return


# -- the driver -----------------------------------------------------------------------------

def fuzz(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = seed_models()
    if args.seed_filter:
        seeds = {k: v for k, v in seeds.items() if any(s in k for s in args.seed_filter)}
    deadline = time.monotonic() + args.seconds
    counter = iter(range(args.iterations))
    lock = threading.Lock()
    stats: dict[str, int] = {}
    classes: dict[str, dict[str, Any]] = {}
    messages: dict[str, set[str]] = {}      # EmberError class -> messages, to review by eye

    def slot(index: int) -> None:
        rng = random.Random(args.seed * 1000 + index)
        work = Path(tempfile.mkdtemp(prefix=f"fuzz{index}-", dir=out))
        worker = Worker(out, sys.executable)
        try:
            while time.monotonic() < deadline:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                data, desc = candidate(seeds, rng)
                path = work / "candidate.onnx"
                path.write_bytes(data)
                result = worker.handle(path, n, args.timeout)
                with lock:
                    stats[result["kind"]] = stats.get(result["kind"], 0) + 1
                    if result["kind"] == "ember":
                        messages.setdefault(result["what"], set()).add(
                            result["message"].split(": ", 1)[-1][:120])
                    if result["kind"] in ("ok", "ember", "big"):
                        continue
                    key = f"{result['kind']}:{result.get('what')}:" + \
                          (str(result.get("where")) if "where" in result else
                           result.get("message", "")[:80].split("\n")[0])
                    entry = classes.setdefault(key, {"count": 0, "examples": []})
                    entry["count"] += 1
                    if len(entry["examples"]) < 3:
                        name = f"{result['kind']}-{len(classes):04d}-{len(entry['examples'])}.onnx"
                        (out / name).write_bytes(data)
                        entry["examples"].append({"file": name, "mutation": desc, **result})
                    if args.verbose:
                        print(f"[{n}] {result['kind']} {result.get('what')} {desc}\n    "
                              f"{result.get('message', '')[:200]}", flush=True)
        finally:
            worker.stop()

    threads = [threading.Thread(target=slot, args=(k,)) for k in range(args.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = {"outcomes": stats, "classes": classes,
               "messages": {k: sorted(v) for k, v in messages.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def replay(path: str, timeout: float) -> dict[str, Any]:
    """Compile and run one saved candidate in a fresh worker, as the fuzzer did."""
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-replay-"))
    worker = Worker(workdir, sys.executable)
    try:
        return worker.handle(Path(path).resolve(), 0, timeout)
    finally:
        worker.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="fuzz-out")
    p.add_argument("--seed-filter", nargs="*", help="only seeds whose names contain these")
    p.add_argument("--replay", help="run one saved candidate and print its outcome")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    if args.replay:
        print(json.dumps(replay(args.replay, args.timeout), indent=1))
        return
    summary = fuzz(args)
    print(json.dumps(summary["outcomes"]))
    for key, entry in sorted(summary["classes"].items(), key=lambda kv: -kv[1]["count"]):
        ex = entry["examples"][0]
        print(f"{entry['count']:5d}  {key[:150]}\n       e.g. {ex['file']}: {ex['mutation'][:150]}")


if __name__ == "__main__":
    main()
