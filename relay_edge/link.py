"""The edge's end of a link: streams out as Open/Data/Gap/Close, acks and refusals in.

Runs over any :class:`~relay_edge.transport.Transport`, so push (the edge
dials) and pull (the app dials) share it. The bookkeeping that decides what to
send lives in each stream's sans-I/O :class:`~relay_edge.outbox.Outbox`; this
module only pumps frames.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from typing import Protocol

from . import wire
from .edgestream import EdgeStream
from .errors import TransportClosed
from .frames import Gap
from .limits import Limits
from .transport import Transport, run_until_first
from .tunnel import TunnelMux

log = logging.getLogger("relay_edge.link")


class NamedConfig(Protocol):
    @property
    def name(self) -> str: ...


class LinkHost(Protocol):
    """What a link asks of its edge (:class:`~relay_edge.edge.Edge`)."""

    @property
    def limits(self) -> Limits: ...

    @property
    def config(self) -> NamedConfig: ...

    def streams_for(self, link: EdgeLink) -> list[EdgeStream]: ...

    def acked(self, stream: EdgeStream) -> None: ...

    def gap(self, stream: EdgeStream, gap: Gap) -> None: ...

    def refused(self, stream: EdgeStream, code: str, reason: str) -> None: ...


# Frames gathered into one WebSocket message stop growing past this; the rest
# goes in the next message. Keeps one burst from delaying pings and acks.
_MESSAGE_TARGET = 256 * 1024


class EdgeLink:
    """One live link from this edge to one app instance."""

    def __init__(self, edge: LinkHost, transport: Transport, peer: wire.Hello) -> None:
        self.edge = edge
        self.transport = transport
        self.peer = peer
        self.since = time.time()
        self.resume_points = {p.uid: p.seq for p in peer.streams}
        self._wake = asyncio.Event()
        # Streams with something due (an ordered set), so a wake costs O(busy streams),
        # not O(all streams): scanning every stream per send was ~20% of the edge's CPU.
        self._dirty: dict[EdgeStream, None] = {}
        self._scan_all = True
        self.tunnels = TunnelMux(transport.send)  # raw TCP channels on this link
        self._next_sid = 1
        self._sids: dict[str, int] = {}  # stream uid -> sid on this link
        self._streams: dict[int, EdgeStream] = {}  # sid -> stream
        self._closed_sids: set[int] = set()
        self.last_pong = time.monotonic()
        self.rtt_ms: float | None = None

    def close_sent(self, stream: EdgeStream) -> bool:
        """Whether this link has sent ``stream``'s Close."""
        sid = self._sids.get(stream.uid)
        return sid is not None and sid in self._closed_sids

    def wants(self, name: str) -> bool:
        """Whether this consumer asked for ``name`` (its hello patterns; none means all)."""
        patterns = self.peer.patterns
        return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)

    def wake(self, stream: EdgeStream | None = None) -> None:
        """Something is due: on ``stream`` only (the hot path), or anywhere (a full scan)."""
        if stream is None:
            self._scan_all = True
        else:
            self._dirty[stream] = None
        self._wake.set()

    async def run(self) -> None:
        """Pump until the transport closes; then hand the streams back to the edge."""
        try:
            await run_until_first(self._send_loop(), self._recv_loop(), self._ping_loop())
        finally:
            self.tunnels.close_all()

    # --- sending ----------------------------------------------------------------------

    async def _send_loop(self) -> None:
        self._wake.set()
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
            await asyncio.sleep(wait if wait > 0 else 0)
            last_send = loop.time()
            while True:
                parts, more = self._collect()
                if not parts:
                    break
                await self.transport.send(b"".join(parts))
                if not more:
                    break

    def _collect(self) -> tuple[list[bytes], bool]:
        """Encoded frames due now, across this link's streams; ``more`` if the target size was hit."""
        parts: list[bytes] = []
        size = 0
        if self._scan_all:
            self._scan_all = False
            self._dirty.update(dict.fromkeys(self.edge.streams_for(self)))
        dirty = self._dirty
        for stream in list(dirty):
            del dirty[stream]
            if stream.link is not self:
                continue
            sid = self._sids.get(stream.uid)
            if sid is None:
                if not stream.ready:
                    continue
                sid = self._open(stream, parts)
            if sid in self._closed_sids:
                continue
            size += self._take(stream, sid, parts)
            if stream.ended and not stream.outbox.pending:
                parts.append(wire.encode(wire.Close(sid=sid, reason=stream.end_reason, code=stream.end_code)))
                self._closed_sids.add(sid)
                self.edge.acked(stream)  # a tail acked before the end: finished now
            # Anything left now waits for credit, and its ack wakes it again.
            if size >= _MESSAGE_TARGET:
                return parts, True  # streams not visited yet stay in the set
        return parts, False

    def _open(self, stream: EdgeStream, parts: list[bytes]) -> int:
        sid = self._next_sid
        self._next_sid += 1
        self._sids[stream.uid] = sid
        self._streams[sid] = stream
        outbox = stream.outbox
        resumed = stream.uid in self.resume_points or outbox.acked > 0
        if stream.uid in self.resume_points:
            outbox.resume_from(self.resume_points.pop(stream.uid))
        else:
            outbox.rewind()
        init = tuple(outbox.init.values()) if outbox.acked > 0 else ()
        frame = wire.Open(
            sid=sid,
            uid=stream.uid,
            name=stream.name,
            publisher=stream.publisher_info(),
            codecs=dict(stream.codecs),
            seq=outbox.sent + 1,
            resumed=resumed,
            header=stream.header,
            init=init,
            edge=self.edge.config.name,
        )
        parts.append(wire.encode(frame))
        log.info("link %s: open %s (sid %d, from seq %d)", self.transport.remote, stream.name, sid, frame.seq)
        return sid

    def _take(self, stream: EdgeStream, sid: int, parts: list[bytes]) -> int:
        outbox = stream.outbox
        if not outbox.pending:
            return 0
        gap, seq, tags = outbox.take(sid)
        if gap is not None:
            parts.append(wire.encode(gap))
            self.edge.gap(stream, gap)
        if tags:
            marks = stream.publisher_marks
            cuts = sorted(s for s in marks if seq < s < seq + len(tags)) if marks else []
            # A new publisher's first tag starts its own Data frame, flagged with who it is.
            for start, end in zip([seq, *cuts], [*cuts, seq + len(tags)], strict=False):
                who = marks.get(start) if marks else None
                publisher = who.to_wire() if who else None
                parts.append(wire.encode_data(sid, start, tags[start - seq : end - seq], publisher))
            if stream.conn is not None and stream.conn.paused:
                stream.conn.resume_if_caught_up()
        return sum(map(len, tags))

    # --- receiving ----------------------------------------------------------------------

    async def _recv_loop(self) -> None:
        while True:
            message = await self.transport.recv()
            for frame in wire.decode_message(message, self.edge.limits):
                await self._handle(frame)

    async def _handle(self, frame: object) -> None:
        # Accept needs no action: the publisher was accepted when its key verified (edge.py).
        if await self.tunnels.handle(frame):
            return
        if isinstance(frame, wire.Ack):
            stream = self._streams.get(frame.sid)
            if stream is not None:
                stream.outbox.ack(frame.seq)
                self.edge.acked(stream)
                self.wake(stream)  # credit came back
        elif isinstance(frame, wire.Reject):
            stream = self._streams.get(frame.sid)
            if stream is not None:
                self.edge.refused(stream, frame.code, frame.reason)
        elif isinstance(frame, wire.Ping):
            await self.transport.send(wire.encode(wire.Pong(t=frame.t)))
        elif isinstance(frame, wire.Pong):
            self.last_pong = time.monotonic()
            self.rtt_ms = max(0.0, (time.monotonic() - frame.t) * 1000)
        elif isinstance(frame, wire.Close):
            if frame.sid is None:
                if frame.code == wire.Code.SHUTDOWN:
                    # The app is going away (deploy, restart): the dialer redials at once, like 1001.
                    raise TransportClosed(1001, f"peer shutting down: {frame.reason}")
                raise ConnectionResetError(f"peer closed the link: {frame.reason}")
            stream = self._streams.get(frame.sid)
            if stream is not None:
                self.edge.refused(stream, frame.code or "closed", frame.reason)

    async def _ping_loop(self) -> None:
        limits = self.edge.limits
        while True:
            await asyncio.sleep(limits.ping_interval)
            if time.monotonic() - self.last_pong > limits.ping_timeout:
                raise TimeoutError(f"ping_timeout: no pong for {limits.ping_timeout:g} s")
            await self.transport.send(wire.encode(wire.Ping(t=time.monotonic())))

    def forget(self, stream: EdgeStream) -> None:
        """The stream is finished: drop its per-link state."""
        sid = self._sids.pop(stream.uid, None)
        if sid is not None:
            self._streams.pop(sid, None)
            self._closed_sids.discard(sid)
