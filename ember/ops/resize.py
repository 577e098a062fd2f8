"""Resize and Upsample: nearest, linear and cubic interpolation over any axes of an N-D tensor.

Scales and sizes are compile-time constants, so everything that depends only on positions
(source coordinates, neighbour indices, interpolation weights) is computed here in float64,
following onnx/reference/ops/op_resize.py, and written into the kernel as small per-axis
tables. The generated code then only gathers and weighs:
  - nearest: one pass; each output element copies the input element its axis tables name;
  - linear/cubic: separable, one pass per resized axis (as the reference does), through two
    scratch buffers, each output a weighted sum of `taps` neighbours along that axis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import offset_expr, strides
from ember.ops.registry import OpDef, fail, register_op, unsupported
from ember.render.cwriter import CWriter, c_float, c_literal

_MODES = ("nearest", "linear", "cubic")
_TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
               "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_POLICIES = ("stretch", "not_larger", "not_smaller")
#: per-axis tables become C source text: bound them (a few MB of source at most)
MAX_TABLE_ENTRIES = 1 << 20


@dataclass(frozen=True)
class Settings:
    mode: str
    transform: str
    nearest: str                # one of _NEAREST, or "simple" (opset < 11: floor up, ceil down)
    cubic_a: float
    exclude_outside: bool
    extrapolation: float
    antialias: bool


@dataclass
class AxisTable:
    """How output positions along one resized axis read the input along it."""
    axis: int
    index: np.ndarray            # [out, taps] int64 source positions, all within the input
    weight: np.ndarray           # [out, taps] float64 (all ones for nearest, taps == 1)
    outside: np.ndarray | None   # [out] bool: position takes the extrapolation value


@dataclass
class Plan:
    shape: tuple[int, ...]       # output shape
    settings: Settings
    tables: list[AxisTable]      # resized axes, ascending; identity axes are left out


# -- reading the node -----------------------------------------------------------------------
def _settings(node: Node) -> Settings:
    a = node.attrs
    mode = a.get("mode", "nearest")
    if mode == "bilinear" and node.op == "Upsample":
        mode = "linear"
    legacy = node.op == "Upsample" or node.opset < 11
    return Settings(
        mode=mode,
        transform="asymmetric" if legacy else a.get("coordinate_transformation_mode", "half_pixel"),
        nearest="simple" if legacy else a.get("nearest_mode", "round_prefer_floor"),
        cubic_a=float(a.get("cubic_coeff_a", -0.75)),
        exclude_outside=bool(a.get("exclude_outside", 0)),
        extrapolation=float(a.get("extrapolation_value", 0.0)),
        antialias=bool(a.get("antialias", 0)))


def _problems(node: Node) -> list[str]:
    try:
        s = _settings(node)
    except (TypeError, ValueError):
        return ["an attribute has the wrong type (cubic_coeff_a, extrapolation_value, "
                "exclude_outside and antialias are numbers)"]
    out = []
    if s.mode not in _MODES:
        out.append(f"mode {s.mode!r} is not supported")
    if s.transform not in _TRANSFORMS:
        out.append(f"coordinate_transformation_mode {s.transform!r} is not supported")
    if s.nearest not in _NEAREST + ("simple",):
        out.append(f"nearest_mode {s.nearest!r} is not supported")
    if node.attrs.get("keep_aspect_ratio_policy", "stretch") not in _POLICIES:
        out.append(f"keep_aspect_ratio_policy {node.attrs['keep_aspect_ratio_policy']!r} "
                   "is not supported")
    if s.antialias and s.mode == "nearest":
        out.append("antialias with mode 'nearest' is not supported")
    x = node.input(0)
    if x is not None and s.mode != "nearest" and x.type.dtype not in dt.NUMERIC:
        out.append(f"element type {x.type.dtype} is not supported for mode {s.mode!r}")
    return out


def _const(node: Node, k: int, what: str) -> np.ndarray | None:
    """Constant input k, flattened; None when omitted or empty."""
    v = node.input(k)
    if v is None or v.type.size == 0:
        return None
    if v.const is None:
        raise unsupported(node, f"{what} computed at run time is not supported; "
                          "it must be a constant")
    return np.asarray(v.const).reshape(-1)


def _axes(node: Node, rank: int) -> list[int]:
    axes = node.attrs.get("axes")
    if axes is None:
        return list(range(rank))
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise fail(node, f"axis {a} is out of range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise fail(node, f"axes {list(axes)} repeat an axis")
    return out


def _scales_and_sizes(node: Node) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The node's scales and sizes (one of them None), over its axes."""
    if node.op == "Upsample":
        if node.opset < 9:
            return np.asarray(node.attrs.get("scales", []), np.float64), None
        return _const(node, 1, "scales"), None
    if node.opset < 11:
        return _const(node, 1, "scales"), None
    return _const(node, 2, "scales"), _const(node, 3, "sizes")


