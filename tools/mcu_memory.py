"""Ember's RAM per model next to TFLite Micro's arena (issue 4, "Memory").

    python tools/mcu_memory.py                       # the compared models found here
    python tools/mcu_memory.py path/to/model.tflite  # any int8 .tflite
    python tools/mcu_memory.py --build cortex-m4     # also export, build, and take the image's RAM

Columns: Ember's arena (EMBER_ARENA_BYTES: activations and scratch), its input and output
buffers, Ember's whole RAM (arena + I/O); TFLite Micro's head (planned activations, inputs and
outputs included) and total (head + persistent tail). With --build, the built image's RAM
(data + bss: arena, I/O buffers, stack and main.c's line buffer) from report.json. The exit
status is 1 when Ember's arena exceeds TFLite Micro's head or its whole RAM TFLite Micro's total.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ember.export.memory import (COMPARED_MODELS, ember_memory, find_model,  # noqa: E402
                                 tflm_memory)

MODEL_DIRS = [ROOT / "tests" / "data" / "tflite", ROOT.parent / "shared" / "models"]


def built_ram(model: Path, target: str) -> int:
    from ember.export import build_project, export_model
    with tempfile.TemporaryDirectory(prefix="ember-mem-") as tmp:
        export_model(model, target, Path(tmp))
        return build_project(Path(tmp))["image"]["ram_bytes"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help=".tflite files (default: the compared models)")
    parser.add_argument("--build", metavar="TARGET",
                        help="export and build for TARGET too, and report the image's RAM")
    args = parser.parse_args()
    models = [Path(m) for m in args.models] or \
        [p for p in (find_model(n, MODEL_DIRS) for n in COMPARED_MODELS) if p is not None]
    columns = ["model", "Ember arena", "TFLM head", "Ember I/O", "Ember RAM", "TFLM total"]
    if args.build:
        columns.append(f"image RAM ({args.build})")
    print("| " + " | ".join(columns) + " |")
    print("| --- " + "| ---: " * (len(columns) - 1) + "|")
    worse = False
    for path in models:
        ember = ember_memory(path)
        tflm = tflm_memory(path)
        worse |= ember.arena_bytes > tflm.head_bytes or ember.ram_bytes > tflm.total_bytes
        row = [path.stem, ember.arena_bytes, tflm.head_bytes, ember.io_bytes, ember.ram_bytes,
               tflm.total_bytes]
        if args.build:
            row.append(built_ram(path, args.build))
        print("| " + " | ".join(f"{x:,}" if isinstance(x, int) else x for x in row) + " |",
              flush=True)
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
