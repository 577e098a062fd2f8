"""GridSample (opsets 16, 20, 22): sample X at the normalized locations a grid gives.

X is [N, C, D1..DS], the grid [N, O1..OS, S] with its last dim in reverse axis order (x first,
for the last axis), the output [N, C, O1..OS]. Per output location the kernel turns each
coordinate into up to four taps (index, weight) per axis, then sums the K^S tap products for
every channel. The arithmetic follows onnxruntime (and the ONNX reference): coordinates in the
grid's type, nearest rounds half to even, padding applied to the coordinate and again to each tap.

Grid values are run-time data: every tap index is clamped or marked outside (-1) before it
is used, and a float is converted to an integer only once it is known to be in range, so NaN
or huge grid values can never read outside X.
"""
from __future__ import annotations

import math

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import strides
from ember.ops.registry import OpDef, fail, register_op
from ember.render.cwriter import CWriter

_FLOATS = (dt.F32, dt.F64)
# Mode names before opset 20 and since; each maps to (canonical name, taps per axis).
_MODES = {16: {"bilinear": ("linear", 2), "nearest": ("nearest", 1), "bicubic": ("cubic", 4)},
          20: {"linear": ("linear", 2), "nearest": ("nearest", 1), "cubic": ("cubic", 4)}}
_PADDINGS = ("zeros", "border", "reflection")
_CUBIC_A = -0.75     # Keys' coefficient, fixed by the spec


def _mode(node: Node) -> tuple[str, int]:
    names = _MODES[20 if node.opset >= 20 else 16]
    mode = node.attrs.get("mode", "linear" if node.opset >= 20 else "bilinear")
    if mode not in names:
        raise fail(node, f"mode {mode!r} is not one of {', '.join(names)} (opset {node.opset})")
    return names[mode]


def _padding(node: Node) -> str:
    padding = node.attrs.get("padding_mode", "zeros")
    if padding not in _PADDINGS:
        raise fail(node, f"padding_mode {padding!r} is not one of {', '.join(_PADDINGS)}")
    return padding


