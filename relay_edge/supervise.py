"""Keep long-lived tasks alive: log, count and restart what fails; tell /healthz when it keeps failing.

One place for what the edge's and the app's background tasks (dialers, the pull-mode
connect loop, the sweep) do with an exception nobody expected: log it at ERROR with its
traceback the first time per kind, count it in ``/metrics``
(``task_failures_total{task,kind}``), and restart the task with backoff. While a task
keeps failing (more than ``Limits.task_failures_unhealthy`` failures within
``Limits.task_failure_window`` seconds), or once one has died for good, :meth:`unhealthy`
says so and ``/healthz`` answers 503, so Fly, Render and systemd restart the process.

Expected failures (an app that is asleep, a 502 from a platform proxy) are handled where
they happen (``relay_edge.dial``) and never reach this module: they must not make an edge
that buffers streams look unhealthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

from .limits import Limits
from .metrics import Metrics

log = logging.getLogger("relay_edge.supervise")

# Redial and restart waits: 0.25 s doubling to 10 s. The first retry is quick (a blip), the
# cap keeps a cold-starting Render app (30-60 s) from waiting long after it is up.
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 10.0
# A task that ran this long before failing was healthy: its next restart starts the backoff over.
HEALTHY_RUN = 60.0

Rand = Callable[[float, float], float]
Sleep = Callable[[float], Awaitable[None]]


class Backoff:
    """Exponential backoff with jitter: ``first``, doubling to ``cap``, each wait scaled to 50-100 %.

    The jitter keeps many edges (or apps) that lost the same peer from retrying in step.
    ``rand`` is injectable (``random.uniform`` by default) so tests can pin the sequence.
    """

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX, rand: Rand = random.uniform):
        self.first = first
        self.cap = cap
        self._rand = rand
        self._delay = 0.0

    def next(self) -> float:
        """The next wait in seconds: the un-jittered delay doubles each call, up to ``cap``."""
        self._delay = min(max(self._delay * 2, self.first), self.cap)
        return self._delay * self._rand(0.5, 1.0)

    def reset(self) -> None:
        """Start over from ``first`` (after a success)."""
        self._delay = 0.0


class Supervisor:
    """Runs named long-lived tasks, restarting them after unexpected exceptions.

    ``spawn(name, factory)`` starts ``factory()`` in a task and starts it again (after a
    backoff wait) whenever it raises or returns; :meth:`run` does the same in the caller's
    task. :meth:`report` is for code that survives an exception by itself but wants it
    logged, counted and weighed for health the same way. Cancelling stops a task for good.
    """

    def __init__(
        self,
        metrics: Metrics,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rand: Rand = random.uniform,
    ) -> None:
        self._metrics = metrics
        self._limits = limits
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, deque[float]] = {}
        self._last: dict[str, str] = {}  # task -> its last failure, for /healthz
        self._logged: set[tuple[str, str]] = set()  # (task, kind) already logged with a traceback
        self._stopping = False

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Start ``factory()`` as the supervised task ``name`` (names are unique)."""
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"task {name!r} is already running")
        task = asyncio.create_task(self.run(name, factory), name=name)
        self._tasks[name] = task
        return task

    async def run(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run ``factory()`` until cancelled, restarting it with backoff whenever it fails or returns."""
        backoff = Backoff(rand=self._rand)
        while True:
            started = self._clock()
            try:
                await factory()
            except Exception as exc:
                self.report(name, exc)
            else:
                self.report(name, RuntimeError("returned, but it should run until cancelled"))
            if self._clock() - started > HEALTHY_RUN:
                backoff.reset()
            await self._sleep(backoff.next())

    def report(
        self, name: str, exc: BaseException, *, then: str = "restarting it", weigh: bool = True
    ) -> None:
        """Log (traceback once per task and kind), count and remember one unexpected failure.

        ``then`` says in the log what happens next. ``weigh=False`` for short-lived tasks (one
        per stream): logged and counted, but they never make the process unhealthy, which a
        restart would not cure.
        """
        kind = type(exc).__name__
        self._metrics.task_failures.labels(name, kind).inc()
        if weigh:
            self._failures.setdefault(name, deque()).append(self._clock())
            self._last[name] = f"{kind}: {exc}"
        if (name, kind) not in self._logged:
            self._logged.add((name, kind))
            log.error("task %s failed: %s: %s; %s", name, kind, exc, then, exc_info=exc)
        elif weigh:
            window = self._limits.task_failure_window
            log.warning("task %s failed again: %s: %s (%d times in the last %g s); %s",
                        name, kind, exc, self._recent(name), window, then)  # fmt: skip
        else:
            log.warning("task %s failed again: %s: %s; %s", name, kind, exc, then)

    def _recent(self, name: str) -> int:
        """Failures of ``name`` within the window (older ones are forgotten)."""
        times = self._failures.get(name)
        if not times:
            return 0
        horizon = self._clock() - self._limits.task_failure_window
        while times and times[0] < horizon:
            times.popleft()
        return len(times)

    def unhealthy(self) -> list[str]:
        """Why the process should be restarted: tasks failing too often, or dead. Empty when healthy."""
        limit, window = self._limits.task_failures_unhealthy, self._limits.task_failure_window
        problems = []
        for name in sorted(self._failures):
            count = self._recent(name)
            if count > limit:
                problems.append(
                    f"task {name} failed {count} times in the last {window:g} s "
                    f"(task_failures_unhealthy={limit}); last: {self._last[name]}"
                )
        if not self._stopping:
            for name, task in self._tasks.items():
                if task.done():
                    problems.append(f"task {name} is not running: {_outcome(task)}")
        return problems

    async def stop(self) -> None:
        """Cancel every task and wait for them; log any that had died on its own."""
        self._stopping = True
        tasks = dict(self._tasks)
        died = {name for name, task in tasks.items() if task.done()}
        for name in died:
            task = tasks[name]
            log.error("task %s had died: %s", name, _outcome(task), exc_info=_exception(task))
        for task in tasks.values():
            task.cancel()
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        for name, result in zip(tasks, results, strict=True):
            if name not in died and not isinstance(result, (asyncio.CancelledError, type(None))):
                log.error("task %s ended with %r while stopping", name, result)


def _exception(task: asyncio.Task[None]) -> BaseException | None:
    if task.cancelled():
        return None
    with contextlib.suppress(asyncio.InvalidStateError):
        return task.exception()
    return None


def _outcome(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = _exception(task)
    return f"{type(exc).__name__}: {exc}" if exc is not None else "returned"
