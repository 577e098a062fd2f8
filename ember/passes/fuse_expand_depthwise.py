"""fuse-expand-depthwise: a 1x1 conv whose only reader (through a Relu or Clip) is a 3x3
depthwise conv becomes one ExpandDepthwiseConv (ops/expand_depthwise.py), so the expanded map
stays in cache, where that map is large enough to pay (schedule.expand_depthwise_pays:
MobileNetV2's 16 -> 96 expansion at 112x112).

    before:  %1 = Conv(%0, const f32[96,16,1,1], const f32[96]) : f32[1,96,112,112]
             %2 = Clip(%1, const 0, const 6) : f32[1,96,112,112]
             %3 = Conv(%2, const f32[96,1,3,3], const f32[96]) {group=96, pads=[1,1,1,1],
                  strides=[2,2]} : f32[1,96,56,56]
    after:   %3 = ExpandDepthwiseConv(%0, const f32[96,16], const f32[96], const f32[96,9],
                  const f32[96]) {stride=2, act_min=0.0, act_max=6.0} : f32[1,96,56,56]

It runs before choose-layout, which moves the fused node into a blocked NCHWc region with
its neighbours (NchwcExpandDepthwiseConv, ops/expand_depthwise_nchwc.py), and before
fuse-epilogues, which then fuses the depthwise conv's activation as it would the Conv's. Host
code only, as choose-layout: `ember export` keeps the plain convs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Graph, Node, Value, const_value
from ember.lower.schedule import expand_depthwise_pays
from ember.ops.conv import ConvGeometry
from ember.passes.base import Pass
from ember.passes.rewrite import float_conv, is_plain, label, output_ids, readers, splice


@dataclass(frozen=True)
class FuseExpandDepthwise(Pass):
    name = "fuse-expand-depthwise"

    def run(self, graph: Graph) -> Graph:
        users, outputs = readers(graph), output_ids(graph)

        def only_reader(v: Value, node: Node) -> bool:
            return v.id not in outputs and [id(n) for n in users.get(v.id, [])] == [id(node)]

        replaced: dict[int, Node] = {}
        removed: list[Node] = []
        for dw in graph.nodes:
            g = _conv(dw)
            if g is None or not _depthwise_3x3(g) or not expand_depthwise_pays(
                    4 * g.batch * g.in_channels * math.prod(g.in_sp)):
                continue
            act, bounds = dw.inputs[0].producer, (-math.inf, math.inf)
            if act is not None and (b := _activation(act)) is not None \
                    and only_reader(act.outputs[0], dw):
                bounds, expand = b, act.inputs[0].producer
            else:
                act, expand = None, act
            ge = None if expand is None else _conv(expand)
            if (ge is None or not ge.pointwise or ge.out_channels != g.in_channels
                    or not only_reader(expand.outputs[0], act or dw)):
                continue
            replaced[id(dw)] = _fused(expand, ge, dw, g, bounds, act)
            removed.extend(n for n in (expand, act) if n is not None)
        if replaced:
            splice(graph, replaced, removed)
        return graph


def _conv(node: Node) -> ConvGeometry | None:
    """float_conv, with a constant bias (the fused kernel packs the expansion's)."""
    b = node.input(2)
    return float_conv(node) if b is None or b.is_const else None


def _depthwise_3x3(g: ConvGeometry) -> bool:
    win = g.window
    return (g.depthwise and win.kernel == (3, 3)
            and win.strides in ((1, 1), (2, 2)) and win.dilations == (1, 1)
            and win.pads_begin == (1, 1) and win.pads_end == (1, 1)
            and g.out_sp == tuple((s - 1) // win.strides[0] + 1 for s in g.in_sp))


def _activation(node: Node) -> tuple[float, float] | None:
    """The clamp a plain Relu or Clip (constant scalar bounds) applies, else None."""
    if not is_plain(node) or node.outputs[0].type.dtype is not dt.F32:
        return None
    if node.op == "Relu":
        return 0.0, math.inf
    if node.op != "Clip":
        return None
    if node.opset < 11:
        return (float(node.attrs.get("min", -math.inf)), float(node.attrs.get("max", math.inf)))
    bounds = []
    for k, unbounded in ((1, -math.inf), (2, math.inf)):
        v = node.input(k)
        if v is not None and (not v.is_const or v.type.size != 1):
            return None
        bounds.append(unbounded if v is None else float(v.const.reshape(())))
    return bounds[0], bounds[1]


def _fused(expand: Node, ge: ConvGeometry, dw: Node, g: ConvGeometry,
           bounds: tuple[float, float], act: Node | None) -> Node:
    we = expand.inputs[1].const.reshape(ge.out_channels, ge.in_channels)
    wd = dw.inputs[1].const.reshape(g.out_channels, 9)
    inputs = [expand.inputs[0],
              const_value(np.ascontiguousarray(we), dt.F32, expand.inputs[1].name), expand.input(2),
              const_value(np.ascontiguousarray(wd), dt.F32, dw.inputs[1].name), dw.input(2)]
    attrs = {"stride": g.window.strides[0], "act_min": bounds[0], "act_max": bounds[1],
             "fused_from": [label(n) for n in (expand, act) if n is not None]}
    return Node("ExpandDepthwiseConv", inputs, list(dw.outputs), attrs, dw.name, dw.opset)
