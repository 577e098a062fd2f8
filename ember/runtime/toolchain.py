"""Toolchain: C source -> shared library with the system C compiler, cached by content hash."""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from ember.errors import ToolchainError


def find_cc(preferred: str | None = None) -> str:
    for cand in (preferred, "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    raise ToolchainError("no C compiler found: install one (Debian/Ubuntu: `apt-get install gcc`) "
                         "or set CC")


def host_flags(march: str, opt_level: int, threads: int) -> list[str]:
    # -ffp-contract=fast: a*b + c may become one fused multiply-add (ISO C mode turns that off),
    # which the GEMM microkernels need for speed; it rounds once where two roundings were.
    # -fno-trapping-math: generated code never reads floating-point exception flags, and
    # without it GCC will not vectorize a select whose arm does float math (x < 0 ? a*x : x).
    # -fopenmp-simd: `#pragma omp simd` where a loop is known independent (no OpenMP runtime).
    flags = [f"-O{opt_level}", f"-march={march}", "-std=c11", "-fPIC", "-shared",
             "-fno-math-errno", "-fno-trapping-math", "-fwrapv", "-ffp-contract=fast",
             "-fopenmp-simd", "-Wno-unused-function"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        # GCC's tuning for some AVX2 cores (Zen 1) auto-vectorizes with 128-bit vectors only.
        flags.append("-mprefer-vector-width=256")
    if threads > 1:
        flags.append("-pthread")      # the pool of render/pool.py
    return flags


def build_shared_library(source: str, flags: list[str], cache_dir: Path, cc: str | None = None) -> Path:
    """Compile `source` into a shared library in `cache_dir`; reuse it when already built."""
    compiler = find_cc(cc)
    key = hashlib.sha256("\0".join([compiler, *flags, source]).encode()).hexdigest()[:32]
    cache_dir.mkdir(parents=True, exist_ok=True)
    lib = cache_dir / f"ember_{key}.so"
    if lib.exists():
        return lib
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        src = Path(tmp) / "model.c"
        src.write_text(source)
        out = Path(tmp) / "model.so"
        proc = subprocess.run([compiler, *flags, str(src), "-o", str(out), "-lm"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolchainError("the C compiler failed on generated code (an Ember bug):\n"
                                 + proc.stderr[-4000:])
        os.replace(out, lib)          # atomic: a concurrent build of the same key is harmless
    return lib
