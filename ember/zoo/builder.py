"""GraphBuilder: write an ONNX model layer by layer, as a paper's table reads.

Each method adds one node (or a conventional pair such as Conv+bias), creates its seeded
random weights, tracks the output's static shape, and returns the output's name:

    g = GraphBuilder("tiny", seed=0)
    x = g.input("x", (1, 3, 32, 32))
    y = g.relu(g.bn(g.conv(x, 16, 3, pad=1)))
    model = g.build([g.softmax(g.gemm(g.flatten(g.global_avg_pool(y)), 10))])

Weights are He-initialised (std = sqrt(2 / fan_in)) so activations stay O(1) through deep
nets; BatchNormalization gets running statistics near (0, 1) so it neither explodes nor
silences its input. Shapes are tracked here (not by onnx shape inference) so builders can
ask `g.shape(name)` for channel counts while building.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

DEFAULT_OPSET = 17
Shape = tuple[int, ...]


def _pair(v: "int | Sequence[int]") -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window_out(size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1,
                ceil: bool = False) -> int:
    span = size + pad_total - dilation * (kernel - 1) - 1
    return (-(-span // stride) if ceil else span // stride) + 1


class GraphBuilder:
    """Accumulates nodes, initializers and shapes; `build()` returns a checked ModelProto."""

    def __init__(self, name: str, seed: int = 0, opset: int = DEFAULT_OPSET) -> None:
        self.name = name
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.metadata: dict[str, str] = {}
        self.shapes: dict[str, Shape] = {}
        self._counts: Counter[str] = Counter()

    # ---- plumbing -------------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        self._counts[prefix] += 1
        return f"{prefix}_{self._counts[prefix]}"

    def shape(self, name: str) -> Shape:
        return self.shapes[name]

    def input(self, name: str, shape: Sequence[int], dtype: type = np.float32,
              value_range: tuple[int, int] | None = None) -> str:
        """A graph input; `value_range` [low, high) tells random_inputs how to fill int inputs."""
        self.inputs.append(helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape)))
        self.shapes[name] = tuple(shape)
        if value_range is not None:
            self.metadata[f"ember.zoo.range.{name}"] = f"{value_range[0]},{value_range[1]}"
        return name

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        name = self.fresh(prefix)
        value = np.asarray(value)
        self.initializers.append(numpy_helper.from_array(value, name))
        self.shapes[name] = value.shape
        return name

    def weight(self, shape: Sequence[int], fan_in: int, prefix: str = "w",
               gain: float = 2.0) -> str:
        """Gaussian weights with variance gain / fan_in (He for gain 2, Xavier-like for 1)."""
        std = math.sqrt(gain / max(fan_in, 1))
        return self.const((self.rng.standard_normal(tuple(shape)) * std).astype(np.float32), prefix)

    def uniform(self, shape: Sequence[int], low: float, high: float, prefix: str) -> str:
        return self.const(self.rng.uniform(low, high, tuple(shape)).astype(np.float32), prefix)

    def node(self, op: str, inputs: Sequence[str], shapes: "Shape | list[Shape]",
             **attrs: object) -> "str | list[str]":
        """Add `op`; `shapes` is the output shape (one output) or a list of them."""
        multi = isinstance(shapes, list)
        out_shapes = shapes if multi else [shapes]
        outs = [self.fresh(op.lower()) for _ in out_shapes]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=self.fresh(f"n_{op}"),
                                           **attrs))
        for o, s in zip(outs, out_shapes):
            self.shapes[o] = tuple(int(d) for d in s)
        return outs if multi else outs[0]

    def unary(self, op: str, x: str, **attrs: object) -> str:
        return self.node(op, [x], self.shape(x), **attrs)

    def binary(self, op: str, a: str, b: str) -> str:
        return self.node(op, [a, b], np.broadcast_shapes(self.shape(a), self.shape(b)))

    def build(self, outputs: Sequence[str], doc: str = "") -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, list(self.shape(o)))
                for o in outputs]
        graph = helper.make_graph(self.nodes, self.name, self.inputs, outs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="ember.zoo", doc_string=doc)
        model.ir_version = 8            # what onnxruntime of the era reads
        helper.set_model_props(model, self.metadata)
        onnx.checker.check_model(model, full_check=True)
        return model

    # ---- convolution and normalisation ------------------------------------------------
    def conv(self, x: str, cout: int, kernel: "int | Sequence[int]", stride: int = 1,
             pad: "int | Sequence[int] | None" = None, group: int = 1, dilation: int = 1,
             bias: bool = True, auto_pad: str | None = None, gain: float = 2.0) -> str:
        """Conv2d; `pad=None` means 'same' for odd kernels (k // 2 each side)."""
        n, cin, h, w = self.shape(x)
        kh, kw = _pair(kernel)
        if cin % group or cout % group:
            raise ValueError(f"channels {cin}->{cout} not divisible by group {group}")
        wname = self.weight((cout, cin // group, kh, kw), fan_in=cin // group * kh * kw,
                            gain=gain)
        inputs = [x, wname] + ([self.uniform((cout,), -0.05, 0.05, "b")] if bias else [])
        attrs: dict[str, object] = {"kernel_shape": [kh, kw], "strides": [stride, stride],
                                    "group": group}
        if dilation != 1:
            attrs["dilations"] = [dilation, dilation]
        if auto_pad is not None:
            attrs["auto_pad"] = auto_pad
            oh, ow = -(-h // stride), -(-w // stride)
        else:
            ph, pw = _pair(pad) if pad is not None else (kh // 2, kw // 2)
            attrs["pads"] = [ph, pw, ph, pw]
            oh = _window_out(h, kh, stride, 2 * ph, dilation)
            ow = _window_out(w, kw, stride, 2 * pw, dilation)
        return self.node("Conv", inputs, (n, cout, oh, ow), **attrs)

    def depthwise(self, x: str, kernel: int, stride: int = 1, **kw: object) -> str:
        c = self.shape(x)[1]
        return self.conv(x, c, kernel, stride, group=c, **kw)

    def bn(self, x: str, gamma: tuple[float, float] = (0.8, 1.2)) -> str:
        """BatchNormalization (inference) with running stats near (0, 1); `gamma` range."""
        c = self.shape(x)[1]
        params = [self.uniform((c,), *gamma, "gamma"), self.uniform((c,), -0.1, 0.1, "beta"),
                  self.uniform((c,), -0.1, 0.1, "mean"), self.uniform((c,), 0.8, 1.2, "var")]
        return self.node("BatchNormalization", [x, *params], self.shape(x), epsilon=1e-5)

    def layer_norm(self, x: str, axis: int = -1, epsilon: float = 1e-12) -> str:
        d = self.shape(x)[axis]
        scale = self.uniform((d,), 0.8, 1.2, "ln_scale")
        bias = self.uniform((d,), -0.1, 0.1, "ln_bias")
        return self.node("LayerNormalization", [x, scale, bias], self.shape(x), axis=axis,
                         epsilon=epsilon)

    # ---- activations ----------------------------------------------------------------
    def relu(self, x: str) -> str:
        return self.unary("Relu", x)

    def relu6(self, x: str) -> str:
        lo, hi = self.const(np.float32(0), "zero"), self.const(np.float32(6), "six")
        return self.node("Clip", [x, lo, hi], self.shape(x))

    def sigmoid(self, x: str) -> str:
        return self.unary("Sigmoid", x)

    def swish(self, x: str) -> str:
        return self.mul(x, self.sigmoid(x))

    def softmax(self, x: str, axis: int = -1) -> str:
        return self.unary("Softmax", x, axis=axis)

    def gelu_erf(self, x: str) -> str:
        """x * 0.5 * (1 + erf(x / sqrt 2)), the node sequence exported BERT models contain."""
        e = self.unary("Erf", self.binary("Div", x, self.const(np.float32(math.sqrt(2)), "sqrt2")))
        one_plus = self.add(e, self.const(np.float32(1), "one"))
        return self.mul(self.mul(x, one_plus), self.const(np.float32(0.5), "half"))

    # ---- elementwise binary ---------------------------------------------------------
    def add(self, a: str, b: str) -> str:
        return self.binary("Add", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.binary("Mul", a, b)

    # ---- pooling ----------------------------------------------------------------------
    def _pool(self, op: str, x: str, kernel: "int | Sequence[int]", stride: "int | None",
              pad: int, ceil: bool, **attrs: object) -> str:
        n, c, h, w = self.shape(x)
        kh, kw = _pair(kernel)
        sh, sw = _pair(stride) if stride is not None else (kh, kw)
        oh = _window_out(h, kh, sh, 2 * pad, ceil=ceil)
        ow = _window_out(w, kw, sw, 2 * pad, ceil=ceil)
        return self.node(op, [x], (n, c, oh, ow), kernel_shape=[kh, kw], strides=[sh, sw],
                         pads=[pad] * 4, ceil_mode=int(ceil), **attrs)

    def maxpool(self, x: str, kernel: int, stride: int | None = None, pad: int = 0,
                ceil: bool = False) -> str:
        """MaxPool; the stride defaults to the kernel size."""
        return self._pool("MaxPool", x, kernel, stride, pad, ceil)

    def avgpool(self, x: str, kernel: "int | Sequence[int]", stride: int | None = None,
                pad: int = 0, count_include_pad: bool = False) -> str:
        """AveragePool; the stride defaults to the kernel size."""
        return self._pool("AveragePool", x, kernel, stride, pad, False,
                          count_include_pad=int(count_include_pad))

    def global_avg_pool(self, x: str) -> str:
        n, c = self.shape(x)[:2]
        return self.node("GlobalAveragePool", [x], (n, c) + (1,) * (len(self.shape(x)) - 2))

    # ---- dense ------------------------------------------------------------------------
    def flatten(self, x: str, axis: int = 1) -> str:
        s = self.shape(x)
        return self.node("Flatten", [x], (math.prod(s[:axis]), math.prod(s[axis:])), axis=axis)

    def gemm(self, x: str, nout: int, gain: float = 2.0) -> str:
        """Linear layer as PyTorch exports it: Gemm(x, W[nout, nin], b, transB=1)."""
        m, k = self.shape(x)
        w = self.weight((nout, k), fan_in=k, gain=gain)
        b = self.uniform((nout,), -0.05, 0.05, "b")
        return self.node("Gemm", [x, w, b], (m, nout), transB=1)

    def matmul(self, a: str, b: str) -> str:
        sa, sb = self.shape(a), self.shape(b)
        batch = np.broadcast_shapes(sa[:-2], sb[:-2])
        return self.node("MatMul", [a, b], tuple(batch) + (sa[-2], sb[-1]))

    def linear(self, x: str, nout: int, gain: float = 1.0) -> str:
        """MatMul by W[nin, nout] then Add bias: how transformers export their projections."""
        k = self.shape(x)[-1]
        y = self.matmul(x, self.weight((k, nout), fan_in=k, gain=gain))
        return self.add(y, self.uniform((nout,), -0.05, 0.05, "b"))

    # ---- data movement ----------------------------------------------------------------
    def reshape(self, x: str, shape: Sequence[int]) -> str:
        src = self.shape(x)
        out = [src[i] if d == 0 else d for i, d in enumerate(shape)]   # 0 copies the input dim
        if -1 in out:
            out[out.index(-1)] = math.prod(src) // -math.prod(out)
        return self.node("Reshape", [x, self.const(np.array(shape, np.int64), "shape")], tuple(out))

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        s = self.shape(x)
        return self.node("Transpose", [x], tuple(s[p] for p in perm), perm=list(perm))

    def concat(self, xs: Sequence[str], axis: int = 1) -> str:
        shape = list(self.shape(xs[0]))
        shape[axis] = sum(self.shape(x)[axis] for x in xs)
        return self.node("Concat", list(xs), tuple(shape), axis=axis)

    def split(self, x: str, sizes: Sequence[int], axis: int = 1) -> list[str]:
        shapes = []
        for size in sizes:
            s = list(self.shape(x))
            s[axis] = size
            shapes.append(tuple(s))
        return self.node("Split", [x, self.const(np.array(sizes, np.int64), "split")], shapes,
                         axis=axis)

    def gather(self, table: str, indices: str) -> str:
        s = self.shape(table)
        return self.node("Gather", [table, indices], self.shape(indices) + s[1:], axis=0)
