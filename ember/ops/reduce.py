"""Reductions: Reduce* over a set of axes, ArgMax/ArgMin along one axis, CumSum/CumProd.

A reduction kernel loops over the kept dims outside and the reduced dims inside; runs of
adjacent dims of one kind are merged into a single loop, so reducing the trailing dims of a
row-major tensor reads memory contiguously. Reducing over an empty set of values gives the
reduction's identity (0 for sums, -inf for max ...), as onnxruntime does.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.dtypes import DType
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import offset_expr, strides
from ember.ops.registry import OpDef, fail, normalize_axis, register_op, unsupported
from ember.render.cwriter import CWriter, c_literal

Loop = tuple[int, int]       # (extent, element stride in the input)


def split_at_axis(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """(outer, n, inner): the tensor viewed as [outer, n, inner] around `axis`."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def reduction_loops(shape: tuple[int, ...], reduced: set[int]) -> tuple[list[Loop], list[Loop]]:
    """The kept and the reduced loops over a row-major tensor of `shape`.

    Size-1 dims are dropped and adjacent dims of the same kind merged into one loop.
    """
    kept: list[Loop] = []
    red: list[Loop] = []
    last = None
    for d, (extent, stride) in enumerate(zip(shape, strides(shape))):
        if extent == 1:
            continue
        group = red if d in reduced else kept
        if last is group:      # adjacent in memory: one loop of the product extent
            group[-1] = (group[-1][0] * extent, stride)
        else:
            group.append((extent, stride))
        last = group
    return kept, red


def wide_type(t: DType) -> str:
    """C type to accumulate sums of `t` in: double for floats (fp32 rows can be long and ORT
    sums them pairwise, so a float running sum would drift further from it than a double one),
    uint64_t for integers (wraps modulo 2^64 like the element type would, without UB)."""
    return "double" if t.is_float else "uint64_t"


def type_extreme(t: DType, largest: bool) -> str:
    """The C literal of the largest (or smallest) value of `t`, infinities for floats."""
    if t.is_float:
        return c_literal(math.inf if largest else -math.inf, t)
    if t is dt.BOOL:
        return "1" if largest else "0"
    info = np.iinfo(t.numpy)
    return c_literal(info.max if largest else info.min, t)


# -- Reduce* ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reducer:
    """How one Reduce op accumulates: C templates over `acc` (the accumulator) and `x` (the
    element), with fields {T} element type, {A} accumulator type, {abs} |x|, {mean} acc / count,
    {nan} "|| x is NaN" (empty for integers), {lo}/{hi} the type's extremes."""
    init: str
    update: str
    final: str
    dtypes: tuple[DType, ...]
    wide: bool = True          # accumulate in wide_type(); else in the element type
    acc: str = ""              # the accumulator's C type when neither of those
    since: int = 18            # opset from which axes is an input, not an attribute


_SUM_TYPES = (dt.F16, dt.F32, dt.F64, dt.I32, dt.I64, dt.U32, dt.U64)
_MINMAX_TYPES = _SUM_TYPES + (dt.I8, dt.U8)

REDUCERS: dict[str, Reducer] = {
    "ReduceSum": Reducer("0", "acc += ({A})x;", "({T})acc", _SUM_TYPES, since=13),
    "ReduceSumSquare": Reducer("0", "acc += ({A})x * ({A})x;", "({T})acc", _SUM_TYPES),
    "ReduceMean": Reducer("0", "acc += ({A})x;", "{mean}", _SUM_TYPES),
    "ReduceProd": Reducer("1", "acc *= ({A})x;", "({T})acc", _SUM_TYPES),
    "ReduceL1": Reducer("0", "acc += {abs};", "({T})acc", _SUM_TYPES),
    "ReduceL2": Reducer("0", "acc += ({A})x * ({A})x;", "({T})sqrt((double)({T})acc)", _SUM_TYPES),
    "ReduceLogSum": Reducer("0", "acc += ({A})x;", "({T})log((double)({T})acc)", _SUM_TYPES),
    "ReduceLogSumExp": Reducer("0", "acc += exp((double)x - m);", "({T})(log(acc) + m)",
                               _SUM_TYPES, acc="double"),
    # NaN wins, as in numpy and the elementwise Max/Min (onnxruntime differs by code path).
    "ReduceMax": Reducer("{lo}", "acc = (x > acc{nan}) ? x : acc;", "acc", _MINMAX_TYPES,
                         wide=False),
    "ReduceMin": Reducer("{hi}", "acc = (x < acc{nan}) ? x : acc;", "acc", _MINMAX_TYPES,
                         wide=False),
}


