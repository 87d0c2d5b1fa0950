"""The asyncio pump around :class:`~relay_edge.rtmp.session.ServerSession`.

One :class:`RtmpConnection` per publisher socket: bytes in → session → events to
the edge, bytes due → socket. It pauses reading only while a stream's link (not
the app's acks) is behind, and for at most ``limits.max_pause``: then it reads
again and the outbox's bounds drop the oldest tags, reported as a gap.
Timeouts are checked by one sweep over all connections, not a timer per read.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Protocol, cast

from .edgestream import EdgeStream
from .errors import ProtocolError
from .limits import Limits
from .metrics import Metrics
from .rtmp.events import Connect, HandshakeComplete, Media, PublishRequested, TagSink, Unpublished
from .rtmp.session import ServerSession
from .tls import ServerTls

log = logging.getLogger("relay_edge.ingest")


class IngestHost(Protocol):
    """What a publisher connection asks of its edge (:class:`~relay_edge.edge.Edge`)."""

    @property
    def limits(self) -> Limits: ...

    @property
    def metrics(self) -> Metrics: ...

    def admit(self, conn: RtmpConnection) -> str | None: ...

    def disconnected(self, conn: RtmpConnection) -> None: ...

    @property
    def paused(self) -> set[RtmpConnection]: ...

    def publish(self, conn: RtmpConnection, event: PublishRequested) -> None: ...

    def tag_sink(self, conn: RtmpConnection) -> TagSink: ...

    def unpublish(self, conn: RtmpConnection, event: Unpublished) -> None: ...


class RtmpConnection(asyncio.Protocol):
    """One publisher's TCP (or TLS) connection."""

    def __init__(self, edge: IngestHost, tls_context: ssl.SSLContext | None = None) -> None:
        self.edge = edge
        self.tls_context = tls_context  # RTMPS: TLS starts after accept, once counted
        self.session = ServerSession(edge.limits)
        self.transport: asyncio.Transport | None = None
        self.conn_id = 0  # the edge core's name for it (set by the edge on admit)
        self.peer = "?"
        self.ip = "?"
        self.app = ""
        self.flash_ver = ""
        self.connected_at = time.monotonic()
        self.last_rx = self.connected_at
        self.handshake_done = False
        self.streams: dict[int, EdgeStream] = {}  # RTMP message stream id -> stream
        self.closed = False
        self.paused = False  # reading stopped: a stream's link is behind (limits.pause_bytes)
        # Paused for limits.max_pause: reading again, dropping instead, until the link catches up.
        self.overrun = False
        self._pause_timer: asyncio.TimerHandle | None = None
        self.counted_ip = False  # in the edge's per-address count (until closed or authorized)
        self._tls: ServerTls | None = None  # RTMPS: TLS inside this connection, sans-I/O
        self._tag: TagSink = _unadmitted
        self._pause_bytes = edge.limits.pause_bytes  # read per read

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, so no isinstance check).
        self.transport = cast(asyncio.Transport, transport)
        addr = transport.get_extra_info("peername") or ("?", 0)
        self.ip = str(addr[0])
        self.peer = f"{addr[0]}:{addr[1]}"
        log.debug("RTMP connection from %s", self.peer)
        refusal = self.edge.admit(self)
        self._tag = self.edge.tag_sink(self)  # after admit: it binds our conn_id
        if refusal:
            log.warning("refused RTMP connection from %s: %s", self.peer, refusal)
            self.edge.metrics.limit_breach(refusal.split(":")[0])
            self.transport.abort()
        elif self.tls_context is not None:
            self._tls = ServerTls(self.tls_context)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_rx = time.monotonic()
        if self._tls is not None and not (data := self._decrypt(data)):
            return
        try:
            events = self.session.receive_data(data, self._tag)
        except ProtocolError as exc:
            # Keep what the same bytes decoded before the error (the last frames, an unpublish).
            for event in exc.events:
                self._dispatch(event)
            self.fail(str(exc), kind=getattr(exc, "what", type(exc).__name__))
            return
        # The session's Acknowledgement first, before the tags go to the edge: a publisher that
        # floods a file and closes (ffmpeg) must have read it by then, or its close is a reset
        # that throws away its unread FCUnpublish in our receive queue (the stream then waits
        # out reconnect_grace instead of ending).
        session = self.session
        out = session.data_to_send()
        if out:
            self._write(out)
        if events:  # most reads of a live stream have none: their tags went to the sink
            for event in events:
                self._dispatch(event)
            self._flush()
        elif session.closing:
            self.close()
        if self.overrun:  # reading through a backlog: pause again only once the link caught up
            self.overrun = self._behind(self._pause_bytes // 2)
        elif self._behind(self._pause_bytes):
            self._pause()

    def _pause(self) -> None:
        if self.transport is None or self.closed:
            return
        self.paused = True
        self.edge.paused.add(self)
        self.transport.pause_reading()
        # Rare (the link is behind), so one timer per pause costs nothing on the read path.
        self._pause_timer = asyncio.get_running_loop().call_later(self.edge.limits.max_pause, self._overrun)
        log.debug("paused reading %s: its link is %d+ bytes behind", self.peer, self._pause_bytes)

    def _overrun(self) -> None:
        """Paused for ``max_pause``: read again, so the publisher never stalls; the outbox drops."""
        self._pause_timer = None
        if not self.paused:
            return
        log.warning(
            "reading %s again after max_pause %g s: its link is still behind; "
            "the oldest tags will be dropped (a reported gap)",
            self.peer,
            self.edge.limits.max_pause,
        )
        self.overrun = True
        self._resume()

    def _behind(self, threshold: int) -> bool:
        for s in self.streams.values():  # every read: the cheap test first, no generator
            if (
                s.outbox.buffered_bytes > threshold
                and s.link_id is not None
                and s.ready
                and s.outbox.behind(threshold)
            ):
                return True
        return False

    def resume_if_caught_up(self) -> None:
        """Read the publisher again once its streams' links have sent half the backlog (or went away)."""
        if self.paused and not self._behind(self._pause_bytes // 2):
            if self._pause_timer is not None:
                self._pause_timer.cancel()
                self._pause_timer = None
            self._resume()

    def _resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        self.edge.paused.discard(self)
        self.last_rx = time.monotonic()  # paused time is not the publisher's silence
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
            log.debug("resumed reading %s", self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._pause_timer is not None:
            self._pause_timer.cancel()
        self.edge.paused.discard(self)
        self.edge.disconnected(self)

    # --- events -------------------------------------------------------------------------

    def _dispatch(self, event: object) -> None:
        if type(event) is Media:  # one after another event of its read (else receive_data took it)
            self._tag(*event)
        elif isinstance(event, PublishRequested):
            self.edge.publish(self, event)
        elif isinstance(event, Unpublished):
            self.streams.pop(event.stream_id, None)
            self.edge.unpublish(self, event)
        elif isinstance(event, Connect):
            self.app = event.app
            self.flash_ver = event.flash_ver
        elif isinstance(event, HandshakeComplete):
            self.handshake_done = True

    def _decrypt(self, data: bytes) -> bytes:
        """RTMPS: the RTMP bytes within ``data``, after answering any TLS handshake it carried."""
        assert self._tls is not None
        try:
            data = self._tls.receive(data)
        except ssl.SSLError as exc:  # the peer's: close this one connection
            log.info("RTMPS handshake or record from %s failed: %s", self.peer, exc.reason or exc)
            self.edge.metrics.protocol_error("tls")
            self.abort()
            return b""
        out = self._tls.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)
        if self._tls.closed:
            self.close()
        return data

    def _flush(self) -> None:
        self._write(self.session.data_to_send())
        if self.session.closing:
            self.close()

    def _write(self, out: bytes) -> None:
        if out and self._tls is not None:
            self._tls.send(out)
            out = self._tls.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    # --- called by the edge -------------------------------------------------------------

    def accept(self, stream_id: int, stream: EdgeStream) -> None:
        self.streams[stream_id] = stream
        self.session.accept_publish(stream_id)
        self._flush()

    def reject(self, stream_id: int, code: str, description: str) -> None:
        self.session.reject_publish(stream_id, code, description)
        self._flush()
        self.close()

    def fail(self, reason: str, kind: str = "error") -> None:
        """Drop this connection for a protocol error or a breached limit."""
        log.warning("closing RTMP connection from %s: %s", self.peer, reason)
        self.edge.metrics.protocol_error(kind)
        self.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def check_timeouts(self, now: float) -> None:
        """Called about once a second by the edge's sweep."""
        limits = self.edge.limits
        if not self.handshake_done and now - self.connected_at > limits.handshake_timeout:
            self.fail(f"handshake_timeout: no handshake after {limits.handshake_timeout:g} s", "timeout")
        elif not self.session.authorized and now - self.connected_at > limits.publish_timeout:
            # However slowly it trickles: each byte resets idle_timeout, not this.
            reason = f"publish_timeout: no accepted publish {limits.publish_timeout:g} s after accept"
            self.fail(reason, "timeout")
        elif not self.paused and now - self.last_rx > limits.idle_timeout:
            self.fail(f"idle_timeout: nothing received for {limits.idle_timeout:g} s", "timeout")


def _unadmitted(stream_id: int, tag_type: int, timestamp: int, data: bytes) -> None:
    """A connection's tag sink until the edge admits it (no bytes are read before that)."""
    raise AssertionError("a tag before connection_made")
