"""Schedules: the knobs applied to a kernel (tiles, vector width, unroll, threads).

Knobs are the autotuning search space. For now every kernel gets a heuristic schedule; the
fast-kernel work reads tile sizes from here, and the tuner's records later.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    threads: int = 1
