"""The int8 kernels' Cortex-M DSP (SMLAD) and MVE (Helium) paths (ops/qdot.py) in exported
projects: bit-exact with TFLite Micro under QEMU, fewer instructions than the portable C of
the same model.c built with SIMD=0, and really holding the instructions they are named for.
One model.c builds -Werror clean for every target, each taking its own path."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from ember.export import export_model
from test_export_embedded import DATA, MODELS, have, reference, run_project

ARM = ("arm-none-eabi-gcc", "arm-none-eabi-objdump", "qemu-system-arm")
#: the instruction each target's vector path must use in build/model.o, and objdump's -m for
#: the core (without it, objdump 2.40 shows MVE instructions as coprocessor ones); objdump
#: names VMLADAVA by its alias vmlava
VECTOR_INSN = {"cortex-m4": ("smlad", "armv7e-m"), "cortex-m55": ("vmlava", "armv8.1-m.main")}


def make(out: Path, goal: str) -> None:
    result = subprocess.run(["make", "-s", "-C", str(out), goal], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def disassembly(obj: Path, arch: str) -> str:
    return subprocess.run(["arm-none-eabi-objdump", "-d", "-m", arch, str(obj)],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.mcu
@pytest.mark.skipif(not have(*ARM), reason="needs the Arm cross toolchain and QEMU "
                                           "(make toolchain-mcu)")
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m55"])
@pytest.mark.parametrize("name", MODELS)
def test_vector_paths_bit_exact_and_fewer_instructions(target, name, tmp_path, monkeypatch):
    out = tmp_path / "project"
    export_model(DATA / f"{name}.tflite", target, out)
    want = reference(name).reshape(-1)
    counts = {}
    for simd in ("1", "0"):
        monkeypatch.setenv("SIMD", simd)        # the Makefile's switch; run_project's make sees it
        outputs, counts[simd] = run_project(out, name, tmp_path)
        np.testing.assert_array_equal(outputs[0], want)
    assert counts["1"] < counts["0"], counts
    insn, arch = VECTOR_INSN[target]
    assert insn in disassembly(out / "build" / "model.o", arch)
    assert insn not in disassembly(out / "build-nosimd" / "model.o", arch)


CROSS = {"cortex-m4": "arm-none-eabi-gcc", "cortex-m55": "arm-none-eabi-gcc",
         "cortex-m3": "arm-none-eabi-gcc", "cortex-m0": "arm-none-eabi-gcc",
         "rv32imac": "riscv64-unknown-elf-gcc", "c99-host": "cc"}


@pytest.mark.mcu
@pytest.mark.parametrize("target", list(CROSS))
def test_one_model_c_builds_strict_for_every_target(target, tmp_path, monkeypatch):
    """KWS holds every int8 path: a conv with one input channel, depthwise, pointwise, fully
    connected. Its model.o builds with -std=c99 -pedantic -Wall -Wextra -Werror everywhere."""
    if not have(CROSS[target]):
        pytest.skip(f"needs {CROSS[target]} (make toolchain-mcu)")
    out = tmp_path / "project"
    export_model(DATA / "kws_ref_model_int8.tflite", target, out)
    source = (out / "model.c").read_text()
    for routine in ("ember_dot_s8(", "ember_dw_s8(", "ember_requant_s8("):
        assert source.count(routine) > 1, routine       # defined once, called by the kernels
    assert source.count("static int32_t ember_dot_s8(") == 1
    for simd, build in (("1", "build"), ("0", "build-nosimd")):
        monkeypatch.setenv("SIMD", simd)
        make(out, f"{build}/model.o")
