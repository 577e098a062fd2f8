"""`ember export` of the MLPerf Tiny float32 models: standalone C99 projects that build
-Wall -Wextra -Werror clean with no C library (no libm: the kernels' math is Ember's own) and
match TFLite's outputs within 1e-5, natively (c99-host, always) and under QEMU (marked mcu,
skipped without the cross toolchain and emulator; VWW and ResNet under QEMU are also marked
slow)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ember.export import build_project, export_model

from test_export_embedded import ARM, DATA, INTEGER_HELPERS, check_sizes, have, symbols

MODELS = ["kws_ref_model_float32", "vww_96_float", "pretrainedResnet_float", "ad01_fp32"]
# all of libc a model may call (GCC turns copy loops into them); platform_semihost.c has them
LIBC = {"memcpy", "memmove", "memset"}
# libgcc's soft-float routines (a core without an FPU; double arithmetic on a single-precision
# one, as in the platform's float printing)
SOFT_FLOAT = re.compile(r"^__aeabi_[fd]\w*$|^__aeabi_[iul]+2[fd]$|^__(add|sub|mul|div|neg|"
                        r"fix|fixuns|float|floatun|eq|ne|lt|le|gt|ge|un|extend|trunc)\w*[sd]f\w*$")


def run_float_project(out: Path, name: str, tmp: Path) -> tuple[np.ndarray, int | None]:
    """`make run` on the model's reference input: output 0's values, the instructions."""
    data = tmp / f"{name}.bin"
    np.load(DATA / f"{name}.input.npy").tofile(data)
    result = subprocess.run(["make", "-s", "-C", str(out), "run", f"INPUT={data}"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    values, instructions = None, None
    for line in result.stdout.splitlines():
        if line.startswith("EMBER_OUTPUT 0 "):
            values = np.array([float(v) for v in line.split(" ", 2)[2].split(",")], np.float32)
        elif line.startswith("EMBER_INSTRUCTIONS "):
            instructions = int(line.split()[1])
    assert values is not None, result.stdout
    return values, instructions


def check_against_tflite(values: np.ndarray, name: str) -> None:
    want = np.load(DATA / f"{name}.output.npy").reshape(-1)
    np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_float_models_match_tflite_on_host(name, tmp_path):
    out = tmp_path / "project"
    export_model(DATA / f"{name}.tflite", "c99-host", out)
    source = (out / "model.c").read_text()
    # no allocation, no libm or other libc beyond LIBC, strict C99 (no OpenMP)
    assert not re.search(r"\b(malloc|free)\b|math\.h|#pragma omp", source)
    report = build_project(out)
    values, _ = run_float_project(out, name, tmp_path)
    check_against_tflite(values, name)
    undefined = symbols("nm", out / "build" / "model.o", "-u")
    assert set(undefined) <= LIBC, undefined
    check_sizes(out, report, "size", "nm", "model")
    assert report["inputs"][0]["dtype"] == report["outputs"][0]["dtype"] == "float32"
    assert report["inputs"][0]["scale"] is None and report["outputs"][0]["zero_point"] is None
    header = (out / "model.h").read_text()
    assert "#define EMBER_INPUT0_TYPE float\n" in header
    assert "#define EMBER_OUTPUT0_TYPE float\n" in header
    assert "_SCALE" not in header and "_ZERO_POINT" not in header


def test_lstm_model_matches_tflite_on_host(tmp_path):
    """TFLite Micro's MNIST LSTM: UNIDIRECTIONAL_SEQUENCE_LSTM (one recurrent kernel, its
    sigmoid and tanh Ember's own) exports, builds with no libm, and matches TFLite."""
    out = tmp_path / "project"
    export_model(DATA / "trained_lstm.tflite", "c99-host", out)
    build_project(out)
    values, _ = run_float_project(out, "trained_lstm", tmp_path)
    check_against_tflite(values, "trained_lstm")
    assert set(symbols("nm", out / "build" / "model.o", "-u")) <= LIBC


def test_float_model_output_prints_exactly(tmp_path):
    """%.9g round-trips float32: the printed outputs are the very floats the model wrote."""
    out = tmp_path / "project"
    export_model(DATA / "ad01_fp32.tflite", "c99-host", out)
    build_project(out)
    values, _ = run_float_project(out, "ad01_fp32", tmp_path)
    want = np.load(DATA / "ad01_fp32.output.npy").reshape(-1)
    assert np.array_equal(values, want)     # this model's sums are bit-exact with TFLite's


def _qemu_case(target: str, name: str, tmp_path: Path) -> tuple[Path, dict, int]:
    out = tmp_path / "project"
    export_model(DATA / f"{name}.tflite", target, out)
    report = build_project(out)
    values, instructions = run_float_project(out, name, tmp_path)
    check_against_tflite(values, name)
    assert instructions and instructions > 1000
    check_sizes(out, report, "arm-none-eabi-size", "arm-none-eabi-nm", "model.elf")
    undefined = symbols("arm-none-eabi-nm", out / "build" / "model.o", "-u")
    helpers = {s for s in undefined if INTEGER_HELPERS.match(s) or SOFT_FLOAT.match(s)}
    assert undefined.keys() - helpers <= LIBC, undefined
    return out, report, instructions


@pytest.mark.mcu
@pytest.mark.skipif(not have(*ARM), reason="needs the Arm cross toolchain and QEMU "
                                           "(make toolchain-mcu)")
