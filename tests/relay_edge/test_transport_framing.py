"""Our own framing of link messages, against real peers: the dialing side's every message
(``WebsocketsTransport.send``) to an aiohttp server, and the accepting side's every message
(``AiohttpTransport.send``) to a websockets client; and both sides' ``send_parts``, which
writes a big message's parts without joining them. Every message arrives whole and in order,
library frames (pings) in between included; a stopped reader stops the sender; and a closed
connection still raises TransportClosed."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import WSMsgType, web
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.frames import apply_mask

from relay_edge.errors import TransportClosed
from relay_edge.transport import (
    PARTS_WRITE_MIN,
    AiohttpTransport,
    WebsocketsTransport,
    _masked,
)
from tests.support.net import free_port

SIZES = [1, 125, 126, 65535, 65536, 65537, 1024 * 1024 + 3, 8 * 1024 * 1024]


def count_sends(conn: Any, method: str) -> list[int]:
    """Wrap ``conn``'s library send method: the sizes of the messages the library framed."""
    sizes: list[int] = []
    library_send = getattr(conn, method)

    async def counting_send(data: bytes) -> None:
        sizes.append(len(data))
        await library_send(data)

    setattr(conn, method, counting_send)
    return sizes


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


async def test_dialed_link_frames_every_size_itself_between_library_frames(
    server: tuple[str, list[bytes], asyncio.Event],
) -> None:
    url, received, _ = server
    messages = [os.urandom(n) for n in SIZES]
    async with websockets.connect(url, max_size=None, compression=None) as conn:
        transport = WebsocketsTransport(conn, "test")
        through_library = count_sends(conn, "send")
        for message in messages:
            await transport.send(message)
            await conn.ping()  # a frame of the library's own, right after ours
        await transport.send(b"end")
        for _ in range(500):
            if len(received) == len(messages) + 1:
                break
            await asyncio.sleep(0.01)
    assert received == [*messages, b"end"]
    # None took the library's framing (this websockets has drain(): the fast path).
    assert through_library == []


async def test_a_closed_connection_still_raises_transport_closed(
    server: tuple[str, list[bytes], asyncio.Event],
) -> None:
    url, _, close = server
    async with websockets.connect(url, max_size=None, compression=None) as conn:
        transport = WebsocketsTransport(conn, "test")
        close.set()
        await asyncio.wait_for(conn.wait_closed(), 5)
        with pytest.raises(TransportClosed):
            await transport.send(os.urandom(128 * 1024))


# --- the accepting side: AiohttpTransport frames unmasked messages itself ------------------------


Accepted = asyncio.Queue[tuple[web.WebSocketResponse, asyncio.Event]]


@pytest.fixture
async def accepting() -> AsyncIterator[tuple[str, Accepted]]:
    """An aiohttp server handing each accepted WebSocket to the test, with the event that closes it."""
    accepted: Accepted = asyncio.Queue()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=True)  # deflate only where the client offers it
        await ws.prepare(request)
        finished = asyncio.Event()
        await accepted.put((ws, finished))
        await finished.wait()
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"ws://127.0.0.1:{port}/", accepted
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def accepted_link(
    accepting: tuple[str, Accepted], **connect: Any
) -> AsyncIterator[tuple[ClientConnection, web.WebSocketResponse, asyncio.Event, AiohttpTransport]]:
    """A websockets client connected to the server: the client, the server's WebSocket, the event
    that closes it, and the AiohttpTransport over it."""
    url, accepted = accepting
    async with websockets.connect(url, max_size=None, **{"compression": None, **connect}) as conn:
        ws, finished = await accepted.get()
        yield conn, ws, finished, AiohttpTransport(ws, "test")


async def test_accepted_link_frames_every_size_itself_between_library_frames(
    accepting: tuple[str, Accepted],
) -> None:
    messages = [os.urandom(n) for n in [0, *SIZES]]
    async with accepted_link(accepting) as (conn, ws, finished, transport):
        assert transport._framed  # unmasked, uncompressed: the fast path, or this test proves nothing
        library = count_sends(ws, "send_bytes")
        for message in messages:
            await transport.send(message)
            await ws.ping(b"p")  # a frame of the library's own, right after ours
        got = [await asyncio.wait_for(conn.recv(), 10) for _ in messages]
        finished.set()
    assert got == messages
    assert library == []


