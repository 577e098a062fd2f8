"""An onnx.backend implementation, so the ONNX backend test suite runs on Ember.

    import ember.backend as backend
    rep = backend.prepare(model); outputs = rep.run([x])

Ember compiles static shapes. A model whose shapes depend on the *values* of some inputs
(a Reshape whose target shape is a graph input, TopK's k, Resize's scales ...) cannot compile
in prepare(); its representation then compiles at run(), specialized on the values of just
those inputs (bound as constants), and keeps one compiled model per distinct set of values.
Every other input stays a run-time input, and every node still runs as Ember's generated code.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from ember.errors import EmberError, UnsupportedError
from ember.options import CompileOptions
from ember.runtime.cpu import CompiledModel

#: how many rounds of binding run-time inputs to try before giving up
_MAX_SPECIALIZE_ROUNDS = 4


def _compile(model: onnx.ModelProto, options: CompileOptions) -> CompiledModel:
    from ember.driver import compile_model
    return compile_model(model, options)


def bind_inputs(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` where the named graph inputs are constants with the given values."""
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    kept = [vi for vi in bound.graph.input if vi.name not in values]
    del bound.graph.input[:]
    bound.graph.input.extend(kept)
    bound.graph.initializer.extend(numpy_helper.from_array(np.asarray(a), n)
                                   for n, a in values.items())
    return bound


class EmberRep(BackendRep):
    def __init__(self, model: onnx.ModelProto, options: CompileOptions,
                 compiled: CompiledModel | None, pending: UnsupportedError | None = None) -> None:
        self.proto = model
        self.options = options
        self.model = compiled
        self.pending = pending
        self._specialized: dict[bytes, CompiledModel] = {}

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        feeds = self._feeds(inputs)
        model = self.model or self._specialize(feeds)
        result = model.run({i.name: feeds[i.name] for i in model.inputs})
        return tuple(result[o.name] for o in model.outputs)

    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, dict):
            return {k: np.asarray(v) for k, v in inputs.items()}
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        init = {i.name for i in self.proto.graph.initializer}
        names = [vi.name for vi in self.proto.graph.input if vi.name not in init]
        return {n: np.asarray(a) for n, a in zip(names, inputs)}

    def _specialize(self, feeds: dict[str, np.ndarray]) -> CompiledModel:
        bound: dict[str, np.ndarray] = {}
        error = self.pending
        for _ in range(_MAX_SPECIALIZE_ROUNDS):
            new = [n for n in error.runtime_inputs if n in feeds and n not in bound]
            if not new:
                raise error
            bound.update({n: feeds[n] for n in new})
            key = b"".join(n.encode() + b"\0" + bound[n].tobytes() + str(bound[n].dtype).encode()
                           for n in sorted(bound))
            if key in self._specialized:
                return self._specialized[key]
            try:
                compiled = _compile(bind_inputs(self.proto, bound), self.options)
            except UnsupportedError as e:
                error = e
                continue
            if compiled.manifest.get("kernels", 1) == 0 and any(
                    vi.name not in bound for vi in self.proto.graph.input):
                raise EmberError("binding the shape inputs folded the whole model to constants; "
                                 "nothing would run as compiled code")
            self._specialized[key] = compiled
            return compiled
        raise error


class EmberBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> EmberRep:
        options = CompileOptions(**{k: v for k, v in kwargs.items()
                                    if k in CompileOptions.__dataclass_fields__})
        try:
            return EmberRep(model, options, _compile(model, options))
        except UnsupportedError as e:
            if not e.runtime_inputs:
                raise
            return EmberRep(model, options, None, pending=e)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info: Any = None, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run one node on numpy inputs by wrapping it in a one-node model."""
        arrays = [np.asarray(a) for a in inputs]
        names = [n for n in node.input if n]
        graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                                      a.shape) for n, a in zip(names, arrays)]
        graph_outputs = [onnx.ValueInfoProto(name=n) for n in node.output if n]
        opset = kwargs.pop("opset_version", onnx.defs.onnx_opset_version())
        model = helper.make_model(helper.make_graph([node], "run_node", graph_inputs, graph_outputs),
                                  opset_imports=[helper.make_opsetid(node.domain or "", opset)])
        return cls.run_model(model, dict(zip(names, arrays)), device, **kwargs)


prepare = EmberBackend.prepare
run_model = EmberBackend.run_model
run_node = EmberBackend.run_node
supports_device = EmberBackend.supports_device
is_compatible = EmberBackend.is_compatible
