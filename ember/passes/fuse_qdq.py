"""fuse-qdq: a quantized model in QDQ form runs as integer ops, as onnxruntime fuses it.

A QDQ model (onnxruntime.quantization.quantize_static, QuantFormat.QDQ) writes each quantized
layer as DequantizeLinear -> float op -> QuantizeLinear. onnxruntime's graph optimizer
(core/optimizer/qdq_transformer/selectors_actions) replaces such groups by integer kernels;
this pass does the same with Ember's integer ops (onnxruntime numerics, ops/qconv.py):

    DQ(x), DQ(w) [, DQ(int32 bias) | float bias] -> Conv -> Q   =>  QLinearConv
    DQ(a), DQ(b) -> MatMul -> Q                                 =>  QLinearMatMul
    DQ(a), DQ(B) [, bias] -> Gemm -> Q                          =>  QLinearConv 1x1 between
                                                                    Reshapes (QGemm's numerics)
    DQ -> MaxPool | Reshape | Transpose | Flatten | Squeeze | Unsqueeze | Slice | Gather |
          Expand | Tile -> Q, and DQs -> Concat -> Q, all with the Q's scale and zero point
                                                                =>  the op on the integers
    Relu | Clip -> Q, where the Q's range clamps as much        =>  the Relu / Clip goes
    DQ -> Relu -> Q with equal parameters                       =>  Max(q, zero point)

so a fused model gives onnxruntime's results (default graph optimizations) bit for bit:
  - QLinearConv / QLinearMatMul requantize the exact int32 sums as onnxruntime's kernels do
    (QGemm too: int32 bias added to the sums, the same float requantization, which the 1x1
    QLinearConv reproduces).
  - A float bias becomes int32 as onnxruntime's WeightBiasQuantization makes it:
    Round(bias / (x_scale * w_scale)) in float32, ties to even. A DQ'd int32 bias goes in as it
    is (onnxruntime assumes its scale is x_scale * w_scale and its zero point 0; a bias whose
    parameters are clearly otherwise stays float here).
  - Dropping a DQ/Q pair with equal parameters is exact: Q(DQ(q)) == q, and a max commutes
    with the increasing DQ of a positive scale. A Relu before a Q whose zero point is the
    type's minimum, or a Clip whose bounds quantize outside the type's range, changes nothing
    the Q outputs (onnxruntime's IsClipMadeRedundantByQ).
On x86, onnxruntime first moves int8 activations to uint8 (QDQS8ToU8Transformer, which
changes no value), so every pairing of 8-bit activations and weights fuses there, as here.
One departure: onnxruntime's AVX2 U8S8 kernels (VPMADDUBSW) saturate sums of two full-range
int8 weight products; Ember's int32 sums are exact, as onnxruntime's unfused graph is
(quantize_static's reduce_range keeps weights in 7 bits, where the two agree).
Rules, as onnxruntime's selectors: the float op's output is read by the one Q only and is no
graph output; scales and zero points are constants (per tensor, except the weights' per-channel
parameters on the output-channel axis); 8-bit integers, the activation's type also the
output's. The DQs stay for their other readers (eliminate-dead drops the rest). A weight's
DequantizeLinear is a node with constant inputs, or, where the importer folded it (opset 19+),
still the constant's `producer`: its integers are read from there (so this pass runs first,
before CSE or pack-weights rewrite constants).

What onnxruntime fuses and Ember has no integer op for (Add -> QLinearAdd, AveragePool,
GlobalAveragePool, Softmax, Sigmoid, LeakyRelu, Mul) stays float: onnxruntime's QLinear*
kernels of those round in their own way, so such layers can differ by one quantization step.

    before:  %3 = DequantizeLinear(%2 x_q, const f32[], const u8[]) : f32[1,3,8,8]
             %4 = Conv(%3, const f32[4,3,3,3], const f32[4]) {...} : f32[1,4,6,6]
             %5 = QuantizeLinear(%4, const f32[], const u8[]) : u8[1,4,6,6]
    after:   %5 = QLinearConv(%2, const f32[], const u8[], const i8[4,3,3,3], const f32[4],
                              const i8[4], const f32[], const u8[], const i32[4]) : u8[1,4,6,6]
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ember.errors import EmberError
from ember.graph import dtypes as dt
from ember.graph.ir import Graph, Node, TensorType, Value, const_value
from ember.ops.matmul import FOLDED_PERMS
from ember.ops.registry import get_op
from ember.passes.base import Pass
from ember.passes.eliminate_dead import EliminateDead
from ember.passes.rewrite import is_plain, output_ids, readers, splice

_Q8 = (dt.I8, dt.U8)
#: ops that move or select elements without computing: DQ -> op -> Q with equal parameters
#: runs the op on the integers (onnxruntime's DropQDQNodesRules, less Resize, which ORT
#: interpolates in integers differently)
_MOVES = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather",
          "GatherElements", "Expand", "Tile", "MaxPool", "Concat"}
#: a DQ'd int32 bias whose scale is this far from x_scale * w_scale is not what ORT assumes
_BIAS_SCALE_RTOL = 1e-4


@dataclass(frozen=True)
class _Dq:
    """A tensor behind a DequantizeLinear: its integers and constant parameters."""
    q: Value
    scale: Value
    zero_point: Value | None
    axis: int | None          # the axis of per-channel parameters; None: per tensor

    @property
    def dtype(self) -> dt.DType:
        return self.q.type.dtype

    def scales(self) -> np.ndarray:
        return np.asarray(self.scale.const, np.float32).reshape(-1)

    def zero_points(self) -> np.ndarray:
        if self.zero_point is None:
            return np.zeros(self.scale.type.size, np.int64)
        return np.asarray(self.zero_point.const).astype(np.int64).reshape(-1)

    def zero_point_value(self) -> Value:
        """The zero point input of an integer op (an explicit 0 when the DQ had none)."""
        if self.zero_point is not None:
            return self.zero_point
        return const_value(np.zeros(self.scale.type.shape), self.dtype)


@dataclass(frozen=True)
class _Q:
    """A QuantizeLinear with constant per-tensor parameters to 8 bits."""
    node: Node
    scale: Value
    zero_point: Value

    @property
    def out(self) -> Value:
        return self.node.outputs[0]

    @property
    def dtype(self) -> dt.DType:
        return self.out.type.dtype

    def scale_f32(self) -> np.float32:
        return np.float32(np.asarray(self.scale.const).reshape(-1)[0])

    def zero_point_int(self) -> int:
        return int(np.asarray(self.zero_point.const).reshape(-1)[0])


def _scalar(v: Value | None) -> bool:
    return v is not None and v.is_const and v.type.size == 1 and v.type.rank <= 1


def _unblocked(node: Node) -> bool:
    return node.opset < 21 or not int(node.attrs.get("block_size", 0) or 0)


def _dequantized(v: Value | None, live: set[int]) -> _Dq | None:
    """`v` as the output of a DequantizeLinear with constant parameters, else None.

    A run-time value's DQ is a node of the graph; a constant's is the node the importer folded
    it from (still its `producer`), whose inputs are then all constants.
    """
    node = v.producer if v is not None else None
    if (node is None or node.op != "DequantizeLinear" or not is_plain(node)
            or not node.outputs or node.outputs[0] is not v or not _unblocked(node)):
        return None
    if v.is_const != (id(node) not in live) or (v.is_const and not node.inputs[0].is_const):
        return None
    q, scale, zp = node.input(0), node.input(1), node.input(2)
    if q is None or scale is None or not scale.is_const or scale.type.dtype != dt.F32:
        return None
    if zp is not None and (not zp.is_const or (zp.type.shape != scale.type.shape
                                               and not (_scalar(zp) and _scalar(scale)))):
        return None
    if _scalar(scale):
        return _Dq(q, scale, zp, None)
    axis = int(node.attrs.get("axis", 1))
    rank = q.type.rank
    if scale.type.rank != 1 or not -rank <= axis < rank:
        return None
    axis %= rank
    return _Dq(q, scale, zp, axis) if q.type.shape[axis] == scale.type.size else None


def _quantizer(node: Node) -> _Q | None:
    """`node` as a QuantizeLinear to int8/uint8 with constant per-tensor parameters."""
    if node.op != "QuantizeLinear" or not is_plain(node) or not _unblocked(node):
        return None
    scale, zp = node.input(1), node.input(2)
    out = node.outputs[0].type.dtype
    if out not in _Q8 or not _scalar(scale) or scale.type.dtype != dt.F32:
        return None
    if zp is None:
        zp = const_value(np.zeros(()), out)
    return _Q(node, scale, zp) if _scalar(zp) else None


def _sole_q(v: Value, users: dict[int, list[Node]], outputs: set[int]) -> _Q | None:
    """The QuantizeLinear that is the only reader of `v` (no graph output), reading it as x."""
    found = users.get(v.id, [])
    if v.id in outputs or len(found) != 1:
        return None
    q = found[0]
    if q.op != "QuantizeLinear" or any(u is v for u in q.inputs[1:]):
        return None
    return _quantizer(q)


def _same_parameters(x: _Dq, q: _Q) -> bool:
    """Whether DQ `x` inverts Q `q` exactly (onnxruntime's IsQDQPairSupported)."""
    return (x.axis is None and x.dtype == q.dtype and x.scales()[0] == q.scale_f32()
            and int(x.zero_points()[0]) == q.zero_point_int())


def _make(op: str, inputs: list[Value | None], attrs: dict, like: Node, out: Value,
          opset: int | None = None) -> Node | None:
    """A node computing `out` (of `out`'s type), or None where Ember's op refuses it."""
    node = Node(op, inputs, [Value(out.type)], attrs, like.name, opset or like.opset)
    opdef = get_op(op)
    try:
        if opdef is None or opdef.check(node) or opdef.infer(node) != [out.type]:
            return None
    except EmberError:
        return None
    node.outputs = [out]
    out.producer = node
    return node


# -- redundant clamps ---------------------------------------------------------------------------
def _clip_bounds(node: Node) -> tuple[float, float] | None:
    if node.op == "Relu":
        return 0.0, float("inf")
    if node.opset < 11:
        return float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))
    bounds = []
    for k, default in ((1, -np.inf), (2, np.inf)):
        v = node.input(k)
        if v is not None and not _scalar(v):
            return None
        bounds.append(default if v is None else float(np.asarray(v.const).reshape(-1)[0]))
    return bounds[0], bounds[1]


