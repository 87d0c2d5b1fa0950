"""The app's end of the link: accept the edge's WebSocket (push) or dial it (pull).

Mount :meth:`Receiver.handler` in an aiohttp app (or run ``relay-client serve``)
and take streams from :meth:`Receiver.streams` or an ``on_stream`` callback::

    receiver = Receiver(secret=os.environ["RELAY_SECRET"])
    app.router.add_get("/relay", receiver.handler)

    async for stream in receiver.streams():
        async for chunk in stream.audio():      # 16 kHz mono s16 by default
            transcribe(chunk.data)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from relay_edge import wire
from relay_edge.auth import ProofVerifier
from relay_edge.dial import RESTART_CODES, classify
from relay_edge.errors import TransportClosed, WireError
from relay_edge.limits import DEFAULT_LIMITS, Limits
from relay_edge.metrics import Metrics
from relay_edge.supervise import Supervisor
from relay_edge.transport import AiohttpTransport, Transport, exchange_hello, run_until_first
from relay_edge.tunnel import TunnelMux
from relay_edge.web import LINK_ENDED, accept_link, close_code_for

from .decode import AudioFormat
from .republish import DEFAULT_REPUBLISH_LIMITS, LocalPublish, RepublishLimits, Target
from .stream import GapEvent, Stream

log = logging.getLogger("relay_client")

# What the app may refuse a stream with: return a reason string to refuse.
AcceptHook = Callable[[Stream], "Awaitable[str | None] | str | None"]


class Receiver:
    """Receives streams from one or more edges and hands them to the app.

    ``republish="rtmp://127.0.0.1:1935/live"`` also publishes every stream NAME to that RTMP server
    as ``live/NAME`` (``{name}`` places it elsewhere), for apps that read from their own server;
    see :mod:`relay_client.republish`.
    """

    def __init__(
        self,
        secret: str,
        *,
        audio_format: AudioFormat | None = None,
        consume: frozenset[str] | set[str] = frozenset({"audio"}),
        out_dir: str | None = None,
        on_stream: Callable[[Stream], Awaitable[None]] | None = None,
        accept: AcceptHook | None = None,
        limits: Limits = DEFAULT_LIMITS,
        name: str | None = None,
        forwards: dict[str, tuple[str, int]] | None = None,
        patterns: tuple[str, ...] = (),
        republish: str | None = None,
        republish_limits: RepublishLimits = DEFAULT_REPUBLISH_LIMITS,
    ) -> None:
        self._secret = secret
        self.audio_format = audio_format or AudioFormat()
        self.consume = frozenset(consume)
        self.out_dir = out_dir
        self.limits = limits
        self.name = name or socket.gethostname()
        self.instance = secrets.token_hex(6)
        self.patterns = tuple(patterns)  # stream-name globs this app wants from edges (empty: all)
        self.forwards = dict(forwards or {})  # raw TCP tunnels: name -> local (host, port)
        # The app's own RTMP server: every stream is published there as NAME (RepublishError if bad).
        self.republish = Target.parse(republish) if republish else None
        self.republish_limits = republish_limits
        self._on_stream = on_stream
        self._accept = accept
        self._verifier = ProofVerifier(secret, limits.auth_max_skew, limits.auth_max_remembered)
        self._new: asyncio.Queue[Stream] = asyncio.Queue()
        self.live: dict[str, Stream] = {}  # by uid
        # Uids of streams the edge closed, oldest first. An edge that lost the last acks with its
        # link offers such a stream again; it must not start over (files hold it once). An edge
        # holds at most max_streams streams, so that many recent ends cover what it can offer.
        self.ended_uids: dict[str, None] = {}
        self.links: list[ClientLink] = []
        self.closing = False  # shutdown() started: no new links
        self._tasks: set[asyncio.Task[Any]] = set()
        self.metrics = Metrics(
            "relay_client", self._gauges, lambda: [s.info.codecs for s in self.live.values()]
        )
        # The pull-mode dialer runs supervised; a bug in one link (an accept hook that raises)
        # is logged, counted and weighed for /healthz, and ends only that link.
        self.supervisor = Supervisor(self.metrics, limits)
        self._metered: dict[str, tuple[int, int, int, int]] = {}  # uid -> tags, bytes, gaps, gap tags counted
        self._rates: dict[str, list[tuple[float, int]]] = {}  # uid -> (time, bytes) at status reads

    # --- the app's side -------------------------------------------------------------------

    async def streams(self) -> AsyncIterator[Stream]:
        """Every new stream, as it opens (not resumed ones this process already has)."""
        while True:
            yield await self._new.get()

    def add_stream(self, stream: Any) -> None:
        """Deliver a stream that did not come over a link, like any other.

        Used by LiveKit's Track Egress fallback (:class:`relay_client.pcm_stream.PcmStream`):
        the object offers ``info``, ``stats``, ``audio()``, ``events()`` and ``wait_ended()``.
        It shows in :meth:`streams`, ``on_stream`` and :meth:`status` until it ends.
        """
        self.live[stream.info.uid] = stream
        self.metrics.streams.inc()
        self._new.put_nowait(stream)
        if self._on_stream is not None:
            self._spawn(self._on_stream(stream))
        self._spawn(self._reap(stream))

    async def handler(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for the edge's pushed link: ``app.router.add_get("/relay", r.handler)``."""
        accepted = await accept_link(request, self._verify, self.limits.ws_max_message)
        if isinstance(accepted, web.Response):
            self.metrics.auth_failures.labels("link_proof").inc()
            return accepted
        ws, proof = accepted
        if self.closing:
            # A new link would only be cut again: tell the edge to go elsewhere at once.
            await ws.close(code=1001, message=b"app shutting down")
            return ws
        await self.run_link(
            AiohttpTransport(ws, f"{request.remote} (push)"), dialer_proof=proof, dialed=False
        )
        await ws.close()
        return ws

    async def connect(self, url: str, *, ca_file: str | None = None) -> None:
        """Pull mode: keep a link to the edge's ``/link`` up until cancelled.

        Run it as a background task inside any app (a worker, a laptop):
        ``asyncio.create_task(receiver.connect("wss://edge.fly.dev/link"))``. Nothing but
        cancelling ends it: failed attempts are retried with backoff, and an unexpected
        exception is logged with its traceback, counted and weighed by :meth:`unhealthy`.
        """
        from relay_edge.dial import dial_forever, safe_url

        name = f"connect {safe_url(url)}"

        async def run(transport: Transport, proof: str) -> None:
            await self.run_link(transport, dialer_proof=proof, dialed=True)

        def dial() -> Awaitable[None]:
            return dial_forever(
                url,
                secret=self._secret,
                role="client",
                limits=self.limits,
                run_link=run,
                ca_file=ca_file,
                on_failure=lambda kind: self.metrics.link_failures.labels(kind).inc(),
                on_error=lambda exc: self.supervisor.report(name, exc),
            )

        await self.supervisor.run(name, dial)

    def unhealthy(self) -> list[str]:
        """Why ``/healthz`` should answer 503 (a task or the links keep failing); empty when healthy."""
        return self.supervisor.unhealthy()

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM): hand over what arrived, ack it, then close every link.

        Data arriving after this is ignored (it is not acked, so the edge keeps it for
        the next instance). Each stream's pipeline finishes its backlog — files written,
        the app's queues fed — and the acks go out; then each link gets
        ``Close(code=shutdown)`` and a 1001 close, which makes the edge redial at once
        (on a deploy, reaching the new instance). Bounded by ``timeout`` seconds.
        """
        self.closing = True
        for link in self.links:
            link.draining = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (
            any(s.busy for s in self.live.values()) or any(ln.acks_pending for ln in self.links)
        ):
            await asyncio.sleep(0.02)
        for link in list(self.links):
            await link.close()

    def _verify(self, proof: str, target: str = "") -> None:
        self._verifier.verify(proof, time.time(), role="edge", target=target)

    async def open_forward(self, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Raw TCP mode: connect a tunneled connection to the local address named ``name``."""
        host, port = self.forwards[name]
        return await asyncio.open_connection(host, port)

    def verify_proof(self, proof: str, target: str = "") -> None:
        """Check a dialing edge's proof header for ``target`` (raises AuthError): for endpoints on
        other servers; ``target`` is :func:`relay_edge.web.acceptor_target` of the request."""
        self._verify(proof, target)

    # --- links ------------------------------------------------------------------------------

    async def run_link(self, transport: Transport, *, dialer_proof: str, dialed: bool) -> None:
        """Hello, then pump one link until it ends. Errors end only this link."""
        if self.closing:  # shutting down: a new link would only be cut again
            with contextlib.suppress(Exception):
                await transport.close(1001, "app shutting down")
            return
        hello = wire.Hello(
            version=wire.PROTOCOL_VERSION,
            role="client",
            instance=self.instance,
            name=self.name,
            streams=tuple(wire.ResumePoint(uid=s.info.uid, seq=s.delivered) for s in self.live.values()),
            patterns=self.patterns,
        )
        try:
            peer = await exchange_hello(
                transport,
                hello,
                secret=self._secret,
                dialer_proof=dialer_proof,
                dialed=dialed,
                timeout=self.limits.handshake_timeout,
            )
            link = ClientLink(self, transport, peer)
            self.links.append(link)
            self.metrics.link_connects.inc()
            log.info("link up: %s (edge %r)", transport.remote, peer.name or peer.instance)
            self._finish_gone(peer)
            try:
                await link.run()
            finally:
                self.links.remove(link)
        except LINK_ENDED as exc:
            if dialed and isinstance(exc, TransportClosed) and exc.code in RESTART_CODES:
                raise  # the edge is restarting: dial_forever logs, counts and redials at once
            log.warning("link %s ended: %s", transport.remote, exc)
            self.metrics.link_failures.labels(classify(exc, self.limits)[0]).inc()
            with contextlib.suppress(Exception):  # tell the peer why: 1002/1009 with the error
                await transport.close(close_code_for(exc), str(exc))
        except Exception as exc:  # a bug (the app's accept hook, ours): this link ends, the next one comes
            self.metrics.link_failures.labels("unexpected").inc()
            self.supervisor.report(f"link ({'pull' if dialed else 'push'})", exc, then="dropping that link")
            with contextlib.suppress(Exception):
                await transport.close(1011, f"internal error: {type(exc).__name__}")

    def _finish_gone(self, peer: wire.Hello) -> None:
        """End streams from this edge (by name) that its Hello no longer lists.

        They ended while the link was down, or the edge restarted and lost them:
        nothing more will come, so the app gets the end instead of waiting forever.
        """
        listed = {p.uid for p in peer.streams}
        for stream in list(self.live.values()):
            if stream.info.edge == peer.name and stream.info.uid not in listed and not stream.ended:
                log.warning("stream %s: edge %s no longer has it; ending it", stream.info.name, peer.name)
                stream.end("gone from the edge")

    def _ended_at_edge(self, uid: str) -> None:
        """The edge closed stream ``uid``: remember it, so an Open for it again is answered "done"."""
        self.ended_uids[uid] = None
        while len(self.ended_uids) > self.limits.max_streams:
            del self.ended_uids[next(iter(self.ended_uids))]

    async def open_stream(self, frame: wire.Open, link: ClientLink) -> tuple[Stream, str | None]:
        """A stream opened on ``link``: the existing object on a resume, else a new one."""
        stream = self.live.get(frame.uid)
        if stream is not None and not stream.ended:
            stream.reopen(frame)
            self.metrics.resumes.inc()
            log.info("stream %s resumed on a new link from seq %d", frame.name, frame.seq)
            return stream, None
        local = LocalPublish(self.republish, frame.name, self.republish_limits) if self.republish else None
        stream = Stream(
            frame,
            audio_format=self.audio_format,
            consume=self.consume,
            out_dir=self.out_dir,
            ack=self._ack,
            republish=local,
        )
        refusal = await self._ask_accept(stream)
        if refusal is not None:
            return stream, refusal
        self.live[frame.uid] = stream
        self.metrics.streams.inc()
        stream.start()
        log.info("stream %s opened (codecs %s, from %s)", frame.name, frame.codecs, frame.edge or "edge")
        self._new.put_nowait(stream)
        if self._on_stream is not None:
            self._spawn(self._on_stream(stream))
        self._spawn(self._reap(stream))
        return stream, None

    async def _ask_accept(self, stream: Stream) -> str | None:
        if self._accept is None:
            return None
        verdict = self._accept(stream)
        if asyncio.iscoroutine(verdict) or isinstance(verdict, asyncio.Future):
            verdict = await verdict
        return verdict  # type: ignore[return-value]

    def _bitrate(self, stream: Stream) -> int:
        """Bits per second received, over the last ~5 s of status reads (since the start on the first)."""
        now = time.time()
        samples = self._rates.setdefault(stream.info.uid, [])
        samples.append((now, stream.stats.bytes))
        while len(samples) > 2 and now - samples[0][0] > 5:
            samples.pop(0)
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        if t1 - t0 >= 0.5:
            return round((b1 - b0) * 8 / (t1 - t0))
        elapsed = now - stream.stats.started
        return round(b1 * 8 / elapsed) if elapsed > 0 else 0

    def _meter(self, stream: Stream) -> None:
        """Move the counters on by what ``stream`` delivered since last time (every batch ends in an ack)."""
        s = stream.stats
        now = (s.tags, s.bytes, s.gaps, s.gap_tags)
        before = self._metered.get(stream.info.uid, (0, 0, 0, 0))
        m = self.metrics
        m.tags_total += max(0, now[0] - before[0])
        m.bytes_total += max(0, now[1] - before[1])
        for counter, new, old in ((m.gap_events, now[2], before[2]), (m.gap_tags, now[3], before[3])):
            if new > old:
                counter.inc(new - old)
        self._metered[stream.info.uid] = now

    async def _reap(self, stream: Stream) -> None:
        await stream.wait_ended()
        local = getattr(stream, "republish", None)
        if local is not None:
            await local.close()
        self._meter(stream)
        self._metered.pop(stream.info.uid, None)
        self._rates.pop(stream.info.uid, None)
        if self.live.get(stream.info.uid) is stream:
            del self.live[stream.info.uid]

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Future[Any]) -> None:
        """A per-stream task ended: an exception in it (the app's ``on_stream``, say) is logged, not lost."""
        self._tasks.discard(task)  # type: ignore[arg-type]
        if not task.cancelled() and isinstance(exc := task.exception(), Exception):
            self.supervisor.report("stream task", exc, then="that stream's task ended", weigh=False)

    def _ack(self, stream: Stream, seq: int) -> None:
        self._meter(stream)
        for link in self.links:
            link.ack(stream, seq)

    # --- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The app's ``/api/rtmp/status``: every live stream. No key, no secret."""
        return {
            "role": "client",
            "name": self.name,
            "instance": self.instance,
            "links": [
                {"remote": ln.transport.remote, "edge": ln.peer.name or ln.peer.instance, "since": ln.since}
                for ln in self.links
            ],
            "streams": [
                {
                    "name": s.info.name,
                    "uid": s.info.uid,
                    "edge": s.info.edge,
                    "codecs": s.info.codecs,
                    "publisher": s.info.publisher,
                    "bytes": s.stats.bytes,
                    "tags": s.stats.tags,
                    "audio_samples": s.stats.audio_samples,
                    "audio_level_dbfs": s.stats.audio_level_dbfs,
                    "bitrate": self._bitrate(s),
                    "gaps": s.stats.gaps,
                    "acked_seq": s.delivered,
                    "queued_batches": s.queued,
                    "link": "up" if any(s.info.uid in ln.sids for ln in self.links) else "down",
                    "resumed": s.info.resumed,
                    "republish": s.republish.status() if getattr(s, "republish", None) else None,
                }
                for s in self.live.values()
            ],
        }

    def _gauges(self) -> dict[str, tuple[str, float]]:
        return {
            "live_streams": ("Streams currently received", len(self.live)),
            "links": ("Links up", len(self.links)),
            "republish_retrying": ("Streams whose --republish server is unreachable", self._retrying()),
        }

    def _retrying(self) -> int:
        publishes = (getattr(s, "republish", None) for s in self.live.values())
        return sum(1 for p in publishes if p is not None and p.state == "retrying")


