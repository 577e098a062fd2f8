"""The model every runtime of a benchmark loads, and its inputs, made once by the parent.

A zoo name is built and saved; an .onnx file is used as it is, unless some input dims are
symbolic: then --input-shape fixes them in a copy, so that every runtime sees static shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.errors import EmberError

if TYPE_CHECKING:
    import onnx

#: models past this many bytes of initializers are saved with their weights beside them
_EXTERNAL_DATA_BYTES = 1 << 30


class BenchError(EmberError):
    """A benchmark request that cannot be carried out (bad model, bad shapes, Ember failing)."""


@dataclass
class BenchModel:
    name: str
    #: "zoo" or "file"
    source: str
    #: the file every runtime loads
    path: Path
    feeds: dict[str, np.ndarray]

    def inputs_json(self) -> dict[str, Any]:
        return {n: {"dtype": a.dtype.name, "shape": list(a.shape)} for n, a in self.feeds.items()}


def prepare_model(spec: str, workdir: Path, input_shapes: dict[str, tuple[int, ...]] | None = None,
                  seed: int = 0) -> BenchModel:
    """Resolve `spec` (an .onnx path or an ember.zoo name) into a model file and seeded inputs."""
    import onnx

    from ember.frontend.onnx import load_model
    from ember.zoo import ZOO, random_inputs
    shapes = dict(input_shapes or {})
    path = Path(spec)
    if path.is_file():
        model, _ = load_model(path)
        name, source = path.stem, "file"
    elif spec in ZOO:
        model, name, source, path = ZOO[spec](), spec, "zoo", workdir / f"{spec}.onnx"
    elif path.exists() or path.suffix == ".onnx" or "/" in spec:
        raise BenchError(f"{spec!r} is not a model file" if path.exists()
                         else f"model file {spec!r} does not exist")
    else:
        raise BenchError(f"{spec!r} is neither a model file nor a zoo model name; the zoo has "
                         + ", ".join(ZOO))
    if fix_input_shapes(model, shapes, spec) or source == "zoo":
        path = workdir / f"{name}.onnx"
        big = sum(len(t.raw_data) for t in model.graph.initializer) > _EXTERNAL_DATA_BYTES
        onnx.save_model(model, path, save_as_external_data=big)
    return BenchModel(name, source, path, random_inputs(model, seed=seed))


def fix_input_shapes(model: "onnx.ModelProto", shapes: dict[str, tuple[int, ...]],
                     label: str) -> bool:
    """Give each graph input static dims, from `shapes` where named; True if any changed."""
    constants = {t.name for t in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in constants}
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise BenchError(f"--input-shape names no input of {label!r}: {', '.join(unknown)}; its "
                         f"inputs are {', '.join(inputs)}")
    changed = False
    for name, vi in inputs.items():
        if not vi.type.HasField("tensor_type"):
            raise BenchError(f"input {name!r} of {label!r} is not a tensor; benchmarks feed "
                             "tensors only")
        dims = vi.type.tensor_type.shape.dim
        if name in shapes:
            shape = shapes[name]
            if vi.type.tensor_type.HasField("shape") and len(dims) != len(shape):
                raise BenchError(f"--input-shape gives {name!r} {len(shape)} dims; the model "
                                 f"gives it {len(dims)}")
            vi.type.tensor_type.shape.Clear()
            for d in shape:
                vi.type.tensor_type.shape.dim.add().dim_value = d
            changed = True
        elif not vi.type.tensor_type.HasField("shape") or \
                any(not d.HasField("dim_value") for d in dims):
            shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            raise BenchError(f"input {name!r} of {label!r} has symbolic dims {shown}; give its "
                             f"shape with --input-shape {name}=DIMS")
    return changed
