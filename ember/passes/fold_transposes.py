"""fold-transposes: a Transpose feeding a MatMul or Gemm becomes a strided read of its input.

The GEMM kernels read each operand at arbitrary element strides (ops/matmul.py, `Operand`),
so a MatMul can read T = Transpose(x, p) straight from x's buffer: attribute perm<k> = p on
the MatMul says input k is x read with its shape and its row-major strides both permuted by
p, which is T element for element (batch broadcasting, which only sees T's shape, is
unchanged). A 2-D Transpose into Gemm input A or B flips transA or transB instead. BERT's
attention (Q.K^T and P.V, with Q, K and V reshaped to heads and transposed) then runs
without copying Q, K and V in every layer.

A Transpose is folded only when every one of its readers takes it in this way and it is not
a graph output, so each fold removes a copy kernel: one that stays is a copy anyway, and its
contiguous result is as cheap to read. Constant Transposes are fold-constants' job.

    before:  %2 = Transpose(%1) {perm=[0, 2, 3, 1]} : f32[1,2,64,32]
             %3 = MatMul(%0, %2) : f32[1,2,32,32]
    after:   %2 = MatMul(%0, %1) {perm1=[0, 2, 3, 1]} : f32[1,2,32,32]
"""
from __future__ import annotations

from dataclasses import dataclass

from ember.graph.ir import Graph, Node, Value
from ember.ops.matmul import FOLDED_PERMS, own_inputs
from ember.passes.base import Pass
from ember.passes.cancel_transposes import perm_of
from ember.passes.rewrite import is_plain, output_ids, readers


@dataclass(frozen=True)
class FoldTransposes(Pass):
    name = "fold-transposes"

    def run(self, graph: Graph) -> Graph:
        users = readers(graph)
        outputs = output_ids(graph)
        folded: set[int] = set()
        for t in graph.nodes:
            if not _is_foldable(t):
                continue
            out = t.outputs[0]
            targets = users.get(out.id, [])
            if out.id in outputs or not targets or not all(_takes(r, out) for r in targets):
                continue
            for r in targets:
                _fold(r, t)
            folded.add(id(t))
        graph.nodes = [n for n in graph.nodes if id(n) not in folded]
        return graph


def _is_foldable(node: Node) -> bool:
    """A plain Transpose of a run-time tensor of rank >= 2 (the rank MatMul reads it at)."""
    return (node.op == "Transpose" and is_plain(node) and len(node.outputs) == 1
            and node.inputs and node.inputs[0] is not None and not node.inputs[0].is_const
            and node.inputs[0].type.rank >= 2)


def _slots(node: Node) -> tuple[int, ...]:
    """The input positions of `node` that can read a transposed input in place."""
    if node.domain != "" or "program" in node.attrs:
        return ()
    if node.op == "MatMul":
        return tuple(k for k in (0, 1) if FOLDED_PERMS[k] not in node.attrs)
    return (0, 1) if node.op == "Gemm" else ()


def _takes(reader: Node, v: Value) -> bool:
    """Whether every read of `v` by `reader` is at a slot that can fold its Transpose."""
    slots = _slots(reader)
    own = len(own_inputs(reader))
    return all(k in slots and k < own and (reader.op != "Gemm" or v.type.rank == 2)
               for k, u in enumerate(reader.inputs) if u is v)


def _fold(reader: Node, t: Node) -> None:
    """Make `reader` read Transpose `t`'s input in place of its output."""
    x, out, perm = t.inputs[0], t.outputs[0], perm_of(t)
    for k, u in enumerate(reader.inputs):
        if u is not out:
            continue
        reader.inputs[k] = x
        if reader.op == "MatMul":
            reader.attrs[FOLDED_PERMS[k]] = perm
        elif perm == [1, 0]:
            flag = "transA" if k == 0 else "transB"
            reader.attrs[flag] = 0 if reader.attrs.get(flag, 0) else 1
