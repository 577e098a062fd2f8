"""Lowering: each node of an optimized graph becomes a Kernel; buffers get their places.

The result, a LoweredModel, says for every value where it lives when the model runs: a
caller's input or output pointer, an offset in the weights blob, or an offset in the arena.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ember.errors import EmberError
from ember.graph.ir import Graph, Node, Value
from ember.lower.kernel import Kernel, KernelContext
from ember.lower.memory_plan import ALIGN, Buffer, MemoryPlan, align, plan_memory
from ember.lower.schedule import Schedule
from ember.ops.registry import get_op
from ember.render.cwriter import CWriter


@dataclass
class LoweredModel:
    kernels: list[Kernel]
    inputs: list[Value]
    outputs: list[Value]
    weight_offsets: dict[int, int]           # const value id -> offset in the weights blob
    weights: bytes
    plan: MemoryPlan
    scratch_keys: dict[int, int] = field(default_factory=dict)   # kernel index -> buffer key
    views: dict[int, Value] = field(default_factory=dict)   # value id -> value it shares bytes with
    packed_offsets: dict[tuple[int, int], int] = field(default_factory=dict)  # (kernel, pk) -> offset

    def storage(self, v: Value) -> Value:
        """The value whose buffer holds `v`'s bytes (itself unless `v` is a view)."""
        return self.views.get(v.id, v)

    @property
    def arena_bytes(self) -> int:
        return self.plan.arena_bytes


def lower_graph(graph: Graph, threads: int = 1, vector_bytes: int = 32,
                arena_align: int = ALIGN) -> LoweredModel:
    """`arena_align`: every arena buffer's offset is a multiple of it."""
    views = find_views(graph)
    nodes = [n for n in graph.nodes if n.outputs[0].id not in views]
    schedule = Schedule(threads=threads, vector_bytes=vector_bytes)
    kernels = [lower_node(k, node, schedule) for k, node in enumerate(nodes)]
    weight_offsets, packed_offsets, weights = _pack_weights(graph, kernels, views)
    plan, scratch_keys = _plan(graph, kernels, views, arena_align)
    return LoweredModel(kernels, list(graph.inputs), list(graph.outputs), weight_offsets,
                        weights, plan, scratch_keys, views, packed_offsets)


def find_views(graph: Graph) -> dict[int, Value]:
    """Value id -> the value whose buffer it reads, for every view node (OpDef.is_view) that
    can share its input's buffer: a graph output keeps its own (the caller's) buffer, so its
    node stays a copy."""
    outputs = {v.id for v in graph.outputs}
    views: dict[int, Value] = {}
    for node in graph.nodes:
        opdef = get_op(node.op)
        if opdef is None or not opdef.is_view(node) or node.input(0) is None:
            continue
        src, out = node.inputs[0], node.outputs[0]
        if (out.id in outputs or "epilogue" in node.attrs or out.type.dtype != src.type.dtype
                or out.type.nbytes != src.type.nbytes):
            continue
        views[out.id] = views.get(src.id, src)
    return views


def lower_node(index: int, node: Node, schedule: Schedule) -> Kernel:
    opdef = get_op(node.op)
    if opdef is None:
        raise EmberError("no lowering for this op", node=node.name, op=node.op)
    epilogue = node.attrs.get("epilogue")
    n_extra = len(epilogue.input_types) - 1 if epilogue is not None else 0
    own = node.inputs[:len(node.inputs) - n_extra]
    ins = [f"in{k}" if v is not None else None for k, v in enumerate(own)]
    extra = [f"in{len(own) + k}" for k in range(n_extra)]
    ctx = KernelContext(node, CWriter(1), ins, [f"out{k}" for k in range(len(node.outputs))],
                        schedule, epilogue, extra)
    try:
        opdef.lower(node, ctx)
    except EmberError:
        raise
    except Exception as e:   # a bug in Ember: name the node instead of a bare traceback
        raise EmberError(f"internal error lowering ({e.__class__.__name__}: {e}); please report it",
                         node=node.name, op=node.op) from e
    covers = [f"{node.op} {node.name}"] + list(node.attrs.get("fused_from", []))
    inputs = [None if k in ctx.replaced else v for k, v in enumerate(node.inputs)]
    return Kernel(f"k{index}_{_ident(node.op)}", covers, inputs, list(node.outputs),
                  ctx.w.text(), ctx.scratch_bytes, schedule, ctx.packed, ctx.support)


def _ident(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text).lower()[:24] or "op"


def _pack_weights(graph: Graph, kernels: list[Kernel], views: dict[int, Value]
                  ) -> tuple[dict[int, int], dict[tuple[int, int], int], bytes]:
    """The weights blob: every constant a kernel or an output slot reads (a constant that a
    kernel only reads packed is left out), then the kernels' packed constants."""
    chunks: list[bytes] = []
    size = 0

    def add(data: bytes) -> int:
        nonlocal size
        offset, padded = size, align(len(data))
        chunks.append(data + b"\0" * (padded - len(data)))
        size += padded
        return offset

    read = [v for kernel in kernels for v in kernel.inputs if v is not None] + list(graph.outputs)
    offsets: dict[int, int] = {}
    for v in read:
        v = views.get(v.id, v)
        if v.is_const and v.id not in offsets:
            offsets[v.id] = add(np.ascontiguousarray(v.const, dtype=v.type.dtype.numpy).tobytes())
    packed = {(k, j): add(data.tobytes())
              for k, kernel in enumerate(kernels) for j, data in enumerate(kernel.packed)}
    return offsets, packed, b"".join(chunks)


def _plan(graph: Graph, kernels: list[Kernel], views: dict[int, Value],
          arena_align: int) -> tuple[MemoryPlan, dict[int, int]]:
    io = {v.id for v in graph.inputs} | {v.id for v in graph.outputs}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    sizes: dict[int, int] = {}
    for k, kernel in enumerate(kernels):
        for v in kernel.outputs:
            if v.id not in io and not v.is_const:
                first.setdefault(v.id, k)
                last[v.id] = max(last.get(v.id, k), k)
                sizes[v.id] = v.type.nbytes
        for v in kernel.inputs:
            v = views.get(v.id, v) if v is not None else None   # reading a view reads its source
            if v is not None and v.id in first:
                last[v.id] = k
    buffers = [Buffer(vid, sizes[vid], first[vid], last[vid]) for vid in first]
    scratch_keys = {}
    for k, kernel in enumerate(kernels):
        if kernel.scratch_bytes:
            scratch_keys[k] = -(k + 1)
            buffers.append(Buffer(-(k + 1), kernel.scratch_bytes, k, k))
    return plan_memory(buffers, arena_align), scratch_keys
