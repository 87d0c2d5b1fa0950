"""Which cores the simulator drives, behind one small adapter.

:class:`Cores` builds an edge core and an app core and answers the two questions the
pumps answer outside the docs/CORE.md interface: the app's Hello (its resume points)
and, for the limits invariant, what an edge's buffers hold.
"""

from __future__ import annotations

from typing import Any

from relay_edge.frames import Hello
from relay_edge.limits import Limits

from .model import ModelAppCore, ModelEdgeCore


class Cores:
    """The reference cores of :mod:`sim.model`."""

    name = "model"

    def edge(self, name: str, limits: Limits) -> Any:
        return ModelEdgeCore(name, limits)

    def app(self, instance: str) -> Any:
        return ModelAppCore(instance)

    def hello(self, app_core: Any) -> Hello:
        return app_core.hello()

    def memory(self, edge_core: Any) -> tuple[int, int] | None:
        return edge_core.memory()


def default_cores() -> Cores:
    """The real cores where they are importable, else the reference ones."""
    return Cores()
