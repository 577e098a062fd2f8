"""Loss ops: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (inference of the loss value).

Inputs are scores/log-probabilities of shape (N, C, d1..dk) and integer targets (N, d1..dk);
the kernels view them as (N, C, D) and (N, D). Sums accumulate in double so the mean over
many positions does not drift from the reference.
"""
from __future__ import annotations

import math

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.ops.registry import OpDef, fail, register_op
from ember.render.cwriter import CWriter

_REDUCTIONS = ("none", "sum", "mean")


def _layout(node: Node) -> tuple[int, int, int]:
    """(N, C, D) of the scores input, after checking the target's shape against it."""
    x, target = node.inputs[0].type, node.inputs[1].type
    if x.rank < 2:
        raise fail(node, f"input must have rank >= 2, got shape {list(x.shape)}")
    if target.dtype not in (dt.I32, dt.I64):
        raise fail(node, f"target must hold int32 or int64 class indices, got {target.dtype}")
    if target.shape != (x.shape[0],) + x.shape[2:]:
        raise fail(node, f"target shape {list(target.shape)} does not match input shape "
                   f"{list(x.shape)} (expected (N, d1, ...))")
    if x.shape[1] == 0 and target.size:
        raise fail(node, f"input shape {list(x.shape)} has no classes (C = 0) for the targets "
                   "to pick from")
    w = node.input(2)
    if w is not None and w.type.shape != (x.shape[1],):
        raise fail(node, f"weight must have shape [C] = [{x.shape[1]}], got {list(w.type.shape)}")
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


def _loss_type(node: Node) -> TensorType:
    reduction = node.attrs.get("reduction", "mean")
    if reduction not in _REDUCTIONS:
        raise fail(node, f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    x, target = node.inputs[0].type, node.inputs[1].type
    return TensorType(x.dtype, target.shape if reduction == "none" else ())


def emit_nll(w: CWriter, node: Node, logp: str, target: str, weight: str | None,
             out: str, n: int, c: int, d: int) -> None:
    """Negative log-likelihood of `logp` (N, C, D) at `target` (N, D), reduced as the node says."""
    t = node.inputs[0].type.dtype.c
    reduction = node.attrs.get("reduction", "mean")
    ignore = node.attrs.get("ignore_index")
    w.line("double total = 0, weight_sum = 0;")
    with w.loops((n, d), "p") as (pn, pd):
        w.line(f"const int64_t t = (int64_t){target}[{pn}*{d} + {pd}];")
        # A target outside [0, C) reads nothing: clamp it (the reference clips likewise).
        w.line(f"const int64_t tc = t < 0 ? 0 : (t >= {c} ? {c - 1} : t);")
        wt = f"(double){weight}[tc]" if weight else "1.0"
        skip = f"t == {int(ignore)}" if ignore is not None else "0"
        w.line(f"const double wt = ({skip}) ? 0.0 : {wt};")
        w.line(f"const double loss = ({skip}) ? 0.0 : -(double){logp}[({pn}*{c} + tc)*{d} + {pd}] * wt;")
        if reduction == "none":
            w.line(f"{out}[{pn}*{d} + {pd}] = ({t})loss;")
        w.line("total += loss; weight_sum += wt;")
    if reduction == "sum":
        w.line(f"{out}[0] = ({t})total;")
    elif reduction == "mean":
        w.line(f"{out}[0] = ({t})(total / weight_sum);")
    w.line("(void)total; (void)weight_sum;")


@register_op("NegativeLogLikelihoodLoss")
class NegativeLogLikelihoodLoss(OpDef):
    dtypes = dt.FLOATS

    def infer(self, node: Node) -> list[TensorType]:
        _layout(node)
        return [_loss_type(node)]

    def lower(self, node: Node, ctx) -> None:
        if node.inputs[0].type.size == 0 and node.attrs.get("reduction", "mean") == "none":
            return
        n, c, d = _layout(node)
        emit_nll(ctx.w, node, ctx.ins[0], ctx.ins[1], ctx.ins[2] if len(ctx.ins) > 2 else None,
                 ctx.outs[0], n, c, d)


@register_op("SoftmaxCrossEntropyLoss")
class SoftmaxCrossEntropyLoss(OpDef):
    dtypes = dt.FLOATS

    def infer(self, node: Node) -> list[TensorType]:
        _layout(node)
        return [_loss_type(node), node.inputs[0].type][:len(node.outputs)]

    def lower(self, node: Node, ctx) -> None:
        n, c, d = _layout(node)
        t = node.inputs[0].type.dtype.c
        w, x = ctx.w, ctx.ins[0]
        # log_softmax over C into the second output when requested, else into scratch.
        logp = ctx.outs[1] if len(ctx.outs) > 1 else \
            f"(({t} *){ctx.request_scratch(node.inputs[0].type.nbytes)})"
        with w.loops((n, d), "s") as (sn, sd):
            w.line(f"const {t} *row = {x} + {sn}*{c}*{d} + {sd};")
            w.line(f"{t} *dst = {logp} + {sn}*{c}*{d} + {sd};")
            w.line("double mx = -INFINITY, sum = 0;")
            w.line(f"for (int64_t k = 0; k < {c}; ++k) if (row[k*{d}] > mx) mx = row[k*{d}];")
            w.line(f"for (int64_t k = 0; k < {c}; ++k) sum += exp((double)row[k*{d}] - mx);")
            w.line("const double lse = mx + log(sum);")
            w.line(f"for (int64_t k = 0; k < {c}; ++k) dst[k*{d}] = ({t})((double)row[k*{d}] - lse);")
        with w.block(""):
            emit_nll(w, node, logp, ctx.ins[1], ctx.ins[2] if len(ctx.ins) > 2 else None,
                     ctx.outs[0], n, c, d)
