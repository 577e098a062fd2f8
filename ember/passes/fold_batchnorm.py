"""fold-batchnorm: inference BatchNormalization folds into the weights before it.

BatchNormalization computes y = x * s + (B - mean * s) per channel (axis 1), with
s = scale / sqrt(var + epsilon). After a Conv, ConvTranspose or Gemm with constant weights
whose output only the BN reads, s scales the weights of each output channel and the shift
becomes the bias. After a MatMul by a constant matrix (2-D output: channels are columns) s
scales the matrix and the shift becomes an Add, which fuse-epilogues then takes into the
kernel. Any other inference BN becomes Mul + Add by constants, which the fusion passes merge
into neighbouring loops. New constants are computed in float64 and stored in the weights'
type; the old constants are never modified (another node may share them).

    before:  %1 = Conv(%0 x, const f32[8,3,3,3], const f32[8]) {...} : f32[1,8,6,6]
             %2 = BatchNormalization(%1, const f32[8], const f32[8], const f32[8], const f32[8])
    after:   %1 = Conv(%0 x, const f32[8,3,3,3], const f32[8]) {...} : f32[1,8,6,6]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ember.graph.ir import Graph, Node, Value, const_value
from ember.passes.base import Pass
from ember.passes.rewrite import is_plain, output_ids, readers, splice


@dataclass(frozen=True)
class FoldBatchNorm(Pass):
    name = "fold-batchnorm"

    def run(self, graph: Graph) -> Graph:
        users = readers(graph)
        outputs = output_ids(graph)
        replaced: dict[int, Node | list[Node]] = {}
        for bn in graph.nodes:
            unused = all(v.id not in outputs and v.id not in users for v in bn.outputs[1:])
            affine = _affine(bn) if unused else None
            if affine is None:
                continue
            x = bn.inputs[0]
            prev = x.producer
            sole = (prev is not None and x.id not in outputs and len(users.get(x.id, [])) == 1
                    and is_plain(prev) and prev.outputs[0] is x)
            fold = _FOLDS.get(prev.op) if sole else None
            new = fold(prev, bn, *affine) if fold is not None else None
            replaced[id(bn)] = _mul_add(bn, *affine) if new is None else new
        if replaced:
            splice(graph, replaced, ())
        return graph


def _affine(bn: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, shift) in float64 for an inference-mode BN with constant parameters, else None."""
    if bn.op != "BatchNormalization" or not is_plain(bn) or bn.attrs.get("training_mode", 0):
        return None
    if len(bn.inputs) != 5 or any(v is None or (k and not v.is_const) for k, v in enumerate(bn.inputs)):
        return None
    x = bn.inputs[0]
    if x.type.rank < 2 or not x.type.dtype.is_float or not bn.outputs:
        return None
    channels = x.type.shape[1]
    scale, bias, mean, var = (np.asarray(v.const, np.float64) for v in bn.inputs[1:])
    if any(p.shape != (channels,) for p in (scale, bias, mean, var)):
        return None      # e.g. the per-element form of opset < 9 (spatial=0)
    s = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return s, bias - mean * s


def _take_output(node: Node, bn: Node) -> list[Node]:
    """`node` now produces BN's output in place of its own output 0; nothing replaces BN."""
    node.outputs[0] = bn.outputs[0]
    bn.outputs[0].producer = node
    return []


def _weights(v: Value | None) -> np.ndarray | None:
    return np.asarray(v.const, np.float64) if v is not None and v.is_const else None


def _set_input(node: Node, k: int, array: np.ndarray, like: Value) -> None:
    value = const_value(array, like.type.dtype)
    node.inputs.extend([None] * (k + 1 - len(node.inputs)))
    node.inputs[k] = value


def _fold_conv(node: Node, bn: Node, s: np.ndarray, shift: np.ndarray) -> list[Node] | None:
    """Conv W[M, C/g, k...]: scale output channel m; ConvTranspose W[C, M/g, k...]: channel
    g*(M/g)+m of group g."""
    w, b = _weights(node.input(1)), node.input(2)
    if w is None or (b is not None and not b.is_const) or w.ndim < 2:
        return None
    bias = np.zeros_like(s) if b is None else np.asarray(b.const, np.float64)
    if node.op == "Conv":
        w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
    else:
        groups = int(node.attrs.get("group", 1))
        if groups < 1 or w.shape[0] % groups or w.shape[1] * groups != s.shape[0]:
            return None
        per = w.reshape((groups, w.shape[0] // groups) + w.shape[1:])
        w = (per * s.reshape((groups, 1, w.shape[1]) + (1,) * (w.ndim - 2))).reshape(w.shape)
    if bias.shape != s.shape:
        return None
    _set_input(node, 1, w, node.inputs[1])
    _set_input(node, 2, bias * s + shift, node.inputs[1])
    return _take_output(node, bn)


def _fold_gemm(node: Node, bn: Node, s: np.ndarray, shift: np.ndarray) -> list[Node] | None:
    """Y = alpha*A'B' + beta*C with channels = columns: scale B's columns, C' = beta*C*s + shift."""
    b, c = _weights(node.input(1)), node.input(2)
    if b is None or b.ndim != 2 or node.opset < 7 or (c is not None and not c.is_const):
        return None
    b = b * (s[:, None] if node.attrs.get("transB", 0) else s[None, :])
    beta = float(node.attrs.get("beta", 1.0))
    bias = shift if c is None else np.asarray(c.const, np.float64) * beta * s + shift
    if bias.ndim > 2:
        return None
    _set_input(node, 1, b, node.inputs[1])
    _set_input(node, 2, bias, node.inputs[1])
    node.attrs["beta"] = 1.0
    return _take_output(node, bn)


def _fold_matmul(node: Node, bn: Node, s: np.ndarray, shift: np.ndarray) -> list[Node] | None:
    """A[M,K] @ W[K,N]: scale W's columns; the shift becomes an Add after the MatMul."""
    w, out = _weights(node.input(1)), node.outputs[0]
    if w is None or w.ndim != 2 or out.type.rank != 2:
        return None
    _set_input(node, 1, w * s[None, :], node.inputs[1])
    add = Node("Add", [out, const_value(shift, out.type.dtype)], [bn.outputs[0]],
               name=bn.name, opset=bn.opset)
    return [add]


#: op -> fold: the nodes that stand in BN's place ([] when the op now produces BN's output),
#: or None (nothing changed) when the op's weights do not allow it
_FOLDS = {"Conv": _fold_conv, "ConvTranspose": _fold_conv, "Gemm": _fold_gemm,
          "MatMul": _fold_matmul}


def _mul_add(bn: Node, s: np.ndarray, shift: np.ndarray) -> list[Node]:
    """y = x * s + shift with s and shift shaped [C, 1, ...] to broadcast over axis 1."""
    x = bn.inputs[0]
    shape = (-1,) + (1,) * (x.type.rank - 2)
    scaled = Value(x.type)
    mul = Node("Mul", [x, const_value(s.reshape(shape), x.type.dtype)], [scaled],
               name=bn.name, opset=bn.opset)
    add = Node("Add", [scaled, const_value(shift.reshape(shape), x.type.dtype)],
               [bn.outputs[0]], name=bn.name, opset=bn.opset)
    return [mul, add]
