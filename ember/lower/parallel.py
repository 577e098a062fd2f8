"""How a kernel's C shares its work among threads: as parts of the host pool (render/pool.py).

A kernel written with threads is a function of `part` (0 .. parts-1, or -1: all of it on one
thread); every part runs the whole body, and each shared loop covers only the part's slice of
its trips. Two kinds of kernel:

- claim (the default): one shared loop, nothing else with effects outside it (declarations
  may precede it). Parts run in any order, several on one thread when a worker is late.
- team (team() called before anything is shared): shared loops and serial sections in any
  order and nesting; every one ends at a barrier, so what one writes the next may read. All
  parts then run at once, each on its own thread, as an OpenMP team does.

Per-part scratch is indexed by part_slot(). Without threads (schedule.threads == 1) every
helper writes plain serial C.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

CLAIM, TEAM = "claim", "team"


def _parts(ctx) -> int:
    return ctx.schedule.threads


def team(ctx) -> None:
    """Make this kernel a team (several shared loops, serial sections, barriers between)."""
    if _parts(ctx) > 1:
        if ctx.sharing == CLAIM and ctx.shared_loops:
            raise AssertionError("team() must come before the kernel's first shared loop")
        ctx.sharing = TEAM


@contextlib.contextmanager
def part_loop(ctx, var: str, trips: int | str, index_type: str = "int64_t") -> Iterator[None]:
    """`for (var = 0; var < trips; ++var)`, each part taking its slice of the trips (a claim
    kernel's single loop, or one of a team's, which a barrier then follows)."""
    w, parts = ctx.w, _parts(ctx)
    shared = parts > 1 and not (isinstance(trips, int) and trips <= 1 and ctx.sharing is None)
    if not shared:
        with w.block(f"for ({index_type} {var} = 0; {var} < {trips}; ++{var})"):
            yield
        return
    if ctx.sharing == CLAIM and ctx.shared_loops:
        raise AssertionError("a kernel with several shared loops must call team() first")
    ctx.sharing = ctx.sharing or CLAIM
    ctx.shared_loops += 1
    lo, hi = (f"({index_type})ember_part_{end}(part, {parts}, {trips})" for end in ("lo", "hi"))
    with w.block(f"for ({index_type} {var} = {lo}; {var} < {hi}; ++{var})"):
        yield
    if ctx.sharing == TEAM:
        barrier(ctx)


@contextlib.contextmanager
def serial(ctx) -> Iterator[None]:
    """A block one part runs while the others wait (a team's; plain code without threads)."""
    if _parts(ctx) <= 1:
        with ctx.w.block(""):
            yield
        return
    if ctx.sharing != TEAM:
        raise AssertionError("serial sections belong to team kernels: call team() first")
    with ctx.w.block("if (part <= 0)"):
        yield
    barrier(ctx)


def barrier(ctx) -> None:
    """Every part of a team waits here for the others."""
    if _parts(ctx) > 1:
        ctx.w.line(f"ember_barrier(part, {_parts(ctx)});")


def part_slot(ctx) -> str:
    """C index of this part's share of per-part scratch (threads x its size). Before the
    kernel's first shared loop, it makes the kernel one of parts (a claim, unless team())."""
    if _parts(ctx) <= 1:
        return "0"
    ctx.sharing = ctx.sharing or CLAIM
    return "(part < 0 ? 0 : part)"