def reduce_axes(node: Node) -> set[int]:
    """The reduced axes of a Reduce node, normalized; empty for a no-op (each element is then
    reduced alone: ReduceSumSquare squares it, as onnxruntime does)."""
    rank = node.inputs[0].type.rank
    if node.opset >= REDUCERS[node.op].since:
        axes_in = node.input(1)
        if axes_in is not None and not axes_in.is_const:
            raise unsupported(node, "axes given by a non-constant input is not supported")
        axes = [] if axes_in is None else [int(a) for a in np.asarray(axes_in.const).ravel()]
    else:
        axes = [int(a) for a in node.attrs.get("axes", [])]
    if not axes:
        return set() if node.attrs.get("noop_with_empty_axes", 0) else set(range(rank))
    norm = [normalize_axis(node, a, rank) for a in axes]
    if len(set(norm)) != len(norm):
        raise fail(node, f"axes {axes} repeat an axis")
    return set(norm)


def reduced_shape(shape: tuple[int, ...], axes: set[int], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if d in axes else n for d, n in enumerate(shape))
    return tuple(n for d, n in enumerate(shape) if d not in axes)


@register_op(*REDUCERS)
class Reduce(OpDef):
    def check(self, node: Node) -> list[str]:
        t = node.inputs[0].type.dtype
        allowed = REDUCERS[node.op].dtypes
        if node.op in ("ReduceMax", "ReduceMin") and node.opset >= 20:
            allowed = allowed + (dt.BOOL,)
        return [] if t in allowed else [f"element type {t} is not supported"]

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        axes = reduce_axes(node)
        keepdims = bool(node.attrs.get("keepdims", 1))
        return [TensorType(x.dtype, reduced_shape(x.shape, axes, keepdims))]

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        r = REDUCERS[node.op]
        axes = reduce_axes(node)
        count = math.prod(x.shape[d] for d in axes)
        kept, red = reduction_loops(x.shape, axes)
        t = x.dtype
        acc_t = r.acc or (wide_type(t) if r.wide else t.c)

        fields = dict(T=t.c, A=acc_t, abs=_abs_expr(t, acc_t), mean=_mean_expr(t, count),
                      nan=" || x != x" if t.is_float else "",
                      lo=type_extreme(t, False), hi=type_extreme(t, True))
        init, update, final = (c.format(**fields) for c in (r.init, r.update, r.final))
        w, src = ctx.w, ctx.ins[0]
        if (node.op != "ReduceLogSumExp" and red and kept and kept[-1][1] == 1
                and kept[-1][0] >= _COLUMNS_MIN):
            _emit_columns(ctx, t, kept, red, acc_t, (init, update, final))
            return
        with w.loops(tuple(e for e, _ in kept), "o") as oi:
            base = offset_expr(oi, tuple(s for _, s in kept))
            if node.op == "ReduceLogSumExp":
                # Shift by the largest finite value (0 if none) so exp cannot overflow;
                # infinities and NaN then propagate through exp and the sum.
                w.line("double m = -INFINITY;")
                with _over(w, t, src, base, red):
                    w.line("if (isfinite((double)x) && x > m) m = (double)x;")
                w.line("if (m == -INFINITY) m = 0;")
            w.line(f"{acc_t} acc = {init};")
            with _over(w, t, src, base, red):
                w.line(update)
            out_off = offset_expr(oi, strides(tuple(e for e, _ in kept)))
            w.line(f"{ctx.outs[0]}[{out_off}] = {final};")


#: contiguous kept elements from which a reduction keeps a row of accumulators (below, the
#: strided walk per output element is as quick)
_COLUMNS_MIN = 8


