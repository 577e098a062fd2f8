"""Memory planning: every intermediate buffer gets an offset in one arena, placed by liveness.

Greedy by size (as TFLite Micro's planner): the largest buffers are placed first, each at the
lowest offset that does not overlap a placed buffer whose lifetime overlaps its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 64


@dataclass(frozen=True)
class Buffer:
    key: int          # value id, or a negative id for a kernel's scratch
    nbytes: int
    first: int        # index of the kernel that writes it first
    last: int         # index of the last kernel that reads it


@dataclass
class MemoryPlan:
    offsets: dict[int, int] = field(default_factory=dict)
    arena_bytes: int = 0
    buffers: list[Buffer] = field(default_factory=list)
    alignment: int = ALIGN
    in_place: dict[int, int] = field(default_factory=dict)  # value id -> buffer key it joined


def align(n: int, to: int = ALIGN) -> int:
    return (n + to - 1) // to * to


def plan_memory(buffers: list[Buffer], alignment: int = ALIGN) -> MemoryPlan:
    """Offsets for `buffers`, each a multiple of `alignment` (64 on the host: cache lines;
    an embedded export takes less, for a smaller arena)."""
    placed: list[tuple[int, Buffer]] = []     # (offset, buffer), kept sorted by offset
    plan = MemoryPlan(buffers=list(buffers), alignment=alignment)

    def padded(b: Buffer) -> int:
        return align(max(b.nbytes, 1), alignment)

    for buf in sorted(buffers, key=lambda b: (-b.nbytes, b.first, b.key)):
        size = padded(buf)
        offset = 0
        for other_offset, other in placed:
            if other.last < buf.first or buf.last < other.first:
                continue                       # lifetimes do not overlap
            if other_offset + padded(other) <= offset:
                continue
            if other_offset >= offset + size:
                break
            offset = other_offset + padded(other)
        placed.append((offset, buf))
        placed.sort(key=lambda p: p[0])
        plan.offsets[buf.key] = offset
        plan.arena_bytes = max(plan.arena_bytes, offset + size)
    return plan
