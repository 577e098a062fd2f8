"""DFT (opsets 17, 20): a direct O(n^2) discrete Fourier transform along one axis, in double.

The input is [..., 1] (real) or [..., 2] (complex, real and imaginary parts), viewed around the
transformed axis as [outer, n, inner, parts]. The twiddle factors come from one table of
cos/sin(2 pi m / L) indexed by (j * k) mod L, which stays accurate for long transforms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.ops.registry import OpDef, fail, register_op, unsupported
from ember.render.cwriter import CWriter

_FLOATS = (dt.F32, dt.F64)
_MAX_LENGTH = 1 << 24        # (j * k) must not overflow int64; a direct DFT that long is absurd


@dataclass(frozen=True)
class Plan:
    axis: int
    length: int              # dft_length: L
    inverse: bool
    onesided: bool
    outer: int
    n_in: int                # the input's size along the axis
    inner: int
    parts_in: int            # 1 (real) or 2 (complex)
    n_out: int
    parts_out: int


def _scalar_input(node: Node, i: int, what: str) -> int | None:
    v = node.input(i)
    if v is None:
        return None
    if not v.is_const:
        raise unsupported(node, f"{what} given at run time (a dynamic input) is not supported; "
                                "it must be a constant")
    if v.const.size != 1 or v.type.dtype not in (dt.I32, dt.I64):
        raise fail(node, f"{what} must be one int32 or int64 value")
    return int(np.asarray(v.const).ravel()[0])


def plan(node: Node) -> Plan:
    x = node.inputs[0].type
    r = x.rank
    if r < 2 or x.shape[-1] not in (1, 2):
        raise fail(node, f"input shape {list(x.shape)} must be [..., 1] (real) or [..., 2] "
                         "(complex) with at least one signal dim")
    if node.opset >= 20:
        axis = _scalar_input(node, 2, "axis")
        axis = -2 if axis is None else axis
    else:
        axis = int(node.attrs.get("axis", 1))
    if not (-r <= axis <= -2 or 0 <= axis <= r - 2):
        raise fail(node, f"axis {axis} is outside [{-r}, -2] and [0, {r - 2}] for rank {r}")
    axis = axis + r if axis < 0 else axis
    inverse = bool(node.attrs.get("inverse", 0))
    onesided = bool(node.attrs.get("onesided", 0))
    n_in = x.shape[axis]
    length = _scalar_input(node, 1, "dft_length")
    if length is None:
        length = 2 * (n_in - 1) if inverse and onesided else n_in
    if not 1 <= length <= _MAX_LENGTH:
        raise fail(node, f"dft_length {length} is outside [1, {_MAX_LENGTH}]")
    if inverse and onesided:            # IRFFT: a one-sided spectrum in, a real signal out
        n_out, parts_out = length, 1
    else:
        n_out, parts_out = (length // 2 + 1 if onesided else length), 2
    return Plan(axis, length, inverse, onesided, math.prod(x.shape[:axis]), n_in,
                math.prod(x.shape[axis + 1:-1]), x.shape[-1], n_out, parts_out)


@register_op("DFT")
class DFT(OpDef):
    dtypes = _FLOATS

    def infer(self, node: Node) -> list[TensorType]:
        x, p = node.inputs[0].type, plan(node)
        shape = x.shape[:p.axis] + (p.n_out,) + x.shape[p.axis + 1:-1] + (p.parts_out,)
        return [TensorType(x.dtype, shape)]

    def flops(self, node: Node) -> int:
        p = plan(node)
        return 8 * p.outer * p.inner * p.n_out * min(p.n_in, p.length)

    def lower(self, node: Node, ctx) -> None:
        p = plan(node)
        if p.outer * p.inner == 0:
            return
        w = ctx.w
        twiddles = _twiddle_table(w, ctx.request_scratch(16 * p.length), p.length)
        sign = "+" if p.inverse else "-"      # e^{-i theta} forward, e^{+i theta} inverse
        scale = f"(1.0 / {p.length})" if p.inverse else "1.0"
        src, dst, t = ctx.ins[0], ctx.outs[0], node.outputs[0].type.dtype.c
        with w.loops((p.outer, p.inner, p.n_out), "i") as (o, i, k):
            w.line("double re = 0, im = 0;")
            if p.inverse and p.onesided:
                # The full spectrum is the one-sided one and its conjugate mirror; only the
                # real part of the result is kept.
                with w.block(f"for (int64_t j = 0; j < {p.length}; ++j)"):
                    w.line(f"const int64_t b = 2 * j <= {p.length} ? j : {p.length} - j;")
                    w.line(f"if (b >= {p.n_in}) continue;")
                    _load(w, src, p, o, "b", i)
                    w.line("if (b != j) xi = -xi;")
                    w.line(f"const int64_t m = (j * {k}) % {p.length};")
                    w.line(f"re += xr * {twiddles}[2 * m] - xi * {twiddles}[2 * m + 1];")
            else:
                with w.block(f"for (int64_t j = 0; j < {min(p.n_in, p.length)}; ++j)"):
                    _load(w, src, p, o, "j", i)
                    w.line(f"const int64_t m = (j * {k}) % {p.length};")
                    w.line(f"const double c = {twiddles}[2 * m], s = {sign}{twiddles}[2 * m + 1];")
                    w.line("re += xr * c - xi * s;")
                    w.line("im += xr * s + xi * c;")
            at = f"(({o} * {p.n_out} + {k}) * {p.inner} + {i}) * {p.parts_out}"
            w.line(f"{dst}[{at}] = ({t})(re * {scale});")
            if p.parts_out == 2:
                w.line(f"{dst}[{at} + 1] = ({t})(im * {scale});")


def _load(w: CWriter, src: str, p: Plan, o: str, j: str, i: str) -> None:
    """xr, xi: the input element at (o, j, i); xi is 0 for a real input."""
    w.line(f"const int64_t at = (({o} * {p.n_in} + {j}) * {p.inner} + {i}) * {p.parts_in};")
    w.line(f"double xr = {src}[at], xi = {f'{src}[at + 1]' if p.parts_in == 2 else '0'};")


def _twiddle_table(w: CWriter, scratch: str, length: int) -> str:
    """Fill cos/sin(2 pi m / length), interleaved, into scratch; returns the table's name."""
    w.line(f"double *tw = (double *){scratch};")
    with w.block(f"for (int64_t m = 0; m < {length}; ++m)"):
        w.line(f"const double theta = 6.283185307179586476925286766559 * (double)m / {length};")
        w.line("tw[2 * m] = cos(theta);")
        w.line("tw[2 * m + 1] = sin(theta);")
    return "tw"
