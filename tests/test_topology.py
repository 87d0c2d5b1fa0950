"""Several consumers on one edge, several edges into one app: who gets which stream.

Policy (docs/TOPOLOGY.md): each stream goes to exactly one consumer: its previous
consumer while that one is connected, else the connected consumer with the
fewest streams among those whose name patterns match. When a consumer goes
away, its streams resume on another from their last ack.
"""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import pytest
from aiohttp import web

from relay_client import Receiver, Stream
from relay_client.tone import dominant_frequency
from relay_edge import flv, keys
from relay_edge.edge import Edge, EdgeConfig
from relay_edge.web import common_routes
from tests.support import media, publishers
from tests.support.net import TcpProxy
from tests.support.relay import SECRET, until

pytestmark = pytest.mark.slow


class Consumer:
    """A Receiver dialing the edge (pull), writing its own --out directory."""

    def __init__(self, out: Path, link_url: str, patterns: tuple[str, ...] = ()) -> None:
        self.out = out
        self.names: list[str] = []

        async def on_stream(stream: Stream) -> None:
            self.names.append(stream.info.name)

        self.receiver = Receiver(
            SECRET, consume=frozenset(), out_dir=str(out), on_stream=on_stream, patterns=patterns
        )
        self.task = asyncio.create_task(self.receiver.connect(link_url))

    async def kill(self) -> None:
        """Stop dialing (a polite 1001 close if the link is still up)."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def start_edge(name: str, upstreams: tuple[str, ...] = ()) -> Edge:
    edge = Edge(
        EdgeConfig(
            secret=SECRET,
            rtmp_listen=("127.0.0.1", 0),
            http_listen=("127.0.0.1", 0),
            upstreams=upstreams,
            name=name,
        )
    )
    await edge.start()
    return edge


def rtmp_url(edge: Edge, name: str) -> str:
    return f"rtmp://127.0.0.1:{edge.rtmp_port}/live/{keys.mint_key(SECRET, name, now=time.time())}"


def audio_payloads(path: Path) -> list[bytes]:
    return [t.data for t in media.read_tags(path) if t.type == flv.AUDIO] if path.exists() else []


async def test_two_consumers_four_publishers_whole_streams_no_duplicates(tmp_path: Path) -> None:
    edge = await start_edge("edge-1")
    link = f"ws://127.0.0.1:{edge.http_port}/link"
    a, b = Consumer(tmp_path / "a", link), Consumer(tmp_path / "b", link)
    try:
        await until(lambda: len(edge.links) == 2, 10, "both consumers connected")
        freqs = {"s1": 330, "s2": 440, "s3": 550, "s4": 660}
        pubs = [
            await publishers.ffmpeg_tone(rtmp_url(edge, n), seconds=3, frequency=f) for n, f in freqs.items()
        ]
        await asyncio.gather(*(p.wait_ok(30) for p in pubs))

        def all_ended() -> bool:
            names = [(c, n) for c in (a, b) for n in c.names]
            return len(names) == 4 and all((c.out / f"{n}.json").exists() for c, n in names)

        await until(all_ended, 15, "all streams ended")
    finally:
        await a.kill()
        await b.kill()
        await edge.stop()
    assert sorted(a.names + b.names) == ["s1", "s2", "s3", "s4"]  # each exactly once
    assert not set(a.names) & set(b.names)
    assert len(a.names) == len(b.names) == 2  # fewest-streams policy spreads them
    for consumer in (a, b):
        for name in consumer.names:
            with wave.open(str(consumer.out / f"{name}.wav")) as w:
                pcm = w.readframes(w.getnframes())
            assert len(pcm) / 2 / 16000 == pytest.approx(3.0, abs=0.15)
            assert dominant_frequency(pcm, 16000, 1) == pytest.approx(freqs[name], abs=1.0)


async def test_killing_a_consumer_moves_its_streams_to_the_other_losing_nothing(tmp_path: Path) -> None:
    source = media.tone_flv(tmp_path / "tone.flv", seconds=6, frequency=440)
    sent = audio_payloads(source)
    edge = await start_edge("edge-1")
    # Each consumer reaches the edge through its own proxy, so its death can be a reset link.
    proxies = {c: await TcpProxy(edge.http_port).start() for c in "ab"}
    a = Consumer(tmp_path / "a", f"ws://127.0.0.1:{proxies['a'].port}/link")
    await until(lambda: len(edge.links) == 1, 10, "first consumer connected")
    b = Consumer(tmp_path / "b", f"ws://127.0.0.1:{proxies['b'].port}/link")
    try:
        await until(lambda: len(edge.links) == 2, 10, "second consumer connected")
        pubs = [await publishers.ffmpeg_copy(rtmp_url(edge, f"m{i}"), source) for i in range(2)]

        def acked_a_second() -> bool:  # both streams placed, and each consumer acked ~1 s of audio
            streams = edge.status()["streams"]
            return len(streams) == 2 and all(s["acked_seq"] > 45 for s in streams)

        await until(acked_a_second, 15, "both streams flowing, ~1 s acked")
        victim, survivor = (a, b) if a.names else (b, a)
        moved = list(victim.names)
        assert moved, "the victim had streams"
        # Like SIGKILL as far as the edge can tell: the link is reset (RST), no close, no last ack,
        # and the victim never comes back (its proxy refuses redials).
        await proxies["a" if victim is a else "b"].close()
        await victim.kill()
        await asyncio.gather(*(p.wait_ok(30) for p in pubs))
        await until(
            lambda: all((survivor.out / f"m{i}.json").exists() for i in range(2)), 20, "streams ended"
        )
    finally:
        await a.kill()
        await b.kill()
        await edge.stop()
        for proxy in proxies.values():
            await proxy.close()
    for name in moved:
        before = audio_payloads(victim.out / f"{name}.flv")
        after = audio_payloads(survivor.out / f"{name}.flv")
        assert before and after
        # The survivor resumed from the victim's last ack: nothing is missing; at most the
        # tags the victim wrote but never acked arrive twice (the resumed copy starts with
        # the replayed AAC sequence header).
        assert flv.is_sequence_header(flv.AUDIO, after[0])
        overlap = len(before) - sent.index(after[1])
        assert 0 <= overlap <= 10
        assert before + after[1 + overlap :] == sent


async def test_a_consumer_can_subscribe_to_a_name_pattern(tmp_path: Path) -> None:
    edge = await start_edge("edge-1")
    link = f"ws://127.0.0.1:{edge.http_port}/link"
    rooms = Consumer(tmp_path / "rooms", link, patterns=("room-*",))
    other = Consumer(tmp_path / "other", link)
    try:
        await until(lambda: len(edge.links) == 2, 10, "both consumers connected")
        pubs = [
            await publishers.ffmpeg_tone(rtmp_url(edge, n), seconds=2) for n in ("room-1", "room-2", "lobby")
        ]
        await asyncio.gather(*(p.wait_ok(30) for p in pubs))
        await until(lambda: len(rooms.names) + len(other.names) == 3, 15, "all streams opened")
    finally:
        await rooms.kill()
        await other.kill()
        await edge.stop()
    assert sorted(rooms.names) == ["room-1", "room-2"]
    assert other.names == ["lobby"]


async def test_two_edges_into_one_app_keep_streams_distinct(tmp_path: Path) -> None:
    names: list[tuple[str, str]] = []

    async def on_stream(stream: Stream) -> None:
        names.append((stream.info.name, stream.info.edge))

    receiver = Receiver(SECRET, consume=frozenset(), out_dir=str(tmp_path), on_stream=on_stream)
    app = web.Application()
    app.router.add_get("/relay", receiver.handler)
    common_routes(app, receiver.status, receiver.metrics.render)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    upstream = (f"ws://127.0.0.1:{port}/relay",)
    ams, iad = await start_edge("fly-ams", upstream), await start_edge("fly-iad", upstream)
    try:
        await until(lambda: len(receiver.links) == 2, 10, "both edges linked")
        # The same stream name through two regions: two streams, told apart by their edge.
        pubs = [await publishers.ffmpeg_tone(rtmp_url(e, "room-9"), seconds=4) for e in (ams, iad)]
        await until(lambda: len(receiver.status()["streams"]) == 2, 10, "both streams live")
        status = receiver.status()["streams"]
        assert sorted(s["edge"] for s in status) == ["fly-ams", "fly-iad"]
        assert len({s["uid"] for s in status}) == 2
        await asyncio.gather(*(p.wait_ok(30) for p in pubs))
    finally:
        await ams.stop()
        await iad.stop()
        await runner.cleanup()
    assert sorted(names) == [("room-9", "fly-ams"), ("room-9", "fly-iad")]
