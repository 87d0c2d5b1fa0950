"""Lifecycle paths nothing else reaches: refusals at the limits, pruning, half-started and restarted edges.

Each runs a real edge (and, where it matters, a real app) on loopback, on both event loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from websockets.asyncio.client import connect

from relay_client import Receiver, Stream
from relay_edge import flv, keys, wire
from relay_edge.auth import PROOF_HEADER, link_target, make_proof
from relay_edge.edge import Edge, EdgeConfig
from relay_edge.transport import SUBPROTOCOL, WebsocketsTransport, exchange_hello
from relay_edge.web import common_routes
from tests.support import media
from tests.support.net import TcpProxy, free_port, port_is_open
from tests.support.raw import RtmpClient, wait_closed
from tests.support.relay import SECRET, until, with_limits

AAC_HEADER = b"\xaf\x00\x12\x10"  # AAC-LC 44.1 kHz stereo AudioSpecificConfig


def aac(i: int) -> bytes:
    """A recognisable AAC raw frame: its index in the first bytes."""
    return b"\xaf\x01" + i.to_bytes(4, "big") + bytes(60)


def config(**changes: object) -> EdgeConfig:
    base = EdgeConfig(secret=SECRET, rtmp_listen=("127.0.0.1", 0), http_listen=None, name="edge-x")
    return replace(base, **changes)  # type: ignore[arg-type]


def key(name: str) -> str:
    return keys.mint_key(SECRET, name, now=time.time())


async def unpublish(client: RtmpClient) -> None:
    """FCUnpublish + deleteStream, as ffmpeg sends at the end (the edge answers nothing)."""
    client.session.unpublish()
    await client.send_raw(client.session.data_to_send())


def limit_breaches(edge: Edge, limit: str) -> float:
    return edge.metrics.limit_breaches.labels(limit)._value.get()


async def test_max_streams_refuses_the_next_publish_and_admits_after_one_ends() -> None:
    edge = Edge(config(limits=with_limits(max_streams=1, buffer_seconds=0.5)))
    await edge.start()
    try:
        first = await RtmpClient.publish(edge.rtmp_port, key("one"))
        assert first.started, first.codes
        second = await RtmpClient.publish(edge.rtmp_port, key("two"))
        assert second.rejected is not None and not second.started
        assert second.codes[-1] == "NetStream.Publish.BadName"
        assert second.statuses[-1].description == "max_streams reached"
        assert sorted(edge.streams) == ["one"] and limit_breaches(edge, "max_streams") == 1
        # The slot is free once the first stream has ended and its tail is gone (an ended stream
        # still flushing holds memory, so it counts; with no consumer its tail is dropped after
        # buffer_seconds): the same name that was refused now publishes.
        await unpublish(first)
        await until(lambda: not edge.status()["streams"], 5, "stream one ended and its tail dropped")
        second.close()
        third = await RtmpClient.publish(edge.rtmp_port, key("two"))
        assert third.started, third.codes
        assert sorted(edge.streams) == ["two"]
        first.close()
        third.close()
    finally:
        await edge.stop()


async def test_max_connections_closes_the_extra_socket_at_once_and_frees_the_slot() -> None:
    edge = Edge(config(limits=with_limits(max_connections=1)))
    await edge.start()
    try:
        first = await RtmpClient.publish(edge.rtmp_port, key("one"))
        assert first.started, first.codes
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.rtmp_port)
        writer.write(b"\x03" + bytes(1536))  # C0+C1: the edge must not answer
        _, how, data = await wait_closed(reader, 5)
        writer.close()
        assert data == b"", how  # closed before the handshake: not even S0
        assert limit_breaches(edge, "max_connections") == 1 and len(edge.connections) == 1
        first.close()
        await until(lambda: not edge.connections, 5, "the first connection counted out")
        again = await RtmpClient.publish(edge.rtmp_port, key("two"))
        assert again.started, again.codes
        again.close()
    finally:
        await edge.stop()


async def test_an_ended_stream_with_no_consumer_is_pruned_after_buffer_seconds() -> None:
    """With no app linked, an ended stream's tail is kept buffer_seconds, then dropped (not forever)."""
    edge = Edge(config(limits=with_limits(buffer_seconds=1.0)))
    await edge.start()
    try:
        client = await RtmpClient.publish(edge.rtmp_port, key("tail"))
        await client.send_media(flv.AUDIO, 0, AAC_HEADER)
        for i in range(10):
            await client.send_media(flv.AUDIO, 23 * i, aac(i))

        def state() -> list[tuple[str, str, int]]:
            return [(s["name"], s["state"], s["buffered_tags"]) for s in edge.status()["streams"]]

        await until(lambda: state() == [("tail", "live", 11)], 5, "11 tags buffered for tail")
        unpublished = time.monotonic()  # the edge ends the stream after this, never before
        await unpublish(client)
        await until(lambda: state() == [("tail", "ended", 11)], 5, "tail ended, its 11 tags kept")
        assert state() == [("tail", "ended", 11)], "the ended stream keeps its tail for a consumer"
        await until(lambda: not state(), 5, "the ended stream pruned")
        # The core's tail timer: pruned buffer_seconds after the end, not at once.
        assert time.monotonic() - unpublished >= 1.0
        client.close()
    finally:
        await edge.stop()


