"""Credit: one stalled consumer holds back only its own stream, never the others on the shared link.

Two real ffmpeg publishers, two streams on one WebSocket. The app stops reading one stream for 10 s:
its bounded queues fill, its acks stop, and the edge keeps at most ``credit_bytes`` of it in flight
while buffering the rest. The other stream's latency (tag arrival at the app vs the tag's timestamp)
is compared, median to median, between the unloaded start and the stall. The same offset is taken
where each tag reaches the edge and subtracted, so a publisher delayed by a loaded machine (ffmpeg's
``-re`` pacing slipping) is not counted as relay latency.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest

from relay_client.stream import Stream
from relay_edge import flv
from relay_edge.ingest import RtmpConnection
from relay_edge.rtmp.events import TagSink
from tests.support import media, publishers
from tests.support.raw import RtmpClient
from tests.support.relay import Relay, until, with_limits

pytestmark = pytest.mark.slow

STALL_AT, STALL_S = 3.0, 10.0  # seconds of media: the stall covers timestamps 3 s to 13 s
CREDIT = 8 * 1024  # ~21 AAC tags in flight per stream


class StallingRelay(Relay):
    """Reads every stream's raw FLV as it arrives, except ``stalled``, which it ignores for a while."""

    def __init__(self, out_dir: Path, **kwargs: object) -> None:
        super().__init__(out_dir, consume=frozenset({"flv"}), **kwargs)  # type: ignore[arg-type]
        self.arrivals: dict[str, list[tuple[float, int]]] = {}  # name -> (monotonic arrival, tag ms)
        self.at_edge: dict[str, list[tuple[float, int]]] = {}  # the same, where the edge read each tag
        self.stall_over = asyncio.Event()

    async def __aenter__(self) -> StallingRelay:
        await super().__aenter__()
        assert self.edge is not None
        sink_for = self.edge.tag_sink

        def recording(conn: RtmpConnection) -> TagSink:
            sink = sink_for(conn)

            def record(stream_id: int, tag_type: int, timestamp: int, data: bytes) -> None:
                sink(stream_id, tag_type, timestamp, data)
                stream = self.edge.core.stream_for(conn.conn_id, stream_id) if self.edge else None
                if stream is not None:
                    self.at_edge.setdefault(stream.name, []).append((time.monotonic(), timestamp))

            return record

        self.edge.tag_sink = recording  # type: ignore[method-assign]
        return self

    async def _on_stream(self, stream: Stream) -> None:
        name = stream.info.name
        self.streams[name] = stream
        seen = self.arrivals.setdefault(name, [])
        async for item in stream.flv():
            if len(item) == flv.FILE_HEADER_SIZE:
                continue  # the file header, not a tag
            tag = flv.decode_tag(item[:-4])  # without PreviousTagSize
            seen.append((time.monotonic(), tag.timestamp))
            if name == "stalled" and tag.timestamp >= STALL_AT * 1000 and not self.stall_over.is_set():
                await self.stall_over.wait()  # the app stops reading this stream


