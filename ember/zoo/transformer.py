"""A BERT encoder with the node pattern HuggingFace/PyTorch exports produce."""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto

from ember.zoo.builder import GraphBuilder

#: what exported BERT models add to masked-out attention scores
MASK_VALUE = -10000.0


def _attention_mask(g: GraphBuilder, seq: int) -> str:
    """int64 mask (1, seq) of 1 = attend / 0 = padding -> additive float bias (1, 1, 1, seq)."""
    m = g.input("attention_mask", (1, seq), np.int64, value_range=(0, 2))
    m = g.node("Unsqueeze", [m, g.const(np.array([1, 2], np.int64), "axes")], (1, 1, 1, seq))
    m = g.node("Cast", [m], (1, 1, 1, seq), to=TensorProto.FLOAT)
    m = g.binary("Sub", g.const(np.float32(1), "one"), m)
    return g.mul(m, g.const(np.float32(MASK_VALUE), "mask_value"))


def _heads(g: GraphBuilder, x: str, heads: int, perm: tuple[int, ...]) -> str:
    """(1, seq, hidden) -> (1, seq, heads, head_dim) -> transposed by `perm`."""
    return g.transpose(g.reshape(x, (0, 0, heads, g.shape(x)[-1] // heads)), perm)


def _self_attention(g: GraphBuilder, x: str, heads: int, mask_bias: str | None) -> str:
    hidden = g.shape(x)[-1]
    q = _heads(g, g.linear(x, hidden), heads, (0, 2, 1, 3))        # (1, h, seq, d)
    k = _heads(g, g.linear(x, hidden), heads, (0, 2, 3, 1))        # (1, h, d, seq)
    v = _heads(g, g.linear(x, hidden), heads, (0, 2, 1, 3))
    scores = g.binary("Div", g.matmul(q, k),
                      g.const(np.float32(math.sqrt(hidden // heads)), "scale"))
    if mask_bias is not None:
        scores = g.add(scores, mask_bias)
    ctx = g.matmul(g.softmax(scores), v)                            # (1, h, seq, d)
    ctx = g.reshape(g.transpose(ctx, (0, 2, 1, 3)), (0, 0, hidden))
    return g.linear(ctx, hidden)


def bert_encoder(layers: int = 6, hidden: int = 384, heads: int = 12, ffn: int = 1536,
                 seq: int = 128, vocab: int = 30522, mask: bool = True,
                 seed: int = 0) -> onnx.ModelProto:
    """BERT encoder (Devlin et al. 2019); the defaults are MiniLM-L6-H384 (sentence-transformers).

    input_ids int64 (1, seq) [+ attention_mask int64 (1, seq)] -> last hidden state
    (1, seq, hidden). Embeddings: word Gather + position Gather, LayerNorm. Each layer:
    Q/K/V MatMul+Add, Reshape/Transpose to heads, QK^T MatMul, Div by sqrt(head_dim), mask
    Add, Softmax, MatMul with V, Transpose/Reshape back, output projection, residual Add,
    LayerNorm, FFN MatMul+Add, Gelu written with Erf, MatMul+Add, residual Add, LayerNorm.
    """
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not divisible by heads {heads}")
    g = GraphBuilder("bert_encoder", seed)
    ids = g.input("input_ids", (1, seq), np.int64, value_range=(0, vocab))
    mask_bias = _attention_mask(g, seq) if mask else None
    word = g.const(g.rng.normal(0, 0.5, (vocab, hidden)).astype(np.float32), "word_emb")
    pos_table = g.const(g.rng.normal(0, 0.5, (max(512, seq), hidden)).astype(np.float32),
                        "pos_emb")
    positions = g.const(np.arange(seq, dtype=np.int64)[None], "position_ids")
    x = g.layer_norm(g.add(g.gather(word, ids), g.gather(pos_table, positions)))
    for _ in range(layers):
        x = g.layer_norm(g.add(_self_attention(g, x, heads, mask_bias), x))
        y = g.linear(g.gelu_erf(g.linear(x, ffn, gain=2.0)), hidden)
        x = g.layer_norm(g.add(y, x))
    return g.build([x], doc=bert_encoder.__doc__)
