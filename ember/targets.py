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


@dataclass(frozen=True)
class EmbeddedTarget:
    """A target of `ember export`: a standalone C99 project built with a cross compiler and
    run under QEMU with semihosting (or, for c99-host, built and run on this machine)."""
    name: str
    description: str
    arch: str                       # "arm", "riscv" or "host": picks startup, linker script, cc
    cpu_flags: tuple[str, ...]      # compiler flags that select the core and its float ABI
    fpu: bool                       # single-precision float in hardware
    qemu: tuple[str, ...] = ()      # the emulator and its machine, e.g. qemu-system-arm -M ...
    flash: tuple[int, int] = (0, 0)  # (origin, length) of the memory holding code and weights
    ram: tuple[int, int] = (0, 0)    # (origin, length) of the memory holding arena and stack

    @property
    def cc(self) -> str:
        return {"arm": "arm-none-eabi-gcc", "riscv": "riscv64-unknown-elf-gcc", "host": "cc"}[self.arch]

    @property
    def size_tool(self) -> str:
        return {"arm": "arm-none-eabi-size", "riscv": "riscv64-unknown-elf-size",
                "host": "size"}[self.arch]


_MPS2 = dict(flash=(0x00000000, 4 << 20), ram=(0x20000000, 4 << 20))
_THUMB = ("-mthumb",)
EMBEDDED_TARGETS = {t.name: t for t in (
    EmbeddedTarget("cortex-m4", "Arm Cortex-M4F (QEMU mps2-an386)", "arm",
                   ("-mcpu=cortex-m4", *_THUMB, "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"), True,
                   ("qemu-system-arm", "-M", "mps2-an386"), **_MPS2),
    EmbeddedTarget("cortex-m3", "Arm Cortex-M3, no FPU (QEMU mps2-an385)", "arm",
                   ("-mcpu=cortex-m3", *_THUMB, "-mfloat-abi=soft"), False,
                   ("qemu-system-arm", "-M", "mps2-an385"), **_MPS2),
    EmbeddedTarget("cortex-m7", "Arm Cortex-M7 with FPv5 (QEMU mps2-an500)", "arm",
                   ("-mcpu=cortex-m7", *_THUMB, "-mfpu=fpv5-d16", "-mfloat-abi=hard"), True,
                   ("qemu-system-arm", "-M", "mps2-an500"), **_MPS2),
    EmbeddedTarget("cortex-m33", "Arm Cortex-M33 (QEMU mps2-an505)", "arm",
                   ("-mcpu=cortex-m33", *_THUMB, "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"), True,
                   ("qemu-system-arm", "-M", "mps2-an505"),
                   flash=(0x10000000, 4 << 20), ram=(0x38000000, 4 << 20)),
    EmbeddedTarget("cortex-m55", "Arm Cortex-M55 with Helium (QEMU mps3-an547)", "arm",
                   ("-mcpu=cortex-m55", *_THUMB, "-mfloat-abi=hard"), True,
                   ("qemu-system-arm", "-M", "mps3-an547"),
                   flash=(0x10000000, 512 << 10), ram=(0x30000000, 512 << 10)),
    # The micro:bit is QEMU's one Cortex-M0 board: 256 KiB flash, 16 KiB RAM.
    EmbeddedTarget("cortex-m0", "Arm Cortex-M0 (QEMU microbit: 256 KiB flash, 16 KiB RAM)", "arm",
                   ("-mcpu=cortex-m0", *_THUMB, "-mfloat-abi=soft"), False,
                   ("qemu-system-arm", "-M", "microbit"),
                   flash=(0x00000000, 256 << 10), ram=(0x20000000, 16 << 10)),
    EmbeddedTarget("rv32imac", "RISC-V RV32IMAC, no FPU (QEMU virt)", "riscv",
                   ("-march=rv32imac", "-mabi=ilp32", "-misa-spec=2.2", "-mcmodel=medany"), False,
                   ("qemu-system-riscv32", "-M", "virt", "-bios", "none"),
                   flash=(0x80000000, 8 << 20), ram=(0x80800000, 8 << 20)),
    EmbeddedTarget("c99-host", "this machine's C compiler, run natively (no QEMU)", "host",
                   (), True),
)}


def get_embedded_target(name: "str | EmbeddedTarget") -> EmbeddedTarget:
    if isinstance(name, EmbeddedTarget):
        return name
    try:
        return EMBEDDED_TARGETS[name]
    except KeyError:
        raise EmberError(f"unknown export target {name!r}; known targets: "
                         f"{', '.join(EMBEDDED_TARGETS)}") from None
