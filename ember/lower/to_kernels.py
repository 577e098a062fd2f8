"""Lowering: each node of an optimized graph becomes a Kernel; buffers get their places.

The result, a LoweredModel, says for every value where it lives when the model runs: a
caller's input or output pointer, an offset in the weights blob, or an offset in the arena.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from ember.errors import EmberError
from ember.graph.ir import Graph, Node, Value
from ember.lower.kernel import Kernel, KernelContext
from ember.lower.memory_plan import ALIGN, Buffer, MemoryPlan, align, plan_memory
from ember.lower.schedule import Schedule, kernel_schedule
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
    #: input/output value id -> buffer key, for the inputs and outputs that have a place in the
    #: arena too (io_in_arena: the caller may keep them there; the model still reads and
    #: writes them through its pointers)
    io_keys: dict[int, int] = field(default_factory=dict)

    def storage(self, v: Value) -> Value:
        """The value whose buffer holds `v`'s bytes (itself unless `v` is a view)."""
        return self.views.get(v.id, v)

    @property
    def arena_bytes(self) -> int:
        return self.plan.arena_bytes

    def io_offset(self, v: Value) -> int | None:
        """Where input or output `v` may sit in the arena, None if it has no place there."""
        key = self.io_keys.get(v.id)
        return None if key is None else self.plan.offsets[key]


def lower_graph(graph: Graph, threads: int = 1, vector_bytes: int = 32,
                arena_align: int = ALIGN, simd_pragmas: bool = True) -> LoweredModel:
    """`arena_align`: every arena buffer's offset is a multiple of it; `vector_bytes` and
    `simd_pragmas` as in lower/schedule.py's Schedule."""
    views = find_views(graph)
    nodes = [n for n in graph.nodes if n.outputs[0].id not in views]
    schedule = Schedule(threads=threads, vector_bytes=vector_bytes, simd_pragmas=simd_pragmas)
    kernels = [lower_node(k, node, schedule) for k, node in enumerate(nodes)]
    weight_offsets, packed_offsets, weights = _pack_weights(graph, kernels, views)
    plan, scratch_keys, _ = _plan(graph.inputs, graph.outputs, kernels, views, arena_align)
    return LoweredModel(kernels, list(graph.inputs), list(graph.outputs), weight_offsets,
                        weights, plan, scratch_keys, views, packed_offsets)


def with_io_in_arena(model: LoweredModel) -> LoweredModel:
    """`model` planned again with a place in the arena for each input (until its last reader)
    and each output a kernel writes (from its writer on), as TFLite Micro's arena holds
    them: a caller that keeps them there needs no buffers of its own, and an input's bytes
    serve later layers once it is read. The kernels are unchanged."""
    plan, scratch_keys, io_keys = _plan(model.inputs, model.outputs, model.kernels, model.views,
                                        model.plan.alignment, io_in_arena=True)
    return replace(model, plan=plan, scratch_keys=scratch_keys, io_keys=io_keys)


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
    schedule = kernel_schedule(schedule, opdef.flops(node))
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
    overwritable = tuple(k for k in (*opdef.overwritable_inputs(node), *ctx.overwritable)
                         if inputs[k] is not None)
    return Kernel(f"k{index}_{_ident(node.op)}", covers, inputs, list(node.outputs),
                  ctx.w.text(), ctx.scratch_bytes, schedule, ctx.packed, ctx.support,
                  overwritable, sharing=ctx.sharing)


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


