"""compile(): model -> graph -> passes -> kernels -> C -> shared library -> CompiledModel."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import replace
from typing import Any, Iterator

import numpy as np
import onnx

from ember import __version__
from ember.frontend.onnx import import_onnx, load_model
from ember.frontend.tflite import import_tflite, is_tflite_source, load_tflite
from ember.graph.ir import Graph
from ember.lower.to_kernels import LoweredModel, lower_graph
from ember.options import CompileOptions
from ember.passes.pipeline import run_pipeline
from ember.render.c import render_model
from ember.runtime.cpu import FORMAT, CompiledModel, TensorInfo, _aligned_empty
from ember.runtime.toolchain import build_shared_library, host_flags

log = logging.getLogger("ember")


def import_model(model: "str | os.PathLike | bytes | onnx.ModelProto",
                 options: CompileOptions) -> tuple[Graph, str]:
    if is_tflite_source(model):      # by the file's "TFL3" identifier, else its suffix
        data, label = load_tflite(model)
        return import_tflite(data, options.input_shapes, label,
                             litert_numerics=options.int8_numerics == "litert"), label
    proto, label = load_model(model)
    return import_onnx(proto, options.input_shapes, label), label


def optimize(graph: Graph, options: CompileOptions, stop_after: str | None = None) -> Graph:
    return run_pipeline(graph, options.opt_level, stop_after=stop_after, check=options.verify,
                        channels_last=options.layout == "auto")


def compile_model(model: "str | os.PathLike | bytes | onnx.ModelProto",
                  options: CompileOptions | None = None, **overrides: Any) -> CompiledModel:
    options = replace(options or CompileOptions(), **overrides) if overrides else \
        (options or CompileOptions())
    stages = _Stages()
    with stages("import"):
        graph, label = import_model(model, options)
    log.info("%s: %d nodes after import", label, len(graph.nodes))
    with stages("optimize"):
        graph = optimize(graph, options)
    return build(graph, options, stages)


def build(graph: Graph, options: CompileOptions, stages: "_Stages | None" = None) -> CompiledModel:
    """Lower an (optimized) graph, generate C, compile and load it."""
    stages = stages or _Stages()
    with stages("lower"):
        lowered = lower_graph(graph, threads=options.threads,
                              vector_bytes=options.target.vector_bytes)
        source = render_model(lowered, __version__)
    log.info("%d kernels, %d KiB of C; building with the C compiler", len(lowered.kernels),
             len(source) // 1024)
    with stages("cc"):
        flags = host_flags(options.target.march, options.opt_level, options.threads)
        library = build_shared_library(source, flags, options.cache_dir)
    weights = _aligned_empty(len(lowered.weights))
    weights[:] = np.frombuffer(lowered.weights, dtype=np.uint8)
    return CompiledModel(library, weights, manifest(lowered, stages.seconds), source)


def manifest(lowered: LoweredModel, seconds: dict[str, float]) -> dict[str, Any]:
    def info(values):
        return [TensorInfo(v.name, v.type.dtype.numpy, v.type.shape).to_json() for v in values]
    return {"format": FORMAT, "ember_version": __version__,
            "inputs": info(lowered.inputs), "outputs": info(lowered.outputs),
            "arena_bytes": lowered.arena_bytes, "weight_bytes": len(lowered.weights),
            "kernels": len(lowered.kernels),
            "compile_seconds": {k: round(v, 3) for k, v in seconds.items()}}


class _Stages:
    """Times the stages of a compilation (reported in the manifest and by `ember compile`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        log.info("%-8s %.2f s", name, self.seconds[name])