def _made_redundant(clamp: Node, q: _Q) -> bool:
    """onnxruntime's IsClipMadeRedundantByQ: a Relu before a Q whose zero point is the type's
    minimum; a Clip whose bounds quantize (rint in float32) to the type's range or beyond."""
    bounds = _clip_bounds(clamp)
    if bounds is None or clamp.inputs[0].type.dtype != dt.F32:
        return False
    info = np.iinfo(q.dtype.numpy)
    zp = q.zero_point_int()
    if clamp.op == "Relu":
        return zp == info.min
    with np.errstate(all="ignore"):
        lo, hi = (np.rint(np.float32(b) / q.scale_f32()) + zp for b in bounds)
    return bool(lo <= info.min and hi >= info.max)


def _drop_redundant_clamps(graph: Graph) -> None:
    """Remove each Relu / Clip made redundant by the Q that alone reads it."""
    users, outputs = readers(graph), output_ids(graph)
    dropped: set[int] = set()
    for node in graph.nodes:
        if node.op not in ("Relu", "Clip") or not is_plain(node) or len(node.outputs) != 1:
            continue
        q = _sole_q(node.outputs[0], users, outputs)
        if q is not None and _made_redundant(node, q):
            q.node.inputs[0] = node.inputs[0]
            dropped.add(id(node))
    graph.nodes = [n for n in graph.nodes if id(n) not in dropped]


