"""Waiting on a condition instead of sleeping: poll it, with a deadline, and say what was awaited."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

POLL_S = 0.01  # 10 ms: well under any condition's timescale here, cheap next to a loopback round trip


async def until(predicate: Callable[[], object], timeout: float, message: str | None = None) -> None:
    """Return once ``predicate()`` is true; raise :class:`TimeoutError` after ``timeout`` seconds.

    The error names what was awaited (``message``, else the predicate's source) and how long.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for: {message or describe(predicate)}")
        await asyncio.sleep(POLL_S)


def describe(predicate: Callable[[], object]) -> str:
    """The predicate's source line (a lambda reads as the condition itself), else its name."""
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return getattr(predicate, "__qualname__", repr(predicate))
