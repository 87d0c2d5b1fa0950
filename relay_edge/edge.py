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
import itertools
import logging
import secrets
import socket
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import accel, keys, tls, wire
from .access import AllowList
from .auth import ProofVerifier
from .coresink import CoreSink
from .dial import dial_forever, safe_url
from .edgecore import (
    AcceptPublish,
    CloseLink,
    ClosePublisher,
    Count,
    Drain,
    Drained,
    EdgeCore,
    Event,
    FrameReceived,
    GapReported,
    LimitBreached,
    LinkDown,
    LinkDue,
    LinkUp,
    LinkWritable,
    Log,
    Output,
    PublisherGone,
    PublishVerified,
    RejectPublish,
    SendFrames,
)
from .edgecore import Unpublished as CoreUnpublished
from .edgestream import EdgeStream, Publisher
from .errors import AuthError
from .ingest import RtmpConnection
from .limits import DEFAULT_LIMITS, Limits
from .link import EdgeLink
from .metrics import Metrics
from .rtmp.events import PublishRequested, TagSink, Unpublished
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
        # The registry, lifecycle, assignment and send state: sans-I/O (edgecore.py). This
        # class is its pump: sockets, TLS, HTTP, the key check, timers and metrics.
        self.core = EdgeCore(self.instance, config.name, self.limits)
        self.streams = self.core.streams  # live and orphaned, by name
        self.budget = self.core.budget
        self.links: list[EdgeLink] = []
        self._links_by_id: dict[int, EdgeLink] = {}
        self.connections: set[RtmpConnection] = set()
        self._conns: dict[int, RtmpConnection] = {}  # by conn_id, while open
        self.paused: set[RtmpConnection] = set()  # reading paused: their links are behind
        self._per_ip: Tally[str] = Tally()
        self._ids = itertools.count(1)  # conn_id and link_id for the core
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._drained = False
        self._closing: list[EdgeLink] = []  # links the core closed (CloseLink) after a Drain
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
        log.info("core: %s", accel.state())  # "compiled", or "pure: <why>" (relay_edge/accel.py)
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
        self._feed(Drain(grace))
        while not self._drained:  # the core's Drain timer ends it after ``grace`` at the latest
            await asyncio.sleep(0.02)
        # Close links before cancelling their tasks so apps see "going away" rather than an error.
        for link in self._closing:
            with contextlib.suppress(Exception):
                await link.transport.send(
                    wire.encode(wire.Close(sid=None, reason="edge shutting down", code=wire.Code.SHUTDOWN))
                )
                await link.transport.close(1001, "edge shutting down")
        if self._timer is not None:
            self._timer.cancel()
        await self.supervisor.stop()  # logs any task that had died
        if self._http_runner is not None:
            await self._http_runner.cleanup()

    # --- the core -----------------------------------------------------------------------

    def _feed(self, event: Event) -> None:
        """One input to the core; then act on what it says and re-arm its timer."""
        self.core.handle(event, time.monotonic())
        self._settle()

    def _settle(self) -> None:
        """After the core took an input: act on what it says, then re-arm its timer."""
        self._apply(self.core.outputs())
        self._arm()

    def _arm(self) -> None:
        """One loop timer for the core's earliest deadline (grace, tail expiry, drain)."""
        deadline = self.core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.core.tick(time.monotonic())
        self._settle()

    def _apply(self, outputs: list[Output]) -> None:
        """Carry out the core's outputs, in order (SendFrames only come from :meth:`pull`)."""
        metrics = self.metrics
        for out in outputs:
            if type(out) is LinkDue:
                link = self._links_by_id.get(out.link_id)
                if link is not None:
                    link.wake()
            elif isinstance(out, Log):
                logging.getLogger(out.logger).log(out.level, out.msg, *out.args)
            elif isinstance(out, AcceptPublish):
                conn = self._conns.get(out.conn_id)
                stream = self.core.stream_for(out.conn_id, out.rtmp_stream_id)
                if conn is not None and stream is not None:
                    conn.accept(out.rtmp_stream_id, stream)
                    self._release_ip(conn)  # a signed publisher: bounded by max_streams, not per address
            elif isinstance(out, RejectPublish):
                conn = self._conns.get(out.conn_id)
                if conn is not None and not conn.closed:
                    conn.reject(out.rtmp_stream_id, out.code, out.description)
            elif isinstance(out, ClosePublisher):
                conn = self._conns.get(out.conn_id)
                if conn is not None:
                    conn.close()
            elif isinstance(out, GapReported):
                metrics.gap_events.inc()
                metrics.gap_tags.inc(out.gap.tags)
            elif isinstance(out, LimitBreached):
                metrics.limit_breach(out.limit)
            elif isinstance(out, Count):
                getattr(metrics, out.metric).inc(out.n)
            elif isinstance(out, CloseLink):
                link = self._links_by_id.get(out.link_id)
                if link is not None:
                    self._closing.append(link)
            elif isinstance(out, Drained):
                self._drained = True

    def pull(self, link: EdgeLink) -> tuple[list[bytes], bool]:
        """The link can send: the core's next message for it, and whether more waits."""
        self.core.handle(LinkWritable(link.link_id), time.monotonic())
        parts: list[bytes] = []
        more = False
        rest: list[Output] = []
        for out in self.core.outputs():
            if isinstance(out, SendFrames) and out.link_id == link.link_id:
                parts.extend(out.frames)
            elif type(out) is LinkDue and out.link_id == link.link_id:
                more = True
            else:
                rest.append(out)
        self._apply(rest)
        self._arm()  # a finished tail cancels its expiry
        if parts and self.paused:
            for conn in list(self.paused):  # their links took tags: maybe caught up
                conn.resume_if_caught_up()
        return parts, more

    def frame_received(self, link: EdgeLink, frame: wire.Frame) -> None:
        """An Accept, Ack, Reject or a stream's Close from the app."""
        self._feed(FrameReceived(link.link_id, frame))

    def acks(self, link: EdgeLink, pairs: list[tuple[int, int]]) -> None:
        """A message of Acks only from the app (``wire.ack_pairs``): the core's direct entry."""
        self.core.acks(link.link_id, pairs)
        self._settle()

    def publisher_conn(self, stream: EdgeStream) -> RtmpConnection | None:
        """The connection publishing ``stream`` now, if any."""
        return self._conns.get(stream.conn_id) if stream.conn_id is not None else None

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
        conn.conn_id = next(self._ids)
        self._conns[conn.conn_id] = conn
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
        if self._conns.pop(conn.conn_id, None) is not None:
            self._feed(PublisherGone(conn.conn_id))

    def publish(self, conn: RtmpConnection, event: PublishRequested) -> None:
        """Check the key here (secrets and the allow-list are the pump's); the core does the rest."""
        key, _query = keys.split_publish_name(event.name)
        name = self._allow.match(key) if self._allow else None
        if name is None:
            try:
                name = keys.verify_key(self.config.secret, key, time.time(), live=self.core.live_key_expiry)
            except AuthError as exc:
                self.metrics.auth_failures.labels("stream_key").inc()
                reason = str(exc)
                if self._allow and "not signed" in reason:
                    # "not signed" echoes the key, which may be a mistyped static key.
                    reason = "unknown static key and not a signed stream key"
                log.warning("refused publish from %s: %s", conn.peer, reason)
                conn.reject(event.stream_id, "NetStream.Publish.Unauthorized", "stream key refused")
                return
        publisher = Publisher(conn.peer, conn.app, conn.flash_ver)
        expiry = keys.key_expiry(key)
        self._feed(PublishVerified(conn.conn_id, event.stream_id, name, event.app, publisher, expiry))

    def tag_sink(self, conn: RtmpConnection) -> TagSink:
        """``conn``'s per-tag path: each tag straight to ``EdgeCore.media``, the hot path.

        Called by ``ServerSession.receive_data`` for each tag (no event object) and for the
        Media events that follow another event in a read; compiled with the core where the
        build is in use (:mod:`relay_edge.coresink`). No timer to re-arm: a tag starts none.
        """
        return CoreSink(self.core, conn.conn_id, conn, self.metrics, self._apply)

    def unpublish(self, conn: RtmpConnection, event: Unpublished) -> None:
        self._feed(CoreUnpublished(conn.conn_id, event.stream_id, event.reason))

    # --- links ----------------------------------------------------------------------------

    async def run_link(self, transport: Any, *, dialer_proof: str, dialed: bool) -> None:
        """Hello, then pump one link until it ends; its streams wait for the next."""
        # Every stream we hold, so a client can finish the ones we no longer have.
        hello = wire.Hello(
            version=wire.PROTOCOL_VERSION,
            role="edge",
            instance=self.instance,
            name=self.config.name,
            streams=self.core.resume_points(),
        )
        peer = await exchange_hello(
            transport,
            hello,
            secret=self.config.secret,
            dialer_proof=dialer_proof,
            dialed=dialed,
            timeout=self.limits.handshake_timeout,
        )
        link = EdgeLink(self, transport, peer, next(self._ids))
        self.links.append(link)
        self._links_by_id[link.link_id] = link
        self.metrics.link_connects.inc()
        # The instance says which app replica a load balancer gave this link (--links).
        log.info("link up: %s (%s %r, instance %s)", transport.remote, peer.role, peer.name, peer.instance)
        self._feed(LinkUp(link.link_id, peer, transport.remote))
        try:
            await link.run()
        finally:
            self.links.remove(link)
            del self._links_by_id[link.link_id]
            self._feed(LinkDown(link.link_id))
            for conn in list(self.paused):
                conn.resume_if_caught_up()  # no link: buffer (and drop), never stall

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
        """Publisher connections' timeouts (the streams' timers are the core's)."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.check_timeouts(now)

    def status(self) -> dict[str, Any]:
        """The ``/api/rtmp/status`` document. Holds no secret and no key."""
        now = time.monotonic()
        streams = []
        for s in [*self.streams.values(), *self.core.finishing]:
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
                    "state": "ended" if s.ended else ("live" if s.conn_id else "waiting for publisher"),
                    "link": self.core.links[s.link_id].remote if s.link_id is not None else None,
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
            "core": accel.running(),
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
                sum(s.outbox.buffered_bytes for s in [*self.streams.values(), *self.core.finishing]),
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