class ClientLink:
    """One link from an edge: frames in, acks out."""

    def __init__(self, receiver: Receiver, transport: Transport, peer: wire.Hello) -> None:
        self.receiver = receiver
        self.transport = transport
        self.peer = peer
        self.since = time.time()
        self.sids: dict[str, int] = {}  # stream uid -> sid
        self._streams: dict[int, Stream] = {}
        self._acks: dict[int, int] = {}
        self._refused: set[int] = set()
        self._wake = asyncio.Event()
        self.tunnels = TunnelMux(transport.send, receiver.open_forward)  # raw TCP channels
        self._last_rx = time.monotonic()
        self.draining = False  # shutting down: ignore new Data, finish acking what we have

    def ack(self, stream: Stream, seq: int) -> None:
        sid = self.sids.get(stream.info.uid)
        if sid is not None:
            self._acks[sid] = seq
            self._wake.set()

    async def run(self) -> None:
        try:
            await run_until_first(self._recv_loop(), self._send_loop(), self._watchdog())
        finally:
            self.tunnels.close_all()

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            acks, self._acks = self._acks, {}
            if acks:
                frames = [wire.Ack(sid=sid, seq=seq) for sid, seq in acks.items()]
                await self.transport.send(wire.encode_many(frames))

    @property
    def acks_pending(self) -> bool:
        return bool(self._acks)

    async def _watchdog(self) -> None:
        """Ping every ``ping_interval``; silence past ``ping_timeout`` means a dead (half-open) link.

        The edge pings too, so either side notices a link that died without a FIN or
        RST (a NAT or load balancer dropping it) within ``ping_timeout``.
        """
        limits = self.receiver.limits
        next_ping = time.monotonic() + limits.ping_interval
        while True:
            await asyncio.sleep(min(1.0, limits.ping_interval))
            now = time.monotonic()
            if now - self._last_rx > limits.ping_timeout:
                raise TimeoutError(f"ping_timeout: nothing from the edge for {limits.ping_timeout:g} s")
            if now >= next_ping:
                next_ping = now + limits.ping_interval
                await self.transport.send(wire.encode(wire.Ping(t=now)))

    async def _recv_loop(self) -> None:
        limits = self.receiver.limits
        while True:
            message = await self.transport.recv()
            self._last_rx = time.monotonic()
            for frame in wire.decode_message(message, limits):
                await self._handle(frame)

    async def _handle(self, frame: object) -> None:
        if await self.tunnels.handle(frame):
            return
        if isinstance(frame, wire.Data):
            stream = self._stream(frame.sid)
            if stream is not None and not self.draining:
                stream.feed(frame.seq, frame.tags, frame.publisher)
        elif isinstance(frame, wire.Open):
            await self._open(frame)
        elif isinstance(frame, wire.Gap):
            stream = self._stream(frame.sid)
            if stream is not None:
                stream.feed_gap(GapEvent(frame.seq, frame.tags, frame.bytes, frame.ms))
        elif isinstance(frame, wire.Close):
            if frame.sid is None:
                raise ConnectionResetError(f"edge closed the link: {frame.reason}")
            stream = self._streams.pop(frame.sid, None)
            if stream is not None:
                stream.end(frame.reason)
                self.receiver._ended_at_edge(stream.info.uid)
                # Keep the sid until the pipeline has acked the tail: the edge frees an
                # ended stream only once everything up to its Close is acknowledged.
                self.receiver._spawn(self._forget_when_ended(stream, frame.sid))
        elif isinstance(frame, wire.Ping):
            await self.transport.send(wire.encode(wire.Pong(t=frame.t)))

    async def _forget_when_ended(self, stream: Stream, sid: int) -> None:
        await stream.wait_ended()
        if self.sids.get(stream.info.uid) == sid:
            del self.sids[stream.info.uid]

    async def _open(self, frame: wire.Open) -> None:
        if frame.sid in self._streams:
            raise WireError(f"open for sid {frame.sid}, which is already open")
        if frame.uid in self.receiver.ended_uids:
            # Ended here; the edge missed our last acks. Done with it, not a new stream.
            self._refused.add(frame.sid)
            reject = wire.Reject(sid=frame.sid, code=wire.Code.DONE, reason="stream already ended here")
            await self.transport.send(wire.encode(reject))
            return
        stream, refusal = await self.receiver.open_stream(frame, self)
        if refusal is not None:
            log.warning("refused stream %s: %s", frame.name, refusal)
            self._refused.add(frame.sid)
            await self.transport.send(
                wire.encode(wire.Reject(sid=frame.sid, code=wire.Code.FORBIDDEN, reason=refusal))
            )
            return
        self.sids[frame.uid] = frame.sid
        self._streams[frame.sid] = stream
        await self.transport.send(wire.encode(wire.Accept(sid=frame.sid)))

    def _stream(self, sid: int) -> Stream | None:
        """The stream ``sid`` names; None for one we refused (its tail may still arrive)."""
        stream = self._streams.get(sid)
        if stream is None and sid not in self._refused:
            raise WireError(f"frame for sid {sid}, which is not open")
        return stream

    async def close(self) -> None:
        """Tell the edge we are going away (it redials at once), then close the WebSocket."""
        with contextlib.suppress(Exception):
            await self.transport.send(
                wire.encode(wire.Close(sid=None, reason="app shutting down", code=wire.Code.SHUTDOWN))
            )
            await self.transport.close(1001, "app shutting down")
