"""Raw TCP over the link: ``relay-edge serve --tcp 0.0.0.0:1935=rtmp`` → ``--forward rtmp=127.0.0.1:1935``.

A drop-in for ``ngrok tcp 1935`` in front of an RTMP (or any TCP) server the
app already runs. Each accepted connection becomes a channel on the link:
``tcp_open`` names the tunnel, ``tcp_data`` carries bytes both ways, ``tcp_ack``
returns credit (bytes written to the far socket), ``tcp_close`` is EOF or an
error. Both ends run the same :class:`Channel` code.

The honest limit: unlike RTMP mode, a tunnel can't resume. The edge holds no
session here, only bytes, so when the link drops every open tunneled
connection is closed, exactly as ngrok would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable

from . import wire
from .errors import WireError

log = logging.getLogger("relay_edge.tunnel")

# Bytes read from a socket per tcp_data frame, and unacked bytes in flight per
# direction: enough for full loopback speed, small enough that one busy
# connection can't monopolise the shared link.
READ_SIZE = 64 * 1024
WINDOW = 1024 * 1024

Send = Callable[[bytes], Awaitable[None]]
Opener = Callable[[str], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class Channel:
    """One tunneled TCP connection, seen from either end of the link."""

    def __init__(self, mux: TunnelMux, cid: int) -> None:
        self.mux = mux
        self.cid = cid
        self.writer: asyncio.StreamWriter | None = None
        self.sent = 0  # bytes read locally and sent over the link
        self.acked = 0  # of those, written by the far end
        self.received = 0  # bytes written to our socket
        self.queued = 0  # bytes from the link not yet written to our socket
        self._credit = asyncio.Event()
        self._credit.set()
        # Bytes may arrive before our side's socket is connected: they wait here.
        self._incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Both sockets are up: pump both directions."""
        self.writer = writer
        self._tasks = [
            asyncio.create_task(self._pump_out(reader)),
            asyncio.create_task(self._pump_in(writer)),
        ]

    async def _pump_out(self, reader: asyncio.StreamReader) -> None:
        """Local socket → link, within the credit window."""
        try:
            while data := await reader.read(READ_SIZE):
                while self.sent - self.acked + len(data) > WINDOW:  # READ_SIZE <= WINDOW: no deadlock
                    self._credit.clear()
                    await self._credit.wait()
                self.sent += len(data)
                await self.mux.send(wire.TcpData(cid=self.cid, data=data))
            await self.mux.send(wire.TcpClose(cid=self.cid, reason=""))  # clean EOF
        except (ConnectionError, OSError) as exc:
            await self.mux.send(wire.TcpClose(cid=self.cid, reason=f"read failed: {exc}"))

    async def _pump_in(self, writer: asyncio.StreamWriter) -> None:
        """Link → local socket; acks once written, which is the far end's credit."""
        try:
            while (data := await self._incoming.get()) is not None:
                writer.write(data)
                await writer.drain()
                self.queued -= len(data)
                self.received += len(data)
                await self.mux.send(wire.TcpAck(cid=self.cid, bytes=self.received))
            if writer.can_write_eof():
                writer.write_eof()  # half-close: the far side's data may still flow back
        except (ConnectionError, OSError) as exc:
            await self.mux.send(wire.TcpClose(cid=self.cid, reason=f"write failed: {exc}"))
            self.abort()

    def data(self, data: bytes) -> None:
        self.queued += len(data)
        if self.queued > WINDOW:
            raise WireError(
                f"tcp channel {self.cid}: {self.queued} bytes queued, peer ignored the {WINDOW}-byte window"
            )
        self._incoming.put_nowait(data)

    def ack(self, total: int) -> None:
        self.acked = max(self.acked, min(total, self.sent))
        self._credit.set()

    def far_closed(self, reason: str) -> None:
        if reason:
            log.info("tunnel channel %d closed by the far end: %s", self.cid, reason)
            self.abort()
        else:
            self._incoming.put_nowait(None)

    def abort(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.writer is not None:
            self.writer.transport.abort()

    async def finished(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


class TunnelMux:
    """The tunneled connections on one link.

    The edge opens channels for accepted connections (:meth:`open`); the app
    side answers ``tcp_open`` frames by connecting with ``opener(name)``.
    """

    def __init__(self, send: Send, opener: Opener | None = None) -> None:
        self.send_bytes = send
        self.opener = opener
        self.channels: dict[int, Channel] = {}
        self._ids = itertools.count(1)
        self._accepting: set[asyncio.Future[None]] = set()

    async def send(self, frame: object) -> None:
        await self.send_bytes(wire.encode(frame))  # type: ignore[arg-type]

    async def open(
        self, name: str, peer: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Edge side: carry an accepted connection to the app's forward called ``name``."""
        cid = next(self._ids)
        channel = Channel(self, cid)
        self.channels[cid] = channel
        await self.send(wire.TcpOpen(cid=cid, name=name, peer=peer))
        channel.start(reader, writer)
        await channel.finished()
        self.channels.pop(cid, None)

    async def handle(self, frame: object) -> bool:
        """Route a tunnel frame; False if ``frame`` is not one."""
        if isinstance(frame, wire.TcpData):
            channel = self.channels.get(frame.cid)
            if channel is not None:
                channel.data(frame.data)
        elif isinstance(frame, wire.TcpAck):
            channel = self.channels.get(frame.cid)
            if channel is not None:
                channel.ack(frame.bytes)
        elif isinstance(frame, wire.TcpClose):
            channel = self.channels.get(frame.cid)
            if channel is not None:
                channel.far_closed(frame.reason)
        elif isinstance(frame, wire.TcpOpen):
            if frame.cid in self.channels:
                raise WireError(f"tcp_open for channel {frame.cid}, which is open")
            self.channels[frame.cid] = Channel(self, frame.cid)  # queues data until connected
            task = asyncio.ensure_future(self._accept(frame))
            self._accepting.add(task)
            task.add_done_callback(self._accepting.discard)
        else:
            return False
        return True

    async def _accept(self, frame: wire.TcpOpen) -> None:
        """App side: connect the forward and pump until both directions are done."""
        channel = self.channels[frame.cid]
        try:
            if self.opener is None:
                raise KeyError(frame.name)
            reader, writer = await self.opener(frame.name)
        except (OSError, KeyError) as exc:
            log.warning("tunnel %s: cannot connect the forward: %r", frame.name, exc)
            self.channels.pop(frame.cid, None)
            await self.send(wire.TcpClose(cid=frame.cid, reason=f"forward {frame.name!r} unreachable"))
            return
        channel.start(reader, writer)
        await channel.finished()
        self.channels.pop(frame.cid, None)

    def close_all(self) -> None:
        """The link is gone: a tunnel can't resume, so every connection ends now."""
        for channel in list(self.channels.values()):
            channel.abort()
        self.channels.clear()


def parse_tunnels(items: tuple[str, ...] | list[str]) -> dict[str, tuple[str, int]]:
    """``["0.0.0.0:1935=rtmp"]`` (edge) or ``["rtmp=127.0.0.1:1935"]`` (app) → {name: (host, port)}."""
    out: dict[str, tuple[str, int]] = {}
    for item in items:
        left, sep, right = item.partition("=")
        if not sep:
            raise ValueError(f"expected ADDRESS=NAME or NAME=ADDRESS, got {item!r}")
        name, address = (right, left) if ":" in left else (left, right)
        host, _, port = address.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"bad tunnel {item!r}: need HOST:PORT and a name")
        out[name] = (host.strip("[]") or "0.0.0.0", int(port))
    return out


async def serve_tunnel(
    name: str, host: str, port: int, pick_link: Callable[[], TunnelMux | None]
) -> asyncio.base_events.Server:
    """Edge side: listen on ``host:port`` and carry each connection over a live link."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = (writer.get_extra_info("peername") or ("?", 0))[:2]
        peer = f"{host}:{port}"
        mux = pick_link()
        if mux is None:
            log.warning("tunnel %s: no link up, closing connection from %s", name, peer)
            writer.transport.abort()
            return
        with contextlib.suppress(Exception):
            await mux.open(name, peer, reader, writer)
        writer.close()

    return await asyncio.start_server(on_connect, host, port, reuse_address=True)