async def test_a_failed_start_closes_the_rtmp_listener_it_opened() -> None:
    """The HTTP port is taken: start() raises, and the RTMP port it had bound is free again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        rtmp_port = free_port()
        edge = Edge(config(rtmp_listen=("127.0.0.1", rtmp_port), http_listen=taken.getsockname()))
        with pytest.raises(OSError):
            await edge.start()
        assert edge.rtmp_port == rtmp_port  # it got as far as listening for RTMP
    assert not port_is_open("127.0.0.1", rtmp_port), "the RTMP listener outlived the failed start"
    # And the port can be bound again at once by the next attempt.
    retry = Edge(config(rtmp_listen=("127.0.0.1", rtmp_port)))
    await retry.start()
    await retry.stop()


async def test_rtmps_without_a_certificate_fails_start_without_leaving_rtmp_open() -> None:
    rtmp_port = free_port()
    edge = Edge(config(rtmp_listen=("127.0.0.1", rtmp_port), rtmps_listen=("127.0.0.1", 0)))
    with pytest.raises(ValueError, match="RTMPS needs a certificate and a key"):
        await edge.start()
    assert not port_is_open("127.0.0.1", rtmp_port)


class App:
    """A real aiohttp app with a Receiver on ``/relay``, writing ``--out`` files."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.opened: list[Stream] = []

        async def on_stream(stream: Stream) -> None:
            self.opened.append(stream)

        self.receiver = Receiver(SECRET, consume=frozenset(), out_dir=str(out), on_stream=on_stream)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> App:
        app = web.Application()
        app.router.add_get("/relay", self.receiver.handler)
        common_routes(app, self.receiver.status, self.receiver.metrics.render)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    def url(self, port: int | None = None) -> str:
        """The app's ``/relay`` URL, on ``port`` if given (a proxy in front of it)."""
        return f"ws://127.0.0.1:{port or self.port}/relay"

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def stats(self, name: str) -> dict[str, object] | None:
        path = self.out / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None


async def test_an_edge_restarted_mid_stream_ends_the_streams_it_lost(tmp_path: Path) -> None:
    """Receiver._finish_gone: the new edge's Hello does not list the stream, so the app ends it."""
    async with App(tmp_path) as app:
        proxy = await TcpProxy(app.port).start()
        first = Edge(config(upstreams=(app.url(proxy.port),)))
        await first.start()
        client = None
        try:
            await until(lambda: len(app.receiver.links) == 1, 10, "first edge linked")
            client = await RtmpClient.publish(first.rtmp_port, key("room"))
            await client.send_media(flv.AUDIO, 0, AAC_HEADER)
            for i in range(20):
                await client.send_media(flv.AUDIO, 23 * i, aac(i))
            await until(lambda: bool(app.opened) and app.opened[0].stats.tags == 21, 10, "21 tags delivered")
            # The edge dies without a word: the link is reset, nothing more comes from it.
            await proxy.close()
            await until(lambda: not app.receiver.links, 10, "the app noticed the link is gone")
        finally:
            if client is not None:
                client.close()
            await first.stop(grace=0)
        stream = app.opened[0]
        assert not stream.ended, "a lost link alone must not end the stream: the edge may come back"
        assert app.stats("room") is None
        second = Edge(config(upstreams=(app.url(),)))  # same name, new instance: it never had the stream
        await second.start()
        try:
            await until(lambda: app.stats("room") is not None, 10, "the app ended the lost stream")
        finally:
            await second.stop()
    stats = app.stats("room")
    assert stats is not None
    assert stats["end_reason"] == "gone from the edge"
    assert stats["tags"] == 21
    assert stream.ended and len(app.opened) == 1


