"""Pooling: MaxPool, AveragePool, LpPool, their Global forms, and MaxUnpool.

Every pool is one loop nest (`emit_pool`): for each (image, channel) plane and each output
position, the window is clipped to the input once per axis (the shared window helpers, so
no padding test runs per tap), and a `Reduction` folds the taps: max, sum / count, or the
p-norm. Pads never contribute a value; AveragePool's count_include_pad only changes the divisor.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.dtypes import DType
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import offset_expr, strides
from ember.lower.parallel import part_loop, part_slot
from ember.ops.registry import OpDef, fail, register_op
from ember.ops.window import (Window, const_ints, emit_valid_range, kernel_attr, linear,
                              sliding_window, spatial_rank, transposed_window)
from ember.ops.window_plane import (LANES, VEC, Fold, PlaneWindow, emit_vector_types,
                                    emit_window_rows, plane_loop, plane_window, splat,
                                    vector_max)
from ember.render.cwriter import CWriter, c_float, c_literal


@dataclass(frozen=True)
class Reduction:
    """How a pool folds its window, as C over the accumulator `acc` and the tap value `v`."""
    init: str
    step: str            # statement
    result: str          # expression of acc and cnt (the divisor of an average)


def _max(t: DType, with_index: bool) -> Reduction:
    # Starts at the lowest finite value and skips NaN taps, as onnxruntime does.
    lowest = np.finfo(t.numpy).min if t.is_float else np.iinfo(t.numpy).min
    update = "{ acc = v; best = idx; }" if with_index else "acc = v;"
    return Reduction(c_literal(lowest, t), f"if (v > acc) {update}", "acc")


def _average(t: DType) -> Reduction:
    return Reduction(f"({t.c})0", "acc += v;", f"acc / ({t.c})cnt")


def _lp(t: DType, p: float) -> Reduction:
    fn = (lambda name: name + "f") if t.c == "float" else (lambda name: name)
    if p == 1:
        return Reduction(f"({t.c})0", f"acc += {fn('fabs')}(v);", "acc")
    if p == 2:
        return Reduction(f"({t.c})0", "acc += v * v;", f"{fn('sqrt')}(acc)")
    return Reduction(f"({t.c})0", f"acc += {fn('pow')}({fn('fabs')}(v), {c_float(p, t.c)});",
                     f"{fn('pow')}(acc, {c_float(1.0 / p, t.c)})")


def _p_attr(node: Node) -> float:
    p = float(node.attrs.get("p", 2))
    if not p > 0 or math.isinf(p):
        raise fail(node, f"p must be a positive number, got {p}")
    return p


def pool_window(node: Node) -> tuple[tuple[int, ...], Window]:
    """The input shape and the window of a pool node (Global pools: the whole plane)."""
    shape = node.inputs[0].type.shape
    rank = spatial_rank(node, shape)
    if node.op.startswith("Global"):
        ones = (1,) * rank
        return shape, Window(shape[2:], ones, ones, (0,) * rank, (0,) * rank, ones)
    ceil_mode = bool(node.attrs.get("ceil_mode", 0))
    win = sliding_window(node, shape[2:], kernel_attr(node, rank), ceil_mode)
    # As onnxruntime: explicit padding of a whole window or more only makes windows of pure
    # padding (and can make an output far larger than the input).
    if node.attrs.get("auto_pad", "NOTSET") == "NOTSET" and any(
            p >= k for k, pb, pe in zip(win.kernel, win.pads_begin, win.pads_end)
            for p in (pb, pe)):
        raise fail(node, f"pads {list(win.pads_begin + win.pads_end)} must be smaller than the "
                   f"kernel {list(win.kernel)}")
    return shape, win


def _reduction(node: Node) -> Reduction:
    t = node.inputs[0].type.dtype
    if node.op.endswith("MaxPool"):
        return _max(t, len(node.outputs) > 1)
    if node.op.endswith("AveragePool"):
        return _average(t)
    return _lp(t, _p_attr(node))


@register_op("MaxPool", "AveragePool", "LpPool", "GlobalMaxPool", "GlobalAveragePool",
             "GlobalLpPool")
class Pool(OpDef):
    dtypes = dt.FLOATS

    def check(self, node: Node) -> list[str]:
        x = node.input(0)
        if node.op == "MaxPool" and x is not None and x.type.dtype in (dt.I8, dt.U8):
            return []
        return super().check(node)

    def infer(self, node: Node) -> list[TensorType]:
        if node.input(0) is None:
            raise fail(node, "needs an input X")
        if "LpPool" in node.op:
            _p_attr(node)
        shape, win = pool_window(node)
        out = TensorType(node.inputs[0].type.dtype, shape[:2] + win.out)
        if len(node.outputs) > 1:
            if node.op != "MaxPool":
                raise fail(node, f"has {len(node.outputs)} outputs, expected 1")
            if node.attrs.get("storage_order", 0) not in (0, 1):
                raise fail(node, "storage_order must be 0 or 1")
            return [out, TensorType(dt.I64, out.shape)]
        return [out]

    def flops(self, node: Node) -> int:
        _, win = pool_window(node)
        return node.outputs[0].type.size * math.prod(win.kernel)

    def lower(self, node: Node, ctx) -> None:
        shape, win = pool_window(node)
        counts_pad = bool(node.attrs.get("count_include_pad", 0))
        if not _emit_fast_pool(node, ctx, shape, win, counts_pad):
            emit_pool(ctx, shape, win, _reduction(node), counts_pad=counts_pad,
                      column_major=bool(node.attrs.get("storage_order", 0)))


def _emit_fast_pool(node: Node, ctx, shape: tuple[int, ...], win: Window,
                    counts_pad: bool) -> bool:
    """The vectorized float32 kernels of Max/Average pools without indices, where one applies."""
    if node.inputs[0].type.dtype != dt.F32 or len(ctx.outs) > 1 or "Lp" in node.op:
        return False
    is_max = "Max" in node.op
    # a window of the whole plane, unpadded (so undilated), is a global pool
    if node.op.startswith("Global") or (win.kernel == shape[2:] and
                                        not any(win.pads_begin + win.pads_end)):
        emit_global_pool(ctx, shape, is_max)
        return True
    pw = plane_window(shape[2:], win)
    if pw is None or not (is_max or set(win.dilations) == {1}):   # averages count undilated
        return False
    if all(k <= s for k, s in zip(win.kernel, win.strides)):
        return False      # windows that do not overlap read each input once: the direct loop
    if is_max and set(win.dilations) == {1} and pw.win.strides[1] in (1, 2):
        emit_separable_max(ctx, shape, pw)
    else:
        emit_plane_pool(ctx, shape, pw, is_max, counts_pad)
    return True


def emit_pool(ctx, shape: tuple[int, ...], win: Window, red: Reduction, counts_pad: bool = False,
              column_major: bool = False) -> None:
    """The pooling loop nest; a second output, when present, gets MaxPool's argmax indices."""
    w, T = ctx.w, ctx.node.inputs[0].type.dtype
    in_sp, out_sp = shape[2:], win.out
    planes, in_plane, out_plane = shape[0] * shape[1], math.prod(in_sp), math.prod(out_sp)
    rank = len(in_sp)
    if planes * out_plane == 0:
        return
    # MaxPool's indices: flat over the whole input; storage_order 1 numbers the spatial axes
    # column-major (the first axis varies fastest).
    row_st = strides(in_sp)
    index_st = tuple(math.prod(in_sp[:d]) for d in range(rank)) if column_major else row_st
    with part_loop(ctx, "nc", planes), contextlib.ExitStack() as loops:
        w.line(f"const {T.c} *restrict xp = {ctx.ins[0]} + nc * {in_plane};")
        counts = []
        for d in range(rank):
            o, s, pb = f"o{d}", win.strides[d], win.pads_begin[d]
            loops.enter_context(w.block(f"for (int64_t {o} = 0; {o} < {out_sp[d]}; ++{o})"))
            emit_valid_range(w, f"q{d}", win.kernel[d], win.dilations[d], linear([(o, s)], -pb),
                             in_sp[d])
            if counts_pad:   # taps inside the padded input, beyond it only through ceil_mode
                emit_valid_range(w, f"p{d}", win.kernel[d], win.dilations[d], linear([(o, s)]),
                                 in_sp[d] + pb + win.pads_end[d])
            counts.append(f"(p{d}_hi - p{d}_lo)" if counts_pad else f"(q{d}_hi - q{d}_lo)")
        w.line(f"{T.c} acc = {red.init};")
        if len(ctx.outs) > 1:
            w.line("int64_t best = -1;")
        with contextlib.ExitStack() as taps:
            pos = None
            for d in range(rank):
                k = f"k{d}"
                taps.enter_context(w.block(f"for (int64_t {k} = q{d}_lo; {k} < q{d}_hi; ++{k})"))
                w.line(f"const int64_t i{d} = {linear([(f'q{d}_o', 1), (k, win.dilations[d])])}, "
                       f"x{d} = {linear([(pos, 1), (f'i{d}', row_st[d])])};")
                pos = f"x{d}"
            w.line(f"const {T.c} v = xp[{pos}];")
            if len(ctx.outs) > 1:
                idx = offset_expr([f"i{d}" for d in range(rank)], index_st)
                w.line(f"const int64_t idx = {idx};")
            w.line(red.step)
        if "cnt" in red.result:
            w.line(f"const int64_t cnt = {' * '.join(counts)};")
        flat = f"nc * {out_plane} + {offset_expr([f'o{d}' for d in range(rank)], strides(out_sp))}"
        w.line(f"{ctx.outs[0]}[{flat}] = {red.result};")
        if len(ctx.outs) > 1:
            w.line(f"{ctx.outs[1]}[{flat}] = best < 0 ? -1 : nc * {in_plane} + best;")


