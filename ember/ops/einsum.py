"""Einsum: any equation as one loop nest over its labels (output labels outer, summed inner).

The equation is parsed strictly (malformed ones raise fail()); every operand dim gets a label,
"..." dims get the labels "0", "1", ... (right-aligned, broadcast as numpy does), and each
operand is read at the offset sum(index[label] * stride) - so transposes, diagonals
(a label repeated in one operand), traces, reductions, outer and batched products all come
out of the same index arithmetic. Size-1 dims broadcast against their label's size, as in
numpy and onnxruntime.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import broadcast_shape, offset_expr, strides
from ember.ops.matmul import accumulator_c_type
from ember.ops.registry import OpDef, fail, register_op

_ELLIPSIS = "..."


@dataclass(frozen=True)
class EinsumPlan:
    operands: tuple[tuple[str, ...], ...]   # the label of each dim of each operand
    out_labels: tuple[str, ...]
    sum_labels: tuple[str, ...]
    sizes: dict[str, int]

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.sizes[x] for x in self.out_labels)


def _term(node: Node, text: str) -> list[str]:
    """The tokens of one subscript term: single letters and at most one "..."."""
    tokens, pos = [], 0
    while pos < len(text):
        if text.startswith(_ELLIPSIS, pos):
            if _ELLIPSIS in tokens:
                raise fail(node, f"equation term {text!r} has more than one '...'")
            tokens.append(_ELLIPSIS)
            pos += 3
            continue
        ch = text[pos]
        if not (ch.isascii() and ch.isalpha()):
            raise fail(node, f"equation term {text!r} has an unexpected character {ch!r} "
                       "(subscripts are letters a-z, A-Z and '...')")
        tokens.append(ch)
        pos += 1
    return tokens


def plan_einsum(node: Node, equation: str, shapes: list[tuple[int, ...]]) -> EinsumPlan:
    """Parse `equation` against the operand shapes."""
    eq = "".join(equation.split())
    lhs, arrow, rhs = eq.partition("->")
    if "-" in lhs + rhs or ">" in lhs + rhs:
        raise fail(node, f"equation {equation!r} is malformed (a stray '-' or '>')")
    terms = [_term(node, t) for t in lhs.split(",")]
    if len(terms) != len(shapes):
        raise fail(node, f"equation {equation!r} has {len(terms)} input terms for "
                   f"{len(shapes)} inputs")
    ell_shapes = []
    for tokens, shape in zip(terms, shapes):
        explicit = len(tokens) - (_ELLIPSIS in tokens)
        if len(shape) != explicit and not (_ELLIPSIS in tokens and len(shape) > explicit):
            raise fail(node, f"equation term {''.join(tokens)!r} does not fit an input of "
                       f"rank {len(shape)}")
        if _ELLIPSIS in tokens:
            at = tokens.index(_ELLIPSIS)
            ell_shapes.append(shape[at:at + len(shape) - explicit])
    ell_shape = broadcast_shape(*ell_shapes) if ell_shapes else ()
    if ell_shape is None:
        raise fail(node, "the dims under '...' do not broadcast: "
                   + " vs ".join(str(list(s)) for s in ell_shapes))
    ell_labels = [str(d) for d in range(len(ell_shape))]
    operands, found = [], {}
    for tokens, shape in zip(terms, shapes):
        labels: list[str] = []
        for tok in tokens:
            if tok == _ELLIPSIS:
                labels += ell_labels[len(ell_labels) - (len(shape) - len(tokens) + 1):]
            else:
                labels.append(tok)
        operands.append(tuple(labels))
        for label, size in zip(labels, shape):
            found.setdefault(label, set()).add(size)
    sizes = {}
    for label, seen in found.items():
        if len(seen - {1}) > 1:
            raise fail(node, f"subscript {label!r} has sizes {sorted(seen)} that do not match")
        sizes[label] = max(seen - {1}, default=1)
    letters = [x for ops in operands for x in ops if not x.isdigit()]
    has_ellipsis = any(_ELLIPSIS in t for t in terms)
    if arrow:
        out_tokens = _term(node, rhs)
        named = [t for t in out_tokens if t != _ELLIPSIS]
        if len(set(named)) != len(named):
            raise fail(node, f"output subscripts {rhs!r} repeat a letter")
        for x in named:
            if x not in sizes:
                raise fail(node, f"output subscript {x!r} appears in no input")
        if _ELLIPSIS in out_tokens and not has_ellipsis:
            raise fail(node, "the output has '...' but no input has")
        if ell_labels and _ELLIPSIS not in out_tokens:
            raise fail(node, "inputs have '...' dims but the output subscripts have no '...'")
    else:   # implicit output: broadcast dims, then the letters used once, sorted
        out_tokens = [_ELLIPSIS] + sorted(x for x in set(letters) if letters.count(x) == 1)
    out_labels = []
    for tok in out_tokens:
        out_labels += ell_labels if tok == _ELLIPSIS else [tok]
    summed = [x for x in dict.fromkeys(x for ops in operands for x in ops) if x not in out_labels]
    return EinsumPlan(tuple(operands), tuple(out_labels), tuple(summed), sizes)


@register_op("Einsum")
class Einsum(OpDef):
    dtypes = dt.NUMERIC

    def plan(self, node: Node) -> EinsumPlan:
        if not node.inputs or any(v is None for v in node.inputs):
            raise fail(node, "needs at least one input, none omitted")
        if len({v.type.dtype for v in node.inputs}) > 1:
            raise fail(node, "inputs must have one element type")
        equation = node.attrs.get("equation")
        if not isinstance(equation, str):
            raise fail(node, "needs the equation attribute (a string)")
        return plan_einsum(node, equation, [v.type.shape for v in node.inputs])

    def infer(self, node: Node) -> list[TensorType]:
        return [TensorType(node.inputs[0].type.dtype, self.plan(node).out_shape)]

    def flops(self, node: Node) -> int:
        plan = self.plan(node)
        return math.prod(plan.sizes.values()) * len(plan.operands)

    def lower(self, node: Node, ctx) -> None:
        plan = self.plan(node)
        w, dtype = ctx.w, node.outputs[0].type.dtype
        acc_t = accumulator_c_type(dtype)
        with w.loops(plan.out_shape, prefix="o") as out_vars:
            w.line(f"{acc_t} acc = 0;")
            with w.loops(tuple(plan.sizes[x] for x in plan.sum_labels), prefix="s") as sum_vars:
                var = dict(zip(plan.out_labels + plan.sum_labels, out_vars + sum_vars))
                factors = []
                for name, labels, v in zip(ctx.ins, plan.operands, node.inputs):
                    # a size-1 dim broadcast against a bigger label size reads index 0
                    st = tuple(0 if size == 1 else s for size, s in
                               zip(v.type.shape, strides(v.type.shape)))
                    at = offset_expr([var[x] for x in labels], st)
                    load = f"{name}[{at}]"
                    factors.append(load if acc_t == dtype.c else f"({acc_t}){load}")
                w.line(f"acc += {' * '.join(factors)};")
            w.line(f"{ctx.outs[0]}[{offset_expr(out_vars, strides(plan.out_shape))}] = "
                   f"({dtype.c})acc;")
