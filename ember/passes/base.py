"""Pass: a named Graph -> Graph transformation that leaves the graph valid."""
from __future__ import annotations

from dataclasses import dataclass

from ember.graph.ir import Graph


@dataclass(frozen=True)
class Pass:
    """Subclasses set `name` (kebab-case) and implement run(); parameters are dataclass fields."""
    name = "pass"

    def run(self, graph: Graph) -> Graph:
        raise NotImplementedError
