"""One seed, many seeds: the entry points behind the CLI and the tests."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .check import Violation
from .cores import Cores, default_cores
from .world import World, random_params


@dataclass(frozen=True, slots=True)
class Outcome:
    seed: int
    violation: Violation | None
    tags: int
    time: float  # simulated seconds at the violation or the end


def run_seed(
    seed: int, cores: Cores | None = None, trace: Callable[[str], None] | None = None, wide: bool = False
) -> Outcome:
    """Run one seed's world to its quiet end; the first violation stops it."""
    params = random_params(random.Random(f"params-{seed}"), wide)
    world = World(seed, params, cores or default_cores(), trace=trace)
    if trace is not None:
        trace(f"seed {seed} cores {world.cores.name} {params!r}")
    try:
        world.run()
    except Violation as exc:
        if trace is not None:
            trace(f"VIOLATION {exc}")
        return Outcome(seed, exc, world.check.tags, world.sched.now)
    return Outcome(seed, None, world.check.tags, world.sched.now)


def run_seeds(start: int, count: int, cores: Cores | None = None, wide: bool = False) -> Outcome | None:
    """The first failing seed's outcome, or None if all ``count`` seeds from ``start`` pass."""
    for seed in range(start, start + count):
        outcome = run_seed(seed, cores, wide=wide)
        if outcome.violation is not None:
            return outcome
    return None
