"""The edge's global memory budget: what a tag really costs, the total bound, streams that ended.

Over real RTMP sockets to an in-process edge with no link up (so nothing is ever acked: the worst
case), plus the sans-I/O accounting of :class:`~relay_edge.outbox.Outbox` against tracemalloc.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from dataclasses import replace

from relay_edge import accel, flv, keys
from relay_edge.edge import Edge, EdgeConfig
from relay_edge.edgecore import EdgeCore, Media, PublishVerified
from relay_edge.edgestream import Publisher
from relay_edge.limits import DEFAULT_LIMITS, KIB, Limits
from relay_edge.outbox import TAG_OVERHEAD, Budget, Outbox
from tests.support.raw import RtmpClient
from tests.support.relay import SECRET, until

UNBOUNDED = Limits(buffer_bytes=1 << 40, buffer_seconds=1e9)


def test_tag_overhead_is_what_tracemalloc_measures() -> None:
    for size in (10, 370, 4000):
        outbox = Outbox(UNBOUNDED)
        bodies = [bytes([i % 256]) * size for i in range(5000)]
        now = time.monotonic()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i, body in enumerate(bodies):
                outbox.push(flv.AUDIO, i * 23, body, now + i / 1000)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        per_tag = (grown - outbox.buffered_bytes) / len(bodies)
        # TAG_OVERHEAD is what the pure core measures; the compiled one's objects are smaller
        # (166 bytes), so the budget over-counts there, never under.
        low = TAG_OVERHEAD - 16 if accel.running() == "pure" else TAG_OVERHEAD - 48
        assert low <= per_tag <= TAG_OVERHEAD + 16, f"{size}-byte tags: {per_tag:.1f} bytes beyond their own"
        assert outbox.budget.used == outbox.held_bytes == outbox.buffered_bytes + TAG_OVERHEAD * len(bodies)


def test_the_budget_follows_pushes_acks_drops_and_discards() -> None:
    budget = Budget()
    a, b = Outbox(replace(DEFAULT_LIMITS, buffer_bytes=5000), budget), Outbox(UNBOUNDED, budget)
    for i in range(100):
        a.push(flv.AUDIO, i, bytes(100), float(i))  # trims itself past 5000 bytes
        b.push(flv.AUDIO, i, bytes(50), float(i))
    assert a.dropped_tags > 0
    assert budget.used == a.held_bytes + b.held_bytes
    _, _, sent = b.take(1)
    b.ack(len(sent) // 2)
    assert b.drop_oldest() == 50 + 11 + TAG_OVERHEAD
    assert budget.used == a.held_bytes + b.held_bytes
    a.discard()
    assert budget.used == b.held_bytes and a.buffered_tags == 0


async def publish(edge: Edge, name: str) -> RtmpClient:
    client = await RtmpClient.publish(edge.rtmp_port, keys.mint_key(SECRET, name, 600, now=time.time()))
    assert client.codes == ["NetStream.Publish.Start"], client.codes
    return client


async def start_edge(**limits: float) -> Edge:
    limits_ = replace(DEFAULT_LIMITS, **limits)
    config = EdgeConfig(secret=SECRET, rtmp_listen=("127.0.0.1", 0), http_listen=None, limits=limits_)
    edge = Edge(config)
    await edge.start()
    return edge


async def test_past_max_buffered_total_the_oldest_tags_of_any_stream_go_first() -> None:
    limit = 256 * KIB
    edge = await start_edge(max_buffered_total=limit)
    try:
        old, new = await publish(edge, "old"), await publish(edge, "new")
        await old.send_media(flv.AUDIO, 0, b"\xaf\x00\x12\x10")
        for i in range(1, 41):  # 40 x 4 KiB: ~164 KiB, well within the budget
            await old.send_media(flv.AUDIO, 23 * i, b"\xaf\x01" + bytes(4096))
        await until(lambda: "old" in edge.streams and edge.streams["old"].outbox.buffered_tags == 41, 5)
        for i in range(1, 41):  # another 164 KiB from a newer stream: over the budget
            await new.send_media(flv.AUDIO, 23 * i, b"\xaf\x01" + bytes(4096))
        await until(lambda: edge.streams["new"].outbox.next_seq == 41, 5)
        old_box, new_box = edge.streams["old"].outbox, edge.streams["new"].outbox
        assert edge.budget.used <= limit
        assert edge.budget.used == old_box.held_bytes + new_box.held_bytes
        assert old_box.dropped_tags > 0 and new_box.dropped_tags == 0  # the older data went
        gap, first, _ = old_box.take(1)  # the link would report it, right where the tags were
        assert gap is not None and gap.tags == old_box.dropped_tags and gap.seq == first
        metrics = edge.metrics.render().decode()
        assert 'relay_edge_limit_breaches_total{limit="max_buffered_total"}' in metrics
        assert f"relay_edge_held_bytes {float(edge.budget.used)}" in metrics
        old.close()
        new.close()
    finally:
        await edge.stop(grace=0)


async def test_ended_streams_count_against_max_streams_and_per_key() -> None:
    edge = await start_edge(max_streams=10, max_streams_per_key=2)
    try:
        for _ in range(2):  # publish and unpublish: with no link, each ends but keeps flushing
            client = await publish(edge, "loop")
            await client.send_media(flv.AUDIO, 0, b"\xaf\x00\x12\x10")
            client.session.unpublish()
            await client.send_raw(client.session.data_to_send())
            await until(lambda: "loop" not in edge.streams, 5)
            client.close()
        third = await RtmpClient.publish(edge.rtmp_port, keys.mint_key(SECRET, "loop", 600, now=time.time()))
        assert third.codes == ["NetStream.Publish.BadName"]
        assert third.statuses[0].description == "max_streams_per_key reached"
        third.close()
        # Other names are still welcome, until live + ended streams reach max_streams.
        held = [await publish(edge, f"s{i}") for i in range(8)]
        refused = await RtmpClient.publish(edge.rtmp_port, keys.mint_key(SECRET, "s9", 600, now=time.time()))
        assert refused.codes == ["NetStream.Publish.BadName"]
        assert refused.statuses[0].description == "max_streams reached"
        for c in [*held, refused]:
            c.close()
    finally:
        await edge.stop(grace=0)


async def test_an_ended_stream_is_dropped_after_buffer_seconds_even_unacked() -> None:
    edge = await start_edge(buffer_seconds=1.0)
    try:
        client = await publish(edge, "gone")
        await client.send_media(flv.AUDIO, 0, b"\xaf\x00\x12\x10")
        client.session.unpublish()
        await client.send_raw(client.session.data_to_send())
        await until(lambda: "gone" not in edge.streams, 5)
        assert edge.budget.used > 0
        await until(lambda: edge.budget.used == 0 and not edge.status()["streams"], 5)  # the sweep, ~1 s
        client.close()
        await asyncio.sleep(0)
    finally:
        await edge.stop(grace=0)


def test_the_oldest_tags_go_first_across_many_streams() -> None:
    """Interleaved streams over the budget lose their oldest tags evenly: oldest first, whoever owns them."""
    limits = replace(DEFAULT_LIMITS, max_buffered_total=64 * KIB)
    core = EdgeCore("edge", limits=limits)  # the edge's sans-I/O core: no sockets needed
    publisher = Publisher("10.0.0.1:1", "live", "")
    for i in range(50):
        core.handle(PublishVerified(i, 1, f"s{i}", "live", publisher), 0.0)
    streams = [core.streams[f"s{i}"] for i in range(50)]
    for ts in range(20):  # 50 streams x 20 tags x (100 + 11 + 193) bytes: ~297 KiB pushed
        for i in range(50):
            now = ts * 0.023 + i * 0.0001  # arrivals in push order, as the clock would give them
            core.handle(Media(i, 1, flv.AUDIO, ts * 23, b"\xaf\x01" + bytes(98)), now)
    assert core.budget.used <= limits.max_buffered_total
    assert core.budget.used == sum(s.outbox.held_bytes for s in streams)
    dropped = [s.outbox.dropped_tags for s in streams]
    assert max(dropped) - min(dropped) <= 1 and min(dropped) > 0  # round-robin pushes: even losses
