"""compile(): model -> graph -> passes -> kernels -> C -> shared library -> CompiledModel."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import onnx

from ember import __version__
from ember.frontend.onnx import import_onnx, load_model
from ember.graph.ir import Graph
from ember.lower.to_kernels import LoweredModel, lower_graph
from ember.options import CompileOptions
from ember.passes.pipeline import run_pipeline
from ember.render.c import render_model
from ember.runtime.cpu import FORMAT, CompiledModel, TensorInfo, _aligned_empty
from ember.runtime.toolchain import build_shared_library, host_flags


def import_model(model: "str | os.PathLike | bytes | onnx.ModelProto",
                 options: CompileOptions) -> tuple[Graph, str]:
    proto, label = load_model(model)
    return import_onnx(proto, options.input_shapes, label), label


def optimize(graph: Graph, options: CompileOptions, stop_after: str | None = None) -> Graph:
    return run_pipeline(graph, options.opt_level, stop_after=stop_after, check=options.verify)


def compile_model(model: "str | os.PathLike | bytes | onnx.ModelProto",
                  options: CompileOptions | None = None, **overrides: Any) -> CompiledModel:
    options = replace(options or CompileOptions(), **overrides) if overrides else \
        (options or CompileOptions())
    graph, _ = import_model(model, options)
    graph = optimize(graph, options)
    lowered = lower_graph(graph, threads=options.threads)
    source = render_model(lowered, __version__)
    flags = host_flags(options.target.march, options.opt_level, options.threads)
    library = build_shared_library(source, flags, options.cache_dir)
    weights = _aligned_empty(len(lowered.weights))
    weights[:] = np.frombuffer(lowered.weights, dtype=np.uint8)
    return CompiledModel(library, weights, manifest(lowered, graph), source)


def manifest(lowered: LoweredModel, graph: Graph) -> dict[str, Any]:
    def info(values):
        return [TensorInfo(v.name, v.type.dtype.numpy, v.type.shape).to_json() for v in values]
    return {"format": FORMAT, "ember_version": __version__,
            "inputs": info(lowered.inputs), "outputs": info(lowered.outputs),
            "arena_bytes": lowered.arena_bytes, "weight_bytes": len(lowered.weights),
            "kernels": len(lowered.kernels)}
