"""A TCP front that misbehaves on cue, the way platform proxies and networks do, then forwards honestly.

:class:`FaultFront` is a :class:`~tests.support.net.TcpProxy` (loopback, asyncio) put
between a dialer and the endpoint it dials. :meth:`FaultFront.begin` starts one of
:data:`FAULTS` and breaks the connections already open the way that fault would;
:meth:`FaultFront.end` goes back to forwarding every new connection honestly.

- ``close``: accept, then close at once (a platform proxy while the app restarts).
- ``http502`` / ``http503``: read the request, answer that status (a proxy with no app behind it).
- ``rst``: read the request, then reset the connection.
- ``stall``: accept, read, never answer, never close.
- ``trickle``: forward, one byte at a time every :attr:`FaultFront.trickle_delay` seconds.
- ``redirect``: answer ``301`` with ``Location:`` :attr:`FaultFront.redirect_to`.
- ``midframe``: forward the upgrade and a little more, then close in the middle of a WebSocket frame.
- ``halfopen``: bytes vanish with no FIN and no RST (a NAT that forgot the flow), open links included.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from tests.support.net import TcpProxy, reset_on_close

Reader, Writer = asyncio.StreamReader, asyncio.StreamWriter
FAULTS = ("close", "http502", "http503", "rst", "stall", "trickle", "redirect", "midframe", "halfopen")
# Bytes forwarded after the upgrade before a ``midframe`` connection is closed: past the Hello.
MIDFRAME_AFTER = 600
_STATUS = {"http502": "502 Bad Gateway", "http503": "503 Service Unavailable"}


class FaultFront(TcpProxy):
    """``async with FaultFront(target_port) as front``; ``await front.begin("rst")`` … ``front.end()``."""

    def __init__(self, *args: Any, redirect_to: str = "https://app.example.invalid/relay", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.redirect_to = redirect_to
        self.trickle_delay = 0.01
        self.fault: str | None = None
        self.faulted = 0  # connections that met a fault (new ones during it, and open ones it broke)
        self._state: dict[asyncio.StreamWriter, _Conn] = {}  # by the accepted side's writer
        self._held: set[asyncio.StreamWriter] = set()  # stalled or black-holed, closed on close()

    async def begin(self, fault: str) -> None:
        """Start ``fault``: new connections get it, and the open ones break as it would break them."""
        assert fault in FAULTS, fault
        self.fault = fault
        if fault in ("halfopen", "midframe"):
            self.faulted += len(self._conns)
            for writers in self._conns.values():
                conn = self._conn(writers[0])
                conn.black_hole = fault == "halfopen"
                # An open link is past its upgrade: cut it on its next bytes.
                conn.midframe, conn.upgraded, conn.after = fault == "midframe", True, MIDFRAME_AFTER
        else:
            self.faulted += await self.cut()  # the app behind went away: what the dialer must get over

    def end(self) -> None:
        """Forward new connections honestly again (half-open ones stay dead, as a real NAT's would)."""
        self.fault = None

    async def close(self) -> None:
        for writer in list(self._held):
            writer.transport.abort()
        await super().close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fault = self.fault
        if fault in (None, "trickle", "midframe"):
            if fault is not None:
                self.faulted += 1
            await self._forward(reader, writer, fault)
            return
        self.accepted += 1
        self.faulted += 1
        try:
            await self._misbehave(fault, reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._held.discard(writer)
            writer.transport.abort()

    async def _misbehave(
        self, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if fault == "close":
            writer.close()
            return
        if fault in ("stall", "halfopen"):
            self._held.add(writer)
            while await reader.read(65536):
                pass  # swallowed; nothing ever comes back
            return
        await reader.readuntil(b"\r\n\r\n")
        if fault == "rst":
            reset_on_close(writer)
            return
        if fault == "redirect":
            head = f"HTTP/1.1 301 Moved Permanently\r\nLocation: {self.redirect_to}\r\n"
            body = b""
        else:
            head, body = f"HTTP/1.1 {_STATUS[fault]}\r\n", f"{_STATUS[fault]}\n".encode()
        writer.write(f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: str | None
    ) -> None:
        """TcpProxy's forwarding, with the midframe cut armed for connections opened during that fault."""
        self._state[writer] = _Conn(midframe=fault == "midframe")
        try:
            await super()._handle(reader, writer)
        finally:
            self._state.pop(writer, None)

    def _conn(self, writer: asyncio.StreamWriter) -> _Conn:
        """The state of the proxied connection ``writer`` belongs to (either side)."""
        for writers in self._conns.values():
            if writer in writers:
                return self._state.setdefault(writers[0], _Conn())
        return _Conn()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        conn = self._conn(writer)
        while data := await reader.read(self.chunk):
            if conn.black_hole:
                continue  # the sender's TCP sees its bytes acked; the receiver sees nothing, ever
            if conn.midframe:
                if conn.upgraded:
                    conn.after += len(data)
                    if conn.after > MIDFRAME_AFTER:
                        writer.write(data[: max(1, len(data) // 2)])  # half a frame, then a clean FIN
                        with contextlib.suppress(OSError):
                            await writer.drain()
                        for writers in self._conns.values():
                            if writer in writers:
                                for w in writers:
                                    w.close()
                        return
                elif not up and b"\r\n\r\n" in data:
                    conn.upgraded = True  # the 101 went by: from here on it is WebSocket frames
            if self.fault == "trickle":
                for i in range(len(data)):
                    writer.write(data[i : i + 1])
                    await writer.drain()
                    await asyncio.sleep(self.trickle_delay)
            else:
                writer.write(data)
                await writer.drain()
            if up:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
        if conn.black_hole:
            return  # nor does a FIN get through
        if writer.can_write_eof() and not writer.transport.is_closing():
            writer.write_eof()


@dataclass
class _Conn:
    """One proxied connection's fault state, shared by its two pipes."""

    midframe: bool = False  # close it mid-frame once MIDFRAME_AFTER bytes went by after the upgrade
    upgraded: bool = False
    after: int = 0
    black_hole: bool = False  # halfopen: every byte from now on vanishes
