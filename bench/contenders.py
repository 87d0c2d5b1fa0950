"""Each contender set up on loopback, from the publisher's RTMP port to the app's consumer process.

- ``floor``          (c) the publisher's RTMP straight into the app's decoder, no hop: the floor.
- ``relay-push``     rtmp-relay: ``relay-edge serve --upstream`` dials the app's WebSocket.
- ``relay-pull``     rtmp-relay: the app dials the edge's ``/link``.
- ``nginx-pyav``     (a) nginx-rtmp, the app pulling with PyAV's default options (the 5-second probe).
- ``nginx-pyav-tuned`` (a) the same, with MEASURED.md's probe options.
- ``websockify-pyav`` (b) a TCP-over-WebSocket tunnel (websockify) into PyAV's RTMP listen mode, tuned.
- ``nginx-players``  nginx-rtmp with lightweight RTMP players: the server baseline under load.

Every peer is a real program started here: relay-edge, nginx, websockify, PyAV/FFmpeg.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay_edge import keys
from tests.support.net import free_port
from tests.support.nginx import NginxRtmp

from .procs import BIN, running, spawn, wait_listening

SECRET = "bench-secret-0123456789-abcdef0123456789"  # the CLIs need at least 32 characters
Args = tuple[str, ...]  # extra consumer arguments, e.g. ("--window", "W0,W1")
EDGE_ENV = {
    "RELAY_SECRET": SECRET,
    "RELAY_LOG_LEVEL": "warning",
    # Every publisher comes from 127.0.0.1 here; the per-IP default (50) is for the field.
    "RELAY_LIMITS": "max_connections_per_ip=100000,max_streams=100000",
    # One app process here: a second link to it would change what relay-push measures (one link's
    # throughput and latency, comparable with earlier runs), not add capacity.
    "RELAY_LINKS": "1",
}

FIRST_FRAME = ["floor", "relay-push", "relay-pull", "nginx-pyav", "nginx-pyav-tuned", "websockify-pyav"]
LOAD = ["relay-push", "relay-pull", "nginx-players"]
DECODE = ["relay-push"]
THROUGHPUT = ["floor", "relay-push", "relay-pull", "nginx-players", "nginx-pyav-tuned", "websockify-pyav"]


class Consumer:
    """A consumer process and the JSON lines it printed, read by a thread."""

    def __init__(self, argv: list[str]) -> None:
        # Its stderr is kept (bounded by what one process prints) so a run that got nothing says why.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.proc = spawn(
            [sys.executable, "-m", "bench.consumer", *argv], stdout=subprocess.PIPE, stderr=self._stderr
        )
        self.lines: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:  # cut short (the consumer died writing it): kept as such, reading goes on
                self.lines.append({"unreadable": raw[:200].decode(errors="replace")})

    def wait(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.lines):
            if self.proc.poll() is not None and not self._thread.is_alive():
                raise RuntimeError(f"consumer exited with {self.proc.returncode} waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumer: no {what} after {timeout} s")
            time.sleep(0.005)

    def ready(self) -> None:
        self.wait(lambda lines: any("ready" in x for x in lines), 30, "ready")

    def settle(self, quiet: float = 0.6, timeout: float = 10.0) -> None:
        """Wait until the byte count (``count`` mode) has stopped growing for ``quiet`` seconds.

        A tunnel or a probing decoder may still be delivering the flood's tail when the publisher
        is done; under load that can be seconds. Gives up quietly after ``timeout``: the figures
        then show what arrived.
        """
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline and self.proc.poll() is None:
            counts = [x["bytes"] for x in self.lines if "bytes" in x]
            now = time.monotonic()
            if not counts or counts[-1] != last:
                last, since = (counts[-1] if counts else -1), now
            elif last > 0 and now - since >= quiet:
                return
            time.sleep(0.05)

    def finish(self, timeout: float = 30) -> list[dict[str, Any]]:
        """SIGTERM, then everything it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(30)  # a summary of 500 streams' latencies is a line of a few MB
        return self.lines

    def state(self) -> str:
        """For a run that went wrong: exit code, whether output is still being read, what came."""
        kinds = Counter(next(iter(line), "?") for line in self.lines)  # a count run prints thousands
        alive = "still reading" if self._thread.is_alive() else "read to the end"
        return f"exit code {self.proc.returncode}, stdout {alive}, lines {dict(kinds)}"

    def stderr_tail(self, size: int = 2000) -> str:
        """The end of what the consumer printed on stderr (its traceback, if it died)."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-size:]


@dataclass
class Setup:
    """Where the publisher goes, who consumes, and which middle processes to meter."""

    port: int
    consumer: Consumer
    app: str = "live"
    key: Callable[[str], str] = lambda name: name
    pids: dict[str, int] = field(default_factory=dict)


def _relay_key(name: str) -> str:
    return keys.mint_key(SECRET, name, now=time.time())


def _edge(rtmp: int, http: int, *upstream: str) -> subprocess.Popen[bytes]:
    argv = [str(BIN / "relay-edge"), "serve", "--rtmp", f"127.0.0.1:{rtmp}", "--http", f"127.0.0.1:{http}"]
    for url in upstream:
        argv += ["--upstream", url]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - the child holds it; read if it exits early
    proc = spawn(argv, EDGE_ENV, stderr=log)
    try:
        wait_listening(rtmp, proc)
        wait_listening(http, proc)
    except RuntimeError as exc:
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"{exc}; its stderr:\n{tail}") from None
    return proc


def _wait_link(http: int, timeout: float = 15) -> None:
    """Until the edge reports its link to the app up: a first frame must not wait for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = f"http://127.0.0.1:{http}/api/rtmp/status"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if json.load(r)["links"]:
                return
        time.sleep(0.02)
    raise TimeoutError("the edge's link to the app did not come up")


