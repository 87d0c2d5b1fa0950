"""The dial loop and the task supervisor, on real sockets, under uvloop and asyncio.

- A front that closes right after accept, or answers 301 to https://elsewhere, no longer
  kills the dialer (issue #18): it logs, counts ``link_failures_total{reason}`` and redials;
  a 301 that only upgrades ws:// to wss:// on the same host and path is followed.
- Backoff (doubling, cap, jitter) with an injected sleep and random; restart close codes
  redial at once; an attempt raising something unexpected is retried, not fatal.
- The supervisor restarts a failing task, logs its traceback once per kind, counts it, and
  turns ``/healthz`` to 503 while it keeps failing; ``stop()`` notices a task that died.

Coroutines run on an explicit loop (``uvloop.run`` / ``asyncio.run``): the bug this file
guards against existed only under uvloop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web
from click.testing import CliRunner
from websockets.exceptions import ConnectionClosedError, InvalidMessage

from relay_client import cli as client_cli
from relay_client.receiver import Receiver
from relay_edge import cli as edge_cli
from relay_edge import dial, keys
from relay_edge.dial import classify, dial_forever, upgrade_target
from relay_edge.edge import Edge, EdgeConfig
from relay_edge.limits import DEFAULT_LIMITS
from relay_edge.metrics import Metrics
from relay_edge.supervise import Backoff, Supervisor
from relay_edge.transport import SUBPROTOCOL
from relay_edge.web import common_routes
from tests.support import media, publishers
from tests.support.faults import FaultFront
from tests.support.net import LOOPBACK, free_port
from tests.support.relay import SECRET, Relay, until, with_limits
from tests.test_auth_e2e import Certs, _tls_app, certs  # noqa: F401 - the module-scoped CA fixture

LOOPS = ["uvloop", "asyncio"]


def run_on(loop: str, main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` to completion on a fresh loop of the kind named."""
    return uvloop.run(main) if loop == "uvloop" else asyncio.run(main)


class App:
    """A real app (Receiver on aiohttp) behind a :class:`FaultFront`, and an edge dialing the front."""

    def __init__(self, tmp_path: Path, *, on_stream: Any = None, **edge: Any) -> None:
        self.receiver = Receiver(
            SECRET, out_dir=str(tmp_path), name="app", consume=frozenset(), on_stream=on_stream
        )
        self.edge_options = edge
        self.runner: web.AppRunner | None = None
        self.front: FaultFront | None = None
        self.edge: Edge | None = None

    async def start(self, fault: str | None = None, **front: Any) -> App:
        app = web.Application()
        app.router.add_get("/relay", self.receiver.handler)
        common_routes(app, self.receiver.status, self.receiver.metrics.render, health=self.receiver.unhealthy)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, LOOPBACK, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.front = await FaultFront(port, **front).start()
        if fault is not None:
            await self.front.begin(fault)
        upstream = self.edge_options.pop("upstream", f"ws://{LOOPBACK}:{self.front.port}/relay")
        self.edge = Edge(
            EdgeConfig(
                secret=SECRET,
                rtmp_listen=(LOOPBACK, 0),
                http_listen=(LOOPBACK, 0),
                upstreams=(upstream,),
                name="edge",
                **self.edge_options,
            )
        )
        await self.edge.start()
        return self

    def linked(self) -> bool:
        return bool(self.edge and self.edge.links and self.receiver.links)

    def failures(self, reason: str) -> float:
        assert self.edge is not None
        return self.edge.metrics.link_failures.labels(reason)._value.get()  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self.edge is not None:
            await self.edge.stop()
        if self.front is not None:
            await self.front.close()
        if self.runner is not None:
            await self.runner.cleanup()