async def test_accepted_link_waits_for_a_reader_that_stopped(
    accepting: tuple[str, Accepted],
) -> None:
    """Flow control: a peer that reads nothing stops the sender; the write buffer stays bounded."""
    async with accepted_link(accepting) as (conn, ws, finished, transport):
        conn.transport.pause_reading()
        message = os.urandom(1024 * 1024)
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while True:
                await transport.send(message)
                sent += 1

        task = asyncio.ensure_future(flood())
        await asyncio.sleep(1.0)
        stalled_at = sent
        buffered = ws._writer.transport.get_write_buffer_size()  # type: ignore[union-attr]
        await asyncio.sleep(0.5)
        assert sent == stalled_at  # waiting in the drain, not queueing more
        assert stalled_at < 64  # the socket buffers and aiohttp's high-water mark, not 1 s of a flood
        assert buffered <= 2 * len(message) + 64 * 1024
        task.cancel()  # in its drain: its last message is written, the one after never is
        await asyncio.gather(task, return_exceptions=True)
        conn.transport.resume_reading()
        got = [await asyncio.wait_for(conn.recv(), 10) for _ in range(stalled_at + 1)]
        assert got == [message] * (stalled_at + 1)
        finished.set()


async def test_masked_or_compressed_links_keep_the_library_framing(
    accepting: tuple[str, Accepted],
) -> None:
    url, accepted = accepting
    async with accepted_link(accepting, compression="deflate") as (conn, _, finished, compressed):
        assert not compressed._framed
        await compressed.send(b"x" * 70000)
        assert await asyncio.wait_for(conn.recv(), 10) == b"x" * 70000
        finished.set()
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as client:
        masked = AiohttpTransport(client, "test")  # a client masks: the library frames it
        assert not masked._framed
        await masked.send(b"y" * 70000)
        ws, finished = await accepted.get()
        assert (await asyncio.wait_for(ws.receive(), 10)).data == b"y" * 70000
        finished.set()


async def test_accepted_link_closed_raises_transport_closed(
    accepting: tuple[str, Accepted],
) -> None:
    async with accepted_link(accepting) as (conn, _, finished, transport):
        finished.set()
        await conn.close()
        with pytest.raises(TransportClosed):
            for _ in range(100):  # the close reaches the server within a few sends
                await transport.send(os.urandom(100_000))
                await asyncio.sleep(0.01)


# --- send_parts: a message handed over in pieces, written without joining them first ----------

# Odd part sizes, so each part starts at another offset in the 4-byte mask key.
PART_LAYOUTS = [
    [3],
    [1, 2, 3],
    [5, PARTS_WRITE_MIN, 7],
    [PARTS_WRITE_MIN - 1, 1],
    [1, 3, 70_001, 2, 5, 65_536, 13, 1024 * 1024 + 1],
    [4] * 20_000,
]


def layouts() -> list[list[bytes]]:
    return [[os.urandom(n) for n in sizes] for sizes in PART_LAYOUTS]


@given(
    parts=st.lists(st.binary(max_size=40), max_size=12),
    key=st.binary(min_size=4, max_size=4),
)
def test_masking_part_by_part_equals_masking_the_whole(parts: list[bytes], key: bytes) -> None:
    assert b"".join(_masked(parts, key)) == apply_mask(b"".join(parts), key)


async def test_dialing_side_sends_parts_as_one_message(
    server: tuple[str, list[bytes], asyncio.Event],
) -> None:
    url, received, _ = server
    messages = layouts()
    async with websockets.connect(url, max_size=None, compression=None) as conn:
        transport = WebsocketsTransport(conn, "test")
        through_library = count_sends(conn, "send")
        for parts in messages:
            await transport.send_parts(parts)
            await conn.ping()
        for _ in range(500):
            if len(received) == len(messages):
                break
            await asyncio.sleep(0.01)
    assert received == [b"".join(parts) for parts in messages]
    assert through_library == []


async def test_accepting_side_sends_parts_as_one_message(accepting: tuple[str, Accepted]) -> None:
    messages = layouts()
    async with accepted_link(accepting) as (conn, ws, finished, transport):
        library = count_sends(ws, "send_bytes")
        for parts in messages:
            await transport.send_parts(parts)
            await ws.ping(b"p")
        got = [await asyncio.wait_for(conn.recv(), 10) for _ in messages]
        finished.set()
    assert got == [b"".join(parts) for parts in messages]
    assert library == []


async def test_parts_through_the_library_framing_are_joined(accepting: tuple[str, Accepted]) -> None:
    parts = [os.urandom(n) for n in (3, PARTS_WRITE_MIN, 5)]
    async with accepted_link(accepting, compression="deflate") as (conn, _, finished, compressed):
        assert not compressed._framed
        await compressed.send_parts(parts)
        assert await asyncio.wait_for(conn.recv(), 10) == b"".join(parts)
        finished.set()
