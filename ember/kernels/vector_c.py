"""C support shared by the vector kernels: EMBER_IN_REGISTER.

GCC folds a vector used by several multiply-adds into each as a memory operand, so a register
block reloads it for every use (a blocked 1x1 conv's tile step: 12 loads to 9 multiply-adds,
more than Zen's load ports keep up with). An empty asm taking the vector in a register keeps
it there (1 thread, alternately in one process: blocked 144 -> 24 + Add at 56x56 322 -> 242
us, 96 -> 24 214 -> 159, 24 -> 144 + Clip 347 -> 297; channels-last depthwise 144 channels at
28x28 59 -> 50). "x" is an x86 vector register; elsewhere (NEON, no SIMD) the macro does
nothing and the compiler chooses.
"""
from __future__ import annotations

IN_REGISTER_C = """\
#if defined(__AVX__)
#define EMBER_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define EMBER_IN_REGISTER(v) ((void)0)
#endif
"""


def require_in_register(ctx) -> None:
    """Define EMBER_IN_REGISTER(v) for this kernel (once per model, before any support code
    required after it)."""
    ctx.require("ember_in_register", IN_REGISTER_C)
