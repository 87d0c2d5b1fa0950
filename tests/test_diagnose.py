"""``relay-client test --edge … --app …`` names the step that fails, against local stand-ins.

Each case breaks one thing a deployed pair can get wrong: an edge host that
doesn't resolve, a closed port, something that isn't RTMP on the port, a wrong
secret, an edge not linked to the app, an app that receives but doesn't decode.
The stand-ins are the real edge and receiver on loopback; the publisher is the
real PyAV child process.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from relay_client.diagnose import Target, diagnose
from relay_client.receiver import Receiver
from relay_edge.edge import Edge, EdgeConfig
from relay_edge.web import common_routes, derived_status_token
from tests.support.net import free_port
from tests.support.relay import SECRET, until

pytestmark = pytest.mark.slow


@asynccontextmanager
async def app_standin(
    *, decode: bool, out_dir: Path | None = None, token: str | None = None
) -> AsyncIterator[tuple[Receiver, str]]:
    """``relay-client serve`` in this process: ``decode=False`` is serve without --out (no decoding)."""
    receiver = Receiver(
        SECRET,
        consume=frozenset(),
        out_dir=str(out_dir) if decode and out_dir else None,
        name="standin-app",
    )
    app = web.Application()
    app.router.add_get("/relay", receiver.handler)
    common_routes(app, receiver.status, receiver.metrics.render, token)  # token: as on 0.0.0.0:$PORT
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def edge_standin(upstream: str | None = None, secret: str = SECRET) -> AsyncIterator[Edge]:
    edge = Edge(
        EdgeConfig(
            secret=secret,
            rtmp_listen=("127.0.0.1", 0),
            http_listen=None,
            upstreams=(f"{upstream.replace('http://', 'ws://')}/relay",) if upstream else (),
            name="standin-edge",
        )
    )
    await edge.start()
    try:
        yield edge
    finally:
        await edge.stop()


def quiet(_: str) -> None:
    pass


def test_target_parsing() -> None:
    t = Target.parse("rtmp://edge.example.com:1936", "wss://app.onrender.com/relay")
    assert (t.host, t.port, t.app_base) == ("edge.example.com", 1936, "https://app.onrender.com")
    assert Target.parse("edge.example.com", "app.onrender.com").port == 1935
    with pytest.raises(ValueError, match="rtmp://HOST:PORT"):
        Target.parse("http://edge:1935", "https://app")


async def test_edge_down_is_dns() -> None:
    # .invalid never resolves (RFC 6761).
    report = await diagnose("rtmp://edge.invalid:1935", "https://app.invalid", SECRET, say=quiet)
    assert report.failed_step == "dns"
    assert [s.name for s in report.steps] == ["dns"]
    assert "does not resolve" in report.steps[0].detail
    assert "RTMP_HOST" in (report.fix or "")


async def test_port_closed_is_edge_tcp() -> None:
    port = free_port()
    report = await diagnose(f"rtmp://127.0.0.1:{port}", "http://127.0.0.1:9", SECRET, say=quiet)
    assert report.failed_step == "edge tcp"
    assert "refused" in report.steps[-1].detail
    assert "ufw allow 1935/tcp" in (report.fix or "")
    assert report.as_dict()["steps"][0] == {**report.as_dict()["steps"][0], "name": "dns", "ok": True}


async def test_http_server_on_the_port_is_rtmp_handshake() -> None:
    async with app_standin(decode=False) as (_, app_url):
        port = int(app_url.rsplit(":", 1)[1])
        report = await diagnose(f"rtmp://127.0.0.1:{port}", app_url, SECRET, connect_timeout=3, say=quiet)
    assert report.failed_step == "rtmp handshake"
    assert "something other than the edge" in (report.fix or "")


async def test_wrong_secret_is_stream_key() -> None:
    async with app_standin(decode=False) as (_, app_url), edge_standin() as edge:
        report = await diagnose(f"rtmp://127.0.0.1:{edge.rtmp_port}", app_url, "not-the-secret", say=quiet)
        assert edge.metrics.auth_failures.labels("stream_key")._value.get() == 1
    assert report.failed_step == "stream key"
    assert [s.ok for s in report.steps] == [True, True, True, False]
    assert "NetStream.Publish.Unauthorized" in report.steps[-1].detail
    assert "RELAY_SECRET" in (report.fix or "")


async def test_app_not_receiving() -> None:
    # The edge is up and the app is up, but the edge dials no one (RELAY_UPSTREAM unset or wrong).
    async with app_standin(decode=True) as (_, app_url), edge_standin(upstream=None) as edge:
        report = await diagnose(f"rtmp://127.0.0.1:{edge.rtmp_port}", app_url, SECRET, timeout=2, say=quiet)
    assert report.failed_step == "app receives stream", report.as_dict()
    assert [s.name for s in report.steps if s.ok] == [
        "dns",
        "edge tcp",
        "rtmp handshake",
        "stream key",
        "app reachable",
        "publish",
    ]
    assert "RELAY_UPSTREAM" in (report.fix or "")
    assert f"{app_url.replace('http://', 'ws://')}/relay" in (report.fix or "")


@pytest.mark.parametrize(
    ("token", "reachable"), [(derived_status_token(SECRET), True), ("another-token", False)]
)
async def test_the_status_token_of_a_deployed_app(token: str, reachable: bool) -> None:
    """A deployed app's status needs the token: diagnose sends the one derived from --secret."""
    async with app_standin(decode=True, token=token) as (_, app_url), edge_standin(upstream=None) as edge:
        report = await diagnose(f"rtmp://127.0.0.1:{edge.rtmp_port}", app_url, SECRET, timeout=2, say=quiet)
    app_step = next(s for s in report.steps if s.name == "app reachable")
    assert app_step.ok == reachable, report.as_dict()
    if not reachable:
        assert "answered 401" in app_step.detail and "RELAY_STATUS_TOKEN" in (report.fix or "")


async def test_app_receives_but_decodes_nothing(tmp_path: Path) -> None:
    async with app_standin(decode=False) as (receiver, app_url), edge_standin(app_url) as edge:
        await until(lambda: bool(edge.links and receiver.links), 5.0, "no link")
        report = await diagnose(f"rtmp://127.0.0.1:{edge.rtmp_port}", app_url, SECRET, timeout=2, say=quiet)
    assert report.failed_step == "decoded audio", report.as_dict()
    assert "decodes no audio (0 samples)" in report.steps[-1].detail
    assert "RELAY_OUT" in (report.fix or "")


async def test_healthy_pair_passes_through_the_cli(tmp_path: Path) -> None:
    """The real command, ``--json``, against an edge pushing to a decoding app: every step passes."""
    async with (
        app_standin(decode=True, out_dir=tmp_path) as (receiver, app_url),
        edge_standin(app_url) as edge,
    ):
        await until(lambda: bool(edge.links and receiver.links), 5.0, "no link")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from relay_client.cli import main; main()",
            "test",
            "--edge",
            f"rtmp://127.0.0.1:{edge.rtmp_port}",
            "--app",
            app_url,
            "--timeout",
            "20",
            "--json",
            env={"RELAY_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    report = json.loads(out)
    assert proc.returncode == 0, (report, err.decode()[-2000:])
    assert report["ok"] is True and report["failed_step"] is None
    assert [s["name"] for s in report["steps"]] == [
        "dns",
        "edge tcp",
        "rtmp handshake",
        "stream key",
        "app reachable",
        "publish",
        "app receives stream",
        "decoded audio",
    ]
    assert "dBFS" in report["steps"][-1]["detail"]
    progress = err.decode()
    assert "✓ decoded audio" in progress  # progress goes to stderr with --json
