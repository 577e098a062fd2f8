"""Normalizations: Softmax family, Layer/Instance/Group/Batch normalization, LpNorm, LRN, MVN.

Statistics (means, variances, norms) are accumulated in double and the result cast back to the
element type: the inputs are fp32 rows of up to many thousand values, and a double running sum
stays closer to onnxruntime's pairwise sums than a float one. Softmax sums stay in the element
type, as onnxruntime's do, after subtracting the row maximum so exp cannot overflow.

Rows along the contiguous last axis (Softmax, LogSoftmax; LayerNorm, Instance/GroupNorm
blocks) take the vectorized helpers of ops/vecmath.py and are split over the schedule's
threads. Their sums keep 16 float (Softmax) or 8 double (statistics) partial sums combined
pairwise: for a row of n terms of one sign the relative error of a float sum is at most about
(n / 16 + 4) float epsilons, 3e-5 for n = 8192, inside the rtol 1e-4 the tests hold it to.
"""
from __future__ import annotations

import math
from typing import Callable

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import broadcast_shape, broadcast_strides, offset_expr, strides
from ember.lower.parallel import part_loop
from ember.ops.reduce import reduction_loops, split_at_axis
from ember.ops.registry import OpDef, fail, normalize_axis, register_op, same_type
from ember.ops.vecmath import FLOAT32_FUNCTIONS, MOMENT_TYPES
from ember.render.cwriter import CWriter, c_float

_F = dt.FLOATS

#: arithmetic per element of a Softmax or LogSoftmax row (maximum, subtraction, exp's range
#: reduction and polynomial, sum, scale) and of a mean/variance normalization (two passes of
#: statistics, then the affine). Counted rather than left at OpDef's one per element because
#: the count decides whether a kernel shares its rows among threads (schedule.kernel_schedule):
#: at one per element BERT's 12x128x128 softmax and 128x384 LayerNorms ran on one thread of
#: two (131 and 40 us per call; shared 78 and 23 us)
SOFTMAX_FLOPS, NORMALIZE_FLOPS = 16, 8


def _need_rank(node: Node, least: int) -> TensorType:
    x = node.inputs[0].type
    if x.rank < least:
        raise fail(node, f"input must have rank {least} or more, got {x.rank}")
    return x


# -- Softmax, LogSoftmax, Hardmax -------------------------------------------------------------

def softmax_split(node: Node) -> tuple[int, int, int]:
    """(outer, n, inner) of the rows: before opset 13 the input is coerced to 2-D at `axis`."""
    x = node.inputs[0].type
    if x.rank == 0:
        raise fail(node, "input must have rank 1 or more")
    axis = normalize_axis(node, int(node.attrs.get("axis", -1 if node.opset >= 13 else 1)),
                          x.rank)
    if node.opset < 13:
        return math.prod(x.shape[:axis]), math.prod(x.shape[axis:]), 1
    return split_at_axis(x.shape, axis)


@register_op("Softmax", "LogSoftmax", "Hardmax")
class SoftmaxFamily(OpDef):
    dtypes = _F

    def infer(self, node: Node) -> list[TensorType]:
        softmax_split(node)
        return same_type(node)

    def flops(self, node: Node) -> int:
        per_element = 1 if node.op == "Hardmax" else SOFTMAX_FLOPS
        return node.outputs[0].type.size * per_element

    def lower(self, node: Node, ctx) -> None:
        outer, n, inner = softmax_split(node)
        t = node.inputs[0].type.dtype
        w = ctx.w
        if inner == 1 and t.c == "float" and node.op != "Hardmax":
            _softmax_rows(ctx, outer, n, log=node.op == "LogSoftmax")
            return
        with w.loops((outer, inner)) as (o, i):
            w.line(f"const {t.c} *p = {ctx.ins[0]} + {o} * {n * inner} + {i};")
            w.line(f"{t.c} *q = {ctx.outs[0]} + {o} * {n * inner} + {i};")
            if node.op == "Hardmax":
                _hardmax_row(w, t.c, n, inner)
            else:
                _softmax_row(w, t.c, n, inner, log=node.op == "LogSoftmax")


def _row(w: CWriter, n: int):
    """A loop of j over the n values of a row."""
    return w.block(f"for (int64_t j = 0; j < {n}; ++j)")


