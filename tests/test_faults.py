"""The link under real front-end faults: the real CLIs, on uvloop and on asyncio (issue #18).

A :class:`~tests.support.faults.FaultFront` sits between the edge and the app (push: in front of
``relay-client serve``; pull: in front of the edge's ``/link``, which ``relay-client connect``
dials). While ``ffmpeg -re -c copy`` publishes a tone, the front breaks the live link and, for
:data:`FAULT_SECONDS`, misbehaves in one way (closes right after accept, 502/503, RST, stalls,
trickles, redirects to https://elsewhere, cuts mid-frame, or black-holes the traffic); then it
forwards honestly. Every case asserts: ffmpeg exits 0 and the edge saw no publisher reconnect;
the app's ``NAME.flv`` holds the source's audio tags exactly once, byte for byte, with no gap;
the fault hit at least one connection and the link came back; neither process logged an ERROR.

One pair of CLI processes per (mode, loop) serves all its faults in turn (a new stream each),
so the matrix costs seconds per case, not a process start-up. The CLIs get small liveness
limits (:data:`LIMITS`) so that a stall or a half-open link resolves within seconds.
docs/RESUME.md ("Faults between the edge and the app") has the resulting table.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay_edge import keys
from tests.support import media, publishers
from tests.support.faults import FAULTS, FaultFront
from tests.support.net import LOOPBACK, free_port
from tests.support.relay import SECRET
from tests.test_deploy import BIN, Service, wait_http

pytestmark = pytest.mark.slow

FAULT_SECONDS = 2.0
STREAM_SECONDS = 4
# ping_timeout: a half-open link is noticed in ~2 s, not 15; handshake_timeout: a stalled dial
# gives up in 2 s, not 10. Loopback answers in microseconds, so neither trips on a healthy link.
LIMITS = "ping_interval=0.5,ping_timeout=2,handshake_timeout=2"
PULL_FAULTS = ("close", "http502", "rst", "stall", "halfopen")


class FrontThread:
    """A :class:`FaultFront` on its own event loop in a thread, driven from synchronous tests."""

    def __init__(self, target_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fault-front", daemon=True)
        self.thread.start()
        self.front = FaultFront(target_port)
        self._call(self.front.start())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    @property
    def port(self) -> int:
        return self.front.port

    @property
    def faulted(self) -> int:
        return self.front.faulted

    def begin(self, fault: str) -> None:
        self._call(self.front.begin(fault))

    def end(self) -> None:
        async def end() -> None:
            self.front.end()

        self._call(end())

    def close(self) -> None:
        self._call(self.front.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.read().decode()


def metrics(url: str) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value}."""
    out = {}
    for line in http_get(url).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_for(what: str, predicate: Any, timeout: float, *logs: Service) -> Any:
    """Poll ``predicate`` until it is truthy; fail naming ``what`` (with the logs) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            said = "\n".join(f"=== {s.name} ===\n{s.output()[-4000:]}" for s in logs)
            raise AssertionError(f"{what}: not within {timeout} s\n{said}")
        time.sleep(0.05)


class Pair:
    """``relay-edge serve`` and ``relay-client serve|connect`` on RELAY_LOOP=``loop``, a front between."""

    def __init__(self, tmp: Path, mode: str, loop: str) -> None:
        self.mode, self.loop, self.out = mode, loop, tmp / "out"
        self.rtmp_port, self.edge_http, app_port = free_port(), free_port(), free_port()
        env = {"RELAY_SECRET": SECRET, "RELAY_LOOP": loop, "RELAY_LIMITS": LIMITS}
        if mode == "push":
            self.front = FrontThread(app_port)
            app_argv = ["serve", "--listen", f"{LOOPBACK}:{app_port}"]
            edge_extra = ["--upstream", f"ws://{LOOPBACK}:{self.front.port}/relay"]
        else:
            self.front = FrontThread(self.edge_http)
            app_argv = [
                "connect",
                f"ws://{LOOPBACK}:{self.front.port}/link",
                "--http",
                f"{LOOPBACK}:{app_port}",
            ]
            edge_extra = []
        self.app_http = app_port
        self.edge = Service(
            "edge",
            [str(BIN / "relay-edge"), "serve", "--rtmp", f"{LOOPBACK}:{self.rtmp_port}",
             "--http", f"{LOOPBACK}:{self.edge_http}", *edge_extra],
            env,
            tmp / "edge.log",
        )  # fmt: skip
        self.app = Service(
            "app", [str(BIN / "relay-client"), *app_argv, "--out", str(self.out)], env, tmp / "app.log"
        )
        wait_http(f"http://{LOOPBACK}:{self.edge_http}/healthz", 30, self.edge)
        wait_http(f"http://{LOOPBACK}:{self.app_http}/healthz", 30, self.app)
        wait_for("first link", self.linked, 30, self.edge, self.app)
        assert f"event loop: {loop}" in self.edge.output() and f"event loop: {loop}" in self.app.output()

    def status(self) -> dict[str, Any]:
        return json.loads(http_get(f"http://{LOOPBACK}:{self.edge_http}/api/rtmp/status"))

    def linked(self) -> bool:
        return bool(self.status()["links"])

    def link_age(self) -> float:
        """Seconds the edge's link has been up (0 with none)."""
        links = self.status()["links"]
        return time.time() - links[0]["since"] if links else 0.0

    def edge_metrics(self) -> dict[str, float]:
        return metrics(f"http://{LOOPBACK}:{self.edge_http}/metrics")

    def dialer_metrics(self) -> dict[str, float]:
        """The side that dials through the front: the edge in push mode, the app in pull mode."""
        return (
            self.edge_metrics()
            if self.mode == "push"
            else metrics(f"http://{LOOPBACK}:{self.app_http}/metrics")
        )

    def close(self) -> None:
        try:
            for service in (self.app, self.edge):
                code, _ = service.terminate(20)
                assert code == 0, service.output()[-4000:]
        finally:
            self.app.stop()
            self.edge.stop()
            self.front.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return media.tone_flv(
        tmp_path_factory.mktemp("media") / "tone.flv", seconds=STREAM_SECONDS, frequency=440
    )


