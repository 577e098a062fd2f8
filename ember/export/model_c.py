"""model.c, model.h and main.c of an exported project: the host renderer's kernels, weights as
one `static const` array, and the embedded ABI of docs/design.md:

    int ember_model_run(const void *const *inputs, void *const *outputs, void *arena);

Only what the model's kernels use is emitted (no <math.h> or vector math for an int8 model),
so an int8 model's code holds no floating point at all.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ember.graph.ir import Value
from ember.lower.memory_plan import align
from ember.lower.to_kernels import LoweredModel
from ember.errors import EmberError
from ember.ops.vecmath import FLOAT32_FUNCTIONS, VECMATH_C
from ember.render.c import IPOW_C, render_calls, render_kernels
from ember.render.cwriter import CWriter, c_comment

# <string.h> is not among C99's freestanding headers (bare-metal toolchains may lack it)
_STRING_H = r"""
#if __STDC_HOSTED__
#include <string.h>
#else
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memset(void *dst, int c, size_t n);
#endif
"""
_VECMATH_NAMES = set(re.findall(r"\b(ember_\w+)\s*\(", VECMATH_C))
_FLOAT_WORDS = re.compile(r"\b(float|double)\b")

# The projects link no C library, so model.c includes no <math.h>: the float kernels' calls
# to libm go to these freestanding float versions instead (a function-like macro renames each
# call; C99 7.1.3 leaves the names free while <math.h> is not included), or to vecmath's.
# Rounding works on the integer conversion where |x| < 2^23 (larger floats are integers),
# and puts x's sign back, so -0 and values in (-1, 0) keep it.
_LIBM_C = {
    "fabsf": "static inline float ember_libm_fabsf(float x) { union { float f; uint32_t u; } v; "
             "v.f = x; v.u &= 0x7fffffffu; return v.f; }",
    "copysignf": "static inline float ember_libm_copysignf(float x, float y) { union { float f; "
                 "uint32_t u; } a, b; a.f = x; b.f = y; a.u = (a.u & 0x7fffffffu) | "
                 "(b.u & 0x80000000u); return a.f; }",
    "truncf": "static inline float ember_libm_truncf(float x) { return ember_libm_fabsf(x) < 8388608.0f "
              "? ember_libm_copysignf((float)(int32_t)x, x) : x; }",
    "floorf": "static inline float ember_libm_floorf(float x) { const float t = ember_libm_truncf(x); "
              "return t > x ? t - 1.0f : t; }",
    "ceilf": "static inline float ember_libm_ceilf(float x) { const float t = ember_libm_truncf(x); "
             "return t < x ? t + 1.0f : t; }",
    "roundf": "static inline float ember_libm_roundf(float x) { const float t = ember_libm_truncf(x); "
              "return ember_libm_fabsf(x - t) >= 0.5f ? t + ember_libm_copysignf(1.0f, x) : t; }",
    # ties to even, as in the default rounding mode: adding and taking away 2^23 rounds
    "rintf": "static inline float ember_libm_rintf(float x) { const float a = ember_libm_fabsf(x); "
             "return a < 8388608.0f ? ember_libm_copysignf((a + 8388608.0f) - 8388608.0f, x) : x; }",
    "fminf": "static inline float ember_libm_fminf(float x, float y) { return y != y || x < y ? "
             "(x != x ? y : x) : y; }",
    "fmaxf": "static inline float ember_libm_fmaxf(float x, float y) { return y != y || x > y ? "
             "(x != x ? y : x) : y; }",
}
#: what each needs defined before it
_LIBM_NEEDS = {"truncf": ("fabsf", "copysignf"), "floorf": ("truncf",), "ceilf": ("truncf",),
               "roundf": ("truncf",), "rintf": ("fabsf", "copysignf")}
#: libm name -> the C name a call becomes
_LIBM_NAMES = {name: f"ember_libm_{name}" for name in _LIBM_C} | {
    "nearbyintf": "ember_libm_rintf",
    **{f"{libm}f": ember for libm, ember in FLOAT32_FUNCTIONS.items()}}
#: every function of C99's <math.h> (float, double and long double forms)
_MATH_H = re.compile(r"\b((?:a?(?:sin|cos|tan)h?|atan2|exp2?|expm1|frexp|ilogb|ldexp|log(?:10|1p|2|b)?"
                     r"|modf|scalbl?n|cbrt|fabs|hypot|pow|sqrt|erfc?|[lt]gamma|ceil|floor|nearbyint"
                     r"|l?l?rint|l?l?round|trunc|fmod|remainder|remquo|copysign|nan|nextafter"
                     r"|nexttoward|fdim|fmax|fmin|fma)[fl]?)\s*\(")
_COMMENT = re.compile(r"/\*.*?\*/", re.S)
#: classification macros of <math.h>, as GCC's type-generic built-ins
_MATH_MACROS = {"isnan": "__builtin_isnan", "isinf": "__builtin_isinf",
                "isfinite": "__builtin_isfinite", "signbit": "__builtin_signbit"}


@dataclass(frozen=True)
class TensorMeta:
    """What model.h says about one input or output."""
    name: str                 # from the model: only ever written into comments, escaped
    value: Value
    scale: float | None = None
    zero_point: int | None = None

    @property
    def dtype_name(self) -> str:
        return self.value.type.dtype.numpy.name


@dataclass(frozen=True)
class Layer:
    """One kernel's share of memory, for the comment table and report.json."""
    kernel: str
    op: str
    covers: list[str]
    arena_offset: int | None
    arena_bytes: int          # its outputs placed in the arena, and its scratch
    weight_bytes: int         # constants it reads first, and its packed constants, as laid out
                              # in the weights array (each padded to 64 bytes)