# -- integer ops --------------------------------------------------------------------------------
def _int32_bias(b: Value | None, x: _Dq, w: _Dq, channels: int, live: set[int]
                ) -> tuple[bool, Value | None]:
    """(usable, the int32 bias input) for a bias `b` of `channels` values."""
    if b is None:
        return True, None
    if b.type.size != channels or b.type.rank > 2:
        return False, None
    scale = x.scales()[0] * w.scales()        # float32, as onnxruntime's Mul
    dq = _dequantized(b, live)
    if dq is not None:
        fits = (dq.dtype == dt.I32 and dq.q.is_const and not dq.zero_points().any()
                and np.allclose(dq.scales(), scale, rtol=_BIAS_SCALE_RTOL, atol=0))
        return fits, const_value(dq.q.const.reshape(channels), dt.I32) if fits else None
    if not b.is_const or b.type.dtype != dt.F32:
        return False, None
    with np.errstate(all="ignore"):          # WeightBiasQuantization: Div, Round, Cast
        r = np.rint(np.asarray(b.const, np.float32).reshape(channels) / scale)
    if not np.all(np.abs(r) < 2.0 ** 31):     # NaN, inf or past int32: Cast is undefined
        return False, None
    return True, const_value(r.astype(np.int32), dt.I32)


def _conv_inputs(x: _Dq, w: _Dq, weights: Value, q: _Q, bias: Value | None) -> list[Value | None]:
    return [x.q, x.scale, x.zero_point_value(), weights, w.scale, w.zero_point_value(),
            q.scale, q.zero_point, bias]