@pytest.mark.parametrize("name", ["kws_ref_model_float32", "ad01_fp32"])
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m3"])
def test_float_models_match_tflite_under_qemu(target, name, tmp_path):
    out, _, _ = _qemu_case(target, name, tmp_path)
    undefined = symbols("arm-none-eabi-nm", out / "build" / "model.o", "-u")
    soft = [s for s in undefined if SOFT_FLOAT.match(s)]
    # the model computes in the Cortex-M4F's FPU, single precision only; on the M3 through
    # libgcc's soft float (the platform prints in double, through libgcc on both)
    assert bool(soft) == (target == "cortex-m3"), soft


@pytest.mark.mcu
@pytest.mark.slow
@pytest.mark.skipif(not have(*ARM), reason="needs the Arm cross toolchain and QEMU "
                                           "(make toolchain-mcu)")
@pytest.mark.parametrize("name", ["vww_96_float", "pretrainedResnet_float"])
def test_large_float_models_match_tflite_under_qemu(name, tmp_path):
    _qemu_case("cortex-m4", name, tmp_path)


def tiny_float_model(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """softmax(floor(4 relu(x W + b))), small enough for the micro:bit (Cortex-M0, 16 KiB of
    RAM), written as ONNX: its input and numpy's output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 16)).astype(np.float32)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Mul", ["r", "four"], ["s"]),
             helper.make_node("Floor", ["s"], ["f"]), helper.make_node("Softmax", ["f"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(np.array(4, np.float32), "four")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    f = np.floor(4 * np.maximum(x @ w + b, 0))
    e = np.exp(f - f.max())
    return x, (e / e.sum()).astype(np.float32)


@pytest.mark.mcu
@pytest.mark.parametrize("target", ["cortex-m7", "cortex-m33", "cortex-m55", "cortex-m0",
                                    "rv32imac"])
def test_float_model_runs_on_every_core(target, tmp_path):
    """Hard float (M7, M33, M55) and soft float through libgcc (M0, RV32IMAC) link and run."""
    from ember.targets import get_embedded_target
    t = get_embedded_target(target)
    if not have(t.cc, t.qemu[0]):
        pytest.skip("needs the cross toolchain and QEMU (make toolchain-mcu)")
    x, want = tiny_float_model(tmp_path / "tiny.onnx")
    out = tmp_path / "project"
    export_model(tmp_path / "tiny.onnx", target, out)
    build_project(out)
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    result = subprocess.run(["make", "-s", "-C", str(out), "run", f"INPUT={tmp_path / 'x.bin'}"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("EMBER_OUTPUT 0 "))
    got = np.array([float(v) for v in line.split(" ", 2)[2].split(",")], np.float32)
    np.testing.assert_allclose(got, want.reshape(-1), rtol=1e-5, atol=1e-6)


def test_freestanding_rounding_matches_libm(tmp_path):
    """model.c's own floorf, ceilf, truncf, roundf, rintf/nearbyintf, fabsf, copysignf, fminf
    and fmaxf (no libm in exported projects) agree bit for bit with numpy's on edge values."""
    from ember.export.model_c import _math_prelude
    names = {"floorf": np.floor, "ceilf": np.ceil, "truncf": np.trunc, "rintf": np.rint,
             "nearbyintf": np.rint, "fabsf": np.abs,
             # half away from zero (exact in float64)
             "roundf": lambda v: np.trunc(v.astype(np.float64) + np.copysign(0.5, v))}
    values = np.array([0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997,
                       1.0000001, -0.99999994, 8388607.5, -8388607.5, 8388608.0, 3e38, -3e38,
                       np.inf, -np.inf, np.nan, 1e-45, -1e-45, 123.456, -123.456], np.float32)
    calls = "".join(f"    out[{k}*N + i] = {n}(x[i]);\n" for k, n in enumerate(names))
    minmax = "    out[{0}*N + i] = fminf(x[i], x[N-1-i]);\n    out[{1}*N + i] = fmaxf(x[i], " \
             "x[N-1-i]);\n    out[{2}*N + i] = copysignf(1.5f, x[i]);\n"
    calls += minmax.format(len(names), len(names) + 1, len(names) + 2)
    body = f"for (int i = 0; i < N; ++i) {{\n{calls}}}"
    source = ("#include <stdint.h>\n#include <stdio.h>\n" + _math_prelude(body)
              + f"\n#define N {len(values)}\nint main(void) {{\n"
              + f"    static float x[N], out[{len(names) + 3}*N];\n"
              + "    if (fread(x, 4, N, stdin) != N) return 1;\n" + body
              + f"\n    fwrite(out, 4, {len(names) + 3}*N, stdout);\n    return 0;\n}}\n")
    (tmp_path / "t.c").write_text(source)
    subprocess.run(["cc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2",
                    "-fno-builtin", str(tmp_path / "t.c"), "-o", str(tmp_path / "t")], check=True)
    got = np.frombuffer(subprocess.run([str(tmp_path / "t")], input=values.tobytes(),
                                       capture_output=True, check=True).stdout, np.float32)
    got = got.reshape(-1, len(values))
    rev = values[::-1]
    wants = [f(values).astype(np.float32) for f in names.values()]
    wants += [np.fmin(values, rev), np.fmax(values, rev),
              np.copysign(np.float32(1.5), values)]
    for name, g, want in zip([*names, "fminf", "fmaxf", "copysignf"], got, wants):
        assert g.tobytes() == want.tobytes(), (name, values, g, want)
