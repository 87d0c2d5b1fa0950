"""The HTTP listeners against slow and curious clients, over real sockets.

- half a request head is closed at ``http_header_timeout``; a body that never finishes gets 408 at
  ``http_body_timeout``; everyone else is served meanwhile;
- past ``http_max_connections`` open, a new connection is closed at accept; once one closes, the
  next is served;
- on a listener bound to a non-loopback address, status and metrics need the bearer token (or the
  dashboard's cookie), ``/healthz`` stays open; ``RELAY_STATUS_TOKEN`` overrides the derived token;
  ``relay-edge status-token`` prints what the listener asks for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from relay_edge.auth import PROOF_HEADER, link_target, make_proof
from relay_edge.edge import Edge, EdgeConfig
from relay_edge.limits import Limits
from relay_edge.web import STATUS_COOKIE, derived_status_token
from relay_edge.wire import SUBPROTOCOL
from tests.support.net import reset_on_close
from tests.support.raw import wait_closed
from tests.support.relay import SECRET, with_limits
from tests.support.wait import until

LIMITS = with_limits(http_header_timeout=1.0, http_body_timeout=1.0)
SLACK = 5.0


@asynccontextmanager
async def edge_on(host: str, limits: Limits = LIMITS) -> AsyncIterator[Edge]:
    config = EdgeConfig(secret=SECRET, rtmp_listen=("127.0.0.1", 0), http_listen=(host, 0), limits=limits)
    edge = Edge(config)
    await edge.start()
    try:
        yield edge
    finally:
        await edge.stop(grace=0)


async def test_half_a_request_head_is_closed_and_others_are_served() -> None:
    async with edge_on("127.0.0.1") as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.http_port)
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n")  # no blank line: the head never ends
        assert await get(f"http://127.0.0.1:{edge.http_port}/healthz") == (200, "ok\n")  # served meanwhile
        _, _, data = await wait_closed(reader, LIMITS.http_header_timeout + SLACK)
        writer.close()
        assert data == b""  # closed without an answer
        assert time.monotonic() - started >= LIMITS.http_header_timeout - 0.05


async def test_a_body_that_never_finishes_gets_408() -> None:
    async with edge_on("127.0.0.1") as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.http_port)
        started = time.monotonic()
        writer.write(
            b"POST /api/rtmp/session HTTP/1.1\r\nHost: edge\r\nContent-Length: 100\r\n\r\n0123456789"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), LIMITS.http_body_timeout + SLACK)
        assert head.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started >= LIMITS.http_body_timeout - 0.05
        writer.close()


async def test_connections_past_the_cap_are_closed_at_accept() -> None:
    limits = with_limits(http_max_connections=3, http_header_timeout=30.0)
    async with edge_on("127.0.0.1", limits) as edge:
        held = [await asyncio.open_connection("127.0.0.1", edge.http_port) for _ in range(3)]
        for _, writer in held:  # half a head each: they hold their slots, as a slow attacker would
            writer.write(b"GET /healthz HTTP/1.1\r\n")
        # Accepted in order: by the time this one is, the three before it hold every slot.
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.http_port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
        _, _, data = await wait_closed(reader, SLACK)
        writer.close()
        assert data == b""  # refused: closed before any answer
        held.pop()[1].transport.abort()  # one slot frees: a client is served again
        assert await get_when_served(f"http://127.0.0.1:{edge.http_port}/healthz") == (200, "ok\n")
        for _, writer in held:
            writer.transport.abort()


async def get_when_served(url: str, timeout: float = SLACK) -> tuple[int, str]:
    """``get(url)``, retried while the listener refuses the connection (it frees a slot soon)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await get(url)
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


async def get(url: str, **headers: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


async def test_a_public_listener_asks_for_the_status_token() -> None:
    token = derived_status_token(SECRET)
    async with edge_on("0.0.0.0") as edge:
        base = f"http://127.0.0.1:{edge.http_port}"
        assert await get(f"{base}/healthz") == (200, "ok\n")
        for path in ("/api/rtmp/status", "/metrics"):
            assert (await get(f"{base}{path}"))[0] == 401
            assert (await get(f"{base}{path}", Authorization="Bearer not-the-token"))[0] == 401
            status, body = await get(f"{base}{path}", Authorization=f"Bearer {token}")
            assert status == 200 and body
        # The dashboard page (no data) is open; it trades the token for an HttpOnly cookie once.
        assert (await get(f"{base}/"))[0] == 200
        session = f"{base}/api/rtmp/session"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # unsafe: an IP
            async with http.post(session, headers={"Authorization": "Bearer nope"}) as resp:
                assert resp.status == 401
            async with http.post(session, headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 204
                cookie = resp.cookies[STATUS_COOKIE]
                assert cookie["httponly"] and cookie["samesite"] == "Strict"
            async with http.get(f"{base}/api/rtmp/status") as resp:  # the cookie alone now
                assert resp.status == 200 and "streams" in await resp.json()


async def test_loopback_listeners_need_no_token() -> None:
    async with edge_on("127.0.0.1") as edge:
        assert (await get(f"http://127.0.0.1:{edge.http_port}/api/rtmp/status"))[0] == 200


async def test_relay_status_token_overrides_the_derived_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_STATUS_TOKEN", "operator-chosen-token-0123456789")
    async with edge_on("0.0.0.0") as edge:
        url = f"http://127.0.0.1:{edge.http_port}/metrics"
        assert (await get(url, Authorization="Bearer operator-chosen-token-0123456789"))[0] == 200
        assert (await get(url, Authorization=f"Bearer {derived_status_token(SECRET)}"))[0] == 401


@pytest.mark.parametrize("command", ["relay-edge", "relay-client"])
def test_status_token_command_prints_what_the_listener_asks_for(command: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RELAY_STATUS_TOKEN"} | {"RELAY_SECRET": SECRET}
    exe = str(Path(sys.executable).parent / command)
    out = subprocess.run([exe, "status-token"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == derived_status_token(SECRET)
    assert SECRET not in out.stdout + out.stderr


async def test_a_dialer_gone_mid_upgrade_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """A link dialer that resets right after its upgrade request (a front closing, a redial racing
    its timeout) ends that link quietly: no ERROR line, and the listener goes on serving."""
    async with edge_on("127.0.0.1") as edge:
        url = f"ws://127.0.0.1:{edge.http_port}/link"
        for _ in range(20):
            proof = make_proof(SECRET, "client", time.time(), target=link_target(url))
            _, writer = await asyncio.open_connection("127.0.0.1", edge.http_port)
            writer.write(
                f"GET /link HTTP/1.1\r\nHost: 127.0.0.1:{edge.http_port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
                f"{PROOF_HEADER}: {proof}\r\n\r\n".encode()
            )
            await writer.drain()
            reset_on_close(writer)
            writer.close()
        assert await get_when_served(f"http://127.0.0.1:{edge.http_port}/healthz") == (200, "ok\n")
        (site,) = edge._http_runner.sites  # type: ignore[union-attr]
        await until(lambda: site.connections.open == 0, SLACK, "every reset connection handled and closed")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