def _emit_columns(ctx, t: DType, kept: list[Loop], red: list[Loop], acc_t: str,
                  code: tuple[str, str, str]) -> None:
    """A reduction whose innermost kept axis is contiguous (a mean over a channels-last
    matrix's rows: MobileNetV2's global pool): a row of accumulators in scratch, each reduced
    row folded into it by a loop over contiguous elements, which the compiler vectorizes,
    instead of a strided walk per output element ([49, 1280] 15.6 -> 9.5 us, DS-CNN's
    [125, 64] 1.1 -> 0.8)."""
    init, update, final = code
    w, src = ctx.w, ctx.ins[0]
    n = kept[-1][0]
    outer = kept[:-1]
    accs = ctx.request_scratch(8 * n)             # room for the widest accumulator
    with w.loops(tuple(e for e, _ in outer), "o") as oi:
        base = offset_expr(oi, tuple(s for _, s in outer))
        out_base = offset_expr(oi, tuple(e * n for e in strides(tuple(e for e, _ in outer))))
        w.line(f"{acc_t} *restrict accs = ({acc_t} *){accs};")
        with w.block(f"for (int64_t j = 0; j < {n}; ++j)"):
            w.line(f"accs[j] = {init};")
        with w.loops(tuple(e for e, _ in red), "r") as ri:
            off = " + ".join(p for p in (base, offset_expr(ri, tuple(s for _, s in red)))
                             if p != "0")
            w.line(f"const {t.c} *restrict row = {src} + {off or '0'};")
            with w.block(f"for (int64_t j = 0; j < {n}; ++j)"):
                w.line(f"{acc_t} acc = accs[j];")
                w.line(f"const {t.c} x = row[j];")
                w.line(update)
                w.line("accs[j] = acc;")
        with w.block(f"for (int64_t j = 0; j < {n}; ++j)"):
            w.line(f"const {acc_t} acc = accs[j];")
            at = " + ".join(p for p in (out_base, "j") if p != "0")
            w.line(f"{ctx.outs[0]}[{at}] = {final};")


@contextlib.contextmanager
def _over(w: CWriter, t: DType, src: str, base: str, red: list[Loop]) -> Iterator[None]:
    """Loops over the reduced dims, each iteration starting with `x`, the element read."""
    red = red or [(1, 0)]      # nothing reduced: still one scope of its own for `x`
    with w.loops(tuple(e for e, _ in red), "r") as ri:
        off = " + ".join(p for p in (base, offset_expr(ri, tuple(s for _, s in red))) if p != "0")
        w.line(f"const {t.c} x = {src}[{off or '0'}];")
        yield


def _abs_expr(t: DType, acc_t: str) -> str:
    if t.is_float:
        return "fabs((double)x)"
    if not t.is_signed:
        return f"({acc_t})x"
    return f"(x < 0 ? ({acc_t})0 - ({acc_t})x : ({acc_t})x)"


def _mean_expr(t: DType, count: int) -> str:
    # An empty mean is 0, as in onnxruntime (the sum is 0; only the divisor needs care).
    n = max(count, 1)
    if t.is_float:
        return f"({t.c})(acc / {n}.0)"
    return f"({t.c})(({t.c})acc / ({t.c}){n})"


# -- ArgMax / ArgMin --------------------------------------------------------------------------

@register_op("ArgMax", "ArgMin")
class ArgExtreme(OpDef):
    dtypes = dt.NUMERIC + (dt.BOOL,)

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        if x.rank == 0:
            raise fail(node, "input must have rank 1 or more")
        axis = normalize_axis(node, int(node.attrs.get("axis", 0)), x.rank)
        if x.shape[axis] == 0 and math.prod(x.shape[:axis] + x.shape[axis + 1:]) > 0:
            raise fail(node, f"cannot take {node.op} over axis {axis}, which is empty")
        shape = reduced_shape(x.shape, {axis}, bool(node.attrs.get("keepdims", 1)))
        return [TensorType(dt.I64, shape)]

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        axis = normalize_axis(node, int(node.attrs.get("axis", 0)), x.rank)
        outer, n, inner = split_at_axis(x.shape, axis)
        cmp = ">" if node.op == "ArgMax" else "<"
        if node.attrs.get("select_last_index", 0):
            cmp += "="
        w = ctx.w
        # Like onnxruntime: the first element is the start, and a NaN never wins a comparison.
        with w.loops((outer, inner)) as (o, i):
            w.line(f"const {x.dtype.c} *p = {ctx.ins[0]} + {o} * {n * inner} + {i};")
            w.line(f"{x.dtype.c} best = p[0];")
            w.line("int64_t at = 0;")
            with w.block(f"for (int64_t j = 1; j < {n}; ++j)"):
                w.line(f"if (p[j * {inner}] {cmp} best) {{ best = p[j * {inner}]; at = j; }}")
            w.line(f"{ctx.outs[0]}[{o} * {inner} + {i}] = at;")


