"""The edge process: RTMP ingest, the stream registry, links to apps, and HTTP.

Publishers are accepted as soon as their key verifies (LiveKit egress won't
wait for a cold app). Their tags go into each stream's outbox and leave on
whichever link the stream is assigned to; with no link up they wait, bounded,
and go out on the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import secrets
import socket
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import keys, tls, wire
from .access import AllowList
from .assign import Candidate, pick
from .auth import ProofVerifier
from .dial import dial_forever, safe_url
from .edgestream import EdgeStream, Publisher
from .errors import AuthError
from .frames import Gap
from .ingest import RtmpConnection
from .limits import DEFAULT_LIMITS, Limits
from .link import EdgeLink
from .metrics import Metrics
from .outbox import Budget
from .rtmp.events import PublishRequested
from .supervise import Supervisor
from .transport import AiohttpTransport, WebsocketsTransport, exchange_hello
from .tunnel import TunnelMux, serve_tunnel
from .urls import warn_if_plaintext
from .web import (
    LINK_ENDED,
    GuardedSite,
    accept_link,
    app_runner,
    close_code_for,
    common_routes,
    harden,
    is_loopback,
    status_token,
)

log = logging.getLogger("relay_edge")
# Links one edge keeps to each upstream URL (``--links``): enough for a Render service scaled
# to its plan's maximum; each link is a dialer, a socket and per-link send state.
MAX_LINKS = 16
http_log = logging.getLogger("relay_edge.http")  # pull links: the name their log lines have always had


@dataclass
class EdgeConfig:
    """Everything ``relay-edge serve`` is told. ``secret`` is never logged."""

    secret: str = field(repr=False)
    rtmp_listen: tuple[str, int] = ("0.0.0.0", 1935)
    http_listen: tuple[str, int] | None = ("0.0.0.0", 8080)
    upstreams: tuple[str, ...] = ()
    # Links to each upstream URL, so a load balancer can spread them over several app
    # instances (docs/TOPOLOGY.md). The CLI defaults to 2; in-process users keep one.
    links: int = 1
    name: str = field(default_factory=socket.gethostname)
    limits: Limits = DEFAULT_LIMITS
    # TLS to the app: verification is on; ``ca_file`` adds a private CA.
    ca_file: str | None = None
    # Seconds a SIGTERMed edge waits for the app to ack the streams' tails. Fly's
    # kill_timeout defaults to 5 s; an app acks within ~100 ms, so 4 s leaves headroom.
    shutdown_grace: float = 4.0
    # RTMPS: a second listener speaking RTMP inside TLS, with this certificate and key.
    rtmps_listen: tuple[str, int] | None = None
    tls_cert: str | None = None
    tls_key: str | None = field(default=None, repr=False)
    # Static keys {NAME: STATICKEY} for publishers that can't take a signed key per session.
    allow_keys: dict[str, str] = field(default_factory=dict, repr=False)
    # Bearer token for status, metrics and the dashboard on a non-loopback --http
    # listener; None: RELAY_STATUS_TOKEN or one derived from the secret (http.status_token).
    status_token: str | None = field(default=None, repr=False)
    # Raw TCP tunnels {NAME: (HOST, PORT)} to listen on (``--tcp HOST:PORT=NAME``).
    tcp_tunnels: dict[str, tuple[str, int]] = field(default_factory=dict)


class Edge:
    """An rtmp-relay edge. ``await start()``, then ``await stop()``."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.limits = config.limits
        self.instance = secrets.token_hex(6)
        self.streams: dict[str, EdgeStream] = {}  # live, by name
        self._finishing: set[EdgeStream] = set()  # ended, tail not yet acked
        self.budget = Budget()  # bytes all streams' buffers hold (Limits.max_buffered_total)
        self.links: list[EdgeLink] = []
        self.connections: set[RtmpConnection] = set()
        self._per_ip: Tally[str] = Tally()
        self._uids = itertools.count(1)
        self._verifier = ProofVerifier(
            config.secret, self.limits.auth_max_skew, self.limits.auth_max_remembered
        )
        self._rtmp_server: asyncio.base_events.Server | None = None
        self._tunnel_servers: list[asyncio.base_events.Server] = []
        self._rtmps_server: asyncio.base_events.Server | None = None
        self.rtmps_port = 0
        self._allow = AllowList(config.allow_keys)
        self._http_runner: web.AppRunner | None = None
        self.rtmp_port = 0
        self.http_port = 0
        if not 1 <= config.links <= MAX_LINKS:
            raise ValueError(f"links per upstream must be 1 to {MAX_LINKS}, not {config.links}")
        # Each dialer's state ("down", "connecting", "up"), per upstream URL.
        self.link_state: dict[str, list[str]] = {url: ["down"] * config.links for url in config.upstreams}
        self.metrics = Metrics("relay_edge", self._gauges, lambda: [s.codecs for s in self.streams.values()])
        # Background tasks (the sweep, one dialer per upstream) run supervised: restarted on a bug,
        # and /healthz turns 503 while one keeps failing.
        self.supervisor = Supervisor(self.metrics, self.limits)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen and dial; if any step fails, close what the earlier steps opened, then raise."""
        try:
            await self._start()
        except BaseException:
            # A half-started edge would keep its RTMP port bound: publishers would connect to
            # an edge with no link and the next start in this process could not bind.
            await self.stop(grace=0)
            raise

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.config.rtmp_listen
        self._rtmp_server = await loop.create_server(
            lambda: RtmpConnection(self), host, port, reuse_address=True, backlog=512
        )
        self.rtmp_port = self._rtmp_server.sockets[0].getsockname()[1]
        log.info("RTMP server started on port %d", self.rtmp_port)
        if self.config.rtmps_listen is not None:
            if not (self.config.tls_cert and self.config.tls_key):
                raise ValueError("RTMPS needs a certificate and a key (--cert, --key)")
            host, port = self.config.rtmps_listen
            tls_context = tls.server_context(self.config.tls_cert, self.config.tls_key)
            # Plain TCP, with TLS run inside the connection (tls.ServerTls): it is counted (in total and per
            # address) from accept, not after the TLS handshake as an ssl= server would.
            self._rtmps_server = await loop.create_server(
                lambda: RtmpConnection(self, tls_context), host, port, reuse_address=True, backlog=512
            )
            self.rtmps_port = self._rtmps_server.sockets[0].getsockname()[1]
            log.info("RTMPS server started on port %d", self.rtmps_port)
        if self.config.http_listen is not None:
            self._http_runner = app_runner(edge_app(self), self.limits)
            await self._http_runner.setup()
            site = GuardedSite(self._http_runner, *self.config.http_listen, self.limits, reuse_address=True)
            await site.start()
            self.http_port = site.port
            log.info("HTTP server started on port %d", self.http_port)
        self.supervisor.spawn("sweep", self._sweep)
        for tunnel, (host, port) in self.config.tcp_tunnels.items():
            server = await serve_tunnel(tunnel, host, port, self._tunnel_link)
            self._tunnel_servers.append(server)
            log.info("TCP tunnel %s listening on port %d", tunnel, server.sockets[0].getsockname()[1])
        for url in self.config.upstreams:
            warn_if_plaintext(url, log)
            for i in range(self.config.links):
                name = f"dial {safe_url(url)}" + (f" #{i + 1}" if self.config.links > 1 else "")
                self.supervisor.spawn(name, functools.partial(self._dial_forever, url, i))

    def _tunnel_link(self) -> TunnelMux | None:
        """The link a new raw TCP connection rides on: the longest-lived one up."""
        return self.links[0].tunnels if self.links else None

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown (SIGTERM): stop accepting, end the streams, wait for the app's acks.

        Publishers are disconnected (LiveKit egress retries, reaching the next edge), each
        stream ends with ``publisher_lost`` after its last tag, and the links stay up for
        at most ``grace`` seconds (``EdgeConfig.shutdown_grace``) until the app has acked
        every tail. Then each link gets ``Close(code=shutdown)`` and a 1001 close.
        """
        grace = self.config.shutdown_grace if grace is None else grace
        if self._rtmp_server is not None:
            self._rtmp_server.close()
        if self._rtmps_server is not None:
            self._rtmps_server.close()
        for server in self._tunnel_servers:
            server.close()
        for conn in list(self.connections):
            conn.close()
        for stream in list(self.streams.values()):
            self._end(stream, "edge shutting down", wire.Code.PUBLISHER_LOST)
        deadline = time.monotonic() + grace
        while self.links and any(s.link is not None for s in self._finishing) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        unacked = sum(s.outbox.next_seq - 1 - s.outbox.acked for s in self._finishing)
        if unacked:
            log.warning("shutting down with %d tags not acked by the app", unacked)
        # Close links before cancelling their tasks so apps see "going away" rather than an error.
        for link in list(self.links):
            with contextlib.suppress(Exception):
                await link.transport.send(
                    wire.encode(wire.Close(sid=None, reason="edge shutting down", code=wire.Code.SHUTDOWN))
                )
                await link.transport.close(1001, "edge shutting down")
        await self.supervisor.stop()  # logs any task that had died
        if self._http_runner is not None:
            await self._http_runner.cleanup()

    # --- RTMP side (called by RtmpConnection) ---------------------------------------------

    def admit(self, conn: RtmpConnection) -> str | None:
        """Count a new connection in, or say which limit refuses it.

        ``max_connections_per_ip`` counts only connections not yet granted a publish
        (see :meth:`_release_ip`): authorized publishers are bounded by ``max_streams``.
        """
        if len(self.connections) >= self.limits.max_connections:
            return f"max_connections: {self.limits.max_connections} connections already open"
        if self._per_ip[conn.ip] >= self.limits.max_connections_per_ip:
            return f"max_connections_per_ip: {self.limits.max_connections_per_ip} from {conn.ip}"
        self.connections.add(conn)
        self._per_ip[conn.ip] += 1
        conn.counted_ip = True
        return None

    def _release_ip(self, conn: RtmpConnection) -> None:
        """Take ``conn`` out of its address's count: it closed, or its publish was accepted."""
        if conn.counted_ip:
            conn.counted_ip = False
            self._per_ip[conn.ip] -= 1
            if self._per_ip[conn.ip] <= 0:
                del self._per_ip[conn.ip]

    def disconnected(self, conn: RtmpConnection) -> None:
        self.connections.discard(conn)
        self._release_ip(conn)
        for stream in conn.streams.values():
            if stream.conn is conn:
                stream.conn = None
                stream.orphaned_at = time.monotonic()
                log.info(
                    "publisher of %s disconnected; waiting %g s for it",
                    stream.name,
                    self.limits.reconnect_grace,
                )

    def publish(self, conn: RtmpConnection, event: PublishRequested) -> None:
        key, _query = keys.split_publish_name(event.name)
        name = self._allow.match(key) if self._allow else None
        if name is None:
            try:
                name = keys.verify_key(self.config.secret, key, time.time(), live=self._live_key_expiry)
            except AuthError as exc:
                self.metrics.auth_failures.labels("stream_key").inc()
                reason = str(exc)
                if self._allow and "not signed" in reason:
                    # "not signed" echoes the key, which may be a mistyped static key.
                    reason = "unknown static key and not a signed stream key"
                log.warning("refused publish from %s: %s", conn.peer, reason)
                conn.reject(event.stream_id, "NetStream.Publish.Unauthorized", "stream key refused")
                return
        stream = self.streams.get(name)
        takeover = stream is not None and not stream.ended
        if stream is not None and takeover:
            self._take_over(stream, conn)
        elif refusal := self._stream_limit(name):
            self.metrics.limit_breach(refusal)
            log.warning("refused publish of %r from %s: %s reached", name, conn.peer, refusal)
            conn.reject(event.stream_id, "NetStream.Publish.BadName", f"{refusal} reached")
            return
        else:
            stream = EdgeStream(f"{self.instance}-{next(self._uids)}", name, self.limits, self.budget)
            self.streams[name] = stream
            self.metrics.streams.inc()
        stream.conn = conn
        stream.key_expiry = keys.key_expiry(key)
        stream.rtmp_stream_id = event.stream_id
        stream.orphaned_at = None
        stream.publishers += 1
        if takeover:
            stream.publisher_marks[stream.outbox.next_seq] = Publisher(conn.peer, conn.app, conn.flash_ver)
            stream.rebase_next = True
        conn.accept(event.stream_id, stream)
        self._release_ip(conn)  # a signed publisher: bounded by max_streams, not per address
        log.info("publish %s from %s (app %r)", name, conn.peer, event.app)
        self._assign(stream)

    def _live_key_expiry(self, name: str) -> int | None:
        """EXPIRY of the key ``name``'s live (or orphaned, within reconnect_grace) stream came with."""
        stream = self.streams.get(name)
        return stream.key_expiry if stream is not None and not stream.ended else None

    def _stream_limit(self, name: str) -> str | None:
        """The limit a new stream called ``name`` would breach, if any.

        Ended streams still flushing their tail to the app hold memory too, so they count:
        otherwise publishing and unpublishing in a loop (one valid key) would pile them up.
        """
        if len(self.streams) + len(self._finishing) >= self.limits.max_streams:
            return "max_streams"
        if sum(s.name == name for s in self._finishing) >= self.limits.max_streams_per_key:
            return "max_streams_per_key"
        return None

    def _take_over(self, stream: EdgeStream, conn: RtmpConnection) -> None:
        """The same key again: the new publisher continues the same logical stream."""
        old = stream.conn
        if old is not None and old is not conn:
            old.streams.pop(stream.rtmp_stream_id, None)
            old.close()
        self.metrics.publisher_reconnects.inc()
        log.info("publisher of %s reconnected from %s", stream.name, conn.peer)

    def media(self, stream: EdgeStream, tag_type: int, timestamp: int, data: bytes) -> None:
        now = time.monotonic()
        timestamp = stream.rebase(timestamp, now)
        stream.note(tag_type, timestamp, data)
        stream.outbox.push(tag_type, timestamp, data, now)
        if self.budget.used > self.limits.max_buffered_total:
            self._over_budget()
        metrics = self.metrics
        metrics.tags_total += 1
        metrics.bytes_total += len(data)
        if stream.link is not None and stream.ready:
            stream.link.wake(stream)

    def _over_budget(self) -> None:
        """All buffers together passed max_buffered_total: drop the oldest tags across streams.

        Oldest by arrival, acked or not, each stream reporting a Gap, down to 31/32 of the
        limit at once (so this runs once per 3 MiB pushed, not per tag), through a heap of
        the streams' oldest tags: O(log streams) a tag, no scan per tag.
        """
        limit = self.limits.max_buffered_total
        target = limit - limit // 32
        held = [s.outbox for s in [*self.streams.values(), *self._finishing]]
        heap = [(o.oldest_arrival(), i, o) for i, o in enumerate(held) if o.buffered_tags > 1]
        heapq.heapify(heap)
        dropped = 0
        while self.budget.used > target and heap:
            _, i, outbox = heap[0]
            dropped += outbox.drop_oldest()
            if outbox.buffered_tags > 1:
                heapq.heapreplace(heap, (outbox.oldest_arrival(), i, outbox))
            else:
                heapq.heappop(heap)
        if not dropped:
            return  # each stream down to its newest tag: nothing older to give up
        self.metrics.limit_breach("max_buffered_total")
        log.warning(
            "max_buffered_total: %d bytes held by %d streams; dropped the oldest %d bytes",
            self.budget.used + dropped,
            len(held),
            dropped,
        )

    def unpublish(self, stream: EdgeStream, reason: str) -> None:
        log.info("unpublish %s (%s)", stream.name, reason)
        self._end(stream, f"publisher: {reason}", wire.Code.UNPUBLISHED)

    def _end(self, stream: EdgeStream, reason: str, code: str) -> None:
        if stream.ended:
            return
        stream.ended = True
        stream.end_code = code
        stream.ended_at = time.monotonic()
        stream.ready = True  # even a stream with no media gets its Open and Close
        stream.end_reason = reason
        if self.streams.get(stream.name) is stream:
            del self.streams[stream.name]
            self._finishing.add(stream)
        if stream.link is not None:
            stream.link.wake()

    def refused(self, stream: EdgeStream, code: str, reason: str) -> None:
        """The app refused or closed the stream: tell the publisher, end it."""
        log.warning("app refused %s: %s %s", stream.name, code, reason)
        conn = stream.conn
        if conn is not None and not conn.closed:
            conn.reject(stream.rtmp_stream_id, "NetStream.Publish.BadName", reason or code)
        self._end(stream, f"app: {reason or code}", code)
        self._finish(stream)

    def gap(self, stream: EdgeStream, gap: Gap) -> None:
        stream.gaps += 1
        self.metrics.gap_events.inc()
        self.metrics.gap_tags.inc(gap.tags)
        log.warning(
            "gap in %s: dropped %d tags (%d bytes, %d ms) before seq %d",
            stream.name,
            gap.tags,
            gap.bytes,
            gap.ms,
            gap.seq,
        )

    def acked(self, stream: EdgeStream) -> None:
        marks = stream.publisher_marks
        if marks:
            for seq in [s for s in marks if s <= stream.outbox.acked]:
                del marks[seq]
        outbox = stream.outbox
        # Finished only once its Close is on the wire too, or the app would never hear the end.
        closed = stream.link is None or stream.link.close_sent(stream)
        if stream.ended and closed and not outbox.pending and outbox.acked >= outbox.next_seq - 1:
            self._finish(stream)

    def _finish(self, stream: EdgeStream) -> None:
        self._finishing.discard(stream)
        if stream.link is not None:
            stream.link.forget(stream)
            stream.link = None
        stream.outbox.discard()

    def streams_for(self, link: EdgeLink) -> list[EdgeStream]:
        live = [s for s in self.streams.values() if s.link is link]
        return live + [s for s in self._finishing if s.link is link]

    # --- links ----------------------------------------------------------------------------

    def _assign(self, stream: EdgeStream) -> bool:
        """Give an unassigned stream to one consumer (docs/TOPOLOGY.md); True if it got one."""
        if stream.link is None:
            link = self._pick_link(stream)
            if link is None:
                return False
            stream.link = link
            stream.consumer = link.peer.instance
        stream.link.wake()
        return True

    def _pick_link(self, stream: EdgeStream) -> EdgeLink | None:
        """The link ``stream`` goes to by :func:`assign.pick`, or None if no consumer asked for it."""
        held = Tally(s.link for s in [*self.streams.values(), *self._finishing] if s.link is not None)
        candidates = [
            Candidate(ln.peer.instance, bool(ln.peer.patterns), ln.wants(stream.name), held[ln])
            for ln in self.links
        ]
        index = pick(candidates, stream.consumer)
        return None if index is None else self.links[index]

    async def run_link(self, transport: Any, *, dialer_proof: str, dialed: bool) -> None:
        """Hello, then pump one link until it ends; its streams wait for the next."""
        # Every stream we hold, so a client can finish the ones we no longer have.
        held = [*self.streams.values(), *self._finishing]
        hello = wire.Hello(
            version=wire.PROTOCOL_VERSION,
            role="edge",
            instance=self.instance,
            name=self.config.name,
            streams=tuple(wire.ResumePoint(uid=s.uid, seq=s.outbox.next_seq - 1) for s in held),
        )
        peer = await exchange_hello(
            transport,
            hello,
            secret=self.config.secret,
            dialer_proof=dialer_proof,
            dialed=dialed,
            timeout=self.limits.handshake_timeout,
        )
        link = EdgeLink(self, transport, peer)
        self.links.append(link)
        self.metrics.link_connects.inc()
        # The instance says which app replica a load balancer gave this link (--links).
        log.info("link up: %s (%s %r, instance %s)", transport.remote, peer.role, peer.name, peer.instance)
        for stream in [*self.streams.values(), *self._finishing]:
            resumable = stream.uid in link.resume_points or stream.outbox.acked > 0
            if stream.link is None and self._assign(stream) and stream.link is link and resumable:
                self.metrics.resumes.inc()
        try:
            await link.run()
        finally:
            self.links.remove(link)
            for stream in [*self.streams.values(), *self._finishing]:
                if stream.link is link:
                    stream.link = None
                    stream.outbox.rewind()
                    if self.links:
                        self._assign(stream)
                    if stream.conn is not None:
                        stream.conn.resume_if_caught_up()  # no link: buffer (and drop), never stall

    async def _dial_forever(self, url: str, index: int = 0) -> None:
        """Push mode: keep link ``index`` to ``url`` up (the loop pull mode uses too)."""

        async def run(transport: WebsocketsTransport, proof: str) -> None:
            await self.run_link(transport, dialer_proof=proof, dialed=True)

        def on_state(state: str) -> None:
            self.link_state[url][index] = state

        await dial_forever(
            url,
            secret=self.config.secret,
            role="edge",
            limits=self.limits,
            run_link=run,
            ca_file=self.config.ca_file,
            on_state=on_state,
            on_failure=lambda kind: self.metrics.link_failures.labels(kind).inc(),
            on_error=lambda exc: self.supervisor.report(f"dial {safe_url(url)}", exc),
        )

    def unhealthy(self) -> list[str]:
        """Why ``/healthz`` should answer 503 (a background task keeps failing); empty when healthy."""
        return self.supervisor.unhealthy()

    def verify_link_proof(self, value: str, target: str = "") -> None:
        """Pull mode: check a dialing app's proof for ``target`` before upgrading (raises AuthError)."""
        self._verifier.verify(value, time.time(), role="client", target=target)

    # --- housekeeping ---------------------------------------------------------------------

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.check_timeouts(now)
            for stream in list(self.streams.values()):
                if stream.orphaned_at is not None and now - stream.orphaned_at > self.limits.reconnect_grace:
                    self._end(stream, "publisher: gone", wire.Code.PUBLISHER_LOST)
            for stream in list(self._finishing):
                # An ended stream's tail is kept as long as the buffer would have kept it,
                # also when a link is up that never acks it.
                if now - stream.ended_at > self.limits.buffer_seconds:
                    self._expire(stream)

    def _expire(self, stream: EdgeStream) -> None:
        """An ended stream's tail outlived ``buffer_seconds``: let it go, never silently.

        With a link up that has not sent the Close yet (the app stopped taking this stream), the
        tail is dropped first, so the link reports it as a Gap and then closes the stream: the
        app ends it with the loss counted. The next sweep finishes it.
        """
        outbox = stream.outbox
        if outbox.buffered_tags:
            log.warning(
                "%s ended %g s ago; dropping its %d unacked tags",
                stream.name,
                self.limits.buffer_seconds,
                outbox.buffered_tags,
            )
        link = stream.link
        if link is not None and not link.close_sent(stream):
            outbox.drop_all()
            link.wake(stream)
            return
        self._finish(stream)

    def status(self) -> dict[str, Any]:
        """The ``/api/rtmp/status`` document. Holds no secret and no key."""
        now = time.monotonic()
        streams = []
        for s in [*self.streams.values(), *self._finishing]:
            streams.append(
                {
                    "name": s.name,
                    "uid": s.uid,
                    "codecs": s.codecs,
                    "bytes": s.bytes_in,
                    "tags": s.tags_in,
                    "bitrate": round(s.bitrate(now)),
                    "publisher": s.publisher_info(),
                    "publishers": s.publishers,
                    "state": "ended" if s.ended else ("live" if s.conn else "waiting for publisher"),
                    "link": s.link.transport.remote if s.link else None,
                    "buffered_bytes": s.outbox.buffered_bytes,
                    "buffered_tags": s.outbox.buffered_tags,
                    "acked_seq": s.outbox.acked,
                    "next_seq": s.outbox.next_seq,
                    "gaps": s.gaps,
                    "dropped_tags": s.outbox.dropped_tags,
                }
            )
        return {
            "role": "edge",
            "name": self.config.name,
            "instance": self.instance,
            "rtmp_port": self.rtmp_port,
            "connections": len(self.connections),
            "links": [
                {
                    "remote": ln.transport.remote,
                    "peer": ln.peer.name or ln.peer.instance,
                    "instance": ln.peer.instance,  # which app replica (several behind one URL)
                    "since": ln.since,
                    "rtt_ms": ln.rtt_ms,
                }
                for ln in self.links
            ],
            "upstreams": [_upstream_status(url, states) for url, states in self.link_state.items()],
            "streams": streams,
        }

    def _gauges(self) -> dict[str, tuple[str, float]]:
        return {
            "live_streams": ("Streams currently published", len(self.streams)),
            "connections": ("Open RTMP connections", len(self.connections)),
            "links": ("Links up", len(self.links)),
            "buffered_bytes": (
                "Bytes waiting for an ack, all streams",
                sum(s.outbox.buffered_bytes for s in [*self.streams.values(), *self._finishing]),
            ),
            "held_bytes": (
                "Bytes all stream buffers hold, per-tag overhead included (max_buffered_total)",
                self.budget.used,
            ),
        }


