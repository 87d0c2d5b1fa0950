"""The dialing side's own framing of big messages (``WebsocketsTransport.send``), against a real
aiohttp WebSocket server: every message arrives whole and in order, library frames (pings) in
between included, and a closed connection still raises TransportClosed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
import websockets
from aiohttp import WSMsgType, web

from relay_edge.errors import TransportClosed
from relay_edge.transport import MASKED_WRITE_MIN, WebsocketsTransport
from tests.support.net import free_port

SIZES = [1, 125, 126, 65535, MASKED_WRITE_MIN, MASKED_WRITE_MIN + 1, 1024 * 1024 + 3, 8 * 1024 * 1024]


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[bytes], asyncio.Event]]:
    """A WebSocket server keeping every binary message; the event closes the connection."""
    received: list[bytes] = []
    close = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        reader = asyncio.ensure_future(ws.receive())
        closer = asyncio.ensure_future(close.wait())
        while True:
            done, _ = await asyncio.wait({reader, closer}, return_when=asyncio.FIRST_COMPLETED)
            if closer in done:
                reader.cancel()
                await ws.close()
                return ws
            msg = reader.result()
            if msg.type != WSMsgType.BINARY:
                closer.cancel()
                return ws
            received.append(msg.data)
            reader = asyncio.ensure_future(ws.receive())

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"ws://127.0.0.1:{port}/", received, close
    finally:
        await runner.cleanup()


async def test_big_messages_framed_here_arrive_whole_between_library_frames(
    server: tuple[str, list[bytes], asyncio.Event],
) -> None:
    url, received, _ = server
    messages = [os.urandom(n) for n in SIZES]
    async with websockets.connect(url, max_size=None, compression=None) as conn:
        transport = WebsocketsTransport(conn, "test")
        through_library: list[int] = []
        library_send = conn.send

        async def counting_send(data: bytes) -> None:
            through_library.append(len(data))
            await library_send(data)

        conn.send = counting_send  # type: ignore[method-assign]
        for message in messages:
            await transport.send(message)
            await conn.ping()  # a frame of the library's own, right after ours
        await transport.send(b"end")
        for _ in range(500):
            if len(received) == len(messages) + 1:
                break
            await asyncio.sleep(0.01)
    assert received == [*messages, b"end"]
    # Only the small ones took the library's framing (this websockets has drain(): the fast path).
    assert through_library == [n for n in SIZES if n < MASKED_WRITE_MIN] + [3]


async def test_a_closed_connection_still_raises_transport_closed(
    server: tuple[str, list[bytes], asyncio.Event],
) -> None:
    url, _, close = server
    async with websockets.connect(url, max_size=None, compression=None) as conn:
        transport = WebsocketsTransport(conn, "test")
        close.set()
        await asyncio.wait_for(conn.wait_closed(), 5)
        with pytest.raises(TransportClosed):
            await transport.send(os.urandom(MASKED_WRITE_MIN * 2))
