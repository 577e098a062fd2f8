"""Target descriptions: what the generated code may assume and how it is built."""
from __future__ import annotations

from dataclasses import dataclass

from ember.errors import EmberError


@dataclass(frozen=True)
class Target:
    name: str
    march: str                # -march value for the C compiler ("native" on the build machine)
    vector_bytes: int         # SIMD register width the kernels block for
    description: str


HOST = Target("host", "native", 32, "this machine's CPU, compiled with -march=native")
X86_64_AVX2 = Target("x86-64-avx2", "haswell", 32, "x86-64 with AVX2 and FMA")
X86_64 = Target("x86-64", "x86-64", 16, "baseline x86-64 (SSE2)")

TARGETS = {t.name: t for t in (HOST, X86_64_AVX2, X86_64)}


def get_target(name: "str | Target") -> Target:
    if isinstance(name, Target):
        return name
    try:
        return TARGETS[name]
    except KeyError:
        raise EmberError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}") from None
