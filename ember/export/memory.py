"""RAM an exported model needs, next to what TFLite Micro's interpreter allocates for it.

Ember's arena holds the intermediate tensors and kernel scratch, and the inputs and outputs
that `ember export` places there (where that takes less RAM: model.h's
EMBER_INPUTk_ARENA_OFFSET); main.c keeps any other input or output in a buffer of its own.
TFLite Micro's arena holds all of them:
its "head" is the non-persistent part planned by liveness (every activation, inputs and outputs
included) and its "total" adds the persistent tail (tensor structs, op data, quantization
parameters). So Ember's arena compares with the head, and Ember's arena plus main.c's own
input and output buffers with the total.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ember.export.embedded import io_buffer_bytes, lower_for_export
from ember.lower.to_kernels import LoweredModel
from ember.options import CompileOptions

#: TFLite Micro's arena for measuring: far more than any model here needs (its numbers do
#: not depend on the size given, as long as the model fits)
TFLM_ARENA_BYTES = 16 << 20


#: the models issue 4 measures against TFLite Micro: MLPerf Tiny int8, TFLite Micro's examples
COMPARED_MODELS = ("kws_ref_model_int8", "vww_96_int8", "pretrainedResnet_int8", "ad01_int8",
                   "hello_world_int8", "micro_speech_quantized", "person_detect")


def find_model(name: str, dirs: "list[Path]") -> Path | None:
    """`name`.tflite in the first of `dirs` (searched recursively) that holds it."""
    for d in dirs:
        found = sorted(Path(d).rglob(f"{name}.tflite")) if Path(d).is_dir() else []
        if found:
            return found[0]
    return None


@dataclass(frozen=True)
class EmberMemory:
    arena_bytes: int     # EMBER_ARENA_BYTES: activations and scratch
    io_bytes: int        # the input and output buffers, as main.c lays them out

    @property
    def ram_bytes(self) -> int:
        return self.arena_bytes + self.io_bytes


@dataclass(frozen=True)
class TflmMemory:
    head_bytes: int      # "Arena allocation head": the planned (non-persistent) tensors
    tail_bytes: int      # "Arena allocation tail": persistent allocations
    total_bytes: int     # "Arena allocation total"


def io_bytes(lowered: LoweredModel) -> int:
    """The input and output buffers main.c keeps apart from the arena."""
    return io_buffer_bytes(lowered)


def ember_memory(model: "str | os.PathLike", options: CompileOptions | None = None
                 ) -> EmberMemory:
    """The arena and I/O buffers of `model` exported by `ember export`."""
    lowered = lower_for_export(model, options)
    return EmberMemory(lowered.arena_bytes, io_bytes(lowered))


_ALLOCATION = re.compile(r"Arena allocation (head|tail|total) (\d+) bytes")


def parse_allocations(text: str) -> TflmMemory:
    """The head, tail and total of `print_allocations()`'s report."""
    found = {kind: int(n) for kind, n in _ALLOCATION.findall(text)}
    missing = {"head", "tail", "total"} - found.keys()
    if missing:
        raise ValueError(f"TFLite Micro's allocation report lacks {sorted(missing)}: {text!r}")
    return TflmMemory(found["head"], found["tail"], found["total"])


def tflm_memory(model: "str | os.PathLike") -> TflmMemory:
    """TFLite Micro's arena for `model`, from its recording allocator after one invoke().
    Raises ImportError without the `tflite-micro` package."""
    from tflite_micro.python.tflite_micro import runtime
    interpreter = runtime.Interpreter.from_bytes(Path(os.fspath(model)).read_bytes(),
                                                 arena_size=TFLM_ARENA_BYTES)
    interpreter.invoke()
    return parse_allocations(_captured_fd_output(interpreter.print_allocations))


def _flush_c_stdio() -> None:
    import ctypes
    ctypes.CDLL(None).fflush(None)


def _captured_fd_output(call) -> str:
    """What `call` writes to file descriptors 1 and 2 (the C++ side prints there, past
    Python's sys.stdout/sys.stderr)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            call()
            _flush_c_stdio()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        sink.seek(0)
        return sink.read().decode("utf-8", "replace")
