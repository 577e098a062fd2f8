"""Matrix products: MatMul, Gemm (both through one batched GEMM loop nest), and Det.

`emit_gemm` writes the one plain loop nest for out = alpha * A.B + beta * C over
(batch, M, N, K) with arbitrary element strides; MatMul and Gemm only describe their operands.
The loop order is i, k, j with an accumulator row per output row (contiguous, vectorizable
inner loop), columns blocked so a panel of B stays in cache, rows split over OpenMP threads.
Every final element of output 0 goes through ctx.store, so a fused epilogue applies there.
The register-blocked microkernels of a later stage replace the body of `emit_gemm`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.dtypes import DType
from ember.graph.ir import Node, TensorType
from ember.kernels.gemm import (BlockedGemm, PackedConst, Strided, emit_blocked_gemm, pack_a,
                                pack_b)
from ember.lower.indexing import broadcast_shape, broadcast_strides, offset_expr, strides
from ember.lower.memory_plan import align
from ember.lower.parallel import part_loop, serial, team
from ember.lower.schedule import gemm_tiles
from ember.ops.registry import OpDef, fail, register_op
from ember.render.cwriter import CWriter, c_literal

#: element types of MatMul and Gemm (ONNX also allows bfloat16, which Ember lacks)
GEMM_DTYPES = (dt.F16, dt.F32, dt.F64, dt.I32, dt.I64, dt.U32, dt.U64)
#: bytes of B one column block may take, so the panel stays in the L2 cache
_PANEL_BYTES = 192 * 1024


def accumulator_c_type(dtype: DType) -> str:
    """The C type sums of products accumulate in: the type itself for float and double, float
    for float16 (as onnxruntime does); for integers an unsigned type of at least 32 bits, so
    overflow wraps (as in onnxruntime) instead of being undefined behaviour, and narrow types
    do not promote to signed int."""
    if dtype is dt.F16:
        return "float"
    if dtype.is_float:
        return dtype.c
    return "uint64_t" if dtype.itemsize == 8 else "uint32_t"


@dataclass(frozen=True)
class Operand:
    """A matrix operand of a batched GEMM: its C pointer and its element strides."""
    name: str
    batch: tuple[int, ...]     # stride per output batch dim (0 where broadcast)
    rows: int                  # stride along its first matrix dim
    cols: int                  # stride along its second matrix dim


@dataclass(frozen=True)
class GemmProblem:
    """out[b, i, j] = alpha * sum_k a[b, i, k] * b[b, k, j] + beta * c[b, i, j].

    Output 0 has dims batch + (M if keep_m) + (N if keep_n), row-major: MatMul drops M or N
    for a 1-D operand.
    """
    dtype: DType
    batch: tuple[int, ...]
    m: int
    n: int
    k: int
    a: Operand
    b: Operand
    c: Operand | None = None
    alpha: float = 1.0
    beta: float = 1.0
    keep_m: bool = True
    keep_n: bool = True

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.batch + (self.m,) * self.keep_m + (self.n,) * self.keep_n

    def flops(self) -> int:
        extra = math.prod(self.batch) * self.m * self.n if self.c is not None else 0
        return 2 * math.prod(self.batch) * self.m * self.n * self.k + extra


def emit_gemm(ctx, p: GemmProblem) -> None:
    """Write the loop nest computing `p` into ctx.w, storing output 0 through ctx.store."""
    if math.prod(p.out_shape) == 0:
        return                                       # nothing to write
    w: CWriter = ctx.w
    T, acc_t = p.dtype.c, accumulator_c_type(p.dtype)
    acc_size = 8 if acc_t in ("double", "uint64_t") else 4
    threads = max(1, min(ctx.schedule.threads, p.m))
    nb = _column_block(p)
    # B is read along rows of N; a B whose columns are not contiguous is packed first.
    pack = p.b.cols != 1 and p.n > 1
    pack_bytes = align(p.k * p.n * p.dtype.itemsize) if pack else 0
    scratch = ctx.request_scratch(pack_bytes + threads * nb * acc_size)
    b_shared = all(s == 0 for s in p.b.batch)
    if threads > 1:         # B packed by one thread, then the rows split among all
        team(ctx)
    packing = serial(ctx) if threads > 1 else contextlib.nullcontext()
    if pack and b_shared:
        with packing:
            _emit_pack(w, p, scratch, "0")
    with w.loops(p.batch, prefix="b") as bv:
        a_base = offset_expr(bv, p.a.batch)
        b_base = offset_expr(bv, p.b.batch)
        if pack and not b_shared:
            with packing:
                _emit_pack(w, p, scratch, b_base)
        if pack:
            w.line(f"const {T} *restrict bmat = (const {T} *){scratch};")
            b_rows = p.n
        else:
            w.line(f"const {T} *restrict bmat = {_plus(p.b.name, b_base)};")
            b_rows = p.b.rows
        # rows split in `threads` chunks, each with its own acc row
        with (part_loop(ctx, "t", threads) if threads > 1 else contextlib.nullcontext()):
            acc_at = _plus(f"{pack_bytes // acc_size}", f"t*{nb}" if threads > 1 else "0")
            w.line(f"{acc_t} *restrict acc = ({acc_t} *){scratch} + {acc_at};")
            with w.block(f"for (int64_t j0 = 0; j0 < {p.n}; j0 += {nb})"):
                w.line(f"const int64_t nj = {p.n} - j0 < {nb} ? {p.n} - j0 : {nb};")
                rows = (f"int64_t i = t*{p.m}/{threads}; i < (t + 1)*{p.m}/{threads}; ++i"
                        if threads > 1 else f"int64_t i = 0; i < {p.m}; ++i")
                with w.block(f"for ({rows})"):
                    w.line("for (int64_t jj = 0; jj < nj; ++jj) acc[jj] = 0;")
                    with w.block(f"for (int64_t k = 0; k < {p.k}; ++k)"):
                        a_at = _plus(a_base, offset_expr(["i", "k"], (p.a.rows, p.a.cols)))
                        w.line(f"const {acc_t} av = {_widen(p.dtype, f'{p.a.name}[{a_at}]')};")
                        w.line(f"const {T} *restrict brow = bmat + "
                               f"{_plus(offset_expr(['k'], (b_rows,)), 'j0')};")
                        w.line("for (int64_t jj = 0; jj < nj; ++jj) "
                               f"acc[jj] += av * {_widen(p.dtype, 'brow[jj]')};")
                    with w.block("for (int64_t jj = 0; jj < nj; ++jj)"):
                        w.line("const int64_t j = j0 + jj;")
                        index = bv + ["i"] * p.keep_m + ["j"] * p.keep_n
                        out_at = offset_expr(index, strides(p.out_shape))
                        ctx.store(index, out_at, _final_value(p, bv))


def emit_packed_gemm(ctx, p: GemmProblem, constants: tuple) -> None:
    """float32 through the packed microkernel GEMM (ember/kernels/gemm.py); a constant operand
    (weights) is packed at compile time, the other packed block by block as the kernel runs."""
    t = gemm_tiles(ctx.schedule, p.m, p.n, p.k, math.prod(p.batch))
    bv = [f"b{d}" for d in range(len(p.batch))]
    mat_a, mat_b = constants
    a = (PackedConst(ctx.pack_constant(pack_a(mat_a, t.mr), replaces=0)) if mat_a is not None
         else Strided(_plus(p.a.name, offset_expr(bv, p.a.batch)), p.a.rows, p.a.cols))
    b = (PackedConst(ctx.pack_constant(pack_b(mat_b, t.nr), replaces=1)) if mat_b is not None
         else Strided(_plus(p.b.name, offset_expr(bv, p.b.batch)), p.b.rows, p.b.cols))
    out = _plus(ctx.outs[0], f"({offset_expr(bv, strides(p.batch))})*{p.m * p.n}")
    gemm = BlockedGemm(p.m, p.n, p.k, tuple(zip(bv, p.batch)), a, b, out, p.n)

    def final(i: str, j: str, value: str) -> None:
        index = bv + [i] * p.keep_m + [j] * p.keep_n
        ctx.store(index, offset_expr(index, strides(p.out_shape)), _final_value(p, bv, value))

    plain = ctx.epilogue is None and p.alpha == 1 and (p.c is None or p.beta == 0)
    emit_blocked_gemm(ctx, gemm, t, None if plain else final)


def _plus(a: str, b: str) -> str:
    """`a + b` for C offset expressions, leaving out a "0" term."""
    return b if a == "0" else a if b == "0" else f"{a} + {b}"


def _widen(dtype: DType, expr: str) -> str:
    """`expr` converted to the accumulator type (a no-op for floats)."""
    acc_t = accumulator_c_type(dtype)
    return expr if acc_t == dtype.c else f"({acc_t}){expr}"


def _column_block(p: GemmProblem) -> int:
    """Columns per block: a K x block panel of B fits _PANEL_BYTES (a multiple of 16, >= 256
    so the inner loop stays long)."""
    fit = _PANEL_BYTES // max(1, p.k * p.dtype.itemsize)
    return max(1, min(p.n, max(256, fit // 16 * 16)))


def _emit_pack(w: CWriter, p: GemmProblem, scratch: str, b_base: str) -> None:
    """Copy B (K x N) row-major into the start of scratch."""
    T = p.dtype.c
    src = _plus(b_base, offset_expr(["k", "j"], (p.b.rows, p.b.cols)))
    with w.block(""):     # its own scope: the restrict pointer must not outlive the copy
        w.line(f"{T} *restrict bpack = ({T} *){scratch};")
        with w.block(f"for (int64_t k = 0; k < {p.k}; ++k)"):
            w.line(f"for (int64_t j = 0; j < {p.n}; ++j) bpack[k*{p.n} + j] = {p.b.name}[{src}];")


def _final_value(p: GemmProblem, bv: list[str], acc: str = "acc[jj]") -> str:
    """C expression of alpha * acc + beta * C, in the output type."""
    T, t = p.dtype.c, p.dtype
    c = None
    if p.c is not None and p.beta != 0:   # beta == 0 ignores C entirely (even NaN/Inf in it)
        c = f"{p.c.name}[{offset_expr(bv + ['i', 'j'], p.c.batch + (p.c.rows, p.c.cols))}]"
    if t.is_float:
        value = acc if p.alpha == 1 else f"{c_literal(p.alpha, t)} * {acc}"
        if c is not None:
            value += f" + {c}" if p.beta == 1 else f" + {c_literal(p.beta, t)} * {c}"
        return value
    if p.alpha == 1 and (c is None or p.beta == 1):
        return f"({T})(acc[jj]{f' + {_widen(t, c)}' if c else ''})"
    # Non-unit alpha/beta on integers: computed in double and truncated, as numpy does.
    value = f"(double)({T})acc[jj] * {c_literal(p.alpha, dt.F64)}"
    if c is not None:
        value += f" + (double){c} * {c_literal(p.beta, dt.F64)}"
    return f"({T})({value})"


def matrix_operand(name: str, shape: tuple[int, ...], out_batch: tuple[int, ...],
                   st: tuple[int, ...] | None = None) -> Operand:
    """The Operand reading a tensor of `shape` (rank >= 2) broadcast over out_batch, at element
    strides `st` (row-major when None)."""
    st = strides(shape) if st is None else st
    pad = len(out_batch) - (len(shape) - 2)
    batch = tuple(0 if d < pad or shape[d - pad] == 1 else st[d - pad]
                  for d in range(len(out_batch)))
    return Operand(name, batch, st[-2], st[-1])


def matmul_shapes(node: Node, sa: tuple[int, ...], sb: tuple[int, ...]
                  ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """numpy matmul's shapes: A and B as matrices (a 1-D A a row, a 1-D B a column) and the
    broadcast batch dims; a clear error where they do not fit."""
    if not sa or not sb:
        raise fail(node, "inputs must have rank >= 1 (got a scalar)")
    a2 = (1,) + sa if len(sa) == 1 else sa
    b2 = sb + (1,) if len(sb) == 1 else sb
    if a2[-1] != b2[-2]:
        raise fail(node, f"inner dims differ: {list(sa)} x {list(sb)}")
    batch = broadcast_shape(a2[:-2], b2[:-2])
    if batch is None:
        raise fail(node, f"batch dims do not broadcast: {list(sa)} x {list(sb)}")
    return a2, b2, batch


def own_inputs(node: Node) -> list:
    """The node's own inputs, without those a fused epilogue appended (see lower/to_kernels.py)."""
    epilogue = node.attrs.get("epilogue")
    extra = len(epilogue.input_types) - 1 if epilogue is not None else 0
    return node.inputs[:len(node.inputs) - extra]


