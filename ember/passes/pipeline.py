"""The pass pipeline: one ordered list of named passes, read top to bottom."""
from __future__ import annotations

from ember.errors import EmberError
from ember.graph.ir import Graph
from ember.graph.verify import verify
from ember.passes.base import Pass
from ember.passes.eliminate_dead import EliminateDead


def default_pipeline(opt_level: int = 3) -> list[Pass]:
    passes: list[Pass] = [EliminateDead()]
    return passes


def pass_names(opt_level: int = 3) -> list[str]:
    return [p.name for p in default_pipeline(opt_level)]


def run_pipeline(graph: Graph, opt_level: int = 3, stop_after: str | None = None,
                 check: bool = False) -> Graph:
    """Run the pipeline; `stop_after` names the last pass to run; `check` verifies after each."""
    passes = default_pipeline(opt_level)
    if stop_after is not None and stop_after not in {p.name for p in passes}:
        raise EmberError(f"unknown pass {stop_after!r}; passes: {', '.join(p.name for p in passes)}")
    for p in passes:
        graph = p.run(graph)
        if check:
            verify(graph, after=p.name)
        if p.name == stop_after:
            break
    return graph