# -- CumSum / CumProd -------------------------------------------------------------------------

# op -> (the accumulator's start, its C compound assignment)
_SCANS = {"CumSum": ("0", "+="), "CumProd": ("1", "*=")}


@register_op(*_SCANS)
class CumScan(OpDef):
    dtypes = _SUM_TYPES

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        if x.rank == 0:
            raise fail(node, "input must have rank 1 or more")
        axis = node.inputs[1]
        if axis.type.size != 1 or axis.type.dtype not in (dt.I32, dt.I64):
            raise fail(node, "axis must be one int32 or int64 value")
        if axis.is_const:
            normalize_axis(node, int(np.asarray(axis.const).ravel()[0]), x.rank)
        return [x]

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        w, src, dst = ctx.w, ctx.ins[0], ctx.outs[0]
        axis_in = node.inputs[1]
        if axis_in.is_const:
            axis = normalize_axis(node, int(np.asarray(axis_in.const).ravel()[0]), x.rank)
            for name, value in zip(("outer", "n", "inner"), split_at_axis(x.shape, axis)):
                w.line(f"const int64_t {name} = {value};")
        else:
            # The output shape does not depend on the axis, so it may come at run time.
            w.line(f"static const int64_t dims[{x.rank}] = {{{', '.join(map(str, x.shape))}}};")
            w.line(f"int64_t axis = (int64_t){ctx.ins[1]}[0];")
            w.line(f"if (axis < 0) axis += {x.rank};")
            with w.block(f"if (axis < 0 || axis >= {x.rank})"):
                w.line(f"memset({dst}, 0, {x.nbytes});   /* invalid axis: a defined result */")
                w.line("return;")
            w.line("int64_t outer = 1, inner = 1;")
            w.line("for (int64_t d = 0; d < axis; ++d) outer *= dims[d];")
            w.line(f"for (int64_t d = axis + 1; d < {x.rank}; ++d) inner *= dims[d];")
            w.line("const int64_t n = dims[axis];")
        t = x.dtype
        # Floats accumulate in order, as onnxruntime does; integers in uint64_t, which wraps
        # modulo 2^64 (as the element type would) without signed-overflow UB.
        acc_t = t.c if t.is_float else "uint64_t"
        start, assign = _SCANS[node.op]
        j = "n - 1 - j" if node.attrs.get("reverse", 0) else "j"
        with w.block("for (int64_t o = 0; o < outer; ++o)"):
            with w.block("for (int64_t i = 0; i < inner; ++i)"):
                w.line(f"{acc_t} acc = {start};")
                with w.block("for (int64_t j = 0; j < n; ++j)"):
                    w.line(f"const int64_t at = (o * n + {j}) * inner + i;")
                    if node.attrs.get("exclusive", 0):
                        w.line(f"{dst}[at] = ({t.c})acc;")
                        w.line(f"acc {assign} ({acc_t}){src}[at];")
                    else:
                        w.line(f"acc {assign} ({acc_t}){src}[at];")
                        w.line(f"{dst}[at] = ({t.c})acc;")


# -- TopK -------------------------------------------------------------------------------------