def _same_dtypes(node: Node, values) -> None:
    kinds = {v.type.dtype for v in values if v is not None}
    if len(kinds) > 1:
        raise fail(node, "inputs must have one element type, got "
                   + ", ".join(sorted(str(k) for k in kinds)))


class _GemmOp(OpDef):
    """An op that is one GemmProblem: inference, flops and lowering all come from it."""
    dtypes = GEMM_DTYPES
    accepts_epilogue = True

    def problem(self, node: Node, names: list[str | None] | None = None) -> GemmProblem:
        """The product `node` computes; `names` are the C names of its inputs."""
        raise NotImplementedError

    def infer(self, node: Node) -> list[TensorType]:
        return [TensorType(node.inputs[0].type.dtype, self.problem(node).out_shape)]

    def flops(self, node: Node) -> int:
        return self.problem(node).flops()

    def lower(self, node: Node, ctx) -> None:
        p = self.problem(node, ctx.ins)
        if p.dtype is dt.F32 and p.k > 0 and math.prod(p.out_shape) > 0:
            emit_packed_gemm(ctx, p, self.constant_matrices(node, p))
        else:
            emit_gemm(ctx, p)

    def constant_matrices(self, node: Node, p: GemmProblem) -> tuple:
        """(A as M x K, B as K x N) where that operand is a constant shared by every batch
        entry (it is then packed at compile time), else None."""
        raise NotImplementedError


