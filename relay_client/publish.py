"""A real RTMP publisher: a generated sine, AAC-encoded and sent with PyAV's own RTMP output.

``relay-client test`` uses it to publish without any system ffmpeg. The stream looks like LiveKit's
(AAC-LC, 44.1 kHz stereo, 128 kbit/s, FLV over RTMP) and is paced in real time, so an end-to-end check
sees live timing. For each packet we note the monotonic clock right after the write returned, keyed by
the packet's FLV timestamp in ms; a receiver that notes its own clock per tag gets end-to-end latency.

How FFmpeg's RTMP output behaves through PyAV (18.1 with FFmpeg 8, measured against nginx-rtmp):

- ``av.open(url, "w")`` does no I/O. The TCP connect, handshake and ``connect``/``createStream``/
  ``publish`` happen in ``start_encoding()`` (implicitly at the first mux), ~175 ms on loopback against
  nginx-rtmp. We call it explicitly so connection errors surface before any encoding, and to time it.
- ``start_encoding()`` holds the GIL for all of that. A server running in the same process (an asyncio
  RTMP server, an in-process proxy) can't run to answer the handshake: a deadlock with no timeout.
  Hence :func:`publish_tone` runs the PyAV work in a child process. ``mux()`` does release the GIL.
- PyAV opens the output with ``avio_open`` and no options, so RTMP/TCP options such as ``tcp_nodelay``
  or ``rw_timeout`` cannot be set: Nagle stays on, and a server that accepts TCP but never answers the
  handshake blocks the connect forever (the async wrapper kills the child when cancelled).
- The first AAC packet the encoder returns has pts -1024 (encoder priming). We re-stamp packets from 0
  (plus ``ts_offset_ms``) in ms ourselves, so the keys of :attr:`PublishResult.written_at` are exactly
  the timestamps on the wire. The FLV muxer still sends the AAC sequence header at timestamp 0, before
  the offset, as the ffmpeg CLI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import numpy as np

from relay_edge.errors import RelayError

AAC_FRAME = 1024  # samples per AAC-LC frame
_MS = Fraction(1, 1000)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]*")


class PublishError(RelayError):
    """Publishing failed: the server refused or dropped us. The message holds the URL without its key."""


@dataclass
class PublishResult:
    """What :func:`publish_tone` sent."""

    url: str  # redacted: no credentials, no key signature
    packets: int = 0  # AAC packets written (not counting the sequence header)
    bytes: int = 0  # AAC payload bytes written
    duration: float = 0.0  # media seconds written
    elapsed: float = 0.0  # wall seconds from starting to connect to closed
    connect_seconds: float = 0.0  # TCP connect + RTMP handshake + connect/createStream/publish
    first_timestamp: int | None = None  # ms, as on the wire
    last_timestamp: int | None = None
    stopped: bool = False  # ended early by the stop event or task cancellation
    # FLV timestamp (ms) -> time.monotonic() right after that packet's write returned.
    written_at: dict[int, float] = field(default_factory=dict, repr=False)


def redact_url(url: str) -> str:
    """``url`` safe for logs: no user info, no query, and the stream key cut to its leading name part.

    ``rtmp://u:p@host:1935/live/room1.1700000000.abcdef?x=1`` becomes ``rtmp://host:1935/live/room1...``.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    head, _, key = parts.path.rpartition("/")
    match = _SAFE_NAME.match(key)
    name = match.group(0) if match else ""
    path = f"{head}/{name}" + ("..." if name != key else "")
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def tone_frames(
    seconds: float, frequency: float, sample_rate: int, channels: int, amplitude: float = 0.5
) -> Iterator[av.AudioFrame]:
    """Frames of 1024 planar-float samples of a continuous sine (the AAC encoder's native format)."""
    layout = _layout(channels)
    total = round(seconds * sample_rate)
    for start in range(0, total, AAC_FRAME):
        n = min(AAC_FRAME, total - start)
        t = np.arange(start, start + n, dtype=np.float64) / sample_rate
        wave = (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.tile(wave, (channels, 1)), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        yield frame


def publish_tone_sync(
    url: str,
    *,
    seconds: float,
    frequency: float = 440.0,
    sample_rate: int = 44100,
    channels: int = 2,
    bitrate: int = 128000,
    realtime: bool = True,
    ts_offset_ms: int = 0,
    on_packet: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> PublishResult:
    """:func:`publish_tone` in the calling thread, blocking. ``stop`` ends the stream early (cleanly).

    Never run this in a thread of a process whose own RTMP server it publishes to: PyAV holds the GIL
    through the connect and handshake, so that server can't answer (deadlock). ``on_packet(pts_ms)`` is
    called in this thread right after each write.
    """
    result = PublishResult(url=redact_url(url))
    started = time.monotonic()
    try:
        container = av.open(url, "w", format="flv")
    except av.FFmpegError as exc:
        raise PublishError(f"cannot open {result.url}: {exc}") from exc
    try:
        stream = container.add_stream("aac", rate=sample_rate, layout=_layout(channels))
        stream.bit_rate = bitrate
        try:
            container.start_encoding()  # connect + handshake + publish happen here
        except (av.FFmpegError, OSError) as exc:
            raise PublishError(f"cannot publish to {result.url}: {exc}") from exc
        result.connect_seconds = time.monotonic() - started
        clock = _Pacer(realtime)
        frames = tone_frames(seconds, frequency, sample_rate, channels)
        index = 0  # AAC packets out so far; packet n starts at sample n * 1024
        for frame in itertools.chain(frames, [None]):  # None flushes the encoder
            for packet in stream.encode(frame):
                pts_ms = ts_offset_ms + round(index * AAC_FRAME * 1000 / sample_rate)
                index += 1
                if stop is not None and stop.is_set():
                    result.stopped = True
                    break
                clock.wait_until((pts_ms - ts_offset_ms) / 1000)
                _write(container, packet, pts_ms, result)
                if on_packet is not None:
                    on_packet(pts_ms)
            if result.stopped:
                break
        result.duration = result.packets * AAC_FRAME / sample_rate
    finally:
        with contextlib.suppress(av.FFmpegError, OSError):
            container.close()  # sends FCUnpublish/deleteStream; fails harmlessly if the server is gone
        result.elapsed = time.monotonic() - started
    return result


async def publish_tone(
    url: str,
    *,
    seconds: float,
    frequency: float = 440.0,
    sample_rate: int = 44100,
    channels: int = 2,
    bitrate: int = 128000,
    realtime: bool = True,
    ts_offset_ms: int = 0,
    on_packet: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> PublishResult:
    """Publish ``seconds`` of a sine at ``frequency`` Hz to ``url`` over real RTMP; return what was sent.

    The PyAV work runs in a child Python process (``python -m relay_client.publish``), never in a thread
    of this one: PyAV holds the GIL through the RTMP connect and handshake, so a server on this process's
    event loop could never answer it (a deadlock), and any loop would stall ~0.2 s. The child's
    ``time.monotonic()`` is the same system-wide clock as ours, so :attr:`PublishResult.written_at` can
    be compared with receive times taken here.

    ``on_packet(pts_ms)`` is called on the event loop as each packet's write is reported.
    ``ts_offset_ms`` starts the timestamps there (16_777_000 crosses the 24-bit 0xFFFFFF boundary after
    ~0.2 s). Setting ``stop`` ends the stream cleanly (``stopped=True`` in the result); cancelling the
    task does the same, then re-raises. Raises :class:`PublishError` if the server refuses the
    connection or the publish, or drops it.
    """
    _layout(channels)  # bad arguments raise here, not as a traceback from the child
    config = {"url": url, "seconds": seconds, "frequency": frequency, "sample_rate": sample_rate}
    config |= {"channels": channels, "bitrate": bitrate, "realtime": realtime, "ts_offset_ms": ts_offset_ms}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay_client.publish",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # The URL may hold a signed key: send it on stdin, never in argv where `ps` shows it.
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    with contextlib.suppress(ConnectionError):  # a child that died at start is reported below
        proc.stdin.write(json.dumps(config).encode() + b"\n")
        await proc.stdin.drain()
        proc.stdin.close()
    stderr = asyncio.ensure_future(proc.stderr.read())
    ready = asyncio.Event()
    stopper = asyncio.ensure_future(_stop_on(stop, ready, proc))
    final: dict[str, Any] = {}
    written_at: dict[int, float] = {}
    try:
        async for line in proc.stdout:
            msg = json.loads(line)
            if "p" in msg:
                written_at[msg["p"]] = msg["t"]
                if on_packet is not None:
                    on_packet(msg["p"])
            elif "ready" in msg:
                ready.set()
            else:
                final = msg
        code = await proc.wait()
    except asyncio.CancelledError:
        await _end_child(proc)
        raise
    finally:
        stopper.cancel()
        if proc.returncode is None:
            await _end_child(proc)
    errors = (await stderr).decode(errors="replace").strip()
    if "result" not in final:
        detail = errors[-1500:] or "no output"
        raise PublishError(final.get("error") or f"publisher process exited with {code}: {detail}")
    return PublishResult(**final["result"], written_at=written_at)


def _layout(channels: int) -> str:
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    return "mono" if channels == 1 else "stereo"


def _write(
    container: av.container.OutputContainer, packet: av.Packet, pts_ms: int, result: PublishResult
) -> None:
    """Mux one packet at ``pts_ms`` and account for it; wrap I/O errors with the redacted URL."""
    packet.time_base = _MS
    packet.pts = packet.dts = pts_ms
    size = packet.size
    try:
        container.mux(packet)  # PyAV releases the GIL around the write itself
    except (av.FFmpegError, OSError) as exc:
        raise PublishError(f"connection to {result.url} lost after {result.packets} packets: {exc}") from exc
    result.written_at[pts_ms] = time.monotonic()
    result.packets += 1
    result.bytes += size
    if result.first_timestamp is None:
        result.first_timestamp = pts_ms
    result.last_timestamp = pts_ms


class _Pacer:
    """Sleeps until a media time is due on the monotonic clock, counted from the first call."""

    def __init__(self, realtime: bool) -> None:
        self.realtime = realtime
        self.origin: float | None = None

    def wait_until(self, media_seconds: float) -> None:
        if not self.realtime:
            return
        now = time.monotonic()
        if self.origin is None:
            self.origin = now - media_seconds
        delay = self.origin + media_seconds - now
        if delay > 0:
            time.sleep(delay)


# --- the child process behind publish_tone -------------------------------------------------------


async def _stop_on(
    stop: asyncio.Event | None, ready: asyncio.Event, proc: asyncio.subprocess.Process
) -> None:
    """SIGTERM the child once ``stop`` is set: it finishes the current packet and unpublishes.

    Waits for the child's "ready" first: before its handler is installed, SIGTERM would just kill it.
    """
    if stop is None:
        return
    await stop.wait()
    await ready.wait()
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()


async def _end_child(proc: asyncio.subprocess.Process, grace: float = 2.0) -> None:
    """Ask the child to stop cleanly; kill it if it is stuck (e.g. in a connect that never completes)."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def main() -> int:
    """Child entry point: one JSON config line on stdin; JSON lines on stdout.

    ``{"ready": true}`` once SIGTERM stops the stream cleanly, ``{"p": pts_ms, "t": monotonic}`` per
    packet written, then ``{"result": {...}}`` (without ``written_at``) or ``{"error": msg}``.
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(json.dumps({"ready": True}), flush=True)
    config = json.loads(sys.stdin.readline())

    def report(pts_ms: int) -> None:
        # Called right after the write returned; one short line per packet keeps every line small.
        print(json.dumps({"p": pts_ms, "t": time.monotonic()}), flush=True)

    try:
        result = publish_tone_sync(**config, stop=stop, on_packet=report)
    except PublishError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    fields = {k: v for k, v in asdict(result).items() if k != "written_at"}  # already sent line by line
    print(json.dumps({"result": fields}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
