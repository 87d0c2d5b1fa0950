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
import itertools
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

from .appcore import (
    GONE_REASON,
    Abandon,
    AppCore,
    CloseLink,
    Delivered,
    Drain,
    FrameReceived,
    GapToDeliver,
    Input,
    LinkDown,
    LinkUp,
    Refuse,
    SendFrames,
    StreamEnded,
    StreamOpened,
    TagsToDeliver,
)
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
        # The link protocol (sids, dedupe, acks, ends, resume points) for every link: this class
        # and ClientLink only pump frames, streams and the clock through it.
        self.core = AppCore(self.instance, limits, name=self.name, patterns=self.patterns)
        self.links: list[ClientLink] = []
        self._by_id: dict[int, ClientLink] = {}
        self._link_ids = itertools.count(1)
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
        self._feed(Drain())
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
        try:
            peer = await exchange_hello(
                transport,
                self.core.hello(),
                secret=self._secret,
                dialer_proof=dialer_proof,
                dialed=dialed,
                timeout=self.limits.handshake_timeout,
            )
            link = ClientLink(self, transport, peer, next(self._link_ids))
            self.links.append(link)
            self._by_id[link.link_id] = link
            self.metrics.link_connects.inc()
            log.info("link up: %s (edge %r)", transport.remote, peer.name or peer.instance)
            self._feed(LinkUp(link.link_id, peer))
            try:
                await link.run()
            finally:
                self.links.remove(link)
                self._feed(LinkDown(link.link_id))
                del self._by_id[link.link_id]
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

    # --- the pump around the core -------------------------------------------------------------

    def _feed(self, event: Input) -> None:
        """One input to the core, then carry out what it says; no stream can open from these."""
        self.core.handle(event, time.monotonic())
        opened = self._dispatch()
        assert not opened, "only a frame opens a stream"

    async def feed_frame(self, link: ClientLink, frame: wire.Frame) -> None:
        """A frame from ``link``: to the core, then its outputs; an Open asks the app's accept hook."""
        self.core.handle(FrameReceived(link.link_id, frame), time.monotonic())
        for event in self._dispatch():
            await self._opened(event)

    def tick(self) -> None:
        """The core's timers (pings, silent links), at :meth:`AppCore.next_deadline` or later."""
        self.core.tick(time.monotonic())
        self._dispatch()

    def _dispatch(self) -> list[StreamOpened]:
        """Carry out the core's outputs; the streams opened are returned to ask the app (async)."""
        opened: list[StreamOpened] = []
        for out in self.core.outputs():
            if isinstance(out, TagsToDeliver):
                if (stream := self.live.get(out.uid)) is not None:
                    stream.feed(out.seq, out.tags, out.publisher)
            elif isinstance(out, SendFrames):
                if (link := self._by_id.get(out.link_id)) is not None:
                    link.send(out.frames)
            elif isinstance(out, GapToDeliver):
                if (stream := self.live.get(out.uid)) is not None:
                    g = out.gap
                    stream.feed_gap(GapEvent(g.seq, g.tags, g.bytes, g.ms))
            elif isinstance(out, StreamOpened):
                opened.append(out)
            elif isinstance(out, StreamEnded):
                self._ended(out)
            elif (link := self._by_id.get(out.link_id)) is not None:  # CloseLink
                link.fail(_link_error(out))
        return opened

    def _ended(self, event: StreamEnded) -> None:
        stream = self.live.get(event.uid)
        if stream is None:
            return
        if event.reason == GONE_REASON:
            log.warning("stream %s: edge %s no longer has it; ending it", stream.info.name, stream.info.edge)
        stream.end(event.reason)

    async def _opened(self, event: StreamOpened) -> None:
        """A stream opened on a link: the existing object on a resume, else a new one the app may refuse."""
        frame = event.open
        if event.known:
            stream = self.live.get(event.uid)
            if stream is not None:
                stream.reopen(frame)
                self.metrics.resumes.inc()
                log.info("stream %s resumed on a new link from seq %d", frame.name, frame.seq)
            return
        local = LocalPublish(self.republish, frame.name, self.republish_limits) if self.republish else None
        stream = Stream(
            frame,
            audio_format=self.audio_format,
            consume=self.consume,
            out_dir=self.out_dir,
            ack=self._ack,
            republish=local,
        )
        try:
            refusal = await self._ask_accept(stream)
        except BaseException:  # the hook failed, or the link died meanwhile: offered again next time
            self._feed(Abandon(event.uid))
            raise
        if refusal is not None:
            log.warning("refused stream %s: %s", frame.name, refusal)
            self._feed(Refuse(event.uid, wire.Code.FORBIDDEN, refusal))
            return
        self.live[frame.uid] = stream
        self.metrics.streams.inc()
        if stream.delivered >= frame.seq:  # the files hold more (a checkpoint): not handed out again
            self._feed(Delivered(frame.uid, stream.delivered))
        stream.start(after=self.live.get(event.follows or ""))
        log.info("stream %s opened (codecs %s, from %s)", frame.name, frame.codecs, frame.edge or "edge")
        self._new.put_nowait(stream)
        if self._on_stream is not None:
            self._spawn(self._on_stream(stream))
        self._spawn(self._reap(stream))

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
        # Ended here, not by the edge (its pipeline failed): the edge stops sending it.
        self._feed(Refuse(stream.info.uid, wire.Code.ERROR, stream.end_reason))
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
        self._feed(Delivered(stream.info.uid, seq))

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
                    "audio_level_dbfs": _level(s),
                    "bitrate": self._bitrate(s),
                    "gaps": s.stats.gaps,
                    "acked_seq": s.delivered,
                    "queued_batches": s.queued,
                    "link": "up" if self.core.attached(s.info.uid) else "down",
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
    """One link from an edge: frames in to the core, what it says to send out, and the clock."""

    def __init__(self, receiver: Receiver, transport: Transport, peer: wire.Hello, link_id: int) -> None:
        self.receiver = receiver
        self.transport = transport
        self.peer = peer
        self.link_id = link_id
        self.since = time.time()
        self._pending: list[wire.Frame] = []  # from the core, for the send loop
        self._error: BaseException | None = None  # the core ended this link (CloseLink)
        self._wake = asyncio.Event()
        self.tunnels = TunnelMux(transport.send, receiver.open_forward)  # raw TCP channels

    def send(self, frames: tuple[wire.Frame, ...]) -> None:
        self._pending.extend(frames)
        self._wake.set()

    def fail(self, exc: BaseException) -> None:
        """The core ended the link: every loop of it raises ``exc``."""
        self._error = exc
        self._wake.set()

    @property
    def acks_pending(self) -> bool:
        return bool(self._pending)

    async def run(self) -> None:
        try:
            await run_until_first(self._recv_loop(), self._send_loop(), self._timer())
        finally:
            self.tunnels.close_all()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._check()
            frames, self._pending = self._pending, []
            if frames:
                await self.transport.send(wire.encode_many(frames))

    async def _timer(self) -> None:
        """Sleep until the core's next deadline (a Ping due, a silent link), then tick it.

        Polled at least every second: another link's frames move the deadline too.
        """
        core = self.receiver.core
        while True:
            deadline = core.next_deadline()
            delay = 1.0 if deadline is None else deadline - time.monotonic()
            await asyncio.sleep(min(1.0, max(0.0, delay)))
            self.receiver.tick()
            self._check()

    async def _recv_loop(self) -> None:
        limits = self.receiver.limits
        while True:
            message = await self.transport.recv()
            for frame in wire.decode_message(message, limits):
                await self.tunnels.handle(frame)  # raw TCP frames; the core sees them as signs of life
                await self.receiver.feed_frame(self, frame)
                self._check()

    async def close(self) -> None:
        """Tell the edge we are going away (it redials at once), then close the WebSocket."""
        with contextlib.suppress(Exception):
            await self.transport.send(
                wire.encode(wire.Close(sid=None, reason="app shutting down", code=wire.Code.SHUTDOWN))
            )
            await self.transport.close(1001, "app shutting down")


def _level(stream: Any) -> float | None:
    """A stream's audio level now: a link's Stream computes it when asked (a PcmStream has none)."""
    stats = stream.refresh_level() if isinstance(stream, Stream) else stream.stats
    return stats.audio_level_dbfs


def _link_error(out: CloseLink) -> BaseException:
    """The exception a link ends with, as the loops raised before the core (classify() counts it)."""
    if out.code == wire.Code.TIMEOUT:
        return TimeoutError(out.reason)
    if out.code == wire.Code.PROTOCOL and not out.by_peer:
        return WireError(out.reason)
    return ConnectionResetError(out.reason)