#: attributes of a MatMul whose input k is read transposed (set by passes/fold_transposes.py)
FOLDED_PERMS = ("perm0", "perm1")


def folded_view(node: Node, k: int) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """MatMul input k as the product reads it: its shape, and its element strides (None: row
    major). With attrs["perm<k>"] (a Transpose folded in), both are the input's permuted."""
    shape = own_inputs(node)[k].type.shape
    perm = node.attrs.get(FOLDED_PERMS[k])
    if perm is None:
        return shape, None
    perm = [int(p) for p in perm]
    if len(shape) < 2 or sorted(perm) != list(range(len(shape))):
        raise fail(node, f"{FOLDED_PERMS[k]}={perm} is not a permutation of the {len(shape)} "
                   f"axes of input {k} (rank >= 2)")
    st = strides(shape)
    return tuple(shape[p] for p in perm), tuple(st[p] for p in perm)


def _folded_const(node: Node, k: int) -> np.ndarray:
    """Constant MatMul input k as the product reads it (transposed by its perm<k>)."""
    perm = node.attrs.get(FOLDED_PERMS[k])
    const = own_inputs(node)[k].const
    return const if perm is None else np.transpose(const, [int(p) for p in perm])


@register_op("MatMul")
class MatMul(_GemmOp):
    def check(self, node: Node) -> list[str]:
        # perm0/perm1 are Ember's own (fold-transposes); a model must not set them
        return super().check(node) + [f"attribute {a} is not an ONNX MatMul attribute"
                                      for a in FOLDED_PERMS if a in node.attrs]

    def problem(self, node: Node, names: list[str | None] | None = None) -> GemmProblem:
        """numpy matmul: a 1-D A is a row (its dim dropped), a 1-D B a column; batch dims
        broadcast. An input with a perm<k> attribute is read transposed, in place."""
        inputs = own_inputs(node)
        if len(inputs) != 2 or any(v is None for v in inputs):
            raise fail(node, "needs exactly two inputs")
        a, b = inputs
        _same_dtypes(node, inputs)
        (sa, st_a), (sb, st_b) = folded_view(node, 0), folded_view(node, 1)
        a2, b2, batch = matmul_shapes(node, sa, sb)
        na, nb = names or ("in0", "in1")
        return GemmProblem(a.type.dtype, batch, a2[-2], b2[-1], a2[-1],
                           matrix_operand(na, a2, batch, st_a), matrix_operand(nb, b2, batch, st_b),
                           keep_m=len(sa) > 1, keep_n=len(sb) > 1)

    def constant_matrices(self, node: Node, p: GemmProblem) -> tuple:
        a, b = own_inputs(node)
        mat_a = (_folded_const(node, 0).reshape(p.m, p.k)
                 if a.is_const and a.type.size == p.m * p.k else None)
        mat_b = (_folded_const(node, 1).reshape(p.k, p.n)
                 if b.is_const and b.type.size == p.k * p.n else None)
        return mat_a, mat_b


