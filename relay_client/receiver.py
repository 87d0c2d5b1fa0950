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
from relay_edge.errors import AuthError, ProtocolError, WireError
from relay_edge.http import accept_link
from relay_edge.limits import DEFAULT_LIMITS, Limits
from relay_edge.link import exchange_hello, run_until_first
from relay_edge.metrics import Metrics
from relay_edge.transport import AiohttpTransport, Transport, TransportClosed

from .decode import AudioFormat
from .stream import GapEvent, Stream

log = logging.getLogger("relay_client")

# What the app may refuse a stream with: return a reason string to refuse.
AcceptHook = Callable[[Stream], "Awaitable[str | None] | str | None"]


class Receiver:
    """Receives streams from one or more edges and hands them to the app."""

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
    ) -> None:
        self._secret = secret
        self.audio_format = audio_format or AudioFormat()
        self.consume = frozenset(consume)
        self.out_dir = out_dir
        self.limits = limits
        self.name = name or socket.gethostname()
        self.instance = secrets.token_hex(6)
        self._on_stream = on_stream
        self._accept = accept
        self._verifier = ProofVerifier(secret, limits.auth_max_skew)
        self._new: asyncio.Queue[Stream] = asyncio.Queue()
        self.live: dict[str, Stream] = {}  # by uid
        self.links: list[ClientLink] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.metrics = Metrics("relay_client", self._gauges)

    # --- the app's side -------------------------------------------------------------------

    async def streams(self) -> AsyncIterator[Stream]:
        """Every new stream, as it opens (not resumed ones this process already has)."""
        while True:
            yield await self._new.get()

    async def handler(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for the edge's pushed link: ``app.router.add_get("/relay", r.handler)``."""
        accepted = await accept_link(request, self._verify, self.limits.ws_max_message)
        if isinstance(accepted, web.Response):
            self.metrics.auth_failures.labels("link_proof").inc()
            return accepted
        ws, proof = accepted
        await self.run_link(
            AiohttpTransport(ws, f"{request.remote} (push)"), dialer_proof=proof, dialed=False
        )
        await ws.close()
        return ws

    def _verify(self, proof: str) -> None:
        self._verifier.verify(proof, time.time(), role="edge")

    # --- links ------------------------------------------------------------------------------

    async def run_link(self, transport: Transport, *, dialer_proof: str, dialed: bool) -> None:
        """Hello, then pump one link until it ends. Errors end only this link."""
        hello = wire.Hello(
            version=wire.PROTOCOL_VERSION,
            role="client",
            instance=self.instance,
            name=self.name,
            streams=tuple(wire.ResumePoint(uid=s.info.uid, seq=s.delivered) for s in self.live.values()),
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
            log.info("link up: %s (edge %s)", transport.remote, peer.name or peer.instance)
            try:
                await link.run()
            finally:
                self.links.remove(link)
        except (TransportClosed, ProtocolError, AuthError, TimeoutError, ConnectionError) as exc:
            log.warning("link %s ended: %s", transport.remote, exc)
            self.metrics.link_failures.labels(type(exc).__name__).inc()

    async def open_stream(self, frame: wire.Open, link: ClientLink) -> tuple[Stream, str | None]:
        """A stream opened on ``link``: the existing object on a resume, else a new one."""
        stream = self.live.get(frame.uid)
        if stream is not None and not stream.ended:
            stream.reopen(frame)
            self.metrics.resumes.inc()
            log.info("stream %s resumed on a new link from seq %d", frame.name, frame.seq)
            return stream, None
        stream = Stream(
            frame, audio_format=self.audio_format, consume=self.consume, out_dir=self.out_dir, ack=self._ack
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

    async def _reap(self, stream: Stream) -> None:
        await stream.wait_ended()
        if self.live.get(stream.info.uid) is stream:
            del self.live[stream.info.uid]

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ack(self, stream: Stream, seq: int) -> None:
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
                    "gaps": s.stats.gaps,
                    "acked_seq": s.delivered,
                    "queued_batches": s.queued,
                    "link": "up" if any(s.info.uid in ln.sids for ln in self.links) else "down",
                    "resumed": s.info.resumed,
                }
                for s in self.live.values()
            ],
        }

    def _gauges(self) -> dict[str, tuple[str, float]]:
        return {
            "live_streams": ("Streams currently received", len(self.live)),
            "links": ("Links up", len(self.links)),
        }


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
        self._last_rx = time.monotonic()

    def ack(self, stream: Stream, seq: int) -> None:
        sid = self.sids.get(stream.info.uid)
        if sid is not None:
            self._acks[sid] = seq
            self._wake.set()

    async def run(self) -> None:
        await run_until_first(self._recv_loop(), self._send_loop(), self._watchdog())

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            acks, self._acks = self._acks, {}
            if acks:
                frames = [wire.Ack(sid=sid, seq=seq) for sid, seq in acks.items()]
                await self.transport.send(wire.encode_many(frames))

    async def _watchdog(self) -> None:
        """The edge pings every ``ping_interval``; silence past ``ping_timeout`` means a dead link."""
        limits = self.receiver.limits
        while True:
            await asyncio.sleep(1.0)
            if time.monotonic() - self._last_rx > limits.ping_timeout:
                raise TimeoutError(f"ping_timeout: nothing from the edge for {limits.ping_timeout:g} s")

    async def _recv_loop(self) -> None:
        limits = self.receiver.limits
        while True:
            message = await self.transport.recv()
            self._last_rx = time.monotonic()
            for frame in wire.decode_message(message, limits):
                await self._handle(frame)

    async def _handle(self, frame: object) -> None:
        if isinstance(frame, wire.Data):
            stream = self._stream(frame.sid)
            if stream is not None:
                stream.feed(frame.seq, frame.tags)
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
                self.sids.pop(stream.info.uid, None)
                stream.end(frame.reason)
        elif isinstance(frame, wire.Ping):
            await self.transport.send(wire.encode(wire.Pong(t=frame.t)))

    async def _open(self, frame: wire.Open) -> None:
        if frame.sid in self._streams:
            raise WireError(f"open for sid {frame.sid}, which is already open")
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
        with contextlib.suppress(Exception):
            await self.transport.close(1001, "app shutting down")
