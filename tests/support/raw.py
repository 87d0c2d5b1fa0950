"""Hand-driven clients over real sockets, for hostile and auth tests.

- :class:`RtmpClient`: the sans-I/O :class:`~relay_edge.rtmp.client.ClientSession`
  pumped over a TCP (or TLS) socket, so a test sees the exact onStatus code the
  edge answers with, then can misbehave (stall, send raw bytes).
- :func:`ws_upgrade`: a raw WebSocket upgrade with any ``X-Relay-Proof``, so a
  test can send frames no well-behaved library would (a 4 GiB length) and read
  the HTTP status or close code that comes back.
- :func:`wait_closed`: how long until the peer closed a socket, and how.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import struct
import time
from dataclasses import dataclass, field

from relay_edge.rtmp.client import ClientSession
from relay_edge.rtmp.events import PublishRejected, PublishStarted, Status
from relay_edge.transport import SUBPROTOCOL


async def wait_closed(reader: asyncio.StreamReader, timeout: float) -> tuple[float, str, bytes]:
    """``(seconds until the peer closed, "eof" or "reset", bytes read meanwhile)``.

    Reads and keeps whatever arrives until EOF or a reset; raises TimeoutError
    if the socket is still open after ``timeout`` seconds.
    """
    started = time.monotonic()
    data = bytearray()
    deadline = started + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"socket still open after {timeout} s")
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                raise TimeoutError(f"socket still open after {timeout} s") from None
            if not chunk:
                return time.monotonic() - started, "eof", bytes(data)
            data += chunk
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return time.monotonic() - started, "reset", bytes(data)


@dataclass
class RtmpClient:
    """One publisher connection driven by hand. ``await RtmpClient.publish(...)`` to start."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    session: ClientSession
    statuses: list[Status] = field(default_factory=list)
    started: bool = False
    rejected: PublishRejected | None = None

    @classmethod
    async def publish(
        cls,
        port: int,
        key: str,
        *,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> RtmpClient:
        """Connect, handshake, connect to app ``live`` and publish ``key``; stop at Start or a refusal."""
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl_context, server_hostname=host if ssl_context else None
        )
        tc_url = f"rtmp{'s' if ssl_context else ''}://{host}:{port}/live"
        client = cls(reader, writer, ClientSession("live", key, tc_url, chunk_size=4096))
        client.session.initiate()
        await client.pump_until(lambda: client.started or client.rejected is not None, timeout)
        return client

    async def pump_until(self, done: object, timeout: float) -> None:
        """Write what the session has due, feed what arrives, until ``done()`` or the socket closes."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.session.data_to_send()
            if out:
                self.writer.write(out)
                await self.writer.drain()
            if done():  # type: ignore[operator]
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the edge")
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except ConnectionResetError:
                data = b""
            if not data:
                return
            for event in self.session.receive_data(data):
                if isinstance(event, Status):
                    self.statuses.append(event)
                elif isinstance(event, PublishStarted):
                    self.started = True
                elif isinstance(event, PublishRejected):
                    self.rejected = event

    @property
    def codes(self) -> list[str]:
        """Every onStatus code received, in order."""
        return [s.code for s in self.statuses]

    async def send_media(self, tag_type: int, timestamp: int, data: bytes) -> None:
        self.session.send_media(tag_type, timestamp, data)
        self.writer.write(self.session.data_to_send())
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.transport.abort()


# --- WebSocket -----------------------------------------------------------------------------------


@dataclass
class RawWebSocket:
    """The result of :func:`ws_upgrade`: the HTTP status and, on 101, the open socket."""

    status: int
    head: bytes
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send_frame_header(self, length: int, opcode: int = 0x2) -> None:
        """A masked, final frame header declaring ``length`` payload bytes (64-bit form if needed)."""
        if length < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, length)
        self.writer.write(head + b"\x00\x00\x00\x00")  # zero mask key: payload goes as is
        await self.writer.drain()

    async def send_message(self, payload: bytes) -> None:
        """One binary message (masked with a zero key)."""
        await self.send_frame_header(len(payload))
        self.writer.write(payload)
        await self.writer.drain()

    async def close_code(self, timeout: float) -> tuple[float, int | None]:
        """``(seconds, close code)`` once the peer sends a close frame (or drops the socket: code None).

        Data frames before it are skipped. The socket may stay open after the
        close frame while the peer waits for our answer; the test decides.
        """
        started = time.monotonic()
        data = bytearray()
        while True:
            left = started + timeout - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no close frame after {timeout} s")
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), left)
            except TimeoutError:
                raise TimeoutError(f"no close frame after {timeout} s") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return time.monotonic() - started, None
            data += chunk
            code = _find_close(bytes(data))
            if code is not None:
                return time.monotonic() - started, code


def _find_close(data: bytes) -> int | None:
    """The status code of the first complete close frame in ``data`` (server frames are unmasked)."""
    pos = 0
    while pos + 2 <= len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            if pos + 2 > len(data):
                return None
            n, pos = struct.unpack(">H", data[pos : pos + 2])[0], pos + 2
        elif n == 127:
            if pos + 8 > len(data):
                return None
            n, pos = struct.unpack(">Q", data[pos : pos + 8])[0], pos + 8
        if pos + n > len(data):
            return None
        if opcode == 0x8:
            return struct.unpack(">H", data[pos : pos + 2])[0] if n >= 2 else 1005
        pos += n
    return None


async def ws_upgrade(port: int, path: str, proof: str | None, *, host: str = "127.0.0.1") -> RawWebSocket:
    """Send a WebSocket upgrade for ``path`` with ``proof`` as X-Relay-Proof; read the answer's head.

    On a non-101 answer the body (e.g. "link refused: bad signature") is read too.
    """
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}",
    ]
    if proof is not None:
        lines.append(f"X-Relay-Proof: {proof}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    body = b""
    if status != 101:
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
    return RawWebSocket(status, head, body, reader, writer)
