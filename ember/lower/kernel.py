"""Kernel: one unit of generated code with its buffers; KernelContext: what an op's lower() gets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ember.graph.ir import Node, Value
from ember.lower.indexing import broadcast_strides, offset_expr
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

    def request_scratch(self, nbytes: int) -> str:
        """Reserve scratch memory for this kernel; returns the C name of its pointer."""
        self.scratch_bytes = max(self.scratch_bytes, nbytes)
        return "scratch"

    def store(self, index_vars: list[str], out_offset: str, value: str) -> None:
        """Write `value` to output 0 at `out_offset`, through the fused epilogue if any.

        `index_vars` index output 0's dims (outermost first), for the epilogue's broadcast loads.
        """
        if self.epilogue is None:
            self.w.line(f"{self.outs[0]}[{out_offset}] = {value};")
            return
        out_shape = self.node.outputs[0].type.shape
        loads = [value] + [
            f"{name}[{offset_expr(index_vars, broadcast_strides(t.shape, out_shape))}]"
            for name, t in zip(self.epilogue_inputs, self.epilogue.input_types[1:])]
        result = self.epilogue.emit(self.w, loads)
        self.w.line(f"{self.outs[0]}[{out_offset}] = {result};")
