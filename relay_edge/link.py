"""The edge's end of a link, as a pump: frames in and out for the edge core.

Runs over any :class:`~relay_edge.transport.Transport`, so push (the edge
dials) and pull (the app dials) share it. What to send, and what an Ack,
Reject or Close means, is decided by :class:`~relay_edge.edgecore.EdgeCore`;
this module owns the transport, the batching delay, pings and the tunnels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from . import wire
from .errors import TransportClosed
from .limits import Limits
from .transport import Transport, run_until_first
from .tunnel import TunnelMux

log = logging.getLogger("relay_edge.link")


class LinkHost(Protocol):
    """What a link asks of its edge (:class:`~relay_edge.edge.Edge`)."""

    @property
    def limits(self) -> Limits: ...

    def pull(self, link: EdgeLink) -> tuple[list[bytes], bool]: ...

    def frame_received(self, link: EdgeLink, frame: wire.Frame) -> None: ...

    def acks(self, link: EdgeLink, pairs: list[tuple[int, int]]) -> None: ...


class EdgeLink:
    """One live link from this edge to one app instance."""

    def __init__(self, edge: LinkHost, transport: Transport, peer: wire.Hello, link_id: int) -> None:
        self.edge = edge
        self.transport = transport
        self.peer = peer
        self.link_id = link_id  # the edge core's name for it
        self.since = time.time()
        self._wake = asyncio.Event()
        self.tunnels = TunnelMux(transport.send)  # raw TCP channels on this link
        self.last_pong = time.monotonic()
        self.rtt_ms: float | None = None

    def wake(self) -> None:
        """The core said LinkDue: something waits to be pulled."""
        self._wake.set()

    async def run(self) -> None:
        """Pump until the transport closes; then hand the streams back to the edge."""
        try:
            await run_until_first(self._send_loop(), self._recv_loop(), self._ping_loop())
        finally:
            self.tunnels.close_all()

    # --- sending ----------------------------------------------------------------------

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_send = 0.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Adaptive batching: a quiet link sends at once (after one loop turn, so
            # reads that landed together leave together); a busy one coalesces
            # everything due within batch_delay into one message, which bounds the
            # send syscalls per second however many publishers write.
            wait = last_send + self.edge.limits.batch_delay - loop.time()
            if wait > 0:
                # Slept, not awaited: what arrives meanwhile would wake the loop once per
                # read to no purpose (it leaves with this batch anyway), and on a busy edge
                # those wakeups cost more than the reads. The next turn takes it all at once.
                time.sleep(wait)
                await asyncio.sleep(0)  # asyncio resumes us before its turn's I/O: one more
            await asyncio.sleep(0)  # a loop turn: the reads that are in by now join this batch
            # Set by every pull, an ack's empty one too: at load the acks clock the sends. Set only
            # by sends (with acks not waking the loop), 200 streams gave 50% more, smaller
            # messages and +1 ms p50 (bench/README.md, "The send cadence").
            last_send = loop.time()
            while True:
                parts, more = self.edge.pull(self)  # LinkWritable: the transport takes the next message
                if parts:
                    await self.transport.send_parts(parts)
                if not more:
                    break

    # --- receiving ----------------------------------------------------------------------

    async def _recv_loop(self) -> None:
        edge = self.edge
        while True:
            message = await self.transport.recv()
            # Most messages from an app are Acks only: straight to the core, no frame objects.
            pairs = wire.ack_pairs(message, edge.limits)
            if pairs is not None:
                edge.acks(self, pairs)
                continue
            for frame in wire.decode_message(message, edge.limits):
                await self._handle(frame)

    async def _handle(self, frame: wire.Frame) -> None:
        if await self.tunnels.handle(frame):
            return
        if isinstance(frame, wire.Ping):
            await self.transport.send(wire.encode(wire.Pong(t=frame.t)))
        elif isinstance(frame, wire.Pong):
            self.last_pong = time.monotonic()
            self.rtt_ms = max(0.0, (time.monotonic() - frame.t) * 1000)
        elif isinstance(frame, wire.Close) and frame.sid is None:
            if frame.code == wire.Code.SHUTDOWN:
                # The app is going away (deploy, restart): the dialer redials at once, like 1001.
                raise TransportClosed(1001, f"peer shutting down: {frame.reason}")
            raise ConnectionResetError(f"peer closed the link: {frame.reason}")
        else:  # Accept, Ack, Reject, a stream's Close: the core's
            self.edge.frame_received(self, frame)

    async def _ping_loop(self) -> None:
        limits = self.edge.limits
        while True:
            await asyncio.sleep(limits.ping_interval)
            if time.monotonic() - self.last_pong > limits.ping_timeout:
                raise TimeoutError(f"ping_timeout: no pong for {limits.ping_timeout:g} s")
            await self.transport.send(wire.encode(wire.Ping(t=time.monotonic())))
