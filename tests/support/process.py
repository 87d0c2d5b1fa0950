"""Stopping the server processes tests start (nginx, node-media-server)."""

from __future__ import annotations

import signal
import subprocess


def stop_process(
    proc: subprocess.Popen[bytes] | None, signum: int = signal.SIGTERM, timeout: float = 5.0
) -> int | None:
    """Send SIGNUM to PROC, SIGKILL it if it is still running after TIMEOUT s; return its exit code.

    ``None`` for no process; a process that already exited just gives its code.
    """
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
