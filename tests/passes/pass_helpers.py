"""Helpers for pass tests: build graphs from ONNX nodes, run one pass, print before/after."""
from __future__ import annotations

import copy
import textwrap

import numpy as np
import onnx
import pytest

from conftest import make_model
from ember.frontend.onnx import import_onnx
from ember.graph.ir import Graph
from ember.graph.printer import print_graph
from ember.graph.verify import verify
from ember.ops.registry import get_op
from ember.passes.base import Pass


def needs_ops(*ops: str) -> None:
    """Skip the calling test until every op in `ops` is registered (written by other helpers)."""
    missing = [op for op in ops if get_op(op) is None]
    if missing:
        pytest.skip(f"op(s) not registered yet: {', '.join(missing)}")


def graph_of(nodes: list[onnx.NodeProto], inputs: dict[str, tuple[int, ...]],
             outputs: list[str], initializers: dict[str, np.ndarray] | None = None,
             opset: int = 17) -> Graph:
    """Import a model made of `nodes`; float32 graph inputs with the given shapes."""
    feeds = {name: np.zeros(shape, np.float32) for name, shape in inputs.items()}
    return import_onnx(make_model(nodes, feeds, outputs, initializers, opset))


def golden(text: str) -> str:
    """A golden graph text written indented inside a test."""
    return textwrap.dedent(text).lstrip("\n")


def check_types(graph: Graph) -> None:
    """Every node's outputs still have the types its op infers (fused operands set aside;
    ops not registered, in graphs built by hand, are not checked)."""
    for node in graph.nodes:
        if get_op(node.op) is None:
            continue
        epilogue = node.attrs.get("epilogue")
        plain = copy.copy(node)
        if epilogue is not None:      # the node as it was before the fusion
            plain.inputs = node.inputs[:len(node.inputs) - (len(epilogue.input_types) - 1)]
            plain.attrs = {k: v for k, v in node.attrs.items() if k != "epilogue"}
        inferred = get_op(node.op).infer(plain)
        assert [v.type for v in node.outputs] == inferred, f"{node.op} {node.name}"


def apply(p: Pass, graph: Graph) -> str:
    """Run pass `p` (verifying the graph and its types after it); the graph's text after."""
    graph = p.run(graph)
    verify(graph, after=p.name)
    check_types(graph)
    return print_graph(graph)


def before_after(p: Pass, graph: Graph) -> tuple[str, str]:
    before = print_graph(graph)
    return before, apply(p, graph)


@pytest.fixture(autouse=True)
def verify_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compilations in these tests verify the graph after every pass (CompileOptions.verify)."""
    monkeypatch.setenv("EMBER_VERIFY", "1")
