"""Errors Ember raises for bad or unsupported input. Each names where the problem is."""
from __future__ import annotations


class EmberError(Exception):
    """A problem with the user's model or request, reported in one readable message.

    `node`, `op` and `model` say where: the node's name, its op type and the model path.
    """

    def __init__(self, message: str, *, node: str | None = None, op: str | None = None,
                 model: str | None = None, problems: list[str] | None = None) -> None:
        self.message = message
        self.node = node
        self.op = op
        self.model = model
        self.problems = list(problems or [])
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.model:
            where.append(f"model {self.model!r}")
        if self.node is not None:
            where.append(f"node {self.node!r}")
        if self.op:
            where.append(f"op {self.op}")
        head = f"{', '.join(where)}: {self.message}" if where else self.message
        if self.problems:
            head += "".join(f"\n  - {p}" for p in self.problems)
        return head

    def with_model(self, model: str) -> "EmberError":
        if self.model is None:
            self.model = model
            self.args = (self._render(),)
        return self


class ModelFormatError(EmberError):
    """The model file is not a well-formed model (truncated, not a protobuf, bad tensor data)."""


class GraphError(EmberError):
    """The graph is malformed: a cycle, a dangling input, duplicate names."""


class UnsupportedError(EmberError):
    """The model uses ops, dtypes or attributes Ember cannot compile; lists all of them.

    `runtime_inputs` names graph inputs feeding the failing nodes: when their values are known
    (the ONNX backend sees them at run time), binding them may make the model static.
    """
    runtime_inputs: list[str] = []


class ShapeError(EmberError):
    """Shapes or types do not fit an op, or a dimension is unbound, negative or too large."""


class ToolchainError(EmberError):
    """The C compiler is missing or failed on generated code."""


class RuntimeInputError(EmberError):
    """Inputs given to a compiled model do not match its signature."""