@pytest.fixture(scope="module")
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    mode, loop = request.param
    publishers.require(publishers.FFMPEG)
    p = Pair(tmp_path_factory.mktemp(f"{mode}-{loop}"), mode, loop)
    try:
        yield p
    finally:
        p.close()


def failure_reasons(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, int]:
    """``link_failures_total`` increases by reason between two scrapes."""
    out = {}
    for name, value in after.items():
        m = re.fullmatch(rf'{prefix}_link_failures_total\{{reason="([^"]+)"\}}', name)
        if m and value > before.get(name, 0):
            out[m.group(1)] = int(value - before.get(name, 0))
    return out


PUSH = [("push", "uvloop"), ("push", "asyncio")]
PULL = [("pull", "uvloop"), ("pull", "asyncio")]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("pair", PUSH, ids=["-".join(p) for p in PUSH], indirect=True)
def test_push_stream_survives_front_fault(pair: Pair, fault: str, source: Path) -> None:
    stream_survives_front_fault(pair, fault, source)


@pytest.mark.parametrize("fault", PULL_FAULTS)
@pytest.mark.parametrize("pair", PULL, ids=["-".join(p) for p in PULL], indirect=True)
def test_pull_stream_survives_front_fault(pair: Pair, fault: str, source: Path) -> None:
    stream_survives_front_fault(pair, fault, source)


def stream_survives_front_fault(pair: Pair, fault: str, source: Path) -> None:
    name = f"{fault}"
    logs = {s.name: len(s.output()) for s in (pair.edge, pair.app)}
    # A sound link before the fault: up for longer than ping_interval, so the redial after the cut
    # starts from the first backoff step (a shorter-lived link would keep the previous case's).
    wait_for("link up for 1 s before the fault", lambda: pair.link_age() >= 1.0, 30, pair.edge, pair.app)
    dialer_before, edge_before = pair.dialer_metrics(), pair.edge_metrics()
    faulted_before = pair.front.faulted
    key = keys.mint_key(SECRET, name, ttl=600, now=time.time())
    argv = [*publishers.FFMPEG_BASE, "-re", "-i", str(source), "-c", "copy", "-f", "flv",
            f"rtmp://{LOOPBACK}:{pair.rtmp_port}/live/{key}"]  # fmt: skip
    ffmpeg = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:

        def acked() -> bool:
            return any(s["name"] == name and s["acked_seq"] > 5 for s in pair.status()["streams"])

        wait_for("the stream flowing to the app", acked, 15, pair.edge, pair.app)
        pair.front.begin(fault)
        t_fault = time.monotonic()
        time.sleep(FAULT_SECONDS)  # the scenario itself: how long the front misbehaves
        pair.front.end()
        relink = wait_for("link back after the fault", pair.linked, 30, pair.edge, pair.app)
        relink_s = time.monotonic() - t_fault
        output, _ = ffmpeg.communicate(timeout=30)
    finally:
        if ffmpeg.poll() is None:
            ffmpeg.kill()
            ffmpeg.wait()
    assert relink
    assert ffmpeg.returncode == 0, output.decode(errors="replace")
    done = pair.out / f"{name}.json"
    wait_for(f"{name}.json at the app (stream ended)", done.exists, 30, pair.edge, pair.app)
    stats = json.loads(done.read_text())
    dialer_after, edge_after = pair.dialer_metrics(), pair.edge_metrics()
    reasons = failure_reasons(
        dialer_before, dialer_after, "relay_edge" if pair.mode == "push" else "relay_client"
    )
    new_logs = {s.name: s.output()[logs[s.name] :] for s in (pair.edge, pair.app)}
    row = (
        f"{pair.mode} {pair.loop} {fault}: relinked {relink_s:.1f} s after the fault began; "
        f"{pair.front.faulted - faulted_before} connections faulted; link_failures {reasons}; "
        f"resumes {stats['resumes']}"
    )
    print(f"\nFAULT {row}")

    sent = media.audio_payloads(source)
    received = media.audio_payloads(pair.out / f"{name}.flv")
    assert received == sent, f"{len(received)} audio tags at the app, {len(sent)} sent; {row}"
    assert stats["gaps"] == 0 and stats["streams"] == 1, stats
    # The live link, and at least one redial during the fault (a half-open link is only noticed
    # after ping_timeout, when the fault may be over).
    hit = pair.front.faulted - faulted_before
    assert hit >= (1 if fault == "halfopen" else 2), f"the fault hit {hit} connections; {row}"
    key_connects = "relay_edge_link_connects_total"
    assert edge_after[key_connects] > edge_before[key_connects], "the link never came back"
    assert edge_after["relay_edge_publisher_reconnects_total"] == 0  # the publisher noticed nothing
    for side, text in new_logs.items():
        assert " ERROR " not in text and "Traceback" not in text, f"{side} logged an error:\n{text[-4000:]}"
    dialer_log = new_logs["edge" if pair.mode == "push" else "app"]
    if fault == "redirect":
        assert "the app answered 301 to https://app.example.invalid/relay" in dialer_log, dialer_log[-3000:]