async def test_an_app_shutting_down_refuses_new_links_in_both_modes(tmp_path: Path) -> None:
    """After Receiver.shutdown() no link comes up: the edge's dial (push) and the app's own (pull)."""
    async with App(tmp_path) as app:
        await app.receiver.shutdown(timeout=0)
        # Push: the edge dials the closing app through a proxy that counts connections.
        async with TcpProxy(app.port) as proxy:
            edge = Edge(config(upstreams=(app.url(proxy.port),), http_listen=("127.0.0.1", 0)))
            await edge.start()
            try:
                await until(lambda: proxy.accepted and not proxy.connections, 10, "a push dial, closed")
                assert not edge.links and not app.receiver.links
                # Pull: the closing app dials the edge's /link; the link is dropped before any Hello.
                async with TcpProxy(edge.http_port) as pull:
                    dialer = asyncio.create_task(app.receiver.connect(f"ws://127.0.0.1:{pull.port}/link"))
                    try:
                        await until(lambda: pull.accepted and not pull.connections, 10, "a pull dial, closed")
                        assert not edge.links and not app.receiver.links
                    finally:
                        dialer.cancel()
                        await asyncio.gather(dialer, return_exceptions=True)
            finally:
                await edge.stop()


async def fake_edge_link(app: App, uid: str, first_seq: int, tags: tuple[bytes, ...]) -> list[object]:
    """One link from a hand-driven edge: Open ``uid`` at ``first_seq``, its tags from there, Close.

    Returns the frames the app answered with, until it has nothing more to say (1 s of silence).
    """
    proof = make_proof(SECRET, "edge", time.time(), target=link_target(app.url()))
    headers = {PROOF_HEADER: proof}
    async with connect(app.url(), additional_headers=headers, subprotocols=[SUBPROTOCOL]) as conn:  # type: ignore[list-item]
        link = WebsocketsTransport(conn, "fake edge")
        held = (wire.ResumePoint(uid=uid, seq=len(tags)),)
        hello = wire.Hello(wire.PROTOCOL_VERSION, "edge", "fake", streams=held, name="fake-edge")
        await exchange_hello(link, hello, secret=SECRET, dialer_proof=proof, dialed=True, timeout=5)
        header = flv.file_header(audio=True, video=False)
        init = (flv.Tag(flv.AUDIO, 0, AAC_HEADER).encode(),)
        frames: list[object] = [
            wire.Open(
                1, uid, "again", {}, {"audio": "aac"}, first_seq, first_seq > 1, header, "fake-edge", init
            ),
            wire.Data(1, first_seq, tags[first_seq - 1 :]),
            wire.Close(1, "publisher: FCUnpublish", wire.Code.UNPUBLISHED),
        ]
        for frame in frames:
            await link.send(wire.encode(frame))
        answers: list[object] = []
        with contextlib.suppress(TimeoutError):
            while True:
                answers += wire.decode_message(await asyncio.wait_for(link.recv(), 1.0))
        return answers


async def test_an_ended_uid_reopened_after_a_lost_ack_is_not_written_twice(tmp_path: Path) -> None:
    """The app ended a stream and acked its tail, but the ack was lost with the link: the edge offers
    the uid again from an older seq. The app must say it is done with it, not start it over and
    append the tail to the files a second time."""
    tags = tuple(flv.Tag(flv.AUDIO, 23 * i, aac(i)).encode() for i in range(10))
    async with App(tmp_path) as app:
        first = await fake_edge_link(app, "fake-1", 1, tags)
        assert first == [wire.Accept(1), wire.Ack(1, 10)]
        await until(lambda: app.stats("again") is not None, 5, "again.json")
        before = app.stats("again")
        # The edge never saw that Ack: it offers the last three tags again, then the Close.
        again = await fake_edge_link(app, "fake-1", 8, tags)
        assert [type(f).__name__ for f in again] == ["Reject"]
        assert (again[0].sid, again[0].code) == (1, wire.Code.DONE)  # type: ignore[attr-defined]
        assert len(app.opened) == 1
    assert app.stats("again") == before  # NAME.json untouched: one stream, 10 tags
    assert before is not None and (before["tags"], before["streams"]) == (10, 1)
    assert media.audio_payloads(tmp_path / "again.flv") == [AAC_HEADER, *(aac(i) for i in range(10))]