@register_op("TopK")
class TopK(OpDef):
    dtypes = dt.NUMERIC

    def _k_axis(self, node: Node) -> tuple[int, int]:
        x = node.inputs[0].type
        if x.rank == 0:
            raise fail(node, "input must have rank 1 or more")
        axis = normalize_axis(node, int(node.attrs.get("axis", -1)), x.rank)
        if node.opset < 10:
            if "k" not in node.attrs:
                raise fail(node, "attribute k is required")
            k = int(node.attrs["k"])
        else:
            k_in = node.input(1)
            if k_in is None:
                raise fail(node, "input K is required")
            if not k_in.is_const:
                raise unsupported(node, "K given by a non-constant input is not supported")
            if k_in.const.size != 1:
                raise fail(node, f"K must hold one value, got shape {list(k_in.const.shape)}")
            k = int(np.asarray(k_in.const).ravel()[0])
        if not 0 <= k <= x.shape[axis]:
            raise fail(node, f"K = {k} is outside [0, {x.shape[axis]}] (the size of axis {axis})")
        return k, axis

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0].type
        k, axis = self._k_axis(node)
        shape = x.shape[:axis] + (k,) + x.shape[axis + 1:]
        return [TensorType(x.dtype, shape), TensorType(dt.I64, shape)]

    def lower(self, node: Node, ctx) -> None:
        x = node.inputs[0].type
        k, axis = self._k_axis(node)
        outer, n, inner = split_at_axis(x.shape, axis)
        if k == 0 or outer * inner == 0:
            return
        w = ctx.w
        heap = ctx.request_scratch(k * 8)
        # Candidates are kept in a heap whose root is the worst one; "worse" orders by value
        # (NaN above every number, as onnxruntime sorts it), then by index: lower index first.
        if x.dtype.is_float:
            w.line("#define EMBER_GT(a, b) ((a) > (b) || ((a) != (a) && (b) == (b)))")
        else:
            w.line("#define EMBER_GT(a, b) ((a) > (b))")
        w.line(f"#define EMBER_V(j) p[(j) * {inner}]")
        hi, lo = ("b", "a") if node.attrs.get("largest", 1) else ("a", "b")
        w.line(f"#define EMBER_WORSE(a, b) (EMBER_GT(EMBER_V({hi}), EMBER_V({lo})) || "
               f"(!EMBER_GT(EMBER_V({lo}), EMBER_V({hi})) && (a) > (b)))")
        w.line(f"int64_t *h = (int64_t *){heap};")
        with w.loops((outer, inner)) as (o, i):
            w.line(f"const {x.dtype.c} *p = {ctx.ins[0]} + {o} * {n * inner} + {i};")
            w.line("int64_t size = 0;")
            with w.block(f"for (int64_t j = 0; j < {n}; ++j)"):
                with w.block(f"if (size < {k})"):
                    w.line("int64_t c = size++;")
                    with w.block("while (c > 0 && EMBER_WORSE(j, h[(c - 1) / 2]))"):
                        w.line("h[c] = h[(c - 1) / 2];")
                        w.line("c = (c - 1) / 2;")
                    w.line("h[c] = j;")
                with w.block("else if (EMBER_WORSE(h[0], j))"):
                    _sift_down(w, "j", "size")
            # Pop the worst to the back until the heap holds the best-first order.
            with w.block("for (int64_t e = size - 1; e > 0; --e)"):
                w.line("const int64_t item = h[e];")
                w.line("h[e] = h[0];")
                _sift_down(w, "item", "e")
            with w.block(f"for (int64_t r = 0; r < {k}; ++r)"):
                w.line(f"const int64_t at = {o} * {k * inner} + r * {inner} + {i};")
                w.line(f"{ctx.outs[0]}[at] = EMBER_V(h[r]);")
                w.line(f"{ctx.outs[1]}[at] = h[r];")
        w.line("#undef EMBER_WORSE")
        w.line("#undef EMBER_V")
        w.line("#undef EMBER_GT")


def _sift_down(w: CWriter, item: str, size: str) -> None:
    """Put `item` at the root of the heap h[0:size] and restore the order (worst at the root)."""
    w.line("int64_t c = 0;")
    with w.block("for (;;)"):
        w.line("int64_t m = 2 * c + 1;")
        w.line(f"if (m >= {size}) break;")
        w.line(f"if (m + 1 < {size} && EMBER_WORSE(h[m + 1], h[m])) ++m;")
        w.line(f"if (!EMBER_WORSE(h[m], {item})) break;")
        w.line("h[c] = h[m];")
        w.line("c = m;")
    w.line(f"h[c] = {item};")