def _activation(v: Value | None, q: _Q, live: set[int]) -> _Dq | None:
    """A DQ'd per-tensor 8-bit activation of the Q's integer type (as ORT's selectors ask)."""
    x = _dequantized(v, live)
    return x if x is not None and x.axis is None and x.dtype == q.dtype else None


def _weights(v: Value | None, axis: int, live: set[int]) -> _Dq | None:
    """DQ'd 8-bit weights, per tensor or per channel on `axis`."""
    w = _dequantized(v, live)
    return w if w is not None and w.dtype in _Q8 and w.axis in (None, axis) else None


def _fuse_conv(node: Node, q: _Q, live: set[int]) -> list[Node] | None:
    x, w = _activation(node.input(0), q, live), _weights(node.input(1), 0, live)
    if x is None or w is None or not w.q.is_const or w.q.type.rank < 3:
        return None
    usable, bias = _int32_bias(node.input(2), x, w, w.q.type.shape[0], live)
    if not usable:
        return None
    fused = _make("QLinearConv", _conv_inputs(x, w, w.q, q, bias), dict(node.attrs), node, q.out)
    return [fused] if fused is not None else None


def _fuse_matmul(node: Node, q: _Q, live: set[int]) -> list[Node] | None:
    if any(p in node.attrs for p in FOLDED_PERMS):
        return None
    a, b = _activation(node.input(0), q, live), _dequantized(node.input(1), live)
    # per-column b parameters are QLinearMatMul's for a 2-D b only
    if a is None or b is None or b.dtype not in _Q8 or \
            (b.axis is not None and (b.q.type.rank != 2 or b.axis != 1)):
        return None
    inputs = [a.q, a.scale, a.zero_point_value(), b.q, b.scale, b.zero_point_value(),
              q.scale, q.zero_point]
    fused = _make("QLinearMatMul", inputs, {}, node, q.out)
    return [fused] if fused is not None else None


