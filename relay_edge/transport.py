"""One interface over the two WebSocket libraries the link runs on.

The edge dials with ``websockets`` (push) or accepts on aiohttp (pull); the app
accepts on aiohttp (push) or dials with ``websockets`` (pull). The link logic
sees only :class:`Transport`, so both modes share every line of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import apply_mask
from websockets.protocol import State

from . import wire
from .auth import acceptor_proof, verify_acceptor_proof
from .errors import TransportClosed, WireError
from .frames import SUBPROTOCOL

__all__ = [
    "SUBPROTOCOL",
    "AiohttpTransport",
    "Transport",
    "WebsocketsTransport",
    "exchange_hello",
    "run_until_first",
]


class Transport(Protocol):
    """A connected WebSocket carrying binary messages."""

    remote: str

    async def send(self, data: bytes) -> None: ...

    async def send_parts(self, parts: Sequence[bytes]) -> None:
        """Send the concatenation of ``parts`` as one message (the adapters skip the join)."""
        ...

    async def recv(self) -> bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


# From this size on, send_parts writes a message's parts as they are instead of joining them
# first. Below it the join is cheaper than the per-part work; above it the join is a copy of
# every byte a video flood sends (6.6% of a pull edge's CPU at chunk 4096).
PARTS_WRITE_MIN = 64 * 1024


def _pieces(parts: Sequence[bytes]) -> tuple[Sequence[bytes], int]:
    """What to write for ``parts`` and its size: below PARTS_WRITE_MIN the parts joined into
    one (cheaper than the per-part work), from it the parts as they are."""
    if len(parts) == 1:
        return parts, len(parts[0])
    size = sum(map(len, parts))
    return ((b"".join(parts),) if size < PARTS_WRITE_MIN else parts), size


class WebsocketsTransport:
    """Adapter for a ``websockets.asyncio`` connection (the dialing side)."""

    def __init__(self, conn: ClientConnection, remote: str) -> None:
        self._conn = conn
        self.remote = remote
        # websockets' Frame.serialize masks a client's payload into a new buffer, then copies
        # it into a BytesIO and out again: 28% of a push edge's CPU in a video flood, and for
        # an audio batch of a few KiB the Python around it (send_context, the frame object)
        # costs more than the write. Every message while the connection is open is framed
        # here instead (binary_frame_head and a fresh mask key), masked once and written with
        # its header in one writelines, so it can't interleave with the library's own frames
        # (pings, the close). Its drain() is the library's flow control; without it (another
        # version), or once the connection is closing, a message takes send().
        self._framed = callable(getattr(conn, "drain", None))

    async def send(self, data: bytes) -> None:
        await self.send_parts((data,))

    async def send_parts(self, parts: Sequence[bytes]) -> None:
        conn = self._conn
        pieces, size = _pieces(parts)
        if not (self._framed and conn.protocol.state is State.OPEN and not conn.transport.is_closing()):
            try:
                await conn.send(b"".join(pieces))  # one piece: the join returns it, no copy
            except ConnectionClosed as exc:
                raise _closed(exc) from None
            return
        key = os.urandom(4)
        conn.transport.writelines((binary_frame_head(size, masked=True) + key, *_masked(pieces, key)))
        try:
            await conn.drain()
        except OSError as exc:  # the connection was lost while the write waited
            raise TransportClosed(1006, str(exc)) from None

    async def recv(self) -> bytes:
        try:
            message = await self._conn.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        if isinstance(message, str):
            raise TransportClosed(1003, "text message on a binary link")
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._conn.close(code, reason[:120])


def binary_frame_head(size: int, *, masked: bool) -> bytes:
    """RFC 6455 5.2: the header of one final binary frame of ``size`` bytes, the length in its
    shortest form; a masked one is followed by its 4-byte key (the caller's)."""
    mask = 0x80 if masked else 0
    if size < 126:
        return bytes((0x82, mask | size))
    if size < 0x10000:
        return bytes((0x82, mask | 126)) + size.to_bytes(2, "big")
    return bytes((0x82, mask | 127)) + size.to_bytes(8, "big")


def _masked(parts: Sequence[bytes], key: bytes) -> list[bytes]:
    """RFC 6455 5.3 masking of ``parts`` as one payload, part by part: each part starts
    where the previous one left the 4-byte key, so no joined copy is made first."""
    out = []
    offset = 0
    for part in parts:
        turn = offset & 3
        out.append(apply_mask(part, key[turn:] + key[:turn] if turn else key))
        offset += len(part)
    return out


def _closed(exc: ConnectionClosed) -> TransportClosed:
    frame = exc.rcvd or exc.sent
    return TransportClosed(frame.code if frame else 1006, frame.reason if frame else "")


class AiohttpTransport:
    """Adapter for an aiohttp server or client WebSocket."""

    def __init__(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, remote: str) -> None:
        self._ws: Any = ws
        self.remote = remote
        # Link loops and tunnel channels send from several tasks; one message at a time.
        self._lock = asyncio.Lock()
        # aiohttp writes a message over 16 KiB as two writes, its 4-byte header alone first:
        # two send syscalls, and a tiny segment that wakes the peer for nothing (8% of a pull
        # edge's samples at 200 streams). An unmasked, uncompressed message (the edge
        # accepting, the app acking) is framed here instead (binary_frame_head) and written
        # with its header at once; aiohttp's protocol drain is the flow control, as in its own
        # writer. Masked (aiohttp as a client), compressed, or without those internals
        # (another version), every message takes send_bytes().
        writer = getattr(ws, "_writer", None)
        protocol = getattr(writer, "protocol", None)
        self._framed = (
            writer is not None
            and not getattr(writer, "use_mask", True)
            and not getattr(writer, "compress", True)
            and callable(getattr(protocol, "_drain_helper", None))
            and hasattr(writer, "transport")
        )
        self._writer: Any = writer

    async def send(self, data: bytes) -> None:
        await self.send_parts((data,))

    async def send_parts(self, parts: Sequence[bytes]) -> None:
        if self._ws.closed:
            raise TransportClosed(self._ws.close_code, "")
        try:
            async with self._lock:
                if self._framed:
                    await self._send_framed(parts)
                else:
                    await self._ws.send_bytes(b"".join(parts))
        except (ConnectionError, RuntimeError) as exc:
            raise TransportClosed(1006, str(exc)) from None

    async def _send_framed(self, parts: Sequence[bytes]) -> None:
        writer = self._writer
        transport = writer.transport
        if writer._closing or transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        pieces, size = _pieces(parts)
        transport.writelines((binary_frame_head(size, masked=False), *pieces))
        protocol = writer.protocol
        if protocol._paused:
            await protocol._drain_helper()

    async def recv(self) -> bytes:
        msg = await self._ws.receive()
        if msg.type == aiohttp.WSMsgType.BINARY:
            return msg.data
        if msg.type == aiohttp.WSMsgType.TEXT:
            raise TransportClosed(1003, "text message on a binary link")
        code = self._ws.close_code if self._ws.close_code is not None else 1006
        raise TransportClosed(code, str(msg.extra or ""))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code=code, message=reason[:120].encode())


# --- link helpers both ends share ------------------------------------------------------


async def exchange_hello(
    transport: Transport,
    ours: wire.Hello,
    *,
    secret: str,
    dialer_proof: str,
    dialed: bool,
    timeout: float,
) -> wire.Hello:
    """Send our Hello, receive the peer's; the dialer checks the acceptor's proof."""
    if not dialed:
        ours = dataclasses.replace(ours, proof=acceptor_proof(secret, dialer_proof))
    await transport.send(wire.encode(ours))
    message = await asyncio.wait_for(transport.recv(), timeout)
    frames = wire.decode_message(message)
    if not frames or not isinstance(frames[0], wire.Hello):
        raise WireError("link must start with hello")
    peer = frames[0]
    if min(peer.version, wire.PROTOCOL_VERSION) < wire.PROTOCOL_VERSION:
        # Both speak the lower of the two versions; we know no version below ours.
        raise WireError(f"peer speaks protocol version {peer.version}, we need {wire.PROTOCOL_VERSION}")
    if dialed:
        verify_acceptor_proof(secret, dialer_proof, peer.proof)
    return peer


async def run_until_first(*loops: Coroutine[Any, Any, None]) -> None:
    """Run a link's loops together; the first to end (or fail) ends them all."""
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