def plan(node: Node) -> Plan:
    """Output shape and per-axis tables for a Resize/Upsample node."""
    if not node.inputs or node.inputs[0] is None:
        raise fail(node, "needs input X")
    in_shape = node.inputs[0].type.shape
    rank = len(in_shape)
    s = _settings(node)
    axes = _axes(node, rank)
    scales_in, sizes_in = _scales_and_sizes(node)
    if (scales_in is None) == (sizes_in is None):
        raise fail(node, "exactly one of scales and sizes must be given")
    given = scales_in if scales_in is not None else sizes_in
    if len(given) != len(axes):
        raise fail(node, f"{'scales' if sizes_in is None else 'sizes'} has {len(given)} values "
                   f"for {len(axes)} axes")
    scale = [1.0] * rank
    shape = list(in_shape)
    if scales_in is not None:
        for a, v in zip(axes, scales_in.astype(np.float64)):
            if not (math.isfinite(v) and v > 0):
                raise fail(node, f"scale {v} must be a positive number")
            scale[a], shape[a] = float(v), int(v * in_shape[a])
    else:
        for a, n in zip(axes, sizes_in.astype(np.int64)):
            if n < 0 or (n > 0 and in_shape[a] == 0):
                raise fail(node, f"cannot resize axis {a} of size {in_shape[a]} to {n}")
            shape[a] = int(n)
            scale[a] = n / in_shape[a] if in_shape[a] else 1.0
        policy = node.attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            common = pick(scale[a] for a in axes)
            for a in axes:
                scale[a], shape[a] = common, int(common * in_shape[a] + 0.5)
    roi = _roi(node, rank, axes) if s.transform == "tf_crop_and_resize" else None
    tables, entries = [], 0
    for a in range(rank):
        trivial_roi = roi is None or (math.isclose(roi[a], 0.0) and math.isclose(roi[a + rank], 1.0))
        if math.isclose(scale[a], 1.0) and shape[a] == in_shape[a] and trivial_roi:
            continue        # identity along this axis, as in the reference
        if shape[a] == 0:
            continue        # empty output: nothing is read
        pair = None if roi is None else (roi[a], roi[a + rank])
        entries += shape[a] * _taps(s, scale[a])
        if entries > MAX_TABLE_ENTRIES:
            raise unsupported(node, f"resizing to {shape} needs interpolation tables larger "
                              f"than the {MAX_TABLE_ENTRIES} entries Ember writes into a kernel")
        tables.append(_axis_table(s, a, in_shape[a], shape[a], scale[a], pair))
    return Plan(tuple(shape), s, tables)


def _roi(node: Node, rank: int, axes: list[int]) -> list[float]:
    """roi over all axes as [starts..., ends...] (axes not listed keep [0, 1])."""
    roi = _const(node, 1, "roi")
    if roi is None:
        raise fail(node, "coordinate_transformation_mode tf_crop_and_resize needs roi")
    if len(roi) != 2 * len(axes):
        raise fail(node, f"roi has {len(roi)} values, expected {2 * len(axes)}")
    full = [0.0] * rank + [1.0] * rank
    for i, a in enumerate(axes):
        full[a], full[a + rank] = float(roi[i]), float(roi[i + len(axes)])
    return full


