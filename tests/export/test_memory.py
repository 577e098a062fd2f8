"""Memory (issue 4): Ember's arena against TFLite Micro's on the compared models, and the
exported project's arena against the planner's."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ember.export import export_model
from ember.export.embedded import EMBEDDED_ARENA_ALIGN, lower_for_export
from ember.export.memory import (COMPARED_MODELS, ember_memory, find_model, io_bytes,
                                 parse_allocations, tflm_memory)
from ember.lower.memory_plan import align

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIRS = [ROOT / "tests" / "data" / "tflite", ROOT.parent / "shared" / "models"]


def model_path(name: str) -> Path:
    path = find_model(name, MODEL_DIRS)
    if path is None:
        pytest.skip(f"{name}.tflite is not on this machine")
    return path


@pytest.mark.parametrize("name", COMPARED_MODELS)
def test_arena_within_tflite_micro(name):
    """Ember's arena is at most TFLite Micro's head (its planned activations), and Ember's
    arena with its input and output buffers at most TFLite Micro's whole arena."""
    pytest.importorskip("tflite_micro")
    path = model_path(name)
    ember, tflm = ember_memory(path), tflm_memory(path)
    assert tflm.head_bytes + tflm.tail_bytes == tflm.total_bytes
    assert ember.arena_bytes <= tflm.head_bytes
    assert ember.ram_bytes <= tflm.total_bytes


#: the MLPerf Tiny float32 models (KWS's is "hybrid": int8 weights on float activations,
#: which TFLite Micro cannot run, so it has no TFLite Micro arena to compare with)
FLOAT_MODELS = ("vww_96_float", "pretrainedResnet_float", "ad01_fp32",
                pytest.param("kws_ref_model_float32", marks=pytest.mark.skip(
                    reason="a hybrid model (int8 weights, float activations): TFLite Micro "
                           "cannot run it")))


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_float_arena_within_tflite_micro(name):
    """The float32 models too: no GEMM or convolution scratch beyond one im2col panel, the
    residual Adds in place, and the input in the arena where it dies early (VWW's image)."""
    pytest.importorskip("tflite_micro")
    path = model_path(name)
    ember, tflm = ember_memory(path), tflm_memory(path)
    assert ember.arena_bytes <= tflm.head_bytes
    assert ember.ram_bytes <= tflm.total_bytes


def test_kws_float_arena():
    """KWS float (no TFLite Micro to compare with): the arena stays near its two largest
    activations (64 x 25 x 5 floats each, 32,000 bytes), as it was when measured (65,544)."""
    assert ember_memory(model_path("kws_ref_model_float32")).ram_bytes <= 66_000


def test_io_in_arena_when_it_saves_ram(tmp_path):
    """VWW's 96x96x3 float image dies after the first layer: it gets a place in the arena,
    which model.h names and main.c uses (no buffer of its own), apart from every buffer live
    while it is read; the exported project still matches TFLite there (test_export_float)."""
    path = model_path("vww_96_float")
    lowered = lower_for_export(path)
    x = lowered.inputs[0]
    offset = lowered.io_offset(x)
    assert offset is not None and io_bytes(lowered) == 0
    key = lowered.io_keys[x.id]
    buf = next(b for b in lowered.plan.buffers if b.key == key)
    assert buf.first == 0 and buf.nbytes == x.type.nbytes
    for other in lowered.plan.buffers:
        if other.key != key and other.first <= buf.last:
            o = lowered.plan.offsets[other.key]
            assert o + other.nbytes <= offset or offset + buf.nbytes <= o
    export_model(path, "c99-host", tmp_path)
    assert f"#define EMBER_INPUT0_ARENA_OFFSET {offset}\n" in (tmp_path / "model.h").read_text()
    main_c = (tmp_path / "main.c").read_text()
    assert f"ember_arena.bytes + {offset}" in main_c and "ember_input" not in main_c


@pytest.mark.parametrize("name", ["kws_ref_model_int8", "ad01_int8", "hello_world_int8",
                                  "vww_96_float", "ad01_fp32"])
def test_report_arena_is_the_plan(name, tmp_path):
    """report.json and model.h state the planner's arena; the plan places every buffer inside
    it, aligned, apart from every buffer live at the same time."""
    path = model_path(name)
    lowered = lower_for_export(path)
    plan = lowered.plan
    report = export_model(path, "c99-host", tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["arena_bytes"] == \
        report["arena_bytes"] == plan.arena_bytes
    header = (tmp_path / "model.h").read_text()
    assert re.search(rf"#define EMBER_ARENA_BYTES {plan.arena_bytes}\n", header)
    assert plan.alignment == EMBEDDED_ARENA_ALIGN
    spans = []
    for buf in plan.buffers:
        start = plan.offsets[buf.key]
        assert start % EMBEDDED_ARENA_ALIGN == 0
        assert start + buf.nbytes <= plan.arena_bytes
        spans.append((buf, start, start + buf.nbytes))
    for a, a0, a1 in spans:
        for b, b0, b1 in spans:
            if a.key < b.key and a.first <= b.last and b.first <= a.last:
                assert a1 <= b0 or b1 <= a0, f"buffers {a} and {b} overlap"
    assert plan.arena_bytes == max((align(e, EMBEDDED_ARENA_ALIGN) for _, _, e in spans),
                                   default=0)
    assert ember_memory(path).io_bytes == io_bytes(lowered)


def test_parse_allocations():
    text = ("[RecordingMicroAllocator] Arena allocation total 24272 bytes\n"
            "[RecordingMicroAllocator] Arena allocation head 16000 bytes\n"
            "[RecordingMicroAllocator] Arena allocation tail 8272 bytes\n")
    m = parse_allocations(text)
    assert (m.head_bytes, m.tail_bytes, m.total_bytes) == (16000, 8272, 24272)
    with pytest.raises(ValueError, match="lacks"):
        parse_allocations("nothing here")


def test_residual_adds_run_in_place():
    """ResNet-8's Adds write over an operand that dies there (bit-exactness of the exported
    model, with these in-place kernels, is test_export_embedded's)."""
    lowered = lower_for_export(model_path("pretrainedResnet_int8"))
    adds = [k for k in lowered.kernels if k.name.endswith("_tfladd")]
    assert len(adds) == 3 and all(len(k.inplace) == 1 for k in adds)
    plan = lowered.plan
    for kernel in adds:
        assert plan.offsets[kernel.outputs[0].id] == \
            plan.offsets[lowered.storage(kernel.inputs[kernel.inplace[0]]).id]