@register_op("Gemm")
class Gemm(_GemmOp):
    def problem(self, node: Node, names: list[str | None] | None = None) -> GemmProblem:
        """Y = alpha * A'.B' + beta * C, A' and B' optionally transposed, C broadcast to (M, N)."""
        inputs = own_inputs(node)
        if not 2 <= len(inputs) <= 3 or inputs[0] is None or inputs[1] is None:
            raise fail(node, "needs inputs A, B and optionally C")
        a, b, c = (inputs + [None])[:3]
        _same_dtypes(node, (a, b, c))
        if a.type.rank != 2 or b.type.rank != 2:
            raise fail(node, f"A and B must be matrices, got shapes {list(a.type.shape)} and "
                       f"{list(b.type.shape)}")
        trans_a, trans_b = bool(node.attrs.get("transA", 0)), bool(node.attrs.get("transB", 0))
        (m, k), (k2, n) = a.type.shape[::-1 if trans_a else 1], b.type.shape[::-1 if trans_b else 1]
        if k != k2:
            raise fail(node, f"inner dims differ: A' is {m}x{k}, B' is {k2}x{n}")
        na, nb, nc = (list(names or ("in0", "in1")) + ["in2"])[:3]
        a_op = Operand(na, (), 1, m) if trans_a else Operand(na, (), k, 1)
        b_op = Operand(nb, (), 1, k) if trans_b else Operand(nb, (), n, 1)
        c_op = None
        if c is not None:
            cs = c.type.shape
            exact = node.opset < 7 and not node.attrs.get("broadcast", 0)
            if (len(cs) > 2 or any(d not in (1, full) for d, full in zip(cs[::-1], (n, m)))
                    or (exact and cs != (m, n))):
                raise fail(node, f"C of shape {list(cs)} does not broadcast to ({m}, {n})")
            c_op = Operand(nc, (), *broadcast_strides(cs, (m, n)))
        return GemmProblem(a.type.dtype, (), m, n, k, a_op, b_op, c_op,
                           _float_attr(node, "alpha"), _float_attr(node, "beta"))

    def constant_matrices(self, node: Node, p: GemmProblem) -> tuple:
        a, b = own_inputs(node)[:2]
        mat_a = (a.const.T if node.attrs.get("transA", 0) else a.const) if a.is_const else None
        mat_b = (b.const.T if node.attrs.get("transB", 0) else b.const) if b.is_const else None
        return mat_a, mat_b


