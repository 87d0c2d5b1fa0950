"""The event loop the CLIs run on: uvloop where it is installed (``rtmp-relay[fast]``), else asyncio.

``RELAY_LOOP=asyncio`` forces the stdlib loop (benchmark comparisons, debugging);
``RELAY_LOOP=uvloop`` insists on uvloop and is a usage error where it is missing.
Unset, empty or ``auto``: uvloop if importable.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from types import ModuleType
from typing import Any, TypeVar

import click

T = TypeVar("T")

CHOICES = ("auto", "uvloop", "asyncio")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop RELAY_LOOP picks; a bad choice is a :class:`click.UsageError`."""
    try:
        uvloop = _uvloop()
    except click.UsageError:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    return uvloop.run(main) if uvloop is not None else asyncio.run(main)


def _uvloop() -> ModuleType | None:
    """The uvloop module when RELAY_LOOP allows it and it is installed (the extra pins >= 0.19: ``run``)."""
    choice = os.environ.get("RELAY_LOOP", "").strip().lower() or "auto"
    if choice not in CHOICES:
        raise click.UsageError(f"RELAY_LOOP={os.environ['RELAY_LOOP']!r} is not one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise click.UsageError(
                "RELAY_LOOP=uvloop but uvloop is not installed: "
                "pip install 'rtmp-relay[fast]', or unset RELAY_LOOP"
            ) from None
        return None
    return uvloop


def loop_name() -> str:
    """The running loop's package: "uvloop" or "asyncio"."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]