def _plan(inputs: list[Value], outputs: list[Value], kernels: list[Kernel],
          views: dict[int, Value], arena_align: int, io_in_arena: bool = False
          ) -> tuple[MemoryPlan, dict[int, int], dict[int, int]]:
    """Buffers by liveness: a value lives from the kernel writing it to the last kernel reading
    it (reading a view reads its source). An output written in place (Kernel.inplace) joins
    the buffer of the input it overwrites, whose lifetime it extends. With `io_in_arena`,
    inputs and outputs get buffers too (see with_io_in_arena; never taken over in place)."""
    io = {v.id for v in inputs} | {v.id for v in outputs}

    def storage(v: Value) -> Value:
        return views.get(v.id, v)

    last_read: dict[int, int] = {}
    for k, kernel in enumerate(kernels):
        for v in kernel.inputs:
            if v is not None:
                last_read[storage(v).id] = k
    home: dict[int, int] = {}          # arena value id -> key of the buffer holding it
    first: dict[int, int] = {}         # buffer key -> first kernel, last kernel, bytes
    last: dict[int, int] = {}
    sizes: dict[int, int] = {}
    for k, kernel in enumerate(kernels):
        for v in kernel.inputs:
            if v is not None and storage(v).id in home:
                last[home[storage(v).id]] = k
        kernel.inplace = _overwritten_inputs(kernel, k, home, last_read, storage)
        for j, v in enumerate(kernel.outputs):
            if v.id in io or v.is_const or v.id in home:
                continue
            if j == 0 and kernel.inplace:
                key = home[storage(kernel.inputs[kernel.inplace[0]]).id]
            else:
                key, first[v.id], sizes[v.id] = v.id, k, v.type.nbytes
            home[v.id] = key
            last[key] = max(last.get(key, k), k)
    buffers = [Buffer(key, sizes[key], first[key], last[key]) for key in first]
    scratch_keys = {}
    for k, kernel in enumerate(kernels):
        if kernel.scratch_bytes:
            scratch_keys[k] = -(k + 1)
            buffers.append(Buffer(-(k + 1), kernel.scratch_bytes, k, k))
    io_keys = _io_buffers(inputs, outputs, kernels, last_read, buffers) if io_in_arena else {}
    plan = plan_memory(buffers, arena_align)
    plan.in_place = {vid: key for vid, key in home.items() if vid != key}
    for vid, key in plan.in_place.items():
        plan.offsets[vid] = plan.offsets[key]
    return plan, scratch_keys, io_keys


def _io_buffers(inputs: list[Value], outputs: list[Value], kernels: list[Kernel],
                last_read: dict[int, int], buffers: list[Buffer]) -> dict[int, int]:
    """Append a buffer for each input a kernel reads (from the start to its last reader) and
    each output a kernel writes (from its writer to the end) that is not also an input;
    returns value id -> buffer key (below the scratch keys)."""
    writer = {v.id: k for k, kernel in enumerate(kernels) for v in kernel.outputs}
    end = len(kernels) - 1
    spans = [(v, 0, last_read[v.id]) for v in inputs if v.id in last_read]
    taken = {v.id for v in inputs}
    spans += [(v, writer[v.id], end) for v in outputs if v.id in writer and v.id not in taken]
    keys: dict[int, int] = {}
    for v, first, last in spans:
        if v.id not in keys and v.type.nbytes:
            keys[v.id] = -(len(kernels) + 1 + len(keys))
            buffers.append(Buffer(keys[v.id], v.type.nbytes, first, last))
    return keys


def _overwritten_inputs(kernel: Kernel, k: int, home: dict[int, int], last_read: dict[int, int],
                       storage) -> tuple[int, ...]:
    """The inputs reading the buffer kernel `k`'s output 0 may take (empty: none): one the op
    allows, in the arena (never a graph input or output, or a constant), read by no later
    kernel, and read by this one only through inputs the op allows (a read at other offsets
    would see new bytes)."""
    out = kernel.outputs[0] if kernel.outputs else None
    for i in kernel.overwritable:
        src = storage(kernel.inputs[i])
        if (src.id not in home or last_read[src.id] != k or out is None
                or src.type.nbytes != out.type.nbytes):
            continue
        readers = [j for j, v in enumerate(kernel.inputs)
                   if v is not None and storage(v).id == src.id]
        if all(j in kernel.overwritable for j in readers):
            return tuple(readers)
    return ()
