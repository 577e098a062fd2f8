"""choose-layout: regions of small-map convolutions run channels-last, large-map regions blocked
NCHWc where that pays; the rest stays NCHW.

Ember's convolution kernels read NCHW. On small maps channels-last pays: a 1x1 conv becomes a
MatMul [P, Cin] x [Cin, Cout] (P = N*H*W positions) whose activations the GEMM reads in
place, row by row, where the NCHW conv packs them (MobileNetV2's 28x28 to 7x7 projections
and DS-CNN's 64 -> 64 convs 0.9x the NCHW time), and a depthwise conv vectorizes over
channels (NhwcDepthwiseConv) where a 7-, 14- or 5-wide row fills vectors poorly. On larger
maps the 1x1 convs with few output channels have their own NCHW kernel (conv_pointwise: 144
-> 24 at 56x56 1.3x quicker than the MatMul; MobileNetV2 with max_positions 56x56 ran 1.013
of onnxruntime's time, 0.973 with 28x28). There, blocked NCHWc ([N, C/8, H*W, 8]: eight
channels of a position one vector) runs a 1x1 conv as whole output vectors per position
(NchwcConv) and a depthwise conv as the channels-last kernel per block of 8 channels
(NchwcDepthwiseConv), and a 1x1 expansion fused into a depthwise conv by fuse-expand-depthwise
as NchwcExpandDepthwiseConv; a large-map region goes blocked where every channel count is a
multiple of 8 and schedule.nchwc_region_pays takes it (MobileNetV2's 112x112 and 56x56
blocks), else it stays NCHW.

A region is a connected set of nodes, each either
  - a float32 2-D Conv with constant weights, pointwise (1x1, stride 1, no pads, one group)
    or depthwise (a group per input channel, one output channel each): channels-last when
    it reads a map of at most `max_positions` positions, else blocked,
  - an ExpandDepthwiseConv on a larger map (blocked only),
  - a network's first conv (one group, at most 4 input channels) whose output map is larger
    (blocked only: NchwcDirectConv reads its NCHW input as it is, so the region starts with
    no layout change; where its region does not go blocked it stays a Conv),
  - a plain elementwise op whose run-time inputs are 4-D tensors of its output's shape (or,
    for one image, [1, C, 1, 1]: a squeeze-excite scale) and whose constants are scalars or
    per-channel ([C, 1, 1] broadcast), in the layout of its first producer in a region, or
  - a GlobalAveragePool (or an AveragePool over the whole unpadded map) of one image after a
    channels-last node, which becomes a ReduceMean over the matrix's rows,
holding at least one Conv; an op before a region's first conv stays outside, fused into its
producer. Inside, a [N, C, H, W] tensor is the matrix [N*H*W, C] (channels-last) or
[N, C/8, H*W, 8] (blocked): a value from outside enters through Transpose and Reshape (a
view), a value read outside (or a graph output) leaves the same way back, once per value; a
value going from a blocked region straight into a channels-last one moves in one transpose
([N, C/8, H*W, 8] -> [N, H*W, C/8, 8], a view of [N*H*W, C]).

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

It runs after fold-batchnorm (the convs' weights are final) and fuse-expand-depthwise (whose
fused node it moves with its region), and before fuse-epilogues, which then fuses each
MatMul's, NchwcConv's and depthwise conv's bias Add, activation and residual Add as it would
a Conv's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ember.errors import EmberError
from ember.graph import dtypes as dt
from ember.graph.ir import Graph, Node, TensorType, Value, const_value, topological_order
from ember.lower.schedule import DIRECT_MAX_CHANNELS, nchwc_region_pays
from ember.ops.conv import ConvGeometry
from ember.ops.conv_nchwc import BLOCK
from ember.ops.expand_depthwise import ExpandGeometry, expand_geometry
from ember.passes.base import Pass
from ember.passes.rewrite import (float_conv, is_elementwise, is_plain, output_ids, readers,
                                  reshape_node)

TO_CHANNELS_LAST, TO_CHANNELS_FIRST = [0, 2, 3, 1], [0, 3, 1, 2]
SWAP_LAST_TWO, SWAP_MIDDLE = [0, 1, 3, 2], [0, 2, 1, 3]
#: one step of a layout change: a Transpose by perm, or (perm None) a Reshape; its result shape
Step = tuple["list[int] | None", tuple[int, ...]]
Layer = "ConvGeometry | ExpandGeometry"


@dataclass(frozen=True)
class ChooseLayout(Pass):
    name = "choose-layout"
    #: largest input map (positions per image) of a conv that runs channels-last: 28x28;
    #: larger maps run blocked where every channel count is a multiple of 8
    max_positions: int = 28 * 28

    def run(self, graph: Graph) -> Graph:
        convs = {id(n): g for n in graph.nodes if (g := _layer(n)) is not None}
        layout_of = {k: self._layout(g) for k, g in convs.items()}
        for region in _connected([n for n in graph.nodes if layout_of.get(id(n)) is BLOCKED
                                  or (_elementwise_fits(n) and self._large(n))]):
            layers = [convs[id(n)] for n in region if id(n) in convs]
            pointwise = [(g.in_channels, g.out_channels) for g in layers
                         if isinstance(g, ConvGeometry) and g.pointwise]
            if not nchwc_region_pays(pointwise, sum(isinstance(g, ExpandGeometry)
                                                    for g in layers)):
                layout_of.update({id(n): None for n in region if id(n) in convs})
        convs = {k: g for k, g in convs.items() if layout_of[k] is not None}
        candidates = [n for n in graph.nodes
                      if id(n) in convs or _elementwise_fits(n) or _image_mean(n)]
        regions = {id(n) for region in _connected(candidates)
                   if any(id(n) in convs for n in region) for n in region}
        # An op before a region's first conv stays where it is, fused into its producer;
        # any other takes the layout of its first producer in a region, where it fits it.
        chosen: dict[int, _Layout] = {}
        for n in graph.nodes:
            if id(n) in convs:
                chosen[id(n)] = layout_of[id(n)]
            elif id(n) in regions:
                layout = next((chosen[id(v.producer)] for v in n.inputs if v is not None
                               and v.producer is not None and id(v.producer) in chosen), None)
                if layout is not None and layout.takes(n):
                    chosen[id(n)] = layout
        rewrite = _Rewrite(chosen, convs, readers(graph), output_ids(graph))
        replaced = {id(n): rewrite.node(n) for n in graph.nodes if id(n) in chosen}
        if replaced:
            nodes = [m for n in graph.nodes for m in replaced.get(id(n), [n])]
            graph.nodes = topological_order(nodes, graph.inputs)
        return graph

    def _large(self, node: Node) -> bool:
        return math.prod(node.outputs[0].type.shape[2:]) > self.max_positions

    def _layout(self, g: Layer) -> _Layout | None:
        """The layout a pointwise or depthwise conv (or a fused expansion into a depthwise
        conv, which has no channels-last form) runs in, None: it stays NCHW."""
        if isinstance(g, ExpandGeometry):
            blockable = g.in_channels % BLOCK == 0 == g.channels % BLOCK
            return BLOCKED if blockable and g.in_h * g.in_w > self.max_positions else None
        if _reads_nchw(g):
            large = math.prod(g.out_sp) > self.max_positions
            return BLOCKED if large and g.out_channels % BLOCK == 0 else None
        if math.prod(g.in_sp) <= self.max_positions:
            return CHANNELS_LAST
        blockable = g.in_channels > 0 and g.in_channels % BLOCK == 0 == g.out_channels % BLOCK
        return BLOCKED if blockable else None


class _Layout:
    """How a region holds a [N, C, H, W] value, and how values enter and leave it."""
    name: str

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def takes(self, node: Node) -> bool:
        """Whether a non-conv node of a region runs in this layout."""
        raise NotImplementedError

    def entry(self, shape: tuple[int, ...]) -> list[Step]:
        """The steps taking an NCHW value of `shape` (one that moves data) into this layout."""
        raise NotImplementedError

    def exit(self, shape: tuple[int, ...]) -> list[Step]:
        raise NotImplementedError

    def enter(self, v: Value, like: Node, made: list[Node]) -> Value:
        shape = v.type.shape
        made.extend(_steps(v, self.entry(shape) if _moves_data(shape)
                           else [(None, self.shape(shape))], like))
        return made[-1].outputs[0]

    def leave(self, inner: Value, v: Value, like: Node) -> list[Node]:
        """Nodes computing `v` (the original NCHW value, so its readers stay as they are)."""
        shape = v.type.shape
        return _steps(inner, self.exit(shape) if _moves_data(shape) else [(None, shape)], like,
                      last=v)

    def channel_shape(self, channels: int) -> tuple[int, ...]:
        """The shape of one value per channel, as it broadcasts over this layout's values."""
        raise NotImplementedError

    def channel_const(self, v: Value, channels: int) -> Value | None:
        """Constant `v` broadcast per channel (then shaped channel_shape), or a scalar (it
        stays); None for any other shape."""
        per_channel = _per_channel(v, channels)
        if per_channel is None or per_channel.type.rank == 0:
            return per_channel
        return const_value(per_channel.const.reshape(self.channel_shape(channels)),
                           v.type.dtype, v.name)

    def conv(self, conv: Node, g: Layer, x: Value, out: Value) -> list[Node]:
        raise NotImplementedError


