"""The seeded scheduler: one ``random.Random(seed)`` and an event heap ordered by (time, seq)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any


class Scheduler:
    """Runs callbacks in simulated time; equal times run in the order they were scheduled."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` at simulated time ``when`` (never before now)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, fn, args))

    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def run(self, until: float) -> None:
        """Run every event up to ``until`` (the invariants are checked inside each step)."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, fn, args = heapq.heappop(heap)
            self.now = when
            fn(*args)
        self.now = max(self.now, until)