def _softmax_rows(ctx, rows: int, n: int, log: bool) -> None:
    """float rows along the contiguous last axis through ember_softmax_rowf (ops/vecmath.py:
    max, then exp and sum in one vector pass, then scale); rows over threads."""
    src, dst = ctx.ins[0], ctx.outs[0]
    with part_loop(ctx, "o", rows):
        ctx.w.line(f"ember_softmax_rowf({src} + o * {n}, {dst} + o * {n}, {n}, {int(log)});")


def _softmax_row(w: CWriter, T: str, n: int, inner: int, log: bool) -> None:
    """A row of -inf, or one holding +inf or NaN, gives NaN, as in onnxruntime."""
    exp = FLOAT32_FUNCTIONS["exp"] if T == "float" else "exp"
    log_fn = "logf" if T == "float" else "log"
    at = f"j * {inner}"
    w.line(f"{T} m = -INFINITY;")
    with _row(w, n):
        w.line(f"if (p[{at}] > m) m = p[{at}];")
    w.line(f"{T} s = 0;")
    with _row(w, n):
        if log:
            w.line(f"s += {exp}(p[{at}] - m);")
        else:
            w.line(f"q[{at}] = {exp}(p[{at}] - m);")
            w.line(f"s += q[{at}];")
    if log:
        w.line(f"const {T} ls = {log_fn}(s);")
    with _row(w, n):
        w.line(f"q[{at}] = p[{at}] - m - ls;" if log else f"q[{at}] = q[{at}] / s;")


def _hardmax_row(w: CWriter, T: str, n: int, inner: int) -> None:
    # As onnxruntime: the row's first element starts the search, NaN never compares greater,
    # and a row whose maximum is NaN (NaN first) is all zeros.
    at = f"j * {inner}"
    w.line("int64_t best = 0;")
    with w.block(f"for (int64_t j = 1; j < {n}; ++j)"):
        w.line(f"if (p[{at}] > p[best * {inner}]) best = j;")
    with _row(w, n):
        w.line(f"q[{at}] = ({T})(j == best && p[{at}] == p[{at}]);")


# -- mean / variance normalization of contiguous blocks ----------------------------------------

def emit_block_stats(w: CWriter, T: str, base: str, size: int, eps: float | None) -> None:
    """`mean` and `inv` (1/sqrt(var + eps), or 1/sqrt(var) when eps is None) of the `size`
    contiguous values of C type T at `base`, two passes in double; empty blocks give mean 0."""
    w.line("double mean = 0, var = 0;")
    if T in MOMENT_TYPES:
        w.line(f"ember_moments_{T}({base}, {size}, &mean, &var);")
    else:
        with w.block(f"for (int64_t j = 0; j < {size}; ++j)"):
            w.line(f"mean += (double){base}[j];")
        w.line(f"mean /= {max(size, 1)}.0;")
        with w.block(f"for (int64_t j = 0; j < {size}; ++j)"):
            w.line(f"const double d = (double){base}[j] - mean;")
            w.line("var += d * d;")
        w.line(f"var /= {max(size, 1)}.0;")
    add = f" + {c_float(eps, 'double')}" if eps is not None else ""
    w.line(f"const double inv = 1.0 / sqrt(var{add});")


def emit_affine(w: CWriter, T: str, src: str, dst: str, shape: tuple[int, ...],
                scale: Callable[[list[str]], str | None],
                bias: Callable[[list[str]], str | None]) -> None:
    """dst = (src - mean) * inv * scale + bias over a contiguous block of `shape`; scale and
    bias give the C expression of the parameter at the loop indices (None: absent)."""
    with w.loops(shape, "j") as idx:
        off = offset_expr(idx, strides(shape))
        expr = f"((double){src}[{off}] - mean) * inv"
        s, b = scale(idx), bias(idx)
        if s is not None:
            expr = f"{expr} * (double){s}"
        if b is not None:
            expr = f"{expr} + (double){b}"
        w.line(f"{dst}[{off}] = ({T})({expr});")


def _param(name: str | None, at: str) -> Callable[[list[str]], str | None]:
    """A parameter read at a fixed index expression `at` (None when the input is omitted)."""
    return lambda idx: None if name is None else f"{name}[{at}]"


def _check_shape(node: Node, k: int, want: tuple[int, ...], what: str) -> None:
    v = node.input(k)
    if v is not None and math.prod(v.type.shape) != math.prod(want):
        raise fail(node, f"{what} must have shape {list(want)}, got {list(v.type.shape)}")