def _float_attr(node: Node, name: str) -> float:
    value = node.attrs.get(name, 1.0)
    if not isinstance(value, (int, float)):
        raise fail(node, f"attribute {name} must be a number, got {value!r}")
    return float(value)


@register_op("Det")
class Det(OpDef):
    dtypes = dt.FLOATS

    def infer(self, node: Node) -> list[TensorType]:
        x = node.inputs[0] if node.inputs else None
        if x is None or len(node.inputs) != 1:
            raise fail(node, "needs exactly one input")
        shape = x.type.shape
        if len(shape) < 2 or shape[-1] != shape[-2]:
            raise fail(node, f"input must be square matrices (..., M, M), got {list(shape)}")
        return [TensorType(x.type.dtype, shape[:-2])]

    def flops(self, node: Node) -> int:
        m = node.inputs[0].type.shape[-1]
        return node.outputs[0].type.size * (2 * m ** 3 // 3 + m)

    def lower(self, node: Node, ctx) -> None:
        """LU decomposition with partial pivoting, in double, of a copy of each matrix."""
        m = node.inputs[0].type.shape[-1]
        x, y, T = ctx.ins[0], ctx.outs[0], node.outputs[0].type.dtype.c
        if node.outputs[0].type.size == 0:
            return
        w = ctx.w
        w.line(f"double *restrict a = (double *){ctx.request_scratch(max(1, m * m) * 8)};")
        with w.block(f"for (int64_t b = 0; b < {node.outputs[0].type.size}; ++b)"):
            w.line(f"for (int64_t q = 0; q < {m * m}; ++q) a[q] = (double){x}[b*{m * m} + q];")
            w.line("double det = 1;")
            with w.block(f"for (int64_t c = 0; c < {m}; ++c)"):
                w.line("int64_t p = c;")
                w.line(f"for (int64_t r = c + 1; r < {m}; ++r) "
                       f"if (fabs(a[r*{m} + c]) > fabs(a[p*{m} + c])) p = r;")
                with w.block("if (p != c)"):
                    w.line(f"for (int64_t q = 0; q < {m}; ++q) {{ const double s = a[p*{m} + q]; "
                           f"a[p*{m} + q] = a[c*{m} + q]; a[c*{m} + q] = s; }}")
                    w.line("det = -det;")
                w.line(f"const double pivot = a[c*{m} + c];")
                w.line("det *= pivot;")
                w.line("if (pivot == 0) break;     /* singular */")
                with w.block(f"for (int64_t r = c + 1; r < {m}; ++r)"):
                    w.line(f"const double f = a[r*{m} + c] / pivot;")
                    w.line(f"for (int64_t q = c + 1; q < {m}; ++q) a[r*{m} + q] -= f * a[c*{m} + q];")
            w.line(f"{y}[b] = ({T})det;")
