"""The graph IR: typed values with static shapes, nodes, and the graph that holds them.

A Value is produced by at most one node (or is a graph input or a constant). Nodes are kept
in topological order; every walk is iterative, never recursive, since real models are
thousands of nodes deep.
"""
from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ember.graph.dtypes import DType


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


_value_ids = itertools.count()


class Value:
    """A tensor flowing through the graph. `const` holds its data when known at compile time."""

    def __init__(self, type: TensorType, name: str = "", const: np.ndarray | None = None) -> None:
        self.id = next(_value_ids)
        self.type = type
        self.name = name            # from the model: untrusted text, never put into C unescaped
        self.const = const
        self.producer: Node | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not None

    def __repr__(self) -> str:
        return f"Value(%{self.id} {self.type}{' const' if self.is_const else ''})"


class Node:
    """One operation. `inputs` may hold None for an omitted optional input."""

    def __init__(self, op: str, inputs: list[Value | None], outputs: list[Value],
                 attrs: dict[str, Any] | None = None, name: str = "", opset: int = 0,
                 domain: str = "") -> None:
        self.op = op
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs or {})
        self.name = name
        self.opset = opset
        self.domain = domain
        for v in outputs:
            v.producer = self

    def input(self, i: int) -> Value | None:
        """The i-th input, or None when omitted or past the end."""
        return self.inputs[i] if i < len(self.inputs) else None

    def input_types(self) -> list[TensorType | None]:
        return [v.type if v is not None else None for v in self.inputs]

    def const_input(self, i: int) -> np.ndarray | None:
        v = self.input(i)
        return None if v is None else v.const

    def label(self) -> str:
        return self.name or f"{self.op}#{self.outputs[0].id if self.outputs else '?'}"

    def __repr__(self) -> str:
        return f"Node({self.op} {self.name!r})"


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    name: str = ""

    def values(self) -> list[Value]:
        """Every value in the graph, each once: inputs, then node inputs/outputs in order."""
        seen: dict[int, Value] = {}
        for v in self.inputs:
            seen.setdefault(v.id, v)
        for n in self.nodes:
            for v in itertools.chain(n.inputs, n.outputs):
                if v is not None:
                    seen.setdefault(v.id, v)
        for v in self.outputs:
            seen.setdefault(v.id, v)
        return list(seen.values())

    def consumers(self) -> dict[int, list[Node]]:
        """Map value id -> nodes reading it."""
        users: dict[int, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    users.setdefault(v.id, []).append(n)
        return users

    def replace_uses(self, old: Value, new: Value) -> None:
        """Make every reader of `old` (including graph outputs) read `new`."""
        for n in self.nodes:
            n.inputs = [new if v is old else v for v in n.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]


def const_value(array: np.ndarray, dtype: DType, name: str = "") -> Value:
    """A compile-time constant value holding `array` converted to `dtype`."""
    # (np.ascontiguousarray would turn a 0-d scalar into shape (1,).)
    data = np.array(array, dtype=dtype.numpy, order="C")
    return Value(TensorType(dtype, tuple(int(d) for d in data.shape)), name, data)


def topological_order(nodes: Iterable[Node], available: Iterable[Value]) -> list[Node]:
    """Kahn's algorithm, keeping the given order where it is valid.

    Raises ValueError carrying a node that can never run (on a cycle or reading a dangling value).
    """
    nodes = list(nodes)
    ready_values = {v.id for v in available}
    waiting: dict[int, list[Node]] = {}
    missing: dict[int, int] = {}
    queue: list[int] = []   # heap of positions of runnable nodes
    position = {id(n): i for i, n in enumerate(nodes)}
    for n in nodes:
        need = {v.id for v in n.inputs if v is not None and not v.is_const and v.id not in ready_values}
        missing[id(n)] = len(need)
        for vid in need:
            waiting.setdefault(vid, []).append(n)
        if not need:
            heapq.heappush(queue, position[id(n)])
    order: list[Node] = []
    while queue:
        n = nodes[heapq.heappop(queue)]
        order.append(n)
        for v in n.outputs:
            for m in waiting.pop(v.id, []):
                missing[id(m)] -= 1
                if missing[id(m)] == 0:
                    heapq.heappush(queue, position[id(m)])
    if len(order) != len(nodes):
        stuck = next(n for n in nodes if missing[id(n)] > 0)
        raise ValueError(stuck)
    return order