class _MeanVarianceOp(OpDef):
    """A normalization of blocks by their mean and variance (emit_block_stats, emit_affine)."""
    dtypes = _F

    def flops(self, node: Node) -> int:
        return node.inputs[0].type.size * NORMALIZE_FLOPS


# -- LayerNormalization ------------------------------------------------------------------------

@register_op("LayerNormalization")
class LayerNorm(_MeanVarianceOp):
    def check(self, node: Node) -> list[str]:
        problems = super().check(node)
        if node.attrs.get("stash_type", 1) != 1:
            problems.append(f"stash_type {node.attrs['stash_type']} is not supported (only 1)")
        return problems

    def _axis(self, node: Node) -> int:
        x = _need_rank(node, 1)
        axis = normalize_axis(node, int(node.attrs.get("axis", -1)), x.rank)
        block = x.shape[axis:]
        for k, what in ((1, "Scale"), (2, "B")):
            v = node.input(k)
            if v is not None and broadcast_shape(v.type.shape, block) != block:
                raise fail(node, f"{what} of shape {list(v.type.shape)} does not broadcast to "
                           f"the normalized shape {list(block)}")
        return axis

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        axis = self._axis(node)
        stats = TensorType(dt.F32, x.shape[:axis] + (1,) * (x.rank - axis))
        return [x] + [stats] * (len(node.outputs) - 1)

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        axis = self._axis(node)
        block = x.shape[axis:]
        outer, size = math.prod(x.shape[:axis]), math.prod(block)
        params = [(ctx.ins[k] if k < len(ctx.ins) else None, node.input(k)) for k in (1, 2)]
        if all(v is None or v.type.size == size for _, v in params):
            shape = (size,)       # parameters match the block: one flat loop
            readers = [_param(name, "j0") for name, _ in params]
        else:
            shape = block
            readers = [_broadcast_reader(name, v, block) for name, v in params]
        w = ctx.w
        with part_loop(ctx, "o", outer):
            base = f"{ctx.ins[0]} + o * {size}"
            w.line(f"const {x.dtype.c} *p = {base};")
            emit_block_stats(w, x.dtype.c, "p", size, float(node.attrs.get("epsilon", 1e-5)))
            emit_affine(w, x.dtype.c, "p", f"({ctx.outs[0]} + o * {size})", shape, *readers)
            for k, value in ((1, "mean"), (2, "inv")):
                if k < len(ctx.outs) and node.outputs[k].name:
                    w.line(f"{ctx.outs[k]}[o] = (float){value};")


def _broadcast_reader(name: str | None, v, block: tuple[int, ...]):
    if name is None:
        return lambda idx: None
    st = broadcast_strides(v.type.shape, block)
    return lambda idx: f"{name}[{offset_expr(idx, st)}]"


# -- InstanceNormalization, GroupNormalization --------------------------------------------------

@register_op("InstanceNormalization")
class InstanceNorm(_MeanVarianceOp):
    def infer(self, node: Node) -> list[TensorType]:
        x = _need_rank(node, 2)
        for k, what in ((1, "scale"), (2, "B")):
            _check_shape(node, k, (x.shape[1],), what)
        return [x]

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        n, c = x.shape[:2]
        size = math.prod(x.shape[2:])
        _grouped_norm(ctx, x.dtype.c, n * c, size, float(node.attrs.get("epsilon", 1e-5)),
                      (size,), lambda w: w.line(f"const int64_t c = g % {c};"),
                      _param(ctx.ins[1], "c"), _param(ctx.ins[2], "c"))


@register_op("GroupNormalization")
class GroupNorm(_MeanVarianceOp):
    def _groups(self, node: Node) -> int:
        x = _need_rank(node, 2)
        groups = int(node.attrs.get("num_groups", 0))
        if groups <= 0 or x.shape[1] % groups:
            raise fail(node, f"num_groups {groups} must be positive and divide the "
                       f"{x.shape[1]} channels")
        # Opset 18 has one scale and bias per group; opset 21 one per channel.
        want = (groups,) if node.opset < 21 else (x.shape[1],)
        for k, what in ((1, "scale"), (2, "bias")):
            _check_shape(node, k, want, what)
        return groups

    def check(self, node: Node) -> list[str]:
        problems = super().check(node)
        if node.attrs.get("stash_type", 1) != 1:
            problems.append(f"stash_type {node.attrs['stash_type']} is not supported (only 1)")
        return problems

    def infer(self, node: Node) -> list[TensorType]:
        self._groups(node)
        return same_type(node)

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        groups = self._groups(node)
        n, c = x.shape[:2]
        per_group, spatial = c // groups, math.prod(x.shape[2:])
        if node.opset < 21:
            shape, at = (per_group * spatial,), f"g % {groups}"
        else:
            shape, at = (per_group, spatial), f"(g % {groups}) * {per_group} + j0"
        _grouped_norm(ctx, x.dtype.c, n * groups, per_group * spatial,
                      float(node.attrs.get("epsilon", 1e-5)), shape, lambda w: None,
                      _param(ctx.ins[1], at), _param(ctx.ins[2], at))