# --- the field bug: one unlucky handshake ended the dialer for good ------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_dialer_survives_a_front_that_closes_at_once(loop: str, tmp_path: Path) -> None:
    async def main() -> tuple[float, float]:
        app = await App(tmp_path).start("close")
        try:
            assert app.front is not None and app.edge is not None
            await until(lambda: app.front.faulted >= 3, 15, "the edge stopped dialing the front")  # type: ignore[union-attr]
            app.front.end()
            await until(app.linked, 15, "no link after the front recovered")
            return app.failures("closed_in_handshake"), app.failures("unexpected")
        finally:
            await app.stop()

    closed, unexpected = run_on(loop, main())
    assert closed >= 3 and unexpected == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_dialer_reports_a_redirect_elsewhere_and_keeps_dialing(
    loop: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "relay_edge.dial")

    async def main() -> float:
        app = await App(tmp_path).start("redirect", redirect_to="https://app.example.invalid/relay?x=1")
        try:
            assert app.front is not None
            await until(lambda: app.failures("redirect") >= 3, 15, "the edge stopped dialing the front")
            app.front.end()
            await until(app.linked, 15, "no link after the front recovered")
            return app.failures("redirect")
        finally:
            await app.stop()

    assert run_on(loop, main()) >= 3
    said = [r for r in caplog.records if "answered 301" in r.getMessage()]
    # Once per kind at WARNING, with where to point the URL instead (without the query string).
    assert [r.levelno for r in said][:2] == [logging.WARNING, logging.DEBUG], [r.getMessage() for r in said]
    assert (
        said[0]
        .getMessage()
        .endswith(
            "failed: the app answered 301 to https://app.example.invalid/relay: "
            "use wss://app.example.invalid/relay; retrying"
        )
    ), said[0].getMessage()
    assert "following it" not in caplog.text
    assert "connected after" in caplog.text