async def test_a_stalled_consumer_does_not_delay_the_other_stream(tmp_path: Path) -> None:
    source = media.tone_flv(tmp_path / "src.flv", seconds=16, frequency=440)
    async with StallingRelay(tmp_path / "out", limits=with_limits(credit_bytes=CREDIT)) as relay:
        assert relay.edge is not None
        fast = await publishers.ffmpeg_copy(relay.url("fast"), source)
        stalled = await publishers.ffmpeg_copy(relay.url("stalled"), source)
        async with fast, stalled:
            await until(lambda: len(relay.arrivals.get("fast", [])) > 0, 15, "the fast stream's first tag")
            stall_ends = time.monotonic() + STALL_AT + STALL_S
            peak_in_flight = 0

            def held_back() -> bool:
                """The app's queues are full and the edge buffers > 3 credits; the peak in flight so far."""
                nonlocal peak_in_flight
                stream = relay.edge.streams.get("stalled") if relay.edge else None
                if stream is None:
                    return False
                peak_in_flight = max(peak_in_flight, stream.outbox.inflight_bytes)
                return stream.outbox.buffered_bytes > 3 * CREDIT

            # The condition itself, polled: it must hold before the stall ends (1 s of margin).
            await until(held_back, stall_ends - 1.0 - time.monotonic(), "the edge holding > 3 credits back")
            held_bytes = relay.edge.streams["stalled"].outbox.buffered_bytes
            while time.monotonic() < stall_ends:  # the stimulus: the app stays stalled STALL_S
                held_back()
                await asyncio.sleep(0.05)
            in_flight = peak_in_flight
            relay.stall_over.set()
            await asyncio.gather(fast.wait_ok(30), stalled.wait_ok(30))
        stats = await asyncio.gather(relay.ended("fast"), relay.ended("stalled"))
        assert len(relay.receiver.links) == 1 and len(relay.edge.links) == 1  # one shared link

    assert in_flight <= CREDIT + 1024  # a window, plus at most one tag over it
    # The app's queues absorb ~6 s (256 items) before acks stop; the edge holds the rest (~3 s, ~48 kB).
    assert held_bytes > 3 * CREDIT, f"the edge held only {held_bytes} bytes"
    sent = media.audio_payloads(source)
    for name, st in zip(("fast", "stalled"), stats, strict=True):  # both complete, byte for byte
        assert media.audio_payloads(tmp_path / "out" / f"{name}.flv") == sent, name
        assert st["gaps"] == 0

    app, edge = relay.arrivals["fast"], relay.at_edge["fast"]
    assert [ts for _, ts in app] == [ts for _, ts in edge]  # the same tags, in order: pair them up

    def median_ms(lo_s: float, hi_s: float, *, at_edge: bool = False) -> float:
        """Median of (arrival - media time) over tags stamped in [lo_s, hi_s): a constant we don't
        know plus the latency; so a change between windows is a change in latency."""
        pairs = edge if at_edge else app
        offsets = [(t - ts / 1000) * 1000 for t, ts in pairs if lo_s * 1000 <= ts < hi_s * 1000]
        assert len(offsets) > 40, (lo_s, hi_s, len(offsets))
        return statistics.median(offsets)

    unloaded_s, stall_s = (0.5, STALL_AT), (STALL_AT + 0.5, STALL_AT + STALL_S)
    app_shift = median_ms(*stall_s) - median_ms(*unloaded_s)
    publisher_shift = median_ms(*stall_s, at_edge=True) - median_ms(*unloaded_s, at_edge=True)
    relay_shift = app_shift - publisher_shift  # what the edge, the link and the app added
    stalled = relay.arrivals["stalled"]
    stalled_lag = max(t - ts / 1000 for t, ts in stalled) * 1000 - median_ms(*unloaded_s)
    print(
        f"flow control: during a {STALL_S:g} s stall the fast stream's median latency moved "
        f"{relay_shift:+.1f} ms through the relay ({app_shift:+.1f} ms at the app, {publisher_shift:+.1f} ms "
        f"of it before the edge); edge held {held_bytes} B of the stalled stream, {in_flight} B in flight "
        f"(credit {CREDIT}); stalled stream's worst lag {stalled_lag:.0f} ms"
    )
    assert abs(relay_shift) <= 20.0
    assert stalled_lag > 0.8 * STALL_S * 1000  # the stall really held that stream back


class GatedRelay(Relay):
    """An app that takes no tag of any stream until ``gate`` is set: its acks stop at its queue."""

    def __init__(self, out_dir: Path, **kwargs: object) -> None:
        super().__init__(out_dir, consume=frozenset({"flv"}), **kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()

    async def _on_stream(self, stream: Stream) -> None:
        self.streams[stream.info.name] = stream
        await self.gate.wait()
        async for _ in stream.flv():
            pass


async def test_an_ended_tail_the_app_never_takes_ends_as_a_reported_gap(tmp_path: Path) -> None:
    """The tail of an ended stream outlives buffer_seconds on a link that never acks it.

    The edge drops it, reports it as a Gap and closes the stream, so the app ends the stream with
    the loss counted, instead of forgetting the stream and leaving the app waiting forever.
    """
    limits = with_limits(credit_bytes=CREDIT, buffer_seconds=1.5)
    async with GatedRelay(tmp_path / "out", limits=limits) as relay:
        assert relay.edge is not None
        client = await RtmpClient.publish(relay.edge.rtmp_port, relay.url("tail").rsplit("/", 1)[1])
        await client.send_media(flv.AUDIO, 0, b"\xaf\x00\x12\x10")
        for i in range(1, 601):  # 600 x 0.5 KiB: far more than the app's queue and the credit
            await client.send_media(flv.AUDIO, 23 * i, b"\xaf\x01" + i.to_bytes(4, "big") + bytes(506))
        client.session.unpublish()
        await client.send_raw(client.session.data_to_send())
        await until(lambda: relay.edge is not None and "tail" not in relay.edge.streams, 5, "tail ended")
        held = relay.edge.status()["streams"][0]
        assert held["acked_seq"] < 601 - 100, held  # the app stopped taking it: a tail is held
        await until(lambda: relay.edge is not None and not relay.edge.status()["streams"], 10, "tail expired")
        relay.gate.set()
        stats = await relay.ended("tail")
        client.close()
    assert stats["gaps"] == 1 and stats["gap_tags"] > 100, stats
    assert stats["tags"] + stats["gap_tags"] == 601, stats  # every tag delivered once or counted lost