class _ChannelsLast(_Layout):
    """[N*H*W, C]: 1x1 convs become MatMuls, depthwise convs NhwcDepthwiseConv."""
    name = "channels-last"

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = shape
        return n * h * w, c

    def takes(self, node: Node) -> bool:
        return True

    def entry(self, shape: tuple[int, ...]) -> list[Step]:
        n, c, h, w = shape
        return [(TO_CHANNELS_LAST, (n, h, w, c)), (None, (n * h * w, c))]

    def exit(self, shape: tuple[int, ...]) -> list[Step]:
        n, c, h, w = shape
        return [(None, (n, h, w, c)), (TO_CHANNELS_FIRST, shape)]

    def channel_shape(self, channels: int) -> tuple[int, ...]:
        return (channels,)

    def conv(self, conv: Node, g: ConvGeometry, x: Value, out: Value) -> list[Node]:
        return _matmul(conv, g, x, out) if g.pointwise else [_depthwise_node(conv, g, x, out)]


class _Blocked(_Layout):
    """Blocked NCHWc, [N, C/8, H*W, 8]: 1x1 convs become NchwcConv, depthwise convs
    NchwcDepthwiseConv. Every channel count in the region is a multiple of 8."""
    name = "nchwc"

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = shape
        return n, c // BLOCK, h * w, BLOCK

    def takes(self, node: Node) -> bool:
        return is_elementwise(node) and node.outputs[0].type.shape[1] % BLOCK == 0

    def entry(self, shape: tuple[int, ...]) -> list[Step]:
        n, c, h, w = shape
        return [(None, (n, c // BLOCK, BLOCK, h * w)), (SWAP_LAST_TWO, self.shape(shape))]

    def exit(self, shape: tuple[int, ...]) -> list[Step]:
        n, c, h, w = shape
        return [(SWAP_LAST_TWO, (n, c // BLOCK, BLOCK, h * w)), (None, shape)]

    def channel_shape(self, channels: int) -> tuple[int, ...]:
        return channels // BLOCK, 1, BLOCK

    def conv(self, conv: Node, g: Layer, x: Value, out: Value) -> list[Node]:
        if isinstance(g, ExpandGeometry):
            attrs = dict(conv.attrs, image=[g.batch, g.in_h, g.in_w])
            return [Node("NchwcExpandDepthwiseConv", [x] + conv.inputs[1:], [out], attrs,
                         conv.name, conv.opset)]
        if _reads_nchw(g):
            return [Node("NchwcDirectConv", conv.inputs, [out], conv.attrs, conv.name,
                         conv.opset)]
        weights, bias = conv.inputs[1].const, conv.input(2)
        if g.pointwise:
            w = weights.reshape(g.out_channels, g.in_channels).T
            op, attrs = "NchwcConv", {}
        else:
            kh, kw = g.window.kernel
            w = weights.reshape(g.out_channels // BLOCK, BLOCK, kh * kw).transpose(0, 2, 1)
            op, attrs = "NchwcDepthwiseConv", _depthwise_attrs(g)
        packed = const_value(np.ascontiguousarray(w), dt.F32, conv.inputs[1].name)
        inputs = [x, packed] + ([bias] if bias is not None else [])
        return [Node(op, inputs, [out], attrs, conv.name, conv.opset)]


CHANNELS_LAST, BLOCKED = _ChannelsLast(), _Blocked()


def _layer(node: Node) -> Layer | None:
    """The geometry of a node this pass may move: a pointwise or depthwise float conv, a
    network's first conv (few input channels: _reads_nchw), or a fused expansion into a
    depthwise conv; else None."""
    if node.op == "ExpandDepthwiseConv":
        try:
            return expand_geometry(node)
        except EmberError:
            return None
    g = float_conv(node)
    if g is None or g.batch * g.out_channels * math.prod(g.out_sp) == 0:
        return None
    return g if g.pointwise or g.depthwise or _reads_nchw(g) else None


def _reads_nchw(g: Layer) -> bool:
    """A 2-D conv of one group with few input channels (a network's first): in a blocked
    region it reads its NCHW input as it is (NchwcDirectConv), no layout change before it."""
    return (isinstance(g, ConvGeometry) and not (g.pointwise or g.depthwise) and g.groups == 1
            and len(g.in_sp) == 2 and g.in_channels <= DIRECT_MAX_CHANNELS)


def _elementwise_fits(node: Node) -> bool:
    """A plain elementwise node on 4-D tensors of its output's shape, with constants that
    broadcast per channel or are scalars."""
    if not is_elementwise(node) or node.outputs[0].type.rank != 4:
        return False
    shape = node.outputs[0].type.shape
    runtime = [v for v in node.inputs if v is not None and not v.is_const]
    return bool(runtime) and all(_operand_fits(v.type.shape, shape) for v in runtime) and all(
        _per_channel(v, shape[1]) is not None for v in node.inputs
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


def _per_channel(v: Value, channels: int) -> Value | None:
    """Constant `v` as a scalar (one element) or [C] (one per channel: [C,1,1], [1,C,1,1]);
    None for any other shape."""
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
    """The chosen nodes in their layouts, with the entry and exit layout changes."""

    def __init__(self, chosen: dict[int, _Layout], convs: dict[int, Layer],
                 users: dict[int, list[Node]], outputs: set[int]) -> None:
        self.chosen, self.convs = chosen, convs
        self.users, self.outputs = users, outputs
        #: value id -> {layout name: the value in that layout}, each made once
        self.inner: dict[int, dict[str, Value]] = {}

    def node(self, node: Node) -> list[Node]:
        """The nodes standing where `node` stood: entries of its inputs, its form in its
        layout, and the exit of its result when something outside reads it. Called in graph
        order, so a value's producer comes before its readers."""
        layout = self.chosen[id(node)]
        made: list[Node] = []
        g = self.convs.get(id(node))
        inputs = list(node.inputs) if g is not None and _reads_nchw(g) else [
            None if v is None else self.operand(v, node, layout, made) for v in node.inputs]
        result = node.outputs[0]
        inner = Value(TensorType(result.type.dtype, layout.shape(result.type.shape)))
        if g is not None:
            made.extend(layout.conv(node, g, inputs[0], inner))
        elif is_elementwise(node):
            made.append(Node(node.op, inputs, [inner], node.attrs, node.name, node.opset,
                             node.domain))
        else:
            made.append(Node("ReduceMean", inputs[:1], [inner], {"axes": [0], "keepdims": 1},
                             node.name, 13))
        self.inner.setdefault(result.id, {})[layout.name] = inner
        if self.read_outside(result, layout):
            made.extend(layout.leave(inner, result, node))
        return made

    def operand(self, v: Value, node: Node, layout: _Layout, made: list[Node]) -> Value:
        """Input `v` of `node` as its form in `layout` reads it (entering if it comes from
        outside, or straight from the other layout)."""
        if v.is_const:      # (an elementwise node's constants all convert: _elementwise_fits)
            return (layout.channel_const(v, node.outputs[0].type.shape[1])
                    if is_elementwise(node) else v)
        forms = self.inner.setdefault(v.id, {})
        if layout.name not in forms:
            other = next(iter(forms.values()), None)
            forms[layout.name] = (_between(other, v, layout, node, made)
                                  if other is not None else layout.enter(v, node, made))
        return forms[layout.name]

    def read_outside(self, v: Value, layout: _Layout) -> bool:
        return v.id in self.outputs or any(
            self.chosen.get(id(n)) is not layout for n in self.users.get(v.id, []))


def _between(inner: Value, v: Value, layout: _Layout, like: Node, made: list[Node]) -> Value:
    """NCHW value `v`, held in the other layout as `inner`, in `layout`: one transpose of the
    channel blocks and the positions ([N, C/8, H*W, 8] <-> [N, H*W, C/8, 8]), not two through
    NCHW. (The other layout's exit to NCHW, if nothing else reads it, is left dead.)"""
    n, c, h, w = v.type.shape
    positions_first = (n, h * w, c // BLOCK, BLOCK)
    steps: list[Step] = ([(SWAP_MIDDLE, positions_first), (None, layout.shape(v.type.shape))]
                         if layout is CHANNELS_LAST else
                         [(None, positions_first), (SWAP_MIDDLE, layout.shape(v.type.shape))])
    made.extend(_steps(inner, steps, like))
    return made[-1].outputs[0]


def _steps(v: Value, steps: list[Step], like: Node, last: Value | None = None) -> list[Node]:
    """Nodes taking `v` through `steps`, each a Transpose by its perm or (perm None) a Reshape
    to its shape; the last result is `last` where given."""
    nodes = []
    for k, (perm, shape) in enumerate(steps):
        out = last if last is not None and k == len(steps) - 1 else \
            Value(TensorType(v.type.dtype, shape))
        nodes.append(reshape_node(v, out, like) if perm is None else
                     Node("Transpose", [v], [out], {"perm": perm}, like.name, like.opset))
        v = out
    return nodes


def _moves_data(shape: tuple[int, ...]) -> bool:
    """Whether NCHW and the region's layout order `shape`'s elements differently."""
    n, c, h, w = shape
    return c > 1 and h * w > 1


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


def _depthwise_attrs(g: ConvGeometry) -> dict:
    win = g.window
    kh, kw = win.kernel
    return {"image": [g.batch, *g.in_sp], "kernel_shape": [kh, kw],
            "strides": list(win.strides), "dilations": list(win.dilations),
            "pads": [win.pads_begin[0], win.pads_begin[1], win.pads_end[0], win.pads_end[1]]}


def _depthwise_node(conv: Node, g: ConvGeometry, x: Value, out: Value) -> Node:
    kh, kw = g.window.kernel
    w = conv.inputs[1].const.reshape(g.out_channels, kh * kw).T
    weights = const_value(np.ascontiguousarray(w), dt.F32, conv.inputs[1].name)
    bias = conv.input(2)
    inputs = [x, weights] + ([bias] if bias is not None else [])
    return Node("NhwcDepthwiseConv", inputs, [out], _depthwise_attrs(g), conv.name, conv.opset)
