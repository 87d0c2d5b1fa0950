"""node-media-server (npm, pinned in ``scripts/node-media-server``) on a free port: the RTMP server most
Node apps embed, the local server ``--republish`` targets in the runbook's apps.

The same surface as :class:`tests.support.nginx.NginxRtmp` (``url``, ``start``/``stop``, ``log_text``,
``publishes``), so a test can take either. Quirks of 2.7.4 that tests allow for:

- It listens on every interface (no host option) and always starts its HTTP server too.
- A second publisher of a live name is refused ("Already has a stream", ``NetStream.Publish.BadName``).
- Players of a name nobody publishes wait; when the publisher leaves they get
  ``NetStream.Play.UnpublishNotify`` and EOF, so an ffmpeg reader exits then.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .net import LOOPBACK, free_port, port_is_open
from .process import stop_process

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "node-media-server"


def require_nms() -> None:
    """Fail with the fix if node or the pinned node-media-server is missing (``scripts/setup --test``)."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed (apt-get install nodejs npm), needed for node-media-server")
    done = subprocess.run([str(SCRIPT), "install"], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"scripts/node-media-server install failed:\n{done.stderr[-2000:]}")


class NodeMediaServer:
    """``scripts/node-media-server run`` as a child process, its log in ``workdir/nms.log``."""

    app = "live"

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.http_port = free_port()
        self.log_path = self.workdir / "nms.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        """``rtmp://127.0.0.1:PORT/live/NAME``."""
        return f"rtmp://{self.host}:{self.port}/{self.app}/{name}"

    def start(self, timeout: float = 20.0) -> NodeMediaServer:
        """Start it (installing the pinned version first if needed) and wait until RTMP accepts."""
        require_nms()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(SCRIPT), "run", str(self.port), str(self.http_port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not port_is_open(self.host, self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"node-media-server exited with {self.proc.returncode}:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"node-media-server not listening on {self.port} after {timeout} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (it exits at once, dropping its connections); SIGKILL if it hangs."""
        proc, self.proc = self.proc, None
        return stop_process(proc, signal.SIGTERM, timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def publishes(self, name: str) -> int:
        """Publishes of NAME the server accepted (its ``[rtmp publish] New stream`` lines)."""
        pattern = re.compile(rf"\[rtmp publish\] New stream\..*streamPath=/{self.app}/{re.escape(name)}\b")
        return len(pattern.findall(self.log_text()))

    def __enter__(self) -> NodeMediaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> NodeMediaServer:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
