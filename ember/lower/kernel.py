"""Kernel: one unit of generated code with its buffers; KernelContext: what an op's lower() gets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ember.graph.ir import Node, Value
from ember.lower.indexing import broadcast_strides, merge_strides, offset_expr
from ember.lower.schedule import Schedule
from ember.render.cwriter import CWriter

if TYPE_CHECKING:
    from ember.ops.elementwise import Program


@dataclass
class Kernel:
    name: str                      # generated identifier, e.g. k3_conv
    covers: list[str]              # what nodes it covers, as "op name" (escaped when rendered)
    inputs: list[Value | None]     # None for an omitted optional input (not passed)
    outputs: list[Value]
    body: str
    scratch_bytes: int = 0
    schedule: Schedule = field(default_factory=Schedule)
    packed: list[np.ndarray] = field(default_factory=list)   # compile-time constants, pk0 ...
    support: dict[str, str] = field(default_factory=dict)     # shared C routines it calls
    overwritable: tuple[int, ...] = ()  # inputs output 0 may overwrite (OpDef.overwritable_inputs)
    inplace: tuple[int, ...] = ()  # inputs reading the buffer output 0 overwrites (memory plan)
    sharing: str | None = None     # how its parts share work (lower/parallel.py); None: serial


@dataclass
class KernelContext:
    """Handed to OpDef.lower(): parameter names, a writer for the body, and the epilogue."""
    node: Node
    w: CWriter
    ins: list[str | None]          # C parameter names of the inputs ("in0" ...), None if omitted
    outs: list[str]
    schedule: Schedule
    epilogue: "Program | None" = None      # fused elementwise ops applied to output 0
    epilogue_inputs: list[str] = field(default_factory=list)   # their extra parameter names
    scratch_bytes: int = 0
    packed: list[np.ndarray] = field(default_factory=list)
    replaced: set[int] = field(default_factory=set)    # inputs the kernel reads packed instead
    support: dict[str, str] = field(default_factory=dict)
    #: inputs output 0 may overwrite as this kernel was written (joins OpDef.overwritable_inputs)
    overwritable: tuple[int, ...] = ()
    #: lower/parallel.py's record: the kernel's kind of sharing and its shared loops so far
    sharing: str | None = None
    shared_loops: int = 0

    def request_scratch(self, nbytes: int) -> str:
        """Reserve scratch memory for this kernel; returns the C name of its pointer."""
        self.scratch_bytes = max(self.scratch_bytes, nbytes)
        return "scratch"

    def pack_constant(self, data: np.ndarray, replaces: int | None = None) -> str:
        """A constant computed at compile time (weights in the layout the kernel reads); it
        joins the weights blob. `replaces` names a constant input the kernel then no longer
        reads, so the blob does not carry both layouts. Returns the C name of its pointer."""
        self.packed.append(np.ascontiguousarray(data))
        if replaces is not None:
            self.replaced.add(replaces)
        return f"pk{len(self.packed) - 1}"

    def require(self, key: str, c_source: str) -> None:
        """C routines (a microkernel, a packing routine) emitted once per model, under `key`."""
        self.support.setdefault(key, c_source)

    def store(self, index_vars: list[str], out_offset: str, value: str,
              shape: tuple[int, ...] | None = None) -> None:
        """Write `value` to output 0 at `out_offset`, through the fused epilogue if any.

        `index_vars` index output 0's dims (outermost first), for the epilogue's broadcast loads;
        or, with `shape` (a merging of output 0's dims that `can_merge` accepted), its dims.
        """
        if self.epilogue is None:
            self.w.line(f"{self.outs[0]}[{out_offset}] = {value};")
            return
        # the epilogue splices its operands into expressions: an operand must be one term
        loads = [f"({value})"] + [f"{name}[{offset_expr(index_vars, st)}]"
                           for name, st in zip(self.epilogue_inputs, self._epilogue_strides(shape))]
        result = self.epilogue.emit(self.w, loads)
        self.w.line(f"{self.outs[0]}[{out_offset}] = {result};")

    def can_merge(self, shape: tuple[int, ...]) -> bool:
        """Whether store() may index output 0 as `shape`, a merging of its dims: every
        epilogue input reads each merged group as one run (or broadcasts it)."""
        return self.epilogue is None or all(st is not None for st in self._epilogue_strides(shape))

    def _epilogue_strides(self, shape: tuple[int, ...] | None) -> list:
        out_shape = self.node.outputs[0].type.shape
        found = [broadcast_strides(t.shape, out_shape) for t in self.epilogue.input_types[1:]]
        return found if shape is None else [merge_strides(st, out_shape, shape) for st in found]