def _upstream_status(url: str, states: list[str]) -> dict[str, Any]:
    """One upstream in ``/api/rtmp/status``: "up" while any of its links is, and how many are."""
    state = next((st for st in ("up", "connecting") if st in states), "down")
    return {"url": safe_url(url), "state": state, "links_up": states.count("up"), "links": len(states)}


def edge_app(edge: Edge) -> web.Application:
    """The edge's HTTP app: the common routes plus ``/link`` for apps that dial in (pull)."""
    app = harden(web.Application(), edge.limits)
    host = edge.config.http_listen[0] if edge.config.http_listen else "127.0.0.1"
    token = None if is_loopback(host) else (edge.config.status_token or status_token(edge.config.secret))
    common_routes(app, edge.status, edge.metrics.render, token, health=edge.unhealthy)

    async def link(request: web.Request) -> web.StreamResponse:
        accepted = await accept_link(request, edge.verify_link_proof, edge.limits.ws_max_message)
        if isinstance(accepted, web.Response):
            edge.metrics.auth_failures.labels("link_proof").inc()
            return accepted
        ws, proof = accepted
        transport = AiohttpTransport(ws, f"{request.remote} (pull)")
        try:
            await edge.run_link(transport, dialer_proof=proof, dialed=False)
        except LINK_ENDED as exc:
            http_log.warning("link from %s ended: %s", request.remote, exc)
            with contextlib.suppress(Exception):
                await transport.close(close_code_for(exc), str(exc))
        except Exception as exc:  # a bug: logged with its traceback and counted; only this link ends
            edge.supervisor.report("link (pull)", exc, then="dropping that link")
            with contextlib.suppress(Exception):
                await transport.close(1011, f"internal error: {type(exc).__name__}")
        finally:
            await ws.close()
        return ws

    app.router.add_get("/link", link)
    return app