def _fuse_gemm(node: Node, q: _Q, live: set[int]) -> list[Node] | None:
    """Y = A B' + C as onnxruntime's QGemm computes it: int32 sums plus the int32 bias,
    requantized per output column, which is a 1x1 QLinearConv of A's rows as images."""
    trans_b = bool(node.attrs.get("transB", 0))
    if (float(node.attrs.get("alpha", 1.0)) != 1.0 or node.attrs.get("transA", 0)
            or (node.input(2) is not None and float(node.attrs.get("beta", 1.0)) != 1.0)):
        return None
    a, b = _activation(node.input(0), q, live), _weights(node.input(1), 0 if trans_b else 1, live)
    if a is None or b is None or not b.q.is_const or a.q.type.rank != 2 or b.q.type.rank != 2:
        return None
    rows, depth = a.q.type.shape
    w = np.asarray(b.q.const)
    w = w if trans_b else w.T
    columns = w.shape[0]
    usable, bias = _int32_bias(node.input(2), a, b, columns, live)
    if not usable or w.shape[1] != depth:
        return None
    images = Value(TensorType(a.dtype, (rows, depth, 1, 1)))
    conv_out = Value(TensorType(q.dtype, (rows, columns, 1, 1)))
    opset = max(node.opset, 14)
    to_images = _make("Reshape", [a.q, const_value(np.array(images.type.shape), dt.I64)],
                      {"allowzero": 0}, node, images, opset)
    weights = const_value(w.reshape(columns, depth, 1, 1), b.dtype)
    inputs = _conv_inputs(replace(a, q=images), b, weights, q, bias)
    conv = to_images and _make("QLinearConv", inputs, {"auto_pad": "NOTSET", "group": 1}, node,
                               conv_out)
    to_rows = conv and _make("Reshape", [conv_out, const_value(np.array(q.out.type.shape), dt.I64)],
                             {"allowzero": 0}, node, q.out, opset)
    return [to_images, conv, to_rows] if to_rows is not None else None


def _drop_qdq(node: Node, q: _Q, live: set[int]) -> list[Node] | None:
    """The op on the integers, when every data input is DQ'd with the Q's parameters."""
    data = len(node.inputs) if node.op == "Concat" else 1
    inputs = list(node.inputs)
    for k in range(data):
        x = _dequantized(inputs[k], live)
        if x is None or not _same_parameters(x, q):
            return None
        inputs[k] = x.q
    if node.op == "MaxPool" and not q.scale_f32() > 0:    # a negative scale reverses the order
        return None
    moved = _make(node.op, inputs, dict(node.attrs), node, q.out)
    return [moved] if moved is not None else None


def _relu(node: Node, q: _Q, live: set[int]) -> list[Node] | None:
    """DQ -> Relu -> Q with equal parameters (left float by onnxruntime) is exactly
    max(q, zero point): with a positive scale DQ(q) <= 0 exactly when q <= zero point."""
    x = _dequantized(node.input(0), live)
    if x is None or not _same_parameters(x, q) or not q.scale_f32() > 0:
        return None
    kept = _make("Max", [x.q, q.zero_point], {}, node, q.out, max(node.opset, 13))
    return [kept] if kept is not None else None


_FUSIONS: dict[str, Callable[[Node, _Q, set[int]], list[Node] | None]] = {
    "Conv": _fuse_conv, "MatMul": _fuse_matmul, "Gemm": _fuse_gemm, "Relu": _relu,
    **{op: _drop_qdq for op in _MOVES}}


@dataclass(frozen=True)
class FuseQdq(Pass):
    name = "fuse-qdq"

    def run(self, graph: Graph) -> Graph:
        _drop_redundant_clamps(graph)
        users, outputs = readers(graph), output_ids(graph)
        live = {id(n) for n in graph.nodes}
        replaced: dict[int, Node | list[Node]] = {}
        removed: list[Node] = []
        for node in graph.nodes:
            fuse = _FUSIONS.get(node.op)
            if fuse is None or not is_plain(node) or len(node.outputs) != 1:
                continue
            q = _sole_q(node.outputs[0], users, outputs)
            new = fuse(node, q, live) if q is not None else None
            if new is not None:
                replaced[id(node)] = new
                removed.append(q.node)
        if replaced:
            splice(graph, replaced, removed)
        return EliminateDead().run(graph) if replaced else graph