def layers(model: LoweredModel) -> list[Layer]:
    seen: set[int] = set()
    result = []
    for k, kernel in enumerate(model.kernels):
        spans = []
        for v in kernel.outputs:
            v = model.storage(v)
            if v.id in model.plan.offsets:
                spans.append((model.plan.offsets[v.id], v.type.nbytes))
        if k in model.scratch_keys:
            spans.append((model.plan.offsets[model.scratch_keys[k]], kernel.scratch_bytes))
        weights = sum(align(data.nbytes) for data in kernel.packed)   # padded as in the blob
        for v in kernel.inputs:
            v = model.storage(v) if v is not None else None
            if v is not None and v.id in model.weight_offsets and v.id not in seen:
                seen.add(v.id)
                weights += align(v.type.nbytes)
        op = kernel.covers[0].split(" ", 1)[0]
        result.append(Layer(kernel.name, op, list(kernel.covers),
                            min((o for o, _ in spans), default=None),
                            sum(n for _, n in spans), weights))
    return result


def kernel_code(model: LoweredModel) -> str:
    w = CWriter()
    render_kernels(w, model)
    return w.text()


def render_model_c(model: LoweredModel, header: str) -> str:
    """model.c: the kernels, the weights and ember_model_run. `header` opens the file."""
    kernels = kernel_code(model)
    w = CWriter()
    w.lines(header)
    w.line("#include <stddef.h>")
    w.line("#include <stdint.h>")
    w.lines(_STRING_H)
    w.line('#include "model.h"')
    if "ember_ipow" in kernels:
        w.lines(IPOW_C)
    w.lines(_math_prelude(kernels))
    w.line()
    blob = model.weights or b"\0"
    w.line(f"/* {len(model.weights)} bytes of weights, in flash; the union aligns them for every "
           "element type */")
    w.line(f"static const union {{ uint8_t bytes[{len(blob)}]; uint64_t align; }} ember_weights = {{{{")
    data = np.frombuffer(blob, np.uint8)
    for start in range(0, len(data), 32):
        w.line("    " + ",".join(str(b) for b in data[start:start + 32].tolist()) + ",")
    w.line("}};")
    w.line()
    w.lines(kernels)
    with w.block("int ember_model_run(const void *const *inputs, void *const *outputs, "
                 "void *arena)"):
        w.line("const uint8_t *W = ember_weights.bytes;")
        render_calls(w, model)
    return w.text()


def _math_prelude(kernels: str) -> str:
    """What the kernels use of <math.h>, without it: INFINITY and NAN, the classification
    macros, and for each libm call a freestanding version (ours above, or vecmath's).
    Raises EmberError for a libm function with neither."""
    vecmath = any(name in kernels for name in _VECMATH_NAMES)
    code = _COMMENT.sub(" ", kernels + (VECMATH_C if vecmath else ""))
    calls = set(_MATH_H.findall(code))
    missing = sorted(calls - _LIBM_NAMES.keys())
    if missing:
        raise EmberError(f"the model's kernels call {', '.join(missing)}, which exported "
                         "projects do not provide (they link no C library); `ember export` "
                         "cannot take this model yet")
    vecmath = vecmath or any(_LIBM_NAMES[c] in _VECMATH_NAMES for c in calls)
    w = CWriter()
    if _FLOAT_WORDS.search(kernels) or vecmath:
        w.line("#define INFINITY (__builtin_inff())")
        w.line('#define NAN (__builtin_nanf(""))')
    for name, builtin in _MATH_MACROS.items():
        if re.search(rf"\b{name}\s*\(", kernels):
            w.line(f"#define {name}(x) {builtin}(x)")
    for call in sorted(calls):
        w.line(f"#define {call} {_LIBM_NAMES[call]}")
    done: set[str] = set()

    def define(name: str) -> None:
        if name not in done:
            done.add(name)
            for need in _LIBM_NEEDS.get(name, ()):
                define(need)
            w.line(_LIBM_C[name])
    for call in sorted(calls):
        name = "rintf" if call == "nearbyintf" else call
        if name in _LIBM_C:
            define(name)
    if vecmath:
        w.lines(VECMATH_C)
    return w.text()


