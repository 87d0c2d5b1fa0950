"""The benchmark's lightweight RTMP publisher: our sans-I/O ClientSession on asyncio sockets.

One publisher shape for every contender, because MEASURED.md warns that the publisher changes
the figures. Three ways to send a pre-recorded FLV:

- :func:`publish_paced`: one stream in real time, each tag written at its timestamp; records when
  each was written, for latency.
- :func:`publish_many`: N streams in real time, sending what is due every :data:`TICK` on a fixed
  schedule whose start is in the stream's name, so a consumer can tell each tag's send time.
- :func:`publish_flood`: one stream as fast as the socket takes it, for throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from relay_edge import flv
from relay_edge.rtmp.client import ClientSession
from relay_edge.rtmp.events import PublishRejected

TICK = 0.1  # publish_many sends what is due every 100 ms: cheap enough to drive 500 streams
FLUSH = 256 * 1024  # publish_flood hands the socket this much at a time


@dataclass
class Published:
    """What one publisher did, on CLOCK_MONOTONIC (comparable across processes)."""

    connected_at: float = 0.0  # TCP connect started
    started_at: float = 0.0  # NetStream.Publish.Start arrived: media may flow
    sent_at: dict[int, float] = field(default_factory=dict)  # tag timestamp -> written
    tags: int = 0
    bytes: int = 0
    lag_ms: list[float] = field(default_factory=list)  # how late each tick was written


class Connection:
    """A publishing RTMP connection: handshake, connect and publish done in :meth:`open`."""

    def __init__(self, port: int, app: str, key: str, chunk_size: int = 4096) -> None:
        self.port = port
        self.session = ClientSession(app, key, f"rtmp://127.0.0.1:{port}/{app}", chunk_size=chunk_size)
        self.result = Published()
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self._acks: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.result.connected_at = time.monotonic()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        s = self.session
        s.initiate()
        self.writer.write(s.data_to_send())
        while not s.publishing:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError(f"port {self.port}: closed before publish started")
            for event in s.receive_data(data):
                if isinstance(event, PublishRejected):
                    raise ConnectionError(f"port {self.port}: {event.code} {event.description}")
            self.writer.write(s.data_to_send())
        self.result.started_at = time.monotonic()
        self._acks = asyncio.create_task(self._drain_acks())

    async def _drain_acks(self) -> None:
        while data := await self.reader.read(65536):
            self.session.receive_data(data)

    def send(self, tag: flv.Tag, timestamp: int) -> None:
        self.session.send_media(tag.type, timestamp, tag.data)
        self.result.tags += 1
        self.result.bytes += len(tag.data)

    def flush(self) -> None:
        self.writer.write(self.session.data_to_send())

    async def close(self) -> None:
        """Unpublish, then half-close and read until the server closes too.

        Closing a socket with unread bytes (the server's acks) sends RST, and an RST makes the server's
        kernel discard what it had not read yet: the tail of the stream.
        """
        self.session.unpublish()
        self.flush()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.writer.drain(), 10)
            if self.writer.can_write_eof():
                self.writer.write_eof()
            if self._acks is not None:
                await asyncio.wait_for(self._acks, 30)
        if self._acks is not None:
            self._acks.cancel()
        self.writer.close()


def split(tags: list[flv.Tag]) -> tuple[list[flv.Tag], list[flv.Tag]]:
    """Sequence headers (sent once, first) and the rest (looped)."""
    config = [t for t in tags if flv.is_sequence_header(t.type, t.data)]
    return config, [t for t in tags if not flv.is_sequence_header(t.type, t.data)]


def looped(frames: list[flv.Tag]) -> Iterator[tuple[int, flv.Tag]]:
    """The frames forever, with timestamps continuing across loops."""
    span = frames[-1].timestamp + max(1, frames[-1].timestamp - frames[-2].timestamp)
    for n in range(1 << 30):
        for tag in frames:
            yield tag.timestamp + n * span, tag


async def publish_paced(port: int, app: str, key: str, tags: list[flv.Tag], seconds: float) -> Published:
    """One stream in real time for ``seconds``: each tag written when its timestamp is due."""
    conn = Connection(port, app, key)
    await conn.open()
    config, frames = split(tags)
    for tag in config:
        conn.send(tag, 0)
    start = conn.result.started_at
    for ts, tag in looped(frames):
        if ts > seconds * 1000:
            break
        delay = start + ts / 1000 - time.monotonic()
        if delay > 0:
            conn.flush()
            await asyncio.sleep(delay)
        conn.send(tag, ts)
        conn.flush()
        conn.result.sent_at[ts] = time.monotonic()
    await conn.close()
    return conn.result


async def _publish_scheduled(
    port: int, app: str, key: str, tags: list[flv.Tag], t0: float, until: float
) -> Published:
    """Send at ticks ``t0 + k*TICK`` every tag whose timestamp is due by then."""
    conn = Connection(port, app, key)
    await conn.open()
    config, frames = split(tags)
    for tag in config:
        conn.send(tag, 0)
    conn.flush()
    stream = looped(frames)
    ts, tag = next(stream)
    tick = max(0, math.ceil((time.monotonic() - t0) / TICK))  # late connect: catch up at once
    while (due := t0 + tick * TICK) < until:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        conn.result.lag_ms.append((time.monotonic() - due) * 1000)
        while ts <= tick * TICK * 1000:
            conn.send(tag, ts)
            ts, tag = next(stream)
        conn.flush()
        tick += 1
    await conn.close()
    return conn.result


def schedule_name(prefix: str, t0: float) -> str:
    """A stream name carrying its schedule start (µs of CLOCK_MONOTONIC): ``PREFIX-T0``."""
    return f"{prefix}-{round(t0 * 1e6)}"


def schedule_of(name: str) -> float:
    """The schedule start a :func:`schedule_name` carries."""
    return int(name.rsplit("-", 1)[1]) / 1e6


def sent_time(t0: float, timestamp: int) -> float:
    """When :func:`publish_many` writes the tag stamped ``timestamp`` ms, if it keeps its schedule."""
    return t0 + math.ceil(timestamp / (TICK * 1000)) * TICK


async def publish_many(
    port: int, app: str, keys: list[str], starts: list[float], tags: list[flv.Tag], until: float
) -> list[Published]:
    """N streams; stream i starts its schedule at ``starts[i]``; connects are spread out gently."""
    tasks = []
    for key, t0 in zip(keys, starts, strict=True):
        await asyncio.sleep(max(0.0, t0 - 1.0 - time.monotonic()))  # connect ~1 s ahead of schedule
        tasks.append(asyncio.create_task(_publish_scheduled(port, app, key, tags, t0, until)))
    return await asyncio.gather(*tasks)


async def publish_flood(
    port: int, app: str, key: str, tags: list[flv.Tag], seconds: float, chunk_size: int
) -> Published:
    """One stream as fast as the peer reads it, for ``seconds`` after publish starts."""
    conn = Connection(port, app, key, chunk_size=chunk_size)
    await conn.open()
    config, frames = split(tags)
    for tag in config:
        conn.send(tag, 0)
    until = conn.result.started_at + seconds
    pending = 0
    for ts, tag in looped(frames):
        conn.send(tag, ts)
        pending += len(tag.data)
        if pending >= FLUSH:
            conn.flush()
            await conn.writer.drain()
            pending = 0
            if time.monotonic() >= until:
                break
    await conn.close()
    return conn.result
