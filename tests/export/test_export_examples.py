"""`ember export` of TFLite Micro's own example models (hello_world, micro_speech,
person_detect), bit for bit against TFLite Micro's outputs: natively (c99-host) and under QEMU
on a Cortex-M4 (marked mcu, skipped without the cross toolchain and emulator)."""
from __future__ import annotations

import numpy as np
import pytest

from ember.export import build_project, export_model
from test_export_embedded import ARM, DATA, check_sizes, have, reference, run_project

EXAMPLES = ["hello_world_int8", "micro_speech_quantized", "person_detect"]


def export_and_run(name: str, target: str, tmp_path) -> tuple[dict, int | None]:
    out = tmp_path / "project"
    export_model(DATA / f"{name}.tflite", target, out)
    report = build_project(out)
    outputs, instructions = run_project(out, name, tmp_path)
    assert len(outputs) == 1
    np.testing.assert_array_equal(outputs[0], reference(name).reshape(-1))
    return report, instructions


@pytest.mark.parametrize("name", EXAMPLES)
def test_tflite_micro_examples_bit_exact_on_host(name, tmp_path):
    report, _ = export_and_run(name, "c99-host", tmp_path)
    check_sizes(tmp_path / "project", report, "size", "nm", "model")


@pytest.mark.mcu
@pytest.mark.skipif(not have(*ARM), reason="needs the Arm cross toolchain and QEMU "
                                           "(make toolchain-mcu)")
@pytest.mark.parametrize("name", EXAMPLES)
def test_tflite_micro_examples_bit_exact_on_cortex_m4(name, tmp_path):
    report, instructions = export_and_run(name, "cortex-m4", tmp_path)
    assert instructions and instructions > 100
    check_sizes(tmp_path / "project", report, "arm-none-eabi-size", "arm-none-eabi-nm",
                "model.elf")