@register_op("GridSample")
class GridSample(OpDef):
    dtypes = _FLOATS

    def check(self, node: Node) -> list[str]:
        problems = super().check(node)
        grid = node.input(1)
        if grid is not None and grid.type.dtype not in _FLOATS:
            problems.append(f"grid element type {grid.type.dtype} is not supported "
                            "(supported: f32, f64)")
        return problems

    def infer(self, node: Node) -> list[TensorType]:
        _mode(node)
        _padding(node)
        if node.input(1) is None:
            raise fail(node, "input grid is required")
        x, grid = node.inputs[0].type, node.inputs[1].type
        if x.rank < 3:
            raise fail(node, f"X must have rank 3 or more, got {x.rank}")
        if node.opset < 20 and x.rank != 4:
            raise fail(node, f"X must have rank 4 before opset 20, got {x.rank}")
        spatial = x.rank - 2
        if grid.rank != x.rank or grid.shape[0] != x.shape[0] or grid.shape[-1] != spatial:
            raise fail(node, f"grid shape {list(grid.shape)} does not fit X of shape "
                             f"{list(x.shape)}: expected [{x.shape[0]}, ..., {spatial}] "
                             f"of rank {x.rank}")
        return [TensorType(x.dtype, x.shape[:2] + grid.shape[1:-1])]

    def lower(self, node: Node, ctx) -> None:
        x, grid = node.inputs[0].type, node.inputs[1].type
        mode, taps = _mode(node)
        padding = _padding(node)
        align = bool(node.attrs.get("align_corners", 0))
        n, c, dims = x.shape[0], x.shape[1], x.shape[2:]
        s = len(dims)
        points = math.prod(grid.shape[1:-1])
        g = grid.dtype.c
        w = ctx.w
        if not (n and c and points):
            return
        w.line(f"static const int64_t dims[{s}] = {{{', '.join(map(str, dims))}}};")
        w.line(f"static const int64_t step[{s}] = {{{', '.join(map(str, strides(dims)))}}};")
        w.line(f"int64_t off[{s}][{taps}];   /* element offset of each tap, -1: a zero pixel */")
        w.line(f"double wt[{s}][{taps}];")
        with w.loops((n, points), "i") as (b, p):
            w.line(f"const {g} *g = {ctx.ins[1]} + ({b} * {points} + {p}) * {s};")
            with w.block(f"for (int a = 0; a < {s}; ++a)"):
                w.line("const int64_t d = dims[a];")
                # The border: pixel centres (align_corners) or pixel edges.
                lo, hi = ("0", "d - 1") if align else ("-0.5", "d - 0.5")
                w.line(f"const {g} lo = ({g})({lo}), hi = ({g})({hi});")
                denorm = ("(g[{k}] + 1) / 2 * ({g})(d - 1)" if align
                          else "((g[{k}] + 1) * ({g})d - 1) / 2")
                w.line(f"{g} v = {denorm.format(k=f'{s - 1} - a', g=g)};")
                if mode == "nearest":
                    w.line("v = nearbyint(v);   /* half to even, as onnxruntime */")
                if padding == "border" and mode != "cubic":
                    # onnxruntime (like PyTorch) leaves a cubic coordinate as it is and clamps
                    # only its taps; the ONNX reference clamps it too.
                    w.line("if (v < lo || v > hi) v = v < 0 ? 0 : (v > d - 1 ? d - 1 : v);")
                elif padding == "reflection":
                    _reflect(w, g, "v")
                w.line(f"const {g} f = floor(v), t = v - f;")
                # NaN or far outside: every tap falls outside anyway (or the weights are NaN).
                w.line("const int64_t first = (f >= -8 && f <= d + 8) ? (int64_t)f : -8;")
                _weights(w, mode)
                with w.block(f"for (int k = 0; k < {taps}; ++k)"):
                    w.line(f"int64_t i = first + k{' - 1' if mode == 'cubic' else ''};")
                    if padding == "zeros":
                        w.line("off[a][k] = (i >= 0 && i < d) ? i * step[a] : -1;")
                    else:
                        if padding == "reflection":
                            w.line(f"{g} r = ({g})i;")
                            _reflect(w, g, "r")
                            w.line("i = (r >= 0 && r <= d) ? (int64_t)r : 0;")
                        w.line("i = i < 0 ? 0 : (i >= d ? d - 1 : i);")
                        w.line("off[a][k] = i * step[a];")
            with w.block(f"for (int64_t ch = 0; ch < {c}; ++ch)"):
                w.line(f"const {x.dtype.c} *src = {ctx.ins[0]} + ({b} * {c} + ch) * "
                       f"{math.prod(dims)};")
                w.line("double acc = 0;")
                with w.loops((taps,) * s, "k") as ks:
                    outside = " || ".join(f"off[{a}][{k}] < 0" for a, k in enumerate(ks))
                    at = " + ".join(f"off[{a}][{k}]" for a, k in enumerate(ks))
                    weight = " * ".join(f"wt[{a}][{k}]" for a, k in enumerate(ks))
                    # A zero pixel still multiplies its weight, so a NaN weight propagates.
                    w.line(f"acc += {weight} * (({outside}) ? 0.0 : (double)src[{at}]);")
                w.line(f"{ctx.outs[0]}[({b} * {c} + ch) * {points} + {p}] = "
                       f"({x.dtype.c})acc;")


def _reflect(w: CWriter, g: str, v: str) -> None:
    """Reflect `v` at lo and hi until it lies between them (lo == hi: v becomes lo)."""
    with w.block(f"if ({v} < lo || {v} > hi)"):
        w.line(f"const {g} range = hi - lo;")
        w.line(f"const int below = {v} < lo;")
        w.line(f"const {g} dx = below ? lo - {v} : {v} - hi;")
        w.line(f"const {g} m = range > 0 ? floor(dx / range) : 0;")
        w.line(f"const {g} rest = range > 0 ? dx - m * range : 0;")
        w.line("const int even = fmod(m, 2) == 0;")
        w.line(f"{v} = (below == even) ? lo + rest : hi - rest;")


def _weights(w: CWriter, mode: str) -> None:
    """wt[a][k] from t, the coordinate's distance past its floor."""
    if mode == "nearest":
        w.line("wt[a][0] = 1;")
    elif mode == "linear":
        w.line("wt[a][0] = 1 - (double)t;")
        w.line("wt[a][1] = (double)t;")
    else:
        # Keys' cubic convolution at distances 1 + t, t, 1 - t and 2 - t.
        A = _CUBIC_A
        w.line("const double u = (double)t;")
        for k, x in enumerate(("u + 1", "u", "1 - u", "2 - u")):
            if k in (0, 3):     # the outer taps, 1 < distance < 2
                w.line(f"wt[a][{k}] = ((({A}) * ({x}) - ({5 * A})) * ({x}) + ({8 * A})) * ({x})"
                       f" - ({4 * A});")
            else:
                w.line(f"wt[a][{k}] = (({A + 2} * ({x}) - {A + 3}) * ({x})) * ({x}) + 1;")