def _float_literal(x: float) -> str:
    text = str(np.float32(x))
    return text + ("f" if any(c in text for c in ".e") else ".0f")


def render_model_h(model: LoweredModel, inputs: list[TensorMeta], outputs: list[TensorMeta],
                   header: str, table: list[Layer]) -> str:
    w = CWriter()
    w.lines(header)
    w.line("#ifndef EMBER_MODEL_H")
    w.line("#define EMBER_MODEL_H")
    w.line("#include <stdint.h>")
    w.line()
    w.line("/* Runs the model: inputs[k] points at input k, outputs[k] at output k (row-major, the")
    w.line(" * element types below), arena at EMBER_ARENA_BYTES bytes aligned to EMBER_ARENA_ALIGN,")
    w.line(" * which the model uses between the calls' start and end only. No global state: several")
    w.line(" * arenas run several copies. Returns 0. */")
    w.line("int ember_model_run(const void *const *inputs, void *const *outputs, void *arena);")
    w.line()
    w.line(f"#define EMBER_ARENA_BYTES {model.arena_bytes}")
    w.line("#define EMBER_ARENA_ALIGN 8")
    w.line(f"#define EMBER_WEIGHT_BYTES {len(model.weights)}")
    w.line(f"#define EMBER_NUM_INPUTS {len(inputs)}")
    w.line(f"#define EMBER_NUM_OUTPUTS {len(outputs)}")
    for kind, metas in (("INPUT", inputs), ("OUTPUT", outputs)):
        for k, meta in enumerate(metas):
            t = meta.value.type
            w.line()
            w.line(f"/* {kind.lower()} {k}: {c_comment(repr(meta.name))}, {meta.dtype_name} "
                   f"{list(t.shape)} */")
            p = f"EMBER_{kind}{k}"
            w.line(f"#define {p}_TYPE {t.dtype.c}")
            w.line(f"#define {p}_ELEMENTS {t.size}")
            w.line(f"#define {p}_BYTES {t.nbytes}")
            w.line(f"#define {p}_RANK {t.rank}")
            w.line(f"#define {p}_SHAPE {{{', '.join(str(d) for d in t.shape)}}}")
            if model.io_offset(meta.value) is not None:
                w.line(f"/* may live in the arena, at arena + {p}_ARENA_OFFSET ("
                       f"{'read before that part is reused' if kind == 'INPUT' else 'written last'}"
                       ") */")
                w.line(f"#define {p}_ARENA_OFFSET {model.io_offset(meta.value)}")
            if meta.scale is not None:
                w.line(f"#define {p}_SCALE {_float_literal(meta.scale)}   /* real = scale * "
                       "(q - zero_point) */")
                w.line(f"#define {p}_ZERO_POINT {meta.zero_point}")
    w.line()
    w.line("/* Memory per layer (arena offsets and bytes; weights in flash):")
    w.line(f" * {'kernel':<24} {'arena offset':>12} {'arena bytes':>12} {'weight bytes':>12}  covers")
    for layer in table:
        offset = "-" if layer.arena_offset is None else str(layer.arena_offset)
        w.line(f" * {layer.kernel:<24} {offset:>12} {layer.arena_bytes:>12} "
               f"{layer.weight_bytes:>12}  {c_comment('; '.join(layer.covers))}")
    w.line(" */")
    w.line("#endif")
    return w.text()


_PUT = r"""
static char ember_line[96];
static size_t ember_used;

static void flush(void) { ember_line[ember_used] = 0; ember_platform_write(ember_line); ember_used = 0; }
static void put(const char *s) {
    while (*s) {
        if (ember_used + 1 >= sizeof ember_line) flush();
        ember_line[ember_used++] = *s++;
    }
}
static void put_uint(uint64_t u) {
    char buf[21], *p = buf + 20;
    *p = 0;
    do { *--p = (char)('0' + (int)(u % 10u)); u /= 10u; } while (u);
    put(p);
}
"""
_PUT_INT = r"""
static void put_int(int64_t v) {
    if (v < 0) { put("-"); put_uint(0u - (uint64_t)v); } else put_uint((uint64_t)v);
}
"""
_PUT_FLOAT = r"""
static void put_float(double v, int digits) {
    char buf[40];
    ember_platform_format_float(buf, v, digits);
    put(buf);
}
"""