# -- per-axis tables (a numpy port of the reference's _interpolate_1d_along_axis) -----------
def _source(s: Settings, n_out: int, n_in: int, scale: float,
            roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Source coordinate of every output position, and which fall outside (crop-and-resize)."""
    y = np.arange(n_out, dtype=np.float64)
    width = scale * n_in          # the output width before flooring, as the reference uses it
    t = s.transform
    if t == "align_corners":
        return (np.zeros(n_out) if width == 1 else y * (n_in - 1) / (width - 1)), None
    if t == "asymmetric":
        return y / scale, None
    if t == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale, None
    if t == "pytorch_half_pixel":
        return (np.full(n_out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5), None
    if t == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if t == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / width)
        return offset + (y + 0.5) / scale - 0.5, None
    lo, hi = roi
    if width == 1:
        x = np.full(n_out, (hi - lo) * (n_in - 1) / 2)
    else:
        x = y * (hi - lo) * (n_in - 1) / (width - 1)
    x = x + lo * (n_in - 1)
    return x, (x < 0) | (x > n_in - 1)


def _nearest_index(s: Settings, x: np.ndarray, scale: float) -> np.ndarray:
    base = np.floor(x)
    frac = x - base
    up = {"round_prefer_floor": frac > 0.5, "round_prefer_ceil": frac >= 0.5,
          "floor": np.zeros_like(x, bool), "ceil": frac > 0,
          "simple": (frac > 0) & (scale < 1)}[s.nearest]
    return base.astype(np.int64) + up


def _antialias_start(s: Settings, scale: float) -> int:
    """First tap offset of the antialiased kernel, stretched by 1/scale when downsampling."""
    support = 1 if s.mode == "linear" else 2
    return int(np.floor(-support / min(scale, 1.0)) + 1)


def _taps(s: Settings, scale: float) -> int:
    if s.mode == "nearest":
        return 1
    if s.antialias:
        return 2 - 2 * _antialias_start(s, scale)
    return 2 if s.mode == "linear" else 4


def _coeffs(s: Settings, ratio: np.ndarray, scale: float) -> np.ndarray:
    """[out, taps] interpolation weights for fractional positions `ratio` in (0, 1]."""
    r = ratio[:, None]
    if s.antialias:
        sc, start = min(scale, 1.0), _antialias_start(s, scale)
        args = np.abs((np.arange(start, 2 - start) - r) * sc)
        c = np.clip(1 - args, 0, 1) if s.mode == "linear" else _cubic_kernel(args, s.cubic_a)
        return c / c.sum(axis=1, keepdims=True)
    if s.mode == "linear":
        return np.concatenate([1 - r, r], axis=1)
    return _cubic_kernel(np.abs(np.concatenate([r + 1, r, 1 - r, 2 - r], axis=1)), s.cubic_a)


def _cubic_kernel(x: np.ndarray, a: float) -> np.ndarray:
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _axis_table(s: Settings, axis: int, n_in: int, n_out: int, scale: float,
                roi: tuple[float, float] | None) -> AxisTable:
    x, outside = _source(s, n_out, n_in, scale, roi)
    if outside is not None and not outside.any():
        outside = None
    if s.mode == "nearest":
        index = np.clip(_nearest_index(s, x, scale), 0, n_in - 1)[:, None]
        return AxisTable(axis, index, np.ones_like(index, np.float64), outside)
    base = np.floor(x)
    ratio = np.where(x == base, 1.0, x - base)   # prefer the left neighbour at exact hits
    weight = _coeffs(s, ratio, scale)
    taps = weight.shape[1]
    # The `taps` positions nearest to x, ties to the smaller (reference: _get_neighbor).
    pad = (taps + 1) // 2
    xp = x + pad
    p = np.floor(xp)
    frac = xp - p
    if taps % 2 == 0:
        offset = np.where(frac == 0, -(taps // 2), -(taps // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((taps - 1) // 2), -((taps - 1) // 2) + 1)
    index = (p.astype(np.int64) + offset - pad)[:, None] + np.arange(taps)[None, :]
    if s.exclude_outside:
        weight = np.where((index < 0) | (index >= n_in), 0.0, weight)
        total = weight.sum(axis=1, keepdims=True)
        weight = weight / np.where(total == 0, 1.0, total)
    return AxisTable(axis, np.clip(index, 0, n_in - 1), weight, outside)


# -- code generation ------------------------------------------------------------------------
def _table(w: CWriter, name: str, ctype: str, items: list[str]) -> None:
    w.line(f"static const {ctype} {name}[{len(items)}] = {{{', '.join(items)}}};")


def _saturate(t: dt.DType, value: str) -> str:
    """C expression converting a float/double `value` to `t` as the reference does (round
    half to even and clamp for integers)."""
    if t.is_float:
        return f"({t.c})({value})"
    info = np.iinfo(t.numpy)
    lo, hi = c_literal(info.min, t), c_literal(info.max, t)
    r = f"nearbyint({value})"
    return (f"({r} <= {float(info.min)!r} ? {lo} : {r} >= {float(info.max)!r} ? {hi} : "
            f"({t.c}){r})")


def _extrapolated(t: dt.DType, value: float) -> str:
    if t.is_float:
        return c_float(value, t.c)
    info = np.iinfo(t.numpy)
    return c_literal(int(np.clip(np.round(value), info.min, info.max)), t)


def _lower_nearest(p: Plan, node: Node, ctx) -> None:
    """One pass: out[i] = in[table(i)] over every output element."""
    w, t = ctx.w, node.inputs[0].type
    by_axis = {tb.axis: tb for tb in p.tables}
    for tb in p.tables:
        _table(w, f"n{tb.axis}", "int64_t", [str(v) if not (tb.outside is not None and tb.outside[k])
                                              else "-1" for k, v in enumerate(tb.index[:, 0])])
    with w.loops(p.shape) as idx:
        src = [f"n{a}[{v}]" if a in by_axis else v for a, v in enumerate(idx)]
        load = f"{ctx.ins[0]}[{offset_expr(src, strides(t.shape))}]"
        outside = [f"n{tb.axis}[{idx[tb.axis]}] < 0" for tb in p.tables if tb.outside is not None]
        if outside:
            load = f"({' || '.join(outside)}) ? {_extrapolated(t.dtype, p.settings.extrapolation)} : {load}"
        w.line(f"{ctx.outs[0]}[{offset_expr(idx, strides(p.shape))}] = {load};")


def _compute_type(t: dt.DType) -> dt.DType:
    return dt.F32 if t is dt.F32 else dt.F64


def _lower_separable(p: Plan, node: Node, ctx) -> None:
    """One weighted-sum pass per resized axis, through two scratch buffers."""
    w, t = ctx.w, node.inputs[0].type
    ct = _compute_type(t.dtype)
    shapes = [list(t.shape)]
    for tb in p.tables:
        shapes.append(shapes[-1][:tb.axis] + [len(tb.index)] + shapes[-1][tb.axis + 1:])
    between = [math.prod(s) for s in shapes[1:-1]]
    half = -(-max(between, default=0) * ct.itemsize // 64) * 64   # keep the second buffer aligned
    if between:
        base = ctx.request_scratch(2 * half)
        w.line(f"{ct.c} *const buf0 = ({ct.c} *){base};")
        w.line(f"{ct.c} *const buf1 = ({ct.c} *)((uint8_t *){base} + {half});")
    for k, tb in enumerate(p.tables):
        last = k == len(p.tables) - 1
        src = ctx.ins[0] if k == 0 else f"buf{(k - 1) % 2}"
        dst = ctx.outs[0] if last else f"buf{k % 2}"
        with w.block(f"/* axis {tb.axis} */"):
            _emit_pass(w, tb, shapes[k], (src, t.dtype if k == 0 else ct),
                       (dst, t.dtype if last else ct), ct, p.settings)


def _emit_pass(w: CWriter, tb: AxisTable, in_shape: list[int], src: tuple[str, dt.DType],
               dst: tuple[str, dt.DType], ct: dt.DType, s: Settings) -> None:
    """dst = src resized along tb.axis; src/dst are (C name, element type), ct the compute type."""
    (src, in_t), (dst, out_t) = src, dst
    outer, inner = math.prod(in_shape[:tb.axis]), math.prod(in_shape[tb.axis + 1:])
    n_in, (n_out, taps) = in_shape[tb.axis], tb.index.shape
    _table(w, "ix", "int64_t", [str(v * inner) for v in tb.index.reshape(-1)])
    _table(w, "wt", ct.c, [c_float(v, ct.c) for v in tb.weight.reshape(-1)])
    if tb.outside is not None:
        _table(w, "ox", "uint8_t", ["1" if v else "0" for v in tb.outside])
    with w.loops((outer, n_out), "r") as (o, j):
        w.line(f"const int64_t *x = ix + {j}*{taps};")
        w.line(f"const {ct.c} *c = wt + {j}*{taps};")
        w.line(f"const {in_t.c} *s = {src} + {o}*{n_in * inner};")
        w.line(f"{out_t.c} *d = {dst} + ({o}*{n_out} + {j})*{inner};")
        with w.loops((inner,), "e") as (i,):
            w.line(f"{ct.c} acc = 0;")
            with w.block(f"for (int t = 0; t < {taps}; ++t)"):
                w.line(f"acc += c[t] * ({ct.c})s[x[t] + {i}];")
            value = _saturate(out_t, "acc")
            if tb.outside is not None:
                value = f"ox[{j}] ? {_extrapolated(out_t, s.extrapolation)} : {value}"
            w.line(f"d[{i}] = {value};")


@register_op("Resize", "Upsample")
class Resize(OpDef):
    def check(self, node: Node) -> list[str]:
        return _problems(node)

    def infer(self, node: Node) -> list[TensorType]:
        p = plan(node)
        return [TensorType(node.inputs[0].type.dtype, p.shape)]

    def flops(self, node: Node) -> int:
        p = plan(node)
        return 2 * math.prod(p.shape) * sum(tb.index.shape[1] for tb in p.tables)

    def lower(self, node: Node, ctx) -> None:
        p = plan(node)
        out = node.outputs[0].type
        if out.size == 0:
            return
        if not p.tables:
            ctx.w.line(f"memcpy({ctx.outs[0]}, {ctx.ins[0]}, {out.nbytes});")
        elif p.settings.mode == "nearest":
            _lower_nearest(p, node, ctx)
        else:
            _lower_separable(p, node, ctx)
