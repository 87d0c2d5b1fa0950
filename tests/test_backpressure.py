"""A publisher faster than the link is slowed down by TCP, not dropped at the edge (limits.pause_bytes).

An H.264 stream is flooded into the edge as fast as the socket takes it: parsing RTMP and forwarding
to the app share one core, so the edge's link falls behind its ingest while the app acks promptly.
The edge must stop reading that publisher while more than ``pause_bytes`` wait for the link, so
every tag arrives, in order and byte for byte, with no gap. (Before pausing existed, the 8 MiB
buffer overflowed and most of a flood was dropped: bench/README.md has the figures.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.publisher import Connection, looped, split
from relay_edge import flv, keys
from tests.support import media
from tests.support.relay import SECRET, Relay

pytestmark = pytest.mark.slow

FLOOD_BYTES = 48 * 2**20  # six times buffer_bytes


async def flood(port: int, key: str, tags: list[flv.Tag]) -> list[flv.Tag]:
    """Publish ``tags`` looped until FLOOD_BYTES are out, as fast as the edge reads; return what was sent."""
    conn = Connection(port, "live", key, chunk_size=4096)
    await conn.open()
    config, frames = split(tags)
    sent = []
    for tag in config:
        conn.send(tag, 0)
        sent.append(flv.Tag(tag.type, 0, tag.data))
    for ts, tag in looped(frames):
        conn.send(tag, ts)
        sent.append(flv.Tag(tag.type, ts, tag.data))
        if len(sent) % 16 == 0:
            conn.flush()
            await conn.writer.drain()
            if conn.result.bytes > FLOOD_BYTES:
                break
    await conn.close()
    return sent


async def test_a_flooding_publisher_is_paused_not_dropped(tmp_path: Path, av_720p_flv: Path) -> None:
    # The shipped default (2 MiB). With pause_bytes=2**30 (never pause) this fails with gaps.
    async with Relay(tmp_path, consume=frozenset()) as relay:
        assert relay.edge is not None
        key = keys.mint_key(SECRET, "flood", now=time.time())
        started = time.monotonic()
        sent = await flood(relay.edge.rtmp_port, key, media.read_tags(av_720p_flv))
        stats = await relay.ended("flood", timeout=120)
        elapsed = time.monotonic() - started
        edge_bytes = relay.edge.metrics.bytes_total
    received = media.read_tags(tmp_path / "flood.flv")
    assert stats["gaps"] == 0
    assert len(received) == len(sent)
    assert [(t.type, t.timestamp) for t in received] == [(t.type, t.timestamp) for t in sent]
    assert all(a.data == b.data for a, b in zip(received, sent, strict=True))
    assert edge_bytes >= FLOOD_BYTES
    print(f"{sum(len(t.data) for t in sent) / elapsed / 1e6:.1f} MB/s end to end, nothing dropped")


@pytest.fixture(scope="module")
def av_720p_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return media.av_flv(tmp_path_factory.mktemp("media") / "720p.flv", seconds=2, size=(1280, 720), fps=30)
