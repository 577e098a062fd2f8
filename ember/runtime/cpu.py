"""Load and call a compiled host model through ctypes. Imports nothing from the compiler."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np


MANIFEST = "manifest.json"
FORMAT = "ember-host-1"
ALIGN = 64


from ember.errors import RuntimeInputError as RunError


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype.name, "shape": list(self.shape)}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "TensorInfo":
        return TensorInfo(d["name"], np.dtype(d["dtype"]), tuple(d["shape"]))


def _aligned_empty(nbytes: int) -> np.ndarray:
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + nbytes]


def _address(a: np.ndarray) -> int:
    """The address of a C-contiguous array's data: through ctypes' buffer view, several times
    quicker than `a.ctypes.data`; read-only and empty arrays take the slow way."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


class CompiledModel:
    """A model compiled for the host: call it on numpy arrays.

    `run(dict)` returns a dict of outputs by name; `model(x, ...)` takes inputs in order and
    returns one array (or a tuple for several outputs).
    """

    def __init__(self, library: Path, weights: np.ndarray, manifest: dict[str, Any],
                 source: str | None = None) -> None:
        self.library_path = Path(library)
        self.manifest = manifest
        self.source = source
        self.inputs = [TensorInfo.from_json(d) for d in manifest["inputs"]]
        self.outputs = [TensorInfo.from_json(d) for d in manifest["outputs"]]
        self.arena_bytes: int = manifest["arena_bytes"]
        self.weight_bytes: int = manifest["weight_bytes"]
        self._weights = weights           # kept alive: the library holds a pointer into it
        self._lib = ctypes.CDLL(str(self.library_path))
        # Passing the weights on each call (not ember_init's global) keeps two models that
        # share one cached library independent. No argtypes: every argument is passed as a
        # ctypes object already, and ctypes' per-argument conversion is a third of the call.
        self._run_with = self._lib.ember_run_with
        self._run_with.restype = ctypes.c_int
        self._weights_ptr = ctypes.c_void_p(weights.ctypes.data if weights.size else None)
        self._arena = _aligned_empty(self.arena_bytes)
        self._arena_ptr = ctypes.c_void_p(self._arena.ctypes.data)
        # One arena per model: calls from several Python threads take turns.
        self._lock = threading.Lock()
        self._in_ptrs = (ctypes.c_void_p * max(len(self.inputs), 1))()
        self._out_ptrs = (ctypes.c_void_p * max(len(self.outputs), 1))()
        self._output_specs = [(o.shape, o.dtype) for o in self.outputs]

    def run(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        # The per-call path is lean on purpose: small models run in tens of microseconds
        # (an MLP's ~80), and each microsecond here is one more of the latency.
        if len(feeds) != len(self.inputs):
            self._report_feed_names(feeds)
        try:
            arrays = [self._check(info, feeds[info.name]) for info in self.inputs]
        except KeyError:
            self._report_feed_names(feeds)
            raise
        outs = [np.empty(shape, dtype) for shape, dtype in self._output_specs]
        with self._lock:
            for k, a in enumerate(arrays):
                self._in_ptrs[k] = _address(a)
            for k, a in enumerate(outs):
                self._out_ptrs[k] = _address(a)
            rc = self._run_with(self._weights_ptr, self._in_ptrs, self._out_ptrs,
                                self._arena_ptr)
        if rc != 0:
            raise RuntimeError(f"ember_run_with returned {rc}")
        return {o.name: a for o, a in zip(self.outputs, outs)}

    def bound_call(self, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> Callable[[], None]:
        """A call of the model on `inputs` into `outputs` (C-contiguous arrays of the model's
        types, in order), bound once: what run() does without its checks and allocations (whose
        page faults would dominate a one-layer timing). For benchmarks; not thread-safe."""
        arrays = [self._check(info, a) for info, a in zip(self.inputs, inputs)]
        for info, a in zip(self.outputs, outputs):
            if a.dtype != info.dtype or a.shape != info.shape or not a.flags.c_contiguous:
                raise RunError(f"output {info.name!r} needs a C-contiguous {info.dtype} array "
                               f"of shape {list(info.shape)}")
        in_ptrs = (ctypes.c_void_p * max(len(arrays), 1))(*map(_address, arrays))
        out_ptrs = (ctypes.c_void_p * max(len(outputs), 1))(*map(_address, outputs))

        def call(keep=(arrays, outputs)) -> None:     # keep: the arrays outlive the callable
            if self._run_with(self._weights_ptr, in_ptrs, out_ptrs, self._arena_ptr) != 0:
                raise RuntimeError("ember_run_with failed")
        return call

    def __call__(self, *args: Any) -> "np.ndarray | tuple[np.ndarray, ...]":
        if len(args) != len(self.inputs):
            raise RunError(f"the model takes {len(self.inputs)} input(s), got {len(args)}")
        result = self.run({i.name: a for i, a in zip(self.inputs, args)})
        values = tuple(result[o.name] for o in self.outputs)
        return values[0] if len(values) == 1 else values

    def _report_feed_names(self, feeds: dict[str, Any]) -> None:
        unknown = set(feeds) - {i.name for i in self.inputs}
        if unknown:
            raise RunError(f"unknown input(s) {sorted(unknown)}; the model's inputs are "
                           f"{[i.name for i in self.inputs]}")
        for info in self.inputs:
            if info.name not in feeds:
                raise RunError(f"missing input {info.name!r} ({info.dtype} {list(info.shape)})")

    @staticmethod
    def _check(info: TensorInfo, value: Any) -> np.ndarray:
        if (type(value) is np.ndarray and value.dtype == info.dtype and value.shape == info.shape
                and value.flags.c_contiguous):
            return value                      # the common case: nothing to convert
        a = np.asarray(value)
        if a.shape != info.shape:
            raise RunError(f"input {info.name!r} has shape {list(a.shape)}, expected "
                           f"{list(info.shape)}")
        if a.dtype != info.dtype:
            if not np.can_cast(a.dtype, info.dtype, casting="same_kind"):
                raise RunError(f"input {info.name!r} has dtype {a.dtype}, expected {info.dtype}")
            a = a.astype(info.dtype)
        return np.ascontiguousarray(a)

    def save(self, directory: "str | os.PathLike") -> Path:
        """Write library, weights, source and manifest into `directory` (created if needed)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.library_path, out / "model.so")
        np.asarray(self._weights).tofile(out / "weights.bin")
        if self.source is not None:
            (out / "model.c").write_text(self.source)
        (out / MANIFEST).write_text(json.dumps(self.manifest, indent=2) + "\n")
        return out

    def __repr__(self) -> str:
        sig = ", ".join(f"{i.name}: {i.dtype}{list(i.shape)}" for i in self.inputs)
        return f"<CompiledModel ({sig}) arena={self.arena_bytes}B weights={self.weight_bytes}B>"


def load(directory: "str | os.PathLike") -> CompiledModel:
    """Load a model saved with CompiledModel.save(); needs no compiler."""
    d = Path(directory)
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{d} is not a saved Ember model ({e})") from None
    if manifest.get("format") != FORMAT:
        raise RunError(f"{d}: unknown artifact format {manifest.get('format')!r}")
    weights = _aligned_empty(manifest["weight_bytes"])
    with open(d / "weights.bin", "rb") as f:
        if f.readinto(memoryview(weights)) != manifest["weight_bytes"]:
            raise RunError(f"{d / 'weights.bin'} is shorter than the manifest says")
    source = (d / "model.c").read_text() if (d / "model.c").exists() else None
    return CompiledModel(d / "model.so", weights, manifest, source)
