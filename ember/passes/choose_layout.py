"""choose-layout: regions of small-map convolutions run channels-last.

Ember's convolution kernels read NCHW. On small maps channels-last pays: a 1x1 conv becomes a
MatMul [P, Cin] x [Cin, Cout] (P = N*H*W positions) whose activations the GEMM reads in
place, row by row, where the NCHW conv packs them (MobileNetV2's 28x28 to 7x7 projections
and DS-CNN's 64 -> 64 convs 0.9x the NCHW time), and a depthwise conv vectorizes over
channels (NhwcDepthwiseConv) where a 7-, 14- or 5-wide row fills vectors poorly. On larger
maps NCHW stays: there the 1x1 convs with few output channels have their own kernel
(conv_pointwise: 144 -> 24 at 56x56 1.3x quicker than the MatMul; MobileNetV2 with
max_positions 56x56 ran 1.013 of onnxruntime's time, 0.973 with 28x28).

A region is a connected set of nodes, each either
  - a float32 2-D Conv with constant weights reading a map of at most `max_positions`
    positions, pointwise (1x1, stride 1, no pads, one group) or depthwise (a group per
    input channel, one output channel each),
  - a plain elementwise op whose run-time inputs are 4-D tensors of its output's shape (or,
    for one image, [1, C, 1, 1]: a squeeze-excite scale) and whose constants are scalars or
    per-channel ([C, 1, 1] broadcast), or
  - a GlobalAveragePool (or an AveragePool over the whole unpadded map) of one image, which
    becomes a ReduceMean over the matrix's rows,
holding at least one Conv; an op before a region's first conv stays outside, fused into its
producer. Inside, a [N, C, H, W] tensor is the matrix [N*H*W, C]: a value
from outside enters through Transpose (0, 2, 3, 1) and Reshape (a view), a value read outside
(or a graph output) leaves through Reshape and Transpose (0, 3, 1, 2), once per value.

    before:  %1 = Conv(%0, const f32[8,1,3,3], const f32[8]) {group=8, pads=[1,1,1,1]}
                  : f32[1,8,7,7]
             %2 = Relu(%1) : f32[1,8,7,7]
             %3 = Conv(%2, const f32[16,8,1,1]) : f32[1,16,7,7]
    after:   %4 = Transpose(%0) {perm=[0, 2, 3, 1]} : f32[1,7,7,8]
             %5 = Reshape(%4, [49, 8]) : f32[49,8]
             %6 = NhwcDepthwiseConv(%5, const f32[9,8], const f32[8]) {...} : f32[49,8]
             %7 = Relu(%6) : f32[49,8]
             %8 = MatMul(%7, const f32[8,16]) : f32[49,16]
             %9 = Reshape(%8, [1, 7, 7, 16]) : f32[1,7,7,16]
             %3 = Transpose(%9) {perm=[0, 3, 1, 2]} : f32[1,16,7,7]

It runs after fold-batchnorm (the convs' weights are final) and before fuse-epilogues, which
then fuses each MatMul's bias Add, activation and residual Add as it would a Conv's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Graph, Node, TensorType, Value, const_value, topological_order
from ember.ops.conv import ConvGeometry
from ember.passes.base import Pass
from ember.passes.rewrite import (float_conv, is_elementwise, is_plain, output_ids, readers,
                                  reshape_node)

TO_CHANNELS_LAST, TO_CHANNELS_FIRST = [0, 2, 3, 1], [0, 3, 1, 2]


@dataclass(frozen=True)
class ChooseLayout(Pass):
    name = "choose-layout"
    #: largest input map (positions per image) of a conv that runs channels-last: 28x28
    max_positions: int = 28 * 28

    def run(self, graph: Graph) -> Graph:
        convs = {id(n): g for n in graph.nodes if (g := self._conv(n)) is not None}
        candidates = [n for n in graph.nodes
                      if id(n) in convs or _elementwise_fits(n) or _image_mean(n)]
        regions = {id(n) for region in _connected(candidates)
                   if any(id(n) in convs for n in region) for n in region}
        # An op before a region's first conv stays where it is, fused into its producer.
        chosen: set[int] = set()
        for n in graph.nodes:
            if id(n) in convs or (id(n) in regions and any(
                    v is not None and v.producer is not None and id(v.producer) in chosen
                    for v in n.inputs)):
                chosen.add(id(n))
        rewrite = _Rewrite(chosen, convs, readers(graph), output_ids(graph))
        replaced = {id(n): rewrite.node(n) for n in graph.nodes if id(n) in chosen}
        if replaced:
            nodes = [m for n in graph.nodes for m in replaced.get(id(n), [n])]
            graph.nodes = topological_order(nodes, graph.inputs)
        return graph

    def _conv(self, node: Node) -> ConvGeometry | None:
        """The geometry of a Conv this pass takes, else None."""
        g = float_conv(node)
        if g is None or math.prod(g.in_sp) > self.max_positions or g.batch * g.out_channels == 0:
            return None
        return g if g.pointwise or g.depthwise else None


def _elementwise_fits(node: Node) -> bool:
    """A plain elementwise node on 4-D tensors of its output's shape, with constants that
    broadcast per channel or are scalars."""
    if not is_elementwise(node) or node.outputs[0].type.rank != 4:
        return False
    shape = node.outputs[0].type.shape
    runtime = [v for v in node.inputs if v is not None and not v.is_const]
    return bool(runtime) and all(_operand_fits(v.type.shape, shape) for v in runtime) and all(
        _channel_const(v, shape[1]) is not None for v in node.inputs
        if v is not None and v.is_const)


def _operand_fits(shape: tuple[int, ...], out: tuple[int, ...]) -> bool:
    """A run-time operand of an elementwise node in a region: the output's shape, or one
    value per channel of a single image (a squeeze-excite scale: [C] per row, channels-last)."""
    return shape == out or (out[0] == 1 and shape == (1, out[1], 1, 1))


def _image_mean(node: Node) -> bool:
    """GlobalAveragePool, or an AveragePool whose window is the whole unpadded map, of one
    image: channels-last, the mean of the matrix's rows (ReduceMean over axis 0)."""
    x = node.input(0)
    if not is_plain(node) or x is None or x.type.rank != 4 or x.type.shape[0] != 1 \
            or x.type.dtype is not dt.F32 or 0 in x.type.shape:
        return False
    if node.op == "GlobalAveragePool":
        return True
    whole_map = list(node.attrs.get("kernel_shape", [])) == list(x.type.shape[2:])
    unpadded = (not any(node.attrs.get("pads") or [])
                and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"))
    return (node.op == "AveragePool" and whole_map and unpadded
            and node.outputs[0].type.shape == x.type.shape[:2] + (1, 1))


def _channel_const(v: Value, channels: int) -> Value | None:
    """Constant `v` as a channels-last operand: a scalar stays, one broadcast per channel
    becomes [C]; None for any other shape."""
    if v.type.rank == 0:
        return v
    padded = (1,) * (4 - v.type.rank) + v.type.shape if v.type.rank <= 4 else None
    if padded is None or padded[0] != 1 or padded[2:] != (1, 1):
        return None
    if padded[1] == 1:
        return const_value(v.const.reshape(()), v.type.dtype, v.name)
    if padded[1] != channels:
        return None
    return const_value(v.const.reshape(channels), v.type.dtype, v.name)


def _connected(nodes: list[Node]) -> list[list[Node]]:
    """The groups of `nodes` joined by a value one produces and another reads (union-find)."""
    parent = {id(n): id(n) for n in nodes}

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for n in nodes:
        for v in n.inputs:
            p = None if v is None else v.producer
            if p is not None and id(p) in parent:
                parent[root(id(n))] = root(id(p))
    groups: dict[int, list[Node]] = {}
    for n in nodes:
        groups.setdefault(root(id(n)), []).append(n)
    return list(groups.values())


class _Rewrite:
    """The chosen nodes in channels-last form, with the entry and exit layout changes."""

    def __init__(self, chosen: set[int], convs: dict[int, ConvGeometry],
                 users: dict[int, list[Node]], outputs: set[int]) -> None:
        self.chosen, self.convs = chosen, convs
        self.users, self.outputs = users, outputs
        self.flat: dict[int, Value] = {}      # value id -> its [N*H*W, C] form, made once

    def node(self, node: Node) -> list[Node]:
        """The nodes standing where `node` stood: entries of its inputs, its channels-last
        form, and the exit of its result when something outside reads it. Called in graph
        order, so a value's producer comes before its readers."""
        made: list[Node] = []
        inputs = [None if v is None else self.operand(v, node, made) for v in node.inputs]
        result = node.outputs[0]
        flat = Value(TensorType(result.type.dtype, _matrix(result.type.shape)))
        g = self.convs.get(id(node))
        if g is not None and g.pointwise:
            made.extend(_matmul(node, g, inputs[0], flat))
        elif g is not None:
            made.append(_depthwise_node(node, g, inputs[0], flat))
        elif is_elementwise(node):
            made.append(Node(node.op, inputs, [flat], node.attrs, node.name, node.opset,
                             node.domain))
        else:
            made.append(Node("ReduceMean", inputs[:1], [flat], {"axes": [0], "keepdims": 1},
                             node.name, 13))
        self.flat[result.id] = flat
        if self.read_outside(result):
            made.extend(_to_channels_first(flat, result, node))
        return made

    def operand(self, v: Value, node: Node, made: list[Node]) -> Value:
        """Input `v` of `node` as the channels-last node reads it (entering if it comes from
        outside)."""
        if v.is_const:      # (an elementwise node's constants all convert: _elementwise_fits)
            return _channel_const(v, node.outputs[0].type.shape[1]) if is_elementwise(node) else v
        if v.id not in self.flat:
            self.flat[v.id] = _to_channels_last(v, node, made)
        return self.flat[v.id]

    def read_outside(self, v: Value) -> bool:
        return v.id in self.outputs or any(id(n) not in self.chosen
                                           for n in self.users.get(v.id, []))


def _matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    n, c, h, w = shape
    return n * h * w, c


def _moves_data(shape: tuple[int, ...]) -> bool:
    """Whether NCHW and channels-last order `shape`'s elements differently."""
    n, c, h, w = shape
    return c > 1 and h * w > 1


def _to_channels_last(v: Value, like: Node, made: list[Node]) -> Value:
    flat = Value(TensorType(v.type.dtype, _matrix(v.type.shape)))
    if not _moves_data(v.type.shape):
        made.append(reshape_node(v, flat, like))
        return flat
    n, c, h, w = v.type.shape
    nhwc = Value(TensorType(v.type.dtype, (n, h, w, c)))
    made.append(Node("Transpose", [v], [nhwc], {"perm": TO_CHANNELS_LAST}, like.name, like.opset))
    made.append(reshape_node(nhwc, flat, like))
    return flat


def _to_channels_first(flat: Value, v: Value, like: Node) -> list[Node]:
    """Nodes computing `v` (the original NCHW value, so its readers stay as they are)."""
    if not _moves_data(v.type.shape):
        return [reshape_node(flat, v, like)]
    n, c, h, w = v.type.shape
    nhwc = Value(TensorType(v.type.dtype, (n, h, w, c)))
    return [reshape_node(flat, nhwc, like),
            Node("Transpose", [nhwc], [v], {"perm": TO_CHANNELS_FIRST}, like.name, like.opset)]


def _matmul(conv: Node, g: ConvGeometry, x: Value, out: Value) -> list[Node]:
    """A pointwise Conv as MatMul by its weights transposed ([Cin, Cout]), then its bias."""
    w = conv.inputs[1].const.reshape(g.out_channels, g.in_channels).T
    weights = const_value(np.ascontiguousarray(w), dt.F32, conv.inputs[1].name)
    bias = conv.input(2)
    if bias is None:
        return [Node("MatMul", [x, weights], [out], {}, conv.name, conv.opset)]
    product = Value(TensorType(dt.F32, out.type.shape))
    return [Node("MatMul", [x, weights], [product], {}, conv.name, conv.opset),
            Node("Add", [product, bias], [out], {}, conv.name, conv.opset)]


def _depthwise_node(conv: Node, g: ConvGeometry, x: Value, out: Value) -> Node:
    win = g.window
    kh, kw = win.kernel
    w = conv.inputs[1].const.reshape(g.out_channels, kh * kw).T
    weights = const_value(np.ascontiguousarray(w), dt.F32, conv.inputs[1].name)
    bias = conv.input(2)
    attrs = {"image": [g.batch, *g.in_sp], "kernel_shape": [kh, kw],
             "strides": list(win.strides), "dilations": list(win.dilations),
             "pads": [win.pads_begin[0], win.pads_begin[1], win.pads_end[0], win.pads_end[1]]}
    inputs = [x, weights] + ([bias] if bias is not None else [])
    return Node("NhwcDepthwiseConv", inputs, [out], attrs, conv.name, conv.opset)
