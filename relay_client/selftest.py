"""``relay-client test``: the whole path on loopback, checked step by step.

An edge and a client start on free loopback ports in this process, the edge
dials the client (push mode), a generated tone is published over real RTMP
(PyAV's own RTMP output: no system ffmpeg needed), and the app side checks what
it decodes. Each step prints as it runs; the report says what passed, the time
to the first decoded frame and the end-to-end latency. ``first_frame_ms`` counts
from the publisher's first media write (the relay's own figure);
``publisher_start_ms`` from spawning the publisher (adds its start, ~400 ms).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from relay_edge import keys
from relay_edge.edge import Edge, EdgeConfig

from .decode import AudioChunk, AudioFormat
from .publish import publish_tone
from .receiver import Receiver
from .stream import Stream
from .tone import count_silent_gaps, dominant_frequency

log = logging.getLogger("relay_client.selftest")


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    ms: float


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    frames: int = 0
    gaps: int = 0
    first_frame_ms: float | None = None  # first decoded frame after the publisher's first media write
    publisher_start_ms: float | None = None  # first decoded frame after the publisher was spawned
    first_write_ms: float | None = None  # spawn to first media write (the publisher's own start)
    latency_ms: dict[str, float | None] = field(default_factory=lambda: {"p50": None, "p99": None})
    frequency_hz: float | None = None
    duration_s: float | None = None

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "steps": [
                {"name": s.name, "ok": s.ok, "detail": s.detail, "ms": round(s.ms, 1)} for s in self.steps
            ],
            "frames": self.frames,
            "gaps": self.gaps,
            "first_frame_ms": _round(self.first_frame_ms, 1),
            "publisher_start_ms": _round(self.publisher_start_ms, 1),
            "latency_ms": {k: None if v is None else round(v, 2) for k, v in self.latency_ms.items()},
            "frequency_hz": None if self.frequency_hz is None else round(self.frequency_hz, 2),
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class StepFailed(Exception):
    pass


class _Run:
    """Runs and records steps; the first failure stops the run."""

    def __init__(self, report: Report, say: Callable[[str], None]) -> None:
        self.report = report
        self.say = say

    async def step(self, name: str, action: Callable[[], Awaitable[str]]) -> None:
        self.say(f"… {name}")
        t0 = time.perf_counter()
        try:
            detail = await action()
            ok = True
        except (StepFailed, TimeoutError, OSError) as exc:
            detail, ok = str(exc) or type(exc).__name__, False
        ms = (time.perf_counter() - t0) * 1000
        self.report.steps.append(Step(name, ok, detail, ms))
        self.say(f"{'✓' if ok else '✗'} {name}: {detail} ({ms:.0f} ms)")
        if not ok:
            raise StepFailed(name)


async def run_local(
    *, seconds: float = 3.0, frequency: float = 440.0, say: Callable[[str], None] = print
) -> Report:
    """Edge + client + publisher on loopback; returns the report."""
    report = Report()
    run = _Run(report, say)
    secret = secrets.token_urlsafe(32)
    fmt = AudioFormat(sample_rate=16000, channels=1, format="s16")
    got_stream: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()

    async def on_stream(stream: Stream) -> None:
        if not got_stream.done():
            got_stream.set_result(stream)

    receiver = Receiver(secret, audio_format=fmt, on_stream=on_stream, name="selftest-app")
    app = web.Application()
    app.router.add_get("/relay", receiver.handler)
    runner = web.AppRunner(app, access_log=None)
    edge: Edge | None = None
    try:
        client_port = 0

        async def start_client() -> str:
            nonlocal client_port
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            client_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            return f"app listening on 127.0.0.1:{client_port}/relay"

        await run.step("start client", start_client)

        async def start_edge() -> str:
            nonlocal edge
            config = EdgeConfig(
                secret=secret,
                rtmp_listen=("127.0.0.1", 0),
                http_listen=None,
                upstreams=(f"ws://127.0.0.1:{client_port}/relay",),
                name="selftest-edge",
            )
            edge = Edge(config)
            await edge.start()
            return f"RTMP on 127.0.0.1:{edge.rtmp_port}, dialing the app"

        await run.step("start edge", start_edge)
        assert edge is not None
        the_edge = edge

        async def link_up() -> str:
            await _until(lambda: bool(the_edge.links) and bool(receiver.links), 5.0, "no link after 5 s")
            return "edge → app WebSocket up, both proofs verified"

        await run.step("link up", link_up)
        await _publish_and_check(run, the_edge, receiver, got_stream, secret, seconds, frequency, fmt)
    except StepFailed:
        pass
    finally:
        if edge is not None:
            await edge.stop()
        await runner.cleanup()
    return report


async def _publish_and_check(
    run: _Run,
    edge: Edge,
    receiver: Receiver,
    got_stream: asyncio.Future[Stream],
    secret: str,
    seconds: float,
    frequency: float,
    fmt: AudioFormat,
) -> None:
    report = run.report
    key = keys.mint_key(secret, "selftest", ttl=300, now=time.time())
    url = f"rtmp://127.0.0.1:{edge.rtmp_port}/live/{key}"
    t_publish = time.monotonic()
    publisher = asyncio.create_task(publish_tone(url, seconds=seconds, frequency=frequency))
    chunks: list[tuple[float, AudioChunk]] = []
    reader: asyncio.Task[None] | None = None  # the app-side consumer, started at the first frame

    async def published() -> str:
        await _until(lambda: "selftest" in edge.streams or publisher.done(), 5.0, "no publish within 5 s")
        if "selftest" not in edge.streams:
            exc = publisher.exception()
            raise StepFailed(f"publisher failed: {exc}")
        return "RTMP handshake, connect, publish accepted with a freshly minted key"

    await run.step("publish", published)

    async def first_frame() -> str:
        stream = await asyncio.wait_for(got_stream, 5.0)
        nonlocal reader
        reader = asyncio.create_task(_collect(stream, chunks))
        await _until(lambda: bool(chunks) or reader.done(), 5.0, "no decoded audio within 5 s")
        if not chunks:
            raise StepFailed("stream ended without decoded audio")
        report.publisher_start_ms = (chunks[0][0] - t_publish) * 1000
        ms = report.publisher_start_ms
        return f"first {fmt.sample_rate} Hz frame {ms:.0f} ms after the publisher process started"

    await run.step("first decoded frame", first_frame)

    async def whole_stream() -> str:
        result = await asyncio.wait_for(publisher, seconds + 15)
        assert reader is not None  # set by the step before
        await asyncio.wait_for(reader, 10.0)
        report.frames = len(chunks)
        samples = sum(c.samples for _, c in chunks)
        report.duration_s = samples / fmt.sample_rate
        report.latency_ms = _latency(chunks, result.written_at)
        if result.written_at:  # the child's monotonic clock is ours (see publish_tone)
            first_write = min(result.written_at.values())
            report.first_write_ms = (first_write - t_publish) * 1000
            report.first_frame_ms = (chunks[0][0] - first_write) * 1000
        if abs(report.duration_s - seconds) > 0.2:
            raise StepFailed(f"decoded {report.duration_s:.3f} s of audio, published {seconds:g} s")
        first = "" if report.first_frame_ms is None else f"; first frame {report.first_frame_ms:.1f} ms"
        return (
            f"{report.frames} chunks, {report.duration_s:.3f} s of audio, publisher exited cleanly"
            f"{first} after the publisher's first write"
        )

    await run.step("stream received", whole_stream)

    async def tone() -> str:
        pcm = b"".join(c.data for _, c in chunks)
        report.frequency_hz = dominant_frequency(pcm, fmt.sample_rate, fmt.channels)
        if abs(report.frequency_hz - frequency) > 2.0:
            raise StepFailed(f"dominant frequency {report.frequency_hz:.1f} Hz, expected {frequency:g} Hz")
        return f"{report.frequency_hz:.1f} Hz (published {frequency:g} Hz)"

    await run.step("tone frequency", tone)

    async def no_gaps() -> str:
        stream = got_stream.result()
        pcm = b"".join(c.data for _, c in chunks)
        holes = count_silent_gaps(pcm, fmt.sample_rate, fmt.channels)
        report.gaps = stream.stats.gaps + holes
        if report.gaps:
            raise StepFailed(f"{stream.stats.gaps} reported gaps, {holes} silent holes in the tone")
        return "no gaps reported, no holes in the decoded tone"

    await run.step("no gaps", no_gaps)


async def _collect(stream: Stream, out: list[tuple[float, AudioChunk]]) -> None:
    async for chunk in stream.audio():
        out.append((time.monotonic(), chunk))


def _latency(chunks: list[tuple[float, AudioChunk]], sent_at: dict[int, float]) -> dict[str, float | None]:
    """Per chunk: arrival minus when the publisher wrote the packet holding its last sample."""
    if not sent_at or not chunks:
        return {"p50": None, "p99": None}
    pts = sorted(sent_at)
    values = []
    for arrived, chunk in chunks:
        end = chunk.timestamp + chunk.duration_ms - 1
        i = bisect.bisect_right(pts, end) - 1
        if i >= 0:
            values.append((arrived - sent_at[pts[i]]) * 1000)
    if not values:
        return {"p50": None, "p99": None}
    values.sort()
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return {"p50": statistics.median(values), "p99": p99}


async def _until(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise StepFailed(message)
        await asyncio.sleep(0.005)