def _grouped_norm(ctx, T: str, blocks: int, size: int, eps: float, shape: tuple[int, ...],
                  prologue: Callable[[CWriter], None], scale, bias) -> None:
    """Normalize `blocks` contiguous blocks of `size` values; block number `g`."""
    w = ctx.w
    with part_loop(ctx, "g", blocks):
        w.line(f"const {T} *p = {ctx.ins[0]} + g * {size};")
        prologue(w)
        emit_block_stats(w, T, "p", size, eps)
        emit_affine(w, T, "p", f"({ctx.outs[0]} + g * {size})", shape, scale, bias)


# -- BatchNormalization ------------------------------------------------------------------------

@register_op("BatchNormalization")
class BatchNorm(OpDef):
    dtypes = _F

    def check(self, node: Node) -> list[str]:
        problems = super().check(node)
        if node.attrs.get("training_mode", 0):
            problems.append("training_mode=1 is not supported (inference only)")
        elif sum(1 for v in node.outputs if v.name) > 1:
            problems.append("the training outputs (running or saved mean/var) are not supported")
        return problems

    def _param_size(self, node: Node) -> tuple[int, int, int]:
        """(N, channel count, spatial size) and checks the 4 parameter shapes."""
        x = _need_rank(node, 2)
        n, c, spatial = x.shape[0], x.shape[1], math.prod(x.shape[2:])
        per_activation = node.opset < 9 and not node.attrs.get("spatial", 1)
        want = x.shape[1:] if per_activation else (c,)
        for k, what in enumerate(("scale", "B", "mean", "var"), start=1):
            _check_shape(node, k, want, what)
        return n, c * spatial if per_activation else c, 1 if per_activation else spatial

    def infer(self, node: Node) -> list[TensorType]:
        self._param_size(node)
        return same_type(node) + [node.inputs[k].type for k in range(1, len(node.outputs))]

    def lower(self, node: Node, ctx) -> None:
        T = node.inputs[0].type.dtype.c
        n, c, spatial = self._param_size(node)
        eps = c_float(float(node.attrs.get("epsilon", 1e-5)), "double")
        scale, bias, mean, var = ctx.ins[1:5]
        w = ctx.w
        with w.loops((n, c), "i") as (i, ch):
            w.line(f"const double a = (double){scale}[{ch}] / sqrt((double){var}[{ch}] + {eps});")
            w.line(f"const double m = (double){mean}[{ch}], b = (double){bias}[{ch}];")
            base = f"({i} * {c} + {ch}) * {spatial}"
            with w.block(f"for (int64_t s = 0; s < {spatial}; ++s)"):
                w.line(f"{ctx.outs[0]}[{base} + s] = "
                       f"({T})(((double){ctx.ins[0]}[{base} + s] - m) * a + b);")


# -- LpNormalization, LRN, MeanVarianceNormalization ---------------------------------------------

@register_op("LpNormalization")
class LpNorm(OpDef):
    dtypes = _F

    def check(self, node: Node) -> list[str]:
        p = node.attrs.get("p", 2)
        return super().check(node) + ([] if p in (1, 2) else [f"p={p} is not supported (1 or 2)"])

    def infer(self, node: Node) -> list[TensorType]:
        x = _need_rank(node, 1)
        normalize_axis(node, int(node.attrs.get("axis", -1)), x.rank)
        return [x]

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        axis = normalize_axis(node, int(node.attrs.get("axis", -1)), x.rank)
        outer, n, inner = split_at_axis(x.shape, axis)
        term = "fabs(v)" if node.attrs.get("p", 2) == 1 else "v * v"
        w = ctx.w
        with w.loops((outer, inner)) as (o, i):
            base = f"{o} * {n * inner} + {i}"
            w.line("double norm = 0;")
            with _row(w, n):
                w.line(f"const double v = (double){ctx.ins[0]}[{base} + j * {inner}];")
                w.line(f"norm += {term};")
            if node.attrs.get("p", 2) == 2:
                w.line("norm = sqrt(norm);")
            with _row(w, n):
                at = f"{base} + j * {inner}"
                # A zero norm gives zeros, as in onnxruntime.
                w.line(f"{ctx.outs[0]}[{at}] = norm == 0 ? 0 : "
                       f"({x.dtype.c})((double){ctx.ins[0]}[{at}] / norm);")


