"""`ember export`: the MLPerf Tiny int8 models as standalone C99 projects, built and run bit for
bit against TFLite Micro's outputs: natively (c99-host, always) and under QEMU (marked mcu,
skipped without the cross toolchain and emulator; `make test-mcu` runs them)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ember.cli import main as ember_main
from ember.export import build_project, export_model

DATA = Path(__file__).resolve().parents[1] / "data" / "tflite"
MODELS = ["kws_ref_model_int8", "vww_96_int8", "pretrainedResnet_int8", "ad01_int8"]
# libgcc's integer helpers a 32-bit target may call (64-bit division, shifts, multiplies)
INTEGER_HELPERS = re.compile(r"^__aeabi_(l|ui|i|ul)\w*$|^__(u?divdi3|u?moddi3|ashldi3|lshrdi3|"
                             r"ashrdi3|muldi3|clzsi2)$")


def reference(name: str) -> np.ndarray:
    """TFLite Micro's output (ai-edge-litert's where the two agree)."""
    micro = DATA / f"{name}.micro_output.npy"
    return np.load(micro if micro.exists() else DATA / f"{name}.output.npy")


def run_project(out: Path, name: str, tmp: Path) -> tuple[list[np.ndarray], int | None]:
    """`make run` on the model's reference input: the EMBER_OUTPUT values, the instructions."""
    data = tmp / f"{name}.bin"
    np.load(DATA / f"{name}.input.npy").tofile(data)
    result = subprocess.run(["make", "-s", "-C", str(out), "run", f"INPUT={data}"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    outputs, instructions = [], None
    for line in result.stdout.splitlines():
        if line.startswith("EMBER_OUTPUT "):
            _, index, values = line.split(" ", 2)
            assert int(index) == len(outputs)
            outputs.append(np.array([int(v) for v in values.split(",")]))
        elif line.startswith("EMBER_INSTRUCTIONS "):
            instructions = int(line.split()[1])
    return outputs, instructions


def symbols(nm: str, path: Path, *flags: str) -> dict[str, int]:
    """Symbol name -> size (0 when nm gives none) of an object or image."""
    text = subprocess.run([nm, *flags, str(path)], capture_output=True, text=True,
                          check=True).stdout
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            found[parts[3]] = int(parts[1], 16)
        elif parts:
            found[parts[-1]] = 0
    return found


def size(tool: str, path: Path) -> dict[str, int]:
    fields = subprocess.run([tool, str(path)], capture_output=True, text=True,
                            check=True).stdout.splitlines()[1].split()
    return {"text": int(fields[0]), "data": int(fields[1]), "bss": int(fields[2])}


def check_sizes(out: Path, report: dict, size_tool: str, nm: str, image: str) -> None:
    """report.json against the tools, precisely:
    - model.o holds no data or bss (the model keeps no state), and its text (code, constant
      tables and weights) is code_bytes + weight_bytes;
    - the weights array in model.o is exactly weight_bytes long;
    - the image's arena is exactly arena_bytes long, and report.image is what `size` says of it.
    """
    model_o = out / "build" / "model.o"
    model = size(size_tool, model_o)
    assert model["data"] == model["bss"] == 0
    assert model["text"] == report["code_bytes"] + report["weight_bytes"]
    assert symbols(nm, model_o, "-S")["ember_weights"] == report["weight_bytes"]
    elf = out / "build" / image
    assert symbols(nm, elf, "-S")["ember_arena"] == report["arena_bytes"]
    whole = size(size_tool, elf)
    assert report["image"] == dict(whole, flash_bytes=whole["text"] + whole["data"],
                                   ram_bytes=whole["data"] + whole["bss"])
    assert whole["bss"] >= report["arena_bytes"]


@pytest.mark.parametrize("name", MODELS)
def test_int8_models_bit_exact_on_host(name, tmp_path):
    out = tmp_path / "project"
    report = export_model(DATA / f"{name}.tflite", "c99-host", out)
    source = (out / "model.c").read_text()
    # integer only, no allocation, nothing of libc beyond memcpy/memset
    assert not re.search(r"\b(float|double|malloc|free|math\.h)\b", source)
    assert "#pragma" not in source and "vector_size" not in source
    report = build_project(out)
    assert report == json.loads((out / "report.json").read_text())
    outputs, _ = run_project(out, name, tmp_path)
    want = reference(name)
    assert len(outputs) == 1
    np.testing.assert_array_equal(outputs[0], want.reshape(-1))
    undefined = symbols("nm", out / "build" / "model.o", "-u")
    assert set(undefined) <= {"memcpy", "memset"}, undefined
    check_sizes(out, report, "size", "nm", "model")
    assert sum(layer["weight_bytes"] for layer in report["layers"]) == report["weight_bytes"]
    header = (out / "model.h").read_text()
    assert f"#define EMBER_ARENA_BYTES {report['arena_bytes']}\n" in header
    assert "#define EMBER_INPUT0_ZERO_POINT" in header and "#define EMBER_INPUT0_SCALE" in header


def test_model_names_reach_c_only_as_comments(tmp_path):
    out = tmp_path / "project"
    data = (DATA / "ad01_int8.tflite").read_bytes()
    name = "evil */ #include <stdio.h> /* \\\n??/.tflite"
    model = tmp_path / name.replace("/", "_").replace("\n", "_")
    model.write_bytes(data)
    export_model(model, "c99-host", out)
    for file in ("model.c", "model.h", "main.c"):
        text = (out / file).read_text()
        assert "\n#include <stdio.h>" not in text and "*/ #include" not in text
        head = text.splitlines()[0]            # the comment naming the model
        assert head.startswith("/*") and head.endswith("*/") and head.count("*/") == 1
        assert "??/" not in head and "\\" not in head
    build_project(out)     # the escaped name sits inside its comment: the project builds


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


ARM = ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm")


@pytest.mark.mcu
@pytest.mark.skipif(not have(*ARM), reason="needs the Arm cross toolchain and QEMU "
                                           "(make toolchain-mcu)")
@pytest.mark.parametrize("target, name", [("cortex-m4", "kws_ref_model_int8"),
                                          ("cortex-m3", "ad01_int8")])
def test_int8_model_bit_exact_under_qemu(target, name, tmp_path):
    out = tmp_path / "project"
    export_model(DATA / f"{name}.tflite", target, out)
    report = build_project(out)
    outputs, instructions = run_project(out, name, tmp_path)
    np.testing.assert_array_equal(outputs[0], reference(name).reshape(-1))
    assert instructions and instructions > 1000
    check_sizes(out, report, "arm-none-eabi-size", "arm-none-eabi-nm", "model.elf")
    # No floating point anywhere in the image: on the soft-float Cortex-M3 any float
    # arithmetic would pull in libgcc's __aeabi_f*/__aeabi_d* routines.
    linked = symbols("arm-none-eabi-nm", out / "build" / "model.elf")
    assert not [s for s in linked if re.match(r"__aeabi_[fd]|__aeabi_[iu]?[fd]2|__aeabi_l2[fd]", s)]
    undefined = symbols("arm-none-eabi-nm", out / "build" / "model.o", "-u")
    assert {s for s in undefined if not INTEGER_HELPERS.match(s)} <= {"memcpy", "memset"}


@pytest.mark.mcu
@pytest.mark.skipif(not have("riscv64-unknown-elf-gcc", "qemu-system-riscv32"),
                    reason="needs the RISC-V cross toolchain and QEMU (make toolchain-mcu)")
def test_int8_model_bit_exact_on_rv32imac(tmp_path):
    out = tmp_path / "project"
    export_model(DATA / "kws_ref_model_int8.tflite", "rv32imac", out)
    build_project(out)
    outputs, instructions = run_project(out, "kws_ref_model_int8", tmp_path)
    np.testing.assert_array_equal(outputs[0], reference("kws_ref_model_int8").reshape(-1))
    assert instructions and instructions > 1000


@pytest.mark.mcu
@pytest.mark.skipif(not have("arm-none-eabi-gcc"), reason="needs the Arm cross toolchain")
def test_model_too_big_for_the_board_fails_to_link_clearly(tmp_path):
    # the micro:bit (Cortex-M0) has 16 KiB of RAM; KWS needs a 16000-byte arena and a stack
    out = tmp_path / "project"
    export_model(DATA / "kws_ref_model_int8.tflite", "cortex-m0", out)
    with pytest.raises(Exception, match="region `RAM' overflowed"):
        build_project(out)


# -- the command line ---------------------------------------------------------------------
def test_cli_export_and_user_errors(tmp_path, capsys):
    model = str(DATA / "ad01_int8.tflite")
    out = tmp_path / "project"
    assert ember_main(["export", model, "--target", "c99-host", "-o", str(out)]) == 0
    assert (out / "model.c").is_file() and (out / "Makefile").is_file()
    before = (out / "model.c").stat().st_mtime_ns

    def error(*argv: str) -> str:
        capsys.readouterr()
        assert ember_main(list(argv)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    assert "already exists" in error("export", model, "--target", "c99-host", "-o", str(out))
    assert (out / "model.c").stat().st_mtime_ns == before
    assert "unknown export target 'cortex-m9'" in error(
        "export", model, "--target", "cortex-m9", "-o", str(tmp_path / "b"))
    assert "cannot read model file" in error("export", str(tmp_path / "missing.tflite"),
                                             "--target", "cortex-m4", "-o", str(tmp_path / "c"))
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    # a float model exports too (tests/export/test_export_float.py builds and runs them)
    assert ember_main(["export", str(DATA / "ad01_fp32.tflite"), "--target", "cortex-m4",
                       "-o", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "model.c").is_file()
    assert ember_main(["export", model, "--target", "c99-host", "-o", str(out), "--force"]) == 0