def _aligned_offsets(sizes: list[int]) -> tuple[list[int], int]:
    offsets, total = [], 0
    for n in sizes:
        offsets.append(total)
        total += (n + 7) // 8 * 8
    return offsets, max(total, 8)


def _buffer_places(values: list[Value], model: LoweredModel, union: str
                   ) -> tuple[list[str], int | None]:
    """Where main.c keeps each input (or output): at its place in the arena where it has one,
    else in `union`; and that union's size (None: no union, every value is in the arena)."""
    outside = [v for v in values if model.io_offset(v) is None]
    offsets, total = _aligned_offsets([v.type.nbytes for v in outside])
    own = dict(zip((v.id for v in outside), offsets))
    places = [f"ember_arena.bytes + {model.io_offset(v)}" if v.id not in own
              else f"{union}.bytes + {own[v.id]}" for v in values]
    return places or [f"{union}.bytes"], (total if outside or not values else None)


def render_main_c(model: LoweredModel, header: str) -> str:
    """main.c: read the input file, run once, print the outputs and the instruction count.
    Inputs and outputs with a place in the arena (LoweredModel.io_offset) live there."""
    inputs, outputs = model.inputs, model.outputs
    in_at, in_total = _buffer_places(inputs, model, "ember_input")
    out_at, out_total = _buffer_places(outputs, model, "ember_output")
    kinds = {v.type.dtype.numpy.kind for v in outputs}
    w = CWriter()
    w.lines(header)
    w.line("#include <stddef.h>")
    w.line("#include <stdint.h>")
    w.line('#include "model.h"')
    w.line('#include "platform.h"')
    w.line()
    w.line("static union { uint8_t bytes[EMBER_ARENA_BYTES > 0 ? EMBER_ARENA_BYTES : 1]; "
           "uint64_t align; } ember_arena;")
    for union, total in (("ember_input", in_total), ("ember_output", out_total)):
        if total is not None:
            w.line(f"static union {{ uint8_t bytes[{total}]; uint64_t align; }} {union};")
    w.lines(_PUT)
    if "i" in kinds:
        w.lines(_PUT_INT)
    if "f" in kinds:
        w.lines(_PUT_FLOAT)
    w.line()
    with w.block("int main(int argc, char **argv)"):
        n_in = max(len(inputs), 1)
        w.line(f"void *const in_buffers[{n_in}] = {{"
               + ", ".join(in_at) + "};")
        w.line(f"const void *const inputs[{n_in}] = {{"
               + ", ".join(in_at) + "};")
        w.line(f"const size_t in_sizes[{n_in}] = {{"
               + ", ".join(str(v.type.nbytes) for v in inputs or []) + ("0" if not inputs else "")
               + "};")
        w.line(f"void *const outputs[{max(len(outputs), 1)}] = {{"
               + ", ".join(out_at) + "};")
        w.line("uint64_t instructions;")
        w.line("size_t i;")
        w.line("int status, counted;")
        w.line("(void)i;")
        w.line(f"if (ember_platform_read_input(argc, argv, in_buffers, in_sizes, {len(inputs)}))"
               " return 2;")
        w.line("ember_platform_count_start();")
        w.line("status = ember_model_run(inputs, outputs, ember_arena.bytes);")
        w.line("counted = ember_platform_count_stop(&instructions);")
        with w.block("if (status != 0)"):
            w.line('put("EMBER_ERROR "); put_uint((uint64_t)status); put("\\n"); flush();')
            w.line("return 3;")
        for k, v in enumerate(outputs):
            dtype = v.type.dtype
            element = f"((const {dtype.c} *)outputs[{k}])[i]"
            kind = dtype.numpy.kind
            if kind == "f":
                put = f"put_float({element}, {17 if dtype.numpy.itemsize == 8 else 9})"
            elif kind == "i":
                put = f"put_int({element})"
            else:
                put = f"put_uint({element})"
            w.line(f'put("EMBER_OUTPUT {k} ");')
            w.line(f'for (i = 0; i < {v.type.size}u; ++i) {{ if (i) put(","); {put}; }}')
            w.line('put("\\n");')
        w.line('if (counted) { put("EMBER_INSTRUCTIONS "); put_uint(instructions); put("\\n"); }')
        w.line("flush();")
        w.line("return 0;")
    return w.text()
