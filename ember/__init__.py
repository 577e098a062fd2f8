"""Ember: compile trained neural networks into fast, self-contained C.

    m = ember.compile("model.onnx", input_shapes={"x": (1, 3, 224, 224)})
    y = m(x)                      # or m.run({"x": x}) -> {output name: array}
    m.save("out/"); m2 = ember.load("out/")
"""
from __future__ import annotations

__version__ = "0.1.0"

import os
from typing import TYPE_CHECKING, Any

from ember.errors import EmberError
from ember.options import CompileOptions
from ember.runtime import CompiledModel, load
from ember.targets import TARGETS as targets

if TYPE_CHECKING:
    import onnx


def compile(model: "str | os.PathLike | bytes | onnx.ModelProto", target: str = "host", *,
            input_shapes: dict[str, tuple[int, ...]] | None = None, threads: int = 1,
            opt_level: int = 3, options: CompileOptions | None = None, **kwargs: Any) -> CompiledModel:
    """Compile an ONNX model (path, bytes or ModelProto) for `target`; returns a callable model."""
    from ember.driver import compile_model
    if options is None:
        options = CompileOptions(target=target, input_shapes=input_shapes or {}, threads=threads,
                                 opt_level=opt_level, **kwargs)
    return compile_model(model, options)


__all__ = ["compile", "load", "CompileOptions", "CompiledModel", "EmberError", "targets",
           "__version__"]