@pytest.mark.parametrize("loop", LOOPS)
def test_redirect_to_wss_on_the_same_host_is_followed(
    loop: str,
    tmp_path: Path,
    certs: Certs,  # noqa: F811 - the fixture imported above
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plain front answering 301 to https://SAME-HOST/relay (Render's answer to ws://): the edge
    follows it to the TLS app, verifying its certificate, and stays there."""
    caplog.set_level(logging.INFO, "relay_edge.dial")

    async def main() -> tuple[int, float]:
        receiver = Receiver(SECRET, out_dir=str(tmp_path), name="tls-app", consume=frozenset())
        runner, tls_port = await _tls_app(receiver, certs)
        front = await FaultFront(free_port(), redirect_to=f"https://{LOOPBACK}:{tls_port}/relay").start()
        await front.begin("redirect")
        edge = Edge(
            EdgeConfig(
                secret=SECRET,
                rtmp_listen=(LOOPBACK, 0),
                http_listen=None,
                upstreams=(f"ws://{LOOPBACK}:{front.port}/relay",),
                ca_file=str(certs.ca),
            )
        )
        await edge.start()
        try:
            await until(lambda: bool(edge.links and receiver.links), 15, "no link to the TLS app")
            # A link drop redials the wss:// URL directly, not the redirecting front.
            await edge.links[0].transport.close(1000, "test")
            await until(lambda: bool(edge.links and receiver.links), 15, "no link again")
            return front.faulted, edge.metrics.link_failures.labels("redirect")._value.get()  # type: ignore[attr-defined]
        finally:
            await edge.stop()
            await front.close()
            await runner.cleanup()

    redirects, reported = run_on(loop, main())
    assert redirects == 1 and reported == 0
    assert f"following it, dialing wss://{LOOPBACK}:" in caplog.text


def test_upgrade_target_follows_only_ws_to_wss_on_the_same_host_and_path() -> None:
    url = "ws://app.onrender.com/relay?t=1"
    assert upgrade_target(url, "https://app.onrender.com/relay") == "wss://app.onrender.com/relay?t=1"
    assert upgrade_target(url, "wss://app.onrender.com:8443/relay") == "wss://app.onrender.com:8443/relay?t=1"
    assert upgrade_target(url, "https://evil.example/relay") is None  # another host
    assert upgrade_target(url, "https://app.onrender.com/other") is None  # another path
    assert upgrade_target(url, "http://app.onrender.com/relay") is None  # not an upgrade
    assert upgrade_target("wss://app.onrender.com/relay", "https://app.onrender.com/relay") is None
    assert upgrade_target(url, "/relay") is None  # relative: same scheme, no upgrade


# --- backoff, restart codes, unexpected exceptions -----------------------------------------------


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    top = Backoff(rand=lambda lo, hi: hi)
    assert [top.next() for _ in range(8)] == [0.25, 0.5, 1, 2, 4, 8, 10, 10]
    bottom = Backoff(rand=lambda lo, hi: lo)
    assert [bottom.next() for _ in range(3)] == [0.125, 0.25, 0.5]
    top.reset()
    assert top.next() == 0.25
    seen = []
    Backoff(rand=lambda lo, hi: seen.append((lo, hi)) or hi).next()
    assert seen == [(0.5, 1.0)]  # each wait is 50-100 % of the delay


class Recorder:
    """An injected ``sleep`` that records each wait and which attempt it followed; cancels after ``stop``."""

    def __init__(self, stop: int) -> None:
        self.stop = stop
        self.attempts = 0
        self.waits: list[tuple[int, float]] = []
        self.done = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.waits.append((self.attempts, seconds))
        await asyncio.sleep(0)


async def _dial_until(rec: Recorder, url: str, run_link: Any, **kw: Any) -> list[str]:
    reasons: list[str] = []

    def on_state(state: str) -> None:
        if state == "connecting":
            rec.attempts += 1
            if rec.attempts > rec.stop:
                rec.done.set()

    task = asyncio.create_task(
        dial_forever(
            url,
            secret=SECRET,
            role="edge",
            limits=with_limits(handshake_timeout=5.0),
            run_link=run_link,
            on_state=on_state,
            on_failure=reasons.append,
            sleep=rec.sleep,
            rand=lambda lo, hi: hi,
            **kw,
        )
    )
    await asyncio.wait_for(rec.done.wait(), 30)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return reasons


@pytest.mark.parametrize("loop", LOOPS)
def test_refused_dials_back_off_doubling_to_the_cap(loop: str) -> None:
    rec = Recorder(stop=9)

    async def never(*_: Any) -> None:
        raise AssertionError("nothing listens: no link can come up")

    reasons = run_on(loop, _dial_until(rec, f"ws://{LOOPBACK}:{free_port()}/relay", never))
    assert [s for _, s in rec.waits][:8] == [0.25, 0.5, 1, 2, 4, 8, 10, 10]
    assert set(reasons) == {"refused"} and len(reasons) >= 8


async def _closing_server(codes: list[int]) -> tuple[web.AppRunner, int]:
    """A WebSocket endpoint that accepts (with our subprotocol) and closes with the next code."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        await ws.close(code=codes.pop(0) if codes else 1000, message=b"bye")
        return ws

    app = web.Application()
    app.router.add_get("/relay", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.mark.parametrize("loop", LOOPS)
def test_restart_close_codes_redial_at_once(loop: str) -> None:
    """1012 and 1001 (deploy, restart) redial without waiting; 1000 backs off. Fails with RESTART_CODES=()."""
    rec = Recorder(stop=4)

    async def main() -> list[str]:
        runner, port = await _closing_server([1012, 1000, 1001, 1000])

        async def run_link(transport: Any, proof: str) -> None:
            await transport.recv()  # raises TransportClosed with the server's code

        try:
            return await _dial_until(rec, f"ws://{LOOPBACK}:{port}/relay", run_link)
        finally:
            await runner.cleanup()

    reasons = run_on(loop, main())
    assert reasons == ["closed"] * 4
    assert dial.RESTART_CODES == (1001, 1012)
    # Waits only after attempts 2 and 4 (closed with 1000); after 1 (1012) and 3 (1001) none.
    assert [after for after, _ in rec.waits] == [2, 4], rec.waits


@pytest.mark.parametrize("loop", LOOPS)
def test_an_attempt_raising_something_unexpected_is_reported_and_retried(loop: str) -> None:
    rec = Recorder(stop=3)
    errors: list[Exception] = []

    async def main() -> list[str]:
        runner, port = await _closing_server([])

        async def run_link(transport: Any, proof: str) -> None:
            raise KeyError("a bug in run_link")

        try:
            return await _dial_until(rec, f"ws://{LOOPBACK}:{port}/relay", run_link, on_error=errors.append)
        finally:
            await runner.cleanup()

    reasons = run_on(loop, main())
    assert reasons == ["unexpected"] * 3
    assert [type(e) for e in errors] == [KeyError] * 3
    assert [s for _, s in rec.waits] == [0.25, 0.5, 1]  # with backoff, not in a hot loop


@pytest.mark.parametrize("loop", LOOPS)
def test_pull_mode_accept_hook_raising_does_not_end_connect(
    loop: str, tmp_path: Path, tone_flv_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The accept hook raises once: that link ends (1011), connect() redials, the stream arrives whole."""
    caplog.set_level(logging.INFO)
    calls: list[str] = []

    def accept(stream: Any) -> None:
        calls.append(stream.info.name)
        if len(calls) == 1:
            raise ValueError("the accept hook's database is down")

    async def main() -> tuple[float, bool]:
        async with Relay(tmp_path, mode="pull", accept=accept, consume=frozenset()) as relay:
            async with await publishers.ffmpeg_copy(
                relay.url("hooked"), tone_flv_file, realtime=False
            ) as pub:
                await pub.wait_ok(30)
            await relay.ended("hooked")
            assert relay._dialer is not None and not relay._dialer.done()
            failures = relay.receiver.metrics.task_failures.labels("link (pull)", "ValueError")._value.get()  # type: ignore[attr-defined]
            return failures, relay._dialer.done()

    failures, done = run_on(loop, main())
    assert failures == 1 and not done and calls == ["hooked", "hooked"]
    assert media.audio_payloads(tmp_path / "hooked.flv") == media.audio_payloads(tone_flv_file)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None, [r.getMessage() for r in errors]
    assert "task link (pull) failed: ValueError: the accept hook's database is down" in errors[0].getMessage()


@pytest.mark.parametrize("loop", LOOPS)
def test_an_on_stream_callback_that_raises_is_logged_not_lost(
    loop: str, tmp_path: Path, tone_flv_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The app's on_stream raising used to vanish ("Task exception was never retrieved" at best)."""
    caplog.set_level(logging.WARNING)

    async def on_stream(stream: Any) -> None:
        raise RuntimeError("on_stream bug")

    async def main() -> tuple[float, list[str]]:
        app = await App(tmp_path, on_stream=on_stream).start()
        try:
            assert app.edge is not None
            await until(app.linked, 15, "no link")
            key = keys.mint_key(SECRET, "called", ttl=600, now=time.time())
            url = f"rtmp://{LOOPBACK}:{app.edge.rtmp_port}/live/{key}"
            async with await publishers.ffmpeg_copy(url, tone_flv_file, realtime=False) as pub:
                await pub.wait_ok(30)
            await until((tmp_path / "called.json").exists, 20, "the stream did not end")
            failures = app.receiver.metrics.task_failures.labels("stream task", "RuntimeError")
            return failures._value.get(), app.receiver.unhealthy()  # type: ignore[attr-defined]
        finally:
            await app.stop()

    failures, unhealthy = run_on(loop, main())
    assert failures == 1 and unhealthy == []  # counted, but a per-stream bug never restarts the app
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "task stream task failed: RuntimeError: on_stream bug; that stream's task ended"
    ]
    assert errors[0].exc_info is not None
    # The stream itself went on: every tag reached the files.
    assert media.audio_payloads(tmp_path / "called.flv") == media.audio_payloads(tone_flv_file)


# --- the supervisor and /healthz ----------------------------------------------------------------


class Poison:
    """A connection whose timeout check raises: a bug in the sweep's path, on demand."""

    def check_timeouts(self, now: float) -> None:
        raise RuntimeError("sweep bug")


async def _healthz(port: int) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://{LOOPBACK}:{port}/healthz") as r:
        return r.status, await r.text()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_failing_sweep_is_restarted_and_turns_healthz_503_while_it_keeps_failing(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "relay_edge.supervise")
    limits = with_limits(task_failures_unhealthy=2, task_failure_window=4.0)

    async def main() -> list[tuple[int, str]]:
        edge = Edge(
            EdgeConfig(secret=SECRET, rtmp_listen=(LOOPBACK, 0), http_listen=(LOOPBACK, 0), limits=limits)
        )
        await edge.start()
        seen = [await _healthz(edge.http_port)]
        try:
            edge.connections.add(Poison())  # type: ignore[arg-type]
            failures = edge.metrics.task_failures.labels("sweep", "RuntimeError")
            await until(lambda: failures._value.get() >= 3, 20, "the sweep was not restarted")  # type: ignore[attr-defined]
            seen.append(await _healthz(edge.http_port))
            edge.connections.clear()  # the bug goes away: the restarted sweep runs clean
            deadline = time.monotonic() + 20
            while (status := await _healthz(edge.http_port))[0] != 200:
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.1)
            seen.append(status)
        finally:
            await edge.stop()
        return seen

    before, failing, after = run_on(loop, main())
    assert before == (200, "ok\n") and after == (200, "ok\n")
    assert failing[0] == 503 and failing[1].startswith("unhealthy\ntask sweep failed "), failing
    assert "(task_failures_unhealthy=2); last: RuntimeError: sweep bug" in failing[1]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None  # traceback once per kind
    assert errors[0].getMessage() == "task sweep failed: RuntimeError: sweep bug; restarting it"
    assert any("task sweep failed again" in r.getMessage() for r in caplog.records)


class Doom(BaseException):
    """Not an Exception: gets past the supervisor, as only a bug in it could let something."""


def test_stop_notices_a_task_that_died(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[list[str], list[str]]:
        supervisor = Supervisor(Metrics("t", dict), DEFAULT_LIMITS)

        async def doomed() -> None:
            raise Doom("gone")

        async def fine() -> None:
            await asyncio.Event().wait()

        task = supervisor.spawn("doomed", doomed)
        supervisor.spawn("fine", fine)
        await asyncio.wait([task])
        problems = supervisor.unhealthy()
        await supervisor.stop()
        return problems, supervisor.unhealthy()

    problems, after_stop = asyncio.run(main())
    assert problems == ["task doomed is not running: Doom: gone"]
    assert after_stop == []  # stopping on purpose is not a health problem
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "task doomed had died: Doom: gone"
    ]


def test_supervisor_restarts_with_backoff_and_counts() -> None:
    waits: list[float] = []
    runs: list[int] = []

    async def main() -> float:
        metrics = Metrics("t", dict)
        done = asyncio.Event()

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 4:
                done.set()
            await asyncio.sleep(0)

        supervisor = Supervisor(metrics, DEFAULT_LIMITS, sleep=sleep, rand=lambda lo, hi: hi)

        async def flaky() -> None:
            runs.append(1)
            if len(runs) % 2:
                raise OSError("flaky")
            # Returning is a failure too: a long-lived task must run until cancelled.

        supervisor.spawn("flaky", flaky)
        await asyncio.wait_for(done.wait(), 10)
        await supervisor.stop()
        return (metrics.task_failures.labels("flaky", "OSError")._value.get()  # type: ignore[attr-defined]
                + metrics.task_failures.labels("flaky", "RuntimeError")._value.get())  # type: ignore[attr-defined]  # fmt: skip

    assert asyncio.run(main()) >= 4
    assert waits[:4] == [0.25, 0.5, 1, 2]


# --- CLI choices ---------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [edge_cli.main, client_cli.main], ids=["relay-edge", "relay-client"])
def test_log_choices_are_case_insensitive(group: Any) -> None:
    """RELAY_LOG_LEVEL=DEBUG and RELAY_LOG_FORMAT=JSON parse; the command then stops at a bad --limit."""
    env = {"RELAY_LOG_LEVEL": "DEBUG", "RELAY_LOG_FORMAT": "JSON", "RELAY_SECRET": SECRET}
    result = CliRunner().invoke(group, ["serve", "--limit", "bogus=1"], env=env)
    assert result.exit_code == 2 and "unknown limit 'bogus'" in result.output, result.output
    env["RELAY_LOG_LEVEL"] = "LOUD"
    result = CliRunner().invoke(group, ["serve", "--limit", "bogus=1"], env=env)
    assert result.exit_code == 2 and "log-level" in result.output, result.output


def test_a_close_during_the_opening_handshake_is_expected_under_either_loops_exception() -> None:
    """uvloop can raise ConnectionClosedError where asyncio raises InvalidMessage (issue #18): both are
    the same event, a front closing before the upgrade is answered, not a bug."""
    limits = DEFAULT_LIMITS
    for exc in (ConnectionClosedError(None, None), InvalidMessage("did not receive a valid HTTP response")):
        assert isinstance(exc, dial.EXPECTED)
        kind, text = classify(exc, limits)
        assert kind == "closed_in_handshake" and "closed before the WebSocket upgrade" in text
    assert classify(TimeoutError(), limits)[0] == "timeout"
    assert classify(ConnectionRefusedError(111, "Connection refused"), limits)[0] == "refused"


@pytest.mark.parametrize("loop", LOOPS)
def test_pull_mode_hands_a_restart_close_to_the_dialer(loop: str, caplog: pytest.LogCaptureFixture) -> None:
    """An edge closing with 1012 (restart) reaches Receiver.connect's dialer, which redials at once;
    any other close is the receiver's to log, and the dialer backs off."""
    caplog.set_level(logging.INFO)

    async def main() -> tuple[int, dict[str, float]]:
        codes = [1012, 1000]
        runner, port = await _closing_server(codes)
        receiver = Receiver(SECRET, consume=frozenset(), limits=with_limits(handshake_timeout=5.0))
        task = asyncio.create_task(receiver.connect(f"ws://{LOOPBACK}:{port}/relay"))
        try:
            await until(lambda: not codes and "link closed (1000" in caplog.text, 15, "no second close")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await runner.cleanup()
        samples = receiver.metrics.link_failures._metrics  # type: ignore[attr-defined]
        return len(codes), {k[0]: v._value.get() for k, v in samples.items()}

    left, reasons = run_on(loop, main())
    assert left == 0 and reasons.get("closed") == 2, reasons
    dialer = [r.getMessage() for r in caplog.records if r.name == "relay_edge.dial"]
    receiver = [r.getMessage() for r in caplog.records if r.name == "relay_client"]
    assert any("closed: link closed (1012: bye)" in m for m in dialer), dialer  # the dialer saw the restart
    assert any("ended: link closed (1000: bye)" in m for m in receiver), receiver
    assert not any("1012" in m for m in receiver)
