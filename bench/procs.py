"""Processes for the benchmark: start and stop them, and read their CPU time and memory from /proc.

CPU is counted for a whole process tree (websockify forks a child per connection), as
% of one core over a window; RSS is the tree's resident memory at the end of the window.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.process import stop_process

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str]:
    # The command name may hold spaces and parentheses: split after the last ")".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``'s tree (children that exited and were reaped included)."""
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            f = _stat(p)
            total += sum(int(x) for x in f[11:15]) / CLK_TCK  # utime stime cutime cstime
    return total


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            total += int(_stat(p)[21]) * PAGE
    return total / 2**20


class CpuMeter:
    """CPU % of one core used by some process trees between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._before = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, dict[str, float]]:
        elapsed = time.monotonic() - self._t0
        return {
            k: {"cpu_pct": 100 * (cpu_seconds(p) - self._before[k]) / elapsed, "rss_mib": rss_mib(p)}
            for k, p in self.pids.items()
        }


def spawn(argv: Sequence[str], env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[bytes]:
    """Start a peer with its output discarded unless ``stdout``/``stderr`` are given."""
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(
        list(argv), env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, cwd=ROOT, **kw
    )  # type: ignore[call-overload]


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Send SIG, then SIGKILL if the peer still runs after TIMEOUT s."""
    stop_process(proc, sig, timeout)


@contextlib.contextmanager
def running(*procs: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in reversed(procs):
            stop(proc)


def is_listening(port: int) -> bool:
    """True if a socket listens on TCP ``port`` (read from /proc, without connecting to it).

    FFmpeg's RTMP listen mode takes the first connection it gets, so a probe connect would use it up.
    """
    want = f":{port:04X} "
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and (fields[1] + " ").endswith(want):
                    return True
    return False


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not is_listening(port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on port {port} after {timeout} s")
        time.sleep(0.01)