_LOWEST_F32 = c_literal(np.finfo(np.float32).min, dt.F32)


def emit_plane_pool(ctx, shape: tuple[int, ...], pw: PlaneWindow, is_max: bool,
                    counts_pad: bool) -> None:
    """A float32 MaxPool or AveragePool (dilation 1) on the vectorized plane kernel.

    Max pads with the lowest float, which never wins, and skips NaN taps as `_max` does;
    Average pads with 0 and divides by the taps inside the input (or the padded input, with
    count_include_pad): a row count times a column count, from a table made per plane."""
    w, win = ctx.w, pw.win
    planes, out_plane = shape[0] * shape[1], pw.out_h * pw.out_w
    if planes * out_plane == 0:
        return
    pad = _LOWEST_F32 if is_max else "0.0f"
    with plane_loop(ctx, pw, planes, pad, extra=0 if is_max else pw.out_w):
        out = f"{ctx.outs[0]}[nc * {out_plane} + {{}}]"
        if is_max:
            lowest = splat(_LOWEST_F32)
            fold = Fold((lowest, lowest), "{acc} = " + vector_max("{x}", "{acc}") + ";",
                        vector_max("{a}", "{b}"))
            emit_window_rows(w, pw, "padded", "acc", fold,
                             lambda value, at: w.line(f"{out.format(at)} = {value};"))
            return
        # window of output o on an axis: padded positions [o*s, o*s + k), of which those in
        # [lo, hi) count
        (ph, pww), (eh, ew) = win.pads_begin, win.pads_end
        bounds = [(0, pw.in_h + ph + eh), (0, pw.in_w + pww + ew)] if counts_pad else \
            [(ph, ph + pw.in_h), (pww, pww + pw.in_w)]

        def count(o: str, axis: int) -> str:
            start, k = f"{o} * {win.strides[axis]}", win.kernel[axis]
            lo, hi = bounds[axis]
            return (f"(float)(({start} + {k} < {hi} ? {start} + {k} : {hi}) - "
                    f"({start} > {lo} ? {start} : {lo}))")

        with w.block(f"for (int64_t ow = 0; ow < {pw.out_w}; ++ow)"):
            w.line(f"extra[ow] = {count('ow', 1)};")
        zero = splat("0.0f")
        emit_window_rows(
            w, pw, "padded", "acc", Fold((zero, zero), "{acc} += {x};", "{a} + {b}"),
            lambda value, at: w.line(f"{out.format(at)} = {value} / (rows * extra[ow]);"),
            row_prologue=lambda: w.line(f"const float rows = {count('oh', 0)};"))