@register_op("LRN")
class LRN(OpDef):
    dtypes = _F

    def infer(self, node: Node) -> list[TensorType]:
        _need_rank(node, 2)
        if int(node.attrs.get("size", 0)) <= 0:
            raise fail(node, "attribute size must be a positive integer")
        return same_type(node)

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        size = int(node.attrs["size"])
        before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
        n, c, spatial = x.shape[0], x.shape[1], math.prod(x.shape[2:])
        alpha = c_float(float(node.attrs.get("alpha", 1e-4)) / size, "double")
        beta = c_float(float(node.attrs.get("beta", 0.75)), "double")
        bias = c_float(float(node.attrs.get("bias", 1.0)), "double")
        w, src = ctx.w, ctx.ins[0]
        with w.loops((n, c, spatial), "i") as (i, ch, s):
            w.line("double sq = 0;")
            lo, hi = f"{ch} - {before}", f"{ch} + {after}"
            with w.block(f"for (int64_t k = {lo} < 0 ? 0 : {lo}; k <= {hi} && k < {c}; ++k)"):
                w.line(f"const double v = (double){src}[({i} * {c} + k) * {spatial} + {s}];")
                w.line("sq += v * v;")
            at = f"({i} * {c} + {ch}) * {spatial} + {s}"
            w.line(f"{ctx.outs[0]}[{at}] = ({x.dtype.c})((double){src}[{at}] / "
                   f"pow({bias} + {alpha} * sq, {beta}));")


@register_op("MeanVarianceNormalization")
class MeanVarianceNorm(OpDef):
    dtypes = _F

    def _axes(self, node: Node) -> tuple[set[int], bool]:
        """Reduced axes and whether to divide by the standard deviation."""
        x = node.inputs[0].type
        if node.opset < 9:
            # Opset 1 names the axes by flags; onnxruntime reads them as [0, 2, 3 ...] or all.
            skip = () if node.attrs.get("across_channels", 0) else (1,)
            return ({d for d in range(x.rank) if d not in skip},
                    bool(node.attrs.get("normalize_variance", 1)))
        axes = [normalize_axis(node, int(a), x.rank) for a in node.attrs.get("axes", [0, 2, 3])]
        if len(set(axes)) != len(axes):
            raise fail(node, f"axes {node.attrs.get('axes')} repeat an axis")
        return set(axes), True

    def infer(self, node: Node) -> list[TensorType]:
        self._axes(node)
        return same_type(node)

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        axes, scaled = self._axes(node)
        kept, red = reduction_loops(x.shape, axes)
        red = red or [(1, 0)]
        count = max(math.prod(x.shape[d] for d in axes), 1)
        w, src, dst = ctx.w, ctx.ins[0], ctx.outs[0]
        with w.loops(tuple(e for e, _ in kept), "o") as oi:
            base = offset_expr(oi, tuple(s for _, s in kept))
            w.line("double mean = 0, var = 0;")

            def over(body: Callable[[str], None]) -> None:
                with w.loops(tuple(e for e, _ in red), "r") as ri:
                    body(f"{base} + {offset_expr(ri, tuple(s for _, s in red))}")

            over(lambda at: w.line(f"mean += (double){src}[{at}];"))
            w.line(f"mean /= {count}.0;")
            over(lambda at: w.line(f"var += ((double){src}[{at}] - mean) * "
                                   f"((double){src}[{at}] - mean);"))
            # Y = (X - mean) / (sqrt(var) + 1e-9), the ONNX function body's formula.
            inv = f"1.0 / (sqrt(var / {count}.0) + 1e-9)" if scaled else "1.0"
            w.line(f"const double inv = {inv};")
            over(lambda at: w.line(f"{dst}[{at}] = ({x.dtype.c})"
                                   f"(((double){src}[{at}] - mean) * inv);"))
