"""The event loop the CLIs run on: uvloop where it is installed (``rtmp-relay[fast]``), else asyncio.

``RELAY_LOOP=asyncio`` forces the stdlib loop (benchmark comparisons, debugging);
``RELAY_LOOP=uvloop`` insists on uvloop and is a usage error where it is missing.
Unset, empty or ``auto``: uvloop if importable.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

T = TypeVar("T")

CHOICES = ("auto", "uvloop", "asyncio")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop RELAY_LOOP picks; a bad choice is a :class:`click.UsageError`."""
    choice = os.environ.get("RELAY_LOOP", "").strip().lower() or "auto"
    uvloop: Any = None
    try:
        if choice not in CHOICES:
            raise click.UsageError(
                f"RELAY_LOOP={os.environ['RELAY_LOOP']!r} is not one of {', '.join(CHOICES)}"
            )
        if choice != "asyncio":
            try:
                import uvloop
            except ImportError:
                if choice == "uvloop":
                    raise click.UsageError(
                        "RELAY_LOOP=uvloop but uvloop is not installed: "
                        "pip install 'rtmp-relay[fast]', or unset RELAY_LOOP"
                    ) from None
    except click.UsageError:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    if uvloop is None:
        return asyncio.run(main)
    if hasattr(uvloop, "run"):  # uvloop >= 0.18
        return uvloop.run(main)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    policy = asyncio.get_event_loop_policy()  # 3.10 with an old uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        return asyncio.run(main)
    finally:
        asyncio.set_event_loop_policy(policy)


def loop_name() -> str:
    """The running loop's package: "uvloop" or "asyncio"."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]