def emit_separable_max(ctx, shape: tuple[int, ...], pw: PlaneWindow) -> None:
    """A float32 MaxPool (dilation 1, column stride 1 or 2) in two passes per output row: the
    maximum over the window's rows, whole vectors along the input row, into a row buffer; then
    over the window's columns. kh + kw maxima per output and no padded copy of the plane:
    ResNet-18's 3x3 stride-2 pool of 64x112x112 ran 1.5x quicker than on the plane kernel
    (2.1x at 2 threads), whose stride-split copy cost most of its time. The buffer's ends hold
    the lowest float (never greater, so pads never win); a NaN tap is skipped as in `_max`,
    each maximum keeping the running value unless the tap is greater."""
    w, win = ctx.w, pw.win
    planes = shape[0] * shape[1]
    if planes * pw.out_h * pw.out_w == 0:
        return
    left, in_w = win.pads_begin[1], pw.in_w
    vec_w = -(-pw.out_w // LANES) * LANES        # output columns computed: whole vectors
    last_read = (vec_w - LANES) * win.strides[1] + win.kernel[1] - 1 - left \
        + win.strides[1] * LANES - 1
    right = max(0, last_read + 1 - in_w)
    per_thread = left + in_w + right
    parallel = ctx.schedule.threads > 1 and planes > 1
    scratch = ctx.request_scratch(4 * per_thread * (ctx.schedule.threads if parallel else 1))
    emit_vector_types(w)
    with part_loop(ctx, "nc", planes):
        mine = f" + {part_slot(ctx)} * {per_thread}" if parallel else ""
        w.line(f"float *restrict v = (float *){scratch}{mine} + {left};")
        w.line(f"const float *restrict xp = {ctx.ins[0]} + nc * {pw.in_h * in_w};")
        w.line(f"float *restrict yp = {ctx.outs[0]} + nc * {pw.out_h * pw.out_w};")
        for lo, hi in ((-left, 0), (in_w, in_w + right)):
            if lo < hi:
                with w.block(f"for (int64_t j = {lo}; j < {hi}; ++j)"):
                    w.line(f"v[j] = {_LOWEST_F32};")
        with w.block(f"for (int64_t oh = 0; oh < {pw.out_h}; ++oh)"):
            _emit_row_max(w, pw)
            _emit_column_max(w, pw, vec_w)


def _emit_row_max(w: CWriter, pw: PlaneWindow) -> None:
    """v[j] = the maximum of input column j over output row oh's window rows."""
    (kh, _), (sh, _), (ph, _) = pw.win.kernel, pw.win.strides, pw.win.pads_begin
    in_h, in_w = pw.in_h, pw.in_w
    full = in_w // LANES * LANES
    w.line(f"const int64_t top = oh * {sh} - {ph};")
    w.line(f"const int64_t r0 = top < 0 ? 0 : top, r1 = top + {kh} > {in_h} ? {in_h} : top + {kh};")
    # pads are smaller than the kernel (pool_window), so every window holds an input row; a
    # row past the input's edge reads the window's nearest row instead, which leaves the
    # maximum as it is
    rows = [f"x{a}" for a in range(kh)]
    for a, x in enumerate(rows):
        row = f"top + {a}" if a else "top"
        w.line(f"const float *restrict {x} = xp + ({row} < r0 ? r0 : {row} >= r1 ? r1 - 1 : "
               f"{row}) * {in_w};")
    with w.block(f"for (int64_t j = 0; j < {full}; j += {LANES})"):
        w.line(f"{VEC} m = {splat(_LOWEST_F32)};")
        for x in rows:
            w.line(f"m = {vector_max(f'*(const {VEC} *)({x} + j)', 'm')};")
        w.line(f"*({VEC} *)(v + j) = m;")
    if full < in_w:
        with w.block(f"for (int64_t j = {full}; j < {in_w}; ++j)"):
            w.line(f"float m = {_LOWEST_F32};")
            for x in rows:
                w.line(f"if ({x}[j] > m) m = {x}[j];")
            w.line("v[j] = m;")


def _emit_column_max(w: CWriter, pw: PlaneWindow, vec_w: int) -> None:
    """Output row oh: per vector of outputs, the maximum over the window's columns of v
    (stride 2: every other lane of two loads); a last, partial vector stores its used lanes."""
    (_, kw), (_, sw), (_, left) = pw.win.kernel, pw.win.strides, pw.win.pads_begin
    out_w = pw.out_w
    with w.block(f"for (int64_t ow = 0; ow < {vec_w}; ow += {LANES})"):
        w.line(f"{VEC} m = {splat(_LOWEST_F32)};")
        for b in range(kw):
            at = f"v + ow * {sw}" + (f" + {b - left}" if b > left else
                                     f" - {left - b}" if b < left else "")
            if sw == 1:
                w.line(f"const {VEC} t{b} = *(const {VEC} *)({at});")
            else:
                lanes = ", ".join(str(2 * i) for i in range(LANES))
                w.line(f"const {VEC} t{b} = __builtin_shufflevector(*(const {VEC} *)({at}), "
                       f"*(const {VEC} *)({at} + {LANES}), {lanes});")
            w.line(f"m = {vector_max(f't{b}', 'm')};")
        at = f"yp + oh * {out_w} + ow"
        if vec_w == out_w:
            w.line(f"*({VEC} *)({at}) = m;")
            return
        with w.block(f"if (ow + {LANES} <= {out_w})"):
            w.line(f"*({VEC} *)({at}) = m;")
        with w.block("else"):
            w.line(f"for (int64_t l = 0; ow + l < {out_w}; ++l) ({at})[l] = m[l];")


def emit_global_pool(ctx, shape: tuple[int, ...], is_max: bool) -> None:
    """GlobalMaxPool / GlobalAveragePool in float32: each plane is a contiguous run, folded
    by two vector partials (whole vectors), then their lanes and the leftover elements."""
    w = ctx.w
    planes, size = shape[0] * shape[1], math.prod(shape[2:])
    if planes == 0:
        return
    init = _LOWEST_F32 if is_max else "0.0f"
    step = "{a} = " + (vector_max("{x}", "{a}") if is_max else "{a} + {x}") + ";"
    scalar = "r = {x} > r ? {x} : r;" if is_max else "r += {x};"
    emit_vector_types(w)
    with part_loop(ctx, "nc", planes):
        w.line(f"const float *restrict xp = {ctx.ins[0]} + nc * {size};")
        w.line(f"{VEC} s0 = {splat(init)}, s1 = s0;")
        with w.block(f"for (int64_t i = 0; i < {size // (2 * LANES) * 2 * LANES}; "
                     f"i += {2 * LANES})"):
            for k in range(2):
                w.line(step.format(a=f"s{k}", x=f"*(const {VEC} *)(xp + i + {k * LANES})"))
        w.line(step.format(a="s0", x="s1"))
        w.line(f"float r = {init};")
        with w.block(f"for (int l = 0; l < {LANES}; ++l)"):
            w.line(scalar.format(x="s0[l]"))
        with w.block(f"for (int64_t i = {size // (2 * LANES) * 2 * LANES}; i < {size}; ++i)"):
            w.line(scalar.format(x="xp[i]"))
        w.line(f"{ctx.outs[0]}[nc] = {'r' if is_max else f'r / (float){size}'};")


@register_op("MaxUnpool")
class MaxUnpool(OpDef):
    dtypes = dt.FLOATS

    def infer(self, node: Node) -> list[TensorType]:
        x, idx = node.input(0), node.input(1)
        if x is None or idx is None:
            raise fail(node, "needs an input X and indices I")
        if idx.type.dtype != dt.I64 or idx.type.shape != x.type.shape:
            raise fail(node, f"indices must be i64 of the input's shape {list(x.type.shape)}, "
                       f"got {idx.type}")
        shape = x.type.shape
        rank = spatial_rank(node, shape)
        given = const_ints(node, 2, "output_shape")
        if given is None:
            out = shape[:2] + transposed_window(node, shape[2:], kernel_attr(node, rank)).out
        else:
            if len(given) != len(shape) or given[:2] != shape[:2] or min(given) < 0:
                raise fail(node, f"output_shape {list(given)} does not fit an input of shape "
                           f"{list(shape)}")
            out = given
        return [TensorType(x.type.dtype, out)]

    def lower(self, node: Node, ctx) -> None:
        # Indices are flat positions in the output (as onnxruntime and PyTorch read them, also
        # when output_shape is given); ones outside it are skipped.
        w, out = ctx.w, node.outputs[0].type
        with w.loops((out.size,), "z") as (z,):
            w.line(f"{ctx.outs[0]}[{z}] = ({out.dtype.c})0;")
        with w.loops((node.inputs[0].type.size,), "j") as (j,):
            w.line(f"const int64_t at = {ctx.ins[1]}[{j}];")
            w.line(f"if (at >= 0 && at < {out.size}) {ctx.outs[0]}[at] = {ctx.ins[0]}[{j}];")
