"""Loopback networking helpers: free ports, readiness waits, and a TCP proxy that can fail on cue.

:class:`TcpProxy` sits between a client and a server on loopback so a test can drop the link
(:meth:`TcpProxy.cut`) or make the far side unreachable (:meth:`TcpProxy.pause`) at a chosen moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import socket
import struct
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def _listen_ports() -> range:
    """Ports below the kernel's ephemeral range, where no outgoing connection can hold one.

    A port the kernel hands out for ``bind(0)`` is also one it hands out as the source port of any
    client socket: in a suite that opens thousands of connections, a server told to listen there a
    moment later sometimes found it taken (``relay-edge exited with 1 before listening``).
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, max(low, 10001))


_PORTS = _listen_ports()
# Concurrent test processes (other checkouts on one machine) start at different points of the range.
_cursor = itertools.count(random.Random(os.getpid() ^ time.time_ns()).randrange(len(_PORTS)))


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free a moment ago, outside the ephemeral range, never the same twice in a run.

    Another process could still take it before the caller binds; outside the ephemeral range only a
    listener can, which on a test machine is rare enough to accept.
    """
    for _ in range(len(_PORTS)):
        port = _PORTS[next(_cursor) % len(_PORTS)]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port in {_PORTS.start}..{_PORTS.stop - 1}")


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> float:
    """Block until ``host:port`` accepts a connection; return the seconds waited.

    Raises :class:`TimeoutError` naming the address after ``timeout`` seconds.
    """
    start = time.monotonic()
    while True:
        if port_is_open(host, port):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.1f} s")
        time.sleep(0.01)


async def wait_for_port_async(host: str, port: int, timeout: float = 10.0) -> float:
    """:func:`wait_for_port` without blocking the event loop."""
    start = time.monotonic()
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
        except (TimeoutError, OSError):
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.1f} s") from None
            await asyncio.sleep(0.01)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return time.monotonic() - start


def reset_on_close(writer: asyncio.StreamWriter) -> None:
    """Make the next close send RST instead of FIN (SO_LINGER on, timeout 0).

    A FIN reads as a clean end of stream; a cut link should look like an error to both peers.
    """
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class TcpProxy:
    """In-process asyncio TCP proxy from ``listen_host:port`` to ``target_host:target_port``.

    - :meth:`cut` resets every proxied connection (both sides see ECONNRESET), like a dropped link.
    - :meth:`pause` stops listening, so new connections are refused; established ones keep flowing.
      :meth:`resume` listens again on the same port.
    - :meth:`hold` stops forwarding one direction (a stalled path: the kernel buffers fill, then the
      sender's writes block); :meth:`release` forwards again, every byte in order.
    - Half-closes are forwarded (EOF one way does not end the other direction).

    Use as ``async with TcpProxy(port) as proxy:`` and connect to ``proxy.port``.
    """

    def __init__(
        self,
        target_port: int,
        target_host: str = LOOPBACK,
        *,
        listen_host: str = LOOPBACK,
        listen_port: int = 0,
        chunk: int = 65536,
    ) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = listen_port
        self.chunk = chunk
        self.accepted = 0  # connections accepted since start
        self.bytes_up = 0  # client -> target
        self.bytes_down = 0  # target -> client
        self._server: asyncio.Server | None = None
        self._closed: list[asyncio.Server] = []  # paused servers, awaited on close()
        self._conns: dict[asyncio.Task[None], tuple[asyncio.StreamWriter, ...]] = {}
        self._flowing = {True: asyncio.Event(), False: asyncio.Event()}  # by direction: up, down
        for flowing in self._flowing.values():
            flowing.set()

    @property
    def connections(self) -> int:
        """Proxied connections currently open."""
        return len(self._conns)

    @property
    def paused(self) -> bool:
        return self._server is None

    async def start(self) -> TcpProxy:
        """Listen (on a kernel-chosen port unless ``listen_port`` was given)."""
        await self.resume()
        return self

    async def resume(self) -> None:
        """Listen again on the same port; new connections are accepted and proxied."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def pause(self) -> None:
        """Stop listening: new connections get ECONNREFUSED. Established connections stay up."""
        server, self._server = self._server, None
        if server is not None:
            # close() shuts the listening socket at once. Not wait_closed(): since Python 3.12 it also
            # waits for every accepted connection to end, which is what pause must not do.
            server.close()
            self._closed.append(server)

    async def cut(self) -> int:
        """Reset every proxied connection; return how many were cut. The proxy keeps listening."""
        tasks = list(self._conns)
        for writers in self._conns.values():
            for writer in writers:
                reset_on_close(writer)
                writer.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    def hold(self, *, up: bool = True) -> None:
        """Stop forwarding client -> target (``up``) or target -> client on every connection, new ones too.

        Nothing is read from that side any more, so its sender's TCP stalls once the buffers are full.
        """
        self._flowing[up].clear()

    def release(self) -> None:
        """Forward both directions again; what was held goes on in order."""
        for flowing in self._flowing.values():
            flowing.set()

    async def close(self) -> None:
        """Stop listening and reset every connection."""
        self.release()  # a held pipe would never see its reset
        await self.pause()
        await self.cut()
        for server in self._closed:
            await server.wait_closed()
        self._closed.clear()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            # Target down: the client sees a reset, as it would connecting to the target itself.
            reset_on_close(writer)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = (writer, up_writer)
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer, up=True)),
            asyncio.ensure_future(self._pipe(up_reader, writer, up=False)),
        ]
        try:
            await asyncio.gather(*pipes)
        except (OSError, asyncio.IncompleteReadError):
            # One side broke: pass the breakage on to the other as a reset, not a clean FIN.
            for w in (writer, up_writer):
                reset_on_close(w)
                w.transport.abort()
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (writer, up_writer):
                w.close()
            self._conns.pop(task, None)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        while data := await reader.read(self.chunk):
            await self._flowing[up].wait()  # held: read nothing more from this side
            writer.write(data)
            if up:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.transport.is_closing():
            writer.write_eof()