def _wait_players(nginx: NginxRtmp, count: int, timeout: float = 30) -> None:
    """Until nginx-rtmp logged ``count`` plays: nginx keeps idle players until the publisher comes."""
    deadline = time.monotonic() + timeout
    while nginx.log_text().count("play: name=") < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nginx: fewer than {count} players after {timeout} s")
        time.sleep(0.02)


def _consumer(kind: str, mode: str, *argv: str) -> Consumer:
    consumer = Consumer([kind, "--mode", mode, *argv])
    consumer.ready()
    return consumer


@contextlib.contextmanager
def floor(mode: str, names: list[str], extra: Args = ()) -> Iterator[Setup]:
    port = free_port()
    consumer = _consumer("floor", mode, "--port", str(port), *extra)
    with running(consumer.proc):
        wait_listening(port, consumer.proc)
        yield Setup(port, consumer)


@contextlib.contextmanager
def relay_push(mode: str, names: list[str], extra: Args = ()) -> Iterator[Setup]:
    app, rtmp, http = free_port(), free_port(), free_port()
    consumer = _consumer("relay", mode, "--port", str(app), "--secret", SECRET, *extra)
    with running(consumer.proc):
        wait_listening(app, consumer.proc)
        edge = _edge(rtmp, http, f"ws://127.0.0.1:{app}/relay")
        with running(edge):
            _wait_link(http)
            yield Setup(rtmp, consumer, key=_relay_key, pids={"edge": edge.pid})


@contextlib.contextmanager
def relay_pull(mode: str, names: list[str], extra: Args = ()) -> Iterator[Setup]:
    rtmp, http = free_port(), free_port()
    edge = _edge(rtmp, http)
    with running(edge):
        consumer = _consumer(
            "relay", mode, "--url", f"ws://127.0.0.1:{http}/link", "--secret", SECRET, *extra
        )
        with running(consumer.proc):
            _wait_link(http)
            yield Setup(rtmp, consumer, key=_relay_key, pids={"edge": edge.pid})


@contextlib.contextmanager
def _nginx() -> Iterator[NginxRtmp]:
    with tempfile.TemporaryDirectory() as tmp, NginxRtmp(Path(tmp), worker_connections=4096) as nginx:
        yield nginx


@contextlib.contextmanager
def nginx_pyav(mode: str, names: list[str], extra: Args = (), tuned: bool = False) -> Iterator[Setup]:
    with _nginx() as nginx:
        tune = ["--tuned"] if tuned else []
        consumer = _consumer("pyav", mode, "--url", nginx.url(names[0]), *tune, *extra)
        with running(consumer.proc):
            _wait_players(nginx, 1)
            yield Setup(nginx.port, consumer, pids={"nginx": nginx.pid or 0})


@contextlib.contextmanager
def nginx_pyav_tuned(mode: str, names: list[str], extra: Args = ()) -> Iterator[Setup]:
    with nginx_pyav(mode, names, extra, tuned=True) as setup:
        yield setup


@contextlib.contextmanager
def nginx_players(mode: str, names: list[str], extra: Args = ()) -> Iterator[Setup]:
    with _nginx() as nginx:
        consumer = _consumer("players", mode, "--port", str(nginx.port), "--names", ",".join(names), *extra)
        with running(consumer.proc):
            _wait_players(nginx, len(names))
            yield Setup(nginx.port, consumer, pids={"nginx": nginx.pid or 0})


@contextlib.contextmanager
def websockify_pyav(mode: str, names: list[str], extra: Args = ()) -> Iterator[Setup]:
    listen, ws, tcp = free_port(), free_port(), free_port()
    url = f"rtmp://127.0.0.1:{listen}/live/{names[0]}"
    consumer = _consumer("pyav", mode, "--url", url, "--tuned", "--listen", *extra)
    with running(consumer.proc):
        wait_listening(listen, consumer.proc)
        proxy = spawn(["websockify", f"127.0.0.1:{ws}", f"127.0.0.1:{listen}"])
        with running(proxy):
            wait_listening(ws, proxy)
            tunnel = spawn([sys.executable, "-m", "bench.tunnel_client", str(tcp), f"ws://127.0.0.1:{ws}/"])
            with running(tunnel):
                wait_listening(tcp, tunnel)
                yield Setup(tcp, consumer, pids={"websockify": proxy.pid, "tunnel": tunnel.pid})


CONTENDERS: dict[str, Callable[..., contextlib.AbstractContextManager[Setup]]] = {  # (mode, names, extra)
    "floor": floor,
    "relay-push": relay_push,
    "relay-pull": relay_pull,
    "nginx-pyav": nginx_pyav,
    "nginx-pyav-tuned": nginx_pyav_tuned,
    "websockify-pyav": websockify_pyav,
    "nginx-players": nginx_players,
}
