"""One runner per runtime: load a model for N threads, then run it on fixed inputs.

Runners live in a worker process (worker.py), one runtime per process. Each imports its
runtime only in `load`, so asking whether a peer is installed (`missing`) imports nothing.
Inputs are handed over once, at load, in the runtime's own form: the timed `run` is the call
a user of that runtime would make, and nothing else.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class Runner:
    name: ClassVar[str]
    #: what tables call it
    label: ClassVar[str]
    #: modules that must be importable, and how to get them
    modules: ClassVar[tuple[str, ...]]
    install: ClassVar[str]

    @classmethod
    def missing(cls) -> str | None:
        """Why this runtime cannot run here (None when it can), without importing it."""
        absent = [m for m in cls.modules if importlib.util.find_spec(m) is None]
        if not absent:
            return None
        return f"needs {' and '.join(absent)} ({cls.install})"

    def load(self, model_path: Path, threads: int, workdir: Path,
             feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        """Compile or load the model; returns details worth recording (may be empty)."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def run(self) -> list[np.ndarray]:
        """One inference on the inputs given to `load`; outputs in the graph's order."""
        raise NotImplementedError


class EmberRunner(Runner):
    name, label, modules, install = "ember", "Ember", ("ember",), "pip install -e ."

    def load(self, model_path: Path, threads: int, workdir: Path,
             feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        import ember
        # A fresh cache: the compile time measured includes the C compiler, every time.
        self.model = ember.compile(model_path, threads=threads, cache_dir=workdir / "ember-cache")
        self.feeds = feeds
        self.names = [o.name for o in self.model.outputs]
        manifest = self.model.manifest
        return {"compile_seconds": manifest.get("compile_seconds", {}),
                "kernels": manifest.get("kernels"), "arena_bytes": self.model.arena_bytes,
                "weight_bytes": self.model.weight_bytes}

    def version(self) -> str:
        import ember
        return ember.__version__

    def run(self) -> list[np.ndarray]:
        out = self.model.run(self.feeds)
        return [out[n] for n in self.names]


class OnnxRuntimeRunner(Runner):
    name, label, modules, install = ("onnxruntime", "onnxruntime", ("onnxruntime",),
                                     "pip install onnxruntime, or make bench")

    def load(self, model_path: Path, threads: int, workdir: Path,
             feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        import onnxruntime as ort
        options = ort.SessionOptions()          # default graph optimizations (all of them)
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), options,
                                            providers=["CPUExecutionProvider"])
        self.feeds = {i.name: feeds[i.name] for i in self.session.get_inputs()}
        return {"providers": self.session.get_providers()}

    def version(self) -> str:
        import onnxruntime
        return onnxruntime.__version__

    def run(self) -> list[np.ndarray]:
        return self.session.run(None, self.feeds)


class OpenVinoRunner(Runner):
    name, label, modules, install = ("openvino", "OpenVINO", ("openvino",),
                                     "pip install openvino, or make bench")

    def load(self, model_path: Path, threads: int, workdir: Path,
             feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        import openvino as ov
        self.compiled = ov.Core().compile_model(str(model_path), "CPU",
                                                {"INFERENCE_NUM_THREADS": threads})
        self.request = self.compiled.create_infer_request()
        self.feeds = feeds
        # On CPUs with bf16 units OpenVINO may compute in bf16 by default: say so.
        precision = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        return {"inference_precision": getattr(precision, "get_type_name", precision.__str__)(),
                "threads": self.compiled.get_property("INFERENCE_NUM_THREADS")}

    def version(self) -> str:
        import openvino
        return openvino.get_version()

    def run(self) -> list[np.ndarray]:
        # share_inputs: no copy of the inputs per call; outputs are copied, as elsewhere.
        return list(self.request.infer(self.feeds, share_inputs=True).to_tuple())


class TorchRunner(Runner):
    name, label, modules, install = ("torch", "torch", ("torch", "onnx2torch"),
                                     "pip install torch onnx2torch")

    def load(self, model_path: Path, threads: int, workdir: Path,
             feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        import onnx2torch
        import torch
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        self.torch = torch
        self.module = onnx2torch.convert(str(model_path)).eval()
        self.args = [torch.from_numpy(a) for a in feeds.values()]   # feeds are in graph order
        return {}

    def version(self) -> str:
        import torch
        return torch.__version__

    def run(self) -> list[np.ndarray]:
        with self.torch.inference_mode():
            out = self.module(*self.args)
        return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else [out])]


RUNNERS: dict[str, type[Runner]] = {r.name: r for r in (EmberRunner, OnnxRuntimeRunner,
                                                        OpenVinoRunner, TorchRunner)}
#: the runtime ratios and differences are measured against
REFERENCE = "onnxruntime"
PEERS = tuple(name for name in RUNNERS if name != "ember")
