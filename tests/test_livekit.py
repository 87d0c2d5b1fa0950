"""LiveKit: from a room to transcribable audio in the app (issue 5).

Against a local stand-in speaking LiveKit's wire formats (tests/support/livekit_standin.py): Twirp
requests exactly as livekit-api sends them, JWT-checked; a GStreamer egress shaped like LiveKit's
publishing through a real edge and app; Track Egress PCM over WebSocket; signed webhooks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import sys
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import numpy as np
import pytest
from aiohttp import web
from google.protobuf import json_format
from livekit import api
from livekit.protocol import egress as pe
from livekit.protocol import models as pm
from livekit.protocol.webhook import WebhookEvent

from bench.publisher import Connection, looped, split
from relay_client import AudioFormat, Receiver
from relay_client.livekit import (
    EgressManager,
    LiveKitConfig,
    RoomNotFound,
    TrackAudioEndpoint,
    WebhookHandler,
    stream_name,
)
from relay_client.pcm_stream import MuteEvent, PcmStream
from relay_client.stream import GapEvent
from relay_client.tone import dominant_frequency
from relay_edge import flv, keys
from relay_edge.keys import verify_key
from relay_edge.limits import KIB, MIB
from tests.support import livekit_standin as lk
from tests.support import media, publishers
from tests.support.net import TcpProxy
from tests.support.relay import SECRET, Relay, until, with_limits

AUDIO, VIDEO = pm.TrackType.AUDIO, pm.TrackType.VIDEO


def config(standin: lk.LiveKitStandIn, **kw: Any) -> LiveKitConfig:
    return LiveKitConfig(
        livekit_url=standin.url, api_key=lk.API_KEY, api_secret=lk.API_SECRET, relay_secret=SECRET, **kw
    )


class App:
    """The app's HTTP side for these tests: track endpoint + webhook, on a real port."""

    def __init__(self, receiver: Receiver, manager_config: LiveKitConfig | None = None) -> None:
        self.receiver = receiver
        self.endpoint = TrackAudioEndpoint(SECRET, receiver)
        self.manager: EgressManager | None = None
        self.webhook: WebhookHandler | None = None
        self.url = ""
        self._config = manager_config

    @asynccontextmanager
    async def run(self, standin: lk.LiveKitStandIn, **kw: Any) -> AsyncIterator[App]:
        app = web.Application()
        app.router.add_get(self.endpoint.path, self.endpoint.handler)
        self.webhook = WebhookHandler(lk.API_KEY, lk.API_SECRET)
        app.router.add_post("/livekit/webhook", self.webhook.handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        self.manager = EgressManager(config(standin, public_url=self.url, **kw), track_endpoint=self.endpoint)
        self.webhook.manager = self.manager
        standin.webhook_url = f"{self.url}/livekit/webhook"
        try:
            yield self
        finally:
            await self.manager.aclose()
            await self.endpoint.close()
            await runner.cleanup()


# --- Room Composite toward the edge: the requests ---------------------------------------------


async def test_room_composite_request_fields_dedup_and_stop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "relay_client")
    async with lk.LiveKitStandIn(rooms=("room-1",)) as standin:
        cfg = config(standin, rtmp_host="edge.example.net", rtmp_port=1935)
        async with EgressManager(cfg) as manager:
            session = await manager.start("room-1", slug="Session 42!")
            again = await manager.start("room-1", slug="Session 42!")
        assert again is session
        (req,) = standin.requests("StartRoomCompositeEgress")
        assert req.room_name == "room-1" and req.audio_only is True
        (out,) = req.stream_outputs
        assert out.protocol == pe.StreamProtocol.RTMP
        (url,) = out.urls
        prefix = "rtmp://edge.example.net:1935/live/"
        assert url.startswith(prefix)
        name = verify_key(SECRET, url[len(prefix) :], time.time())
        assert name == session.name == stream_name("Session 42!")
        assert session.egress_id.startswith("EG_standin") and session.mode == "room_composite"
        # ListEgress is asked once (the second start is answered from memory)
        assert [r.room_name for r in standin.requests("ListEgress")] == ["room-1"]
        # The runbook's log line, with the NAME only: the key's signature never reaches the logs.
        assert f"Egress streaming to: {prefix}{name}…" in caplog.text
        assert url[len(prefix) :].split(".", 1)[1] not in caplog.text

        # Another process asking for the same room adopts the running egress (ListEgress).
        async with EgressManager(cfg) as other:
            adopted = await other.start("room-1", slug="Session 42!")
            assert adopted.adopted and adopted.egress_ids == session.egress_ids
            assert len(standin.requests("StartRoomCompositeEgress")) == 1
            info = await other.stop(session.egress_id)
        assert [r.egress_id for r in standin.requests("StopEgress")] == [session.egress_id]
        assert info.status == pe.EgressStatus.EGRESS_COMPLETE
        # Every call went as protobuf with a JWT the API secret verifies (else the stand-in says 401).
        assert {ctype for _, _, ctype in standin.calls} == {"application/protobuf"}
        assert standin.refused == []


# livekit/protocol utils/redact.go, read there: what ListEgress shows of each URL.
REDACTIONS = [
    ("rtmp://edge:1935/live/abcdefghijkl", "rtmp://edge:1935/live/{abc...jkl}"),
    ("rtmps://a.example/x/app/abcdefgh", "rtmps://a.example/x/app/{ab...gh}"),
    ("rtmp://h/live/abcde", "rtmp://h/live/{a...e}"),
    ("rtmp://h/live/ab", "rtmp://h/live/{...}"),
    ("rtmp://h/live/abcdefghi live=1", "rtmp://h/live/{abc...ghi} live=1"),
    ("rtmp://h/live/n.1.sig?x=1", "rtmp://h/live/{n.1...x=1}"),  # the query is part of the key
    ("mux://abcdefghij", "mux://{abc...hij}"),
    ("rtmp://h/key", "rtmp://h/key"),  # no app: not a stream URL, no query: unchanged
    ("wss://app/livekit/track?name=n&room=r&flag&empty=&token=t", "wss://app/livekit/track?name={...}&room={...}&flag&empty=&token={...}"),
]  # fmt: skip


@pytest.mark.parametrize(("url", "listed"), REDACTIONS)
def test_standin_redacts_as_livekit_does(url: str, listed: str) -> None:
    redact = lk.redact_url_query_values if url.startswith("wss") else lk.redact_stream_key
    assert redact(url) == listed


async def test_start_and_stop_find_the_running_egress_under_redaction() -> None:
    """Issue 12 item 1: ListEgress shows ``{abc...xyz}`` for the key, so match on what survives."""
    async with lk.LiveKitStandIn(rooms=("room-x",)) as standin:
        cfg = config(standin, rtmp_host="edge.example.net", rtmp_port=1935)
        async with EgressManager(cfg) as first:
            session = await first.start("room-x", slug="slug-x")
        (listed,) = (await api_list(standin, "room-x")).items
        (url,) = listed.room_composite.stream_outputs[0].urls
        key = standin.requests("StartRoomCompositeEgress")[0].stream_outputs[0].urls[0].rsplit("/", 1)[1]
        assert url == f"rtmp://edge.example.net:1935/live/{{{key[:3]}...{key[-3:]}}}"
        async with EgressManager(cfg) as restarted:  # an app restart, a second instance
            again = await restarted.start("room-x", slug="slug-x")
            assert again.adopted and again.egress_ids == session.egress_ids and again.name == "slug-x"
            assert len(standin.requests("StartRoomCompositeEgress")) == 1
        elsewhere = config(standin, rtmp_host="other-edge.example.net", rtmp_port=1935)
        async with EgressManager(elsewhere) as other:  # another edge's egress is not ours
            assert not (await other.start("room-x")).adopted
        assert len(standin.requests("StartRoomCompositeEgress")) == 2
        async with EgressManager(cfg) as fresh:  # knows nothing in memory: stop_room asks LiveKit
            stopped = await fresh.stop_room("room-x")
        assert stopped is not None and stopped.egress_ids == session.egress_ids
        assert [r.egress_id for r in standin.requests("StopEgress")] == [session.egress_id]


async def test_room_that_does_not_exist_yet_starts_on_webhooks() -> None:
    """Issue 12 item 6: StartRoomCompositeEgress fails for a room nobody joined yet."""
    receiver = Receiver(SECRET)
    async with lk.LiveKitStandIn() as standin:
        async with EgressManager(config(standin, rtmp_host="edge", rtmp_port=1935)) as plain:
            with pytest.raises(RoomNotFound, match=r"room-e does not exist yet.*room_started"):
                await plain.start("room-e")  # no webhooks: say so, start nothing
        async with App(receiver).run(standin, rtmp_host="edge", rtmp_port=1935) as app:
            assert app.manager is not None and app.manager.webhooks  # the handler is mounted
            session = await app.manager.start("room-e", slug="early")
            assert session.waiting and session.egress_ids == [] and not session.ended
            assert (await app.manager.start("room-e", slug="early")) is session
            assert standin.egresses == {}
            await standin.join("room-e", lk.participant("first"))  # room_started, participant_joined
            await until(lambda: bool(session.egress_ids), 5, "room_started did not start the egress")
            await standin.join("room-e", lk.participant("second"))  # participant_joined only
            assert not session.waiting and len(standin.egresses) == 1
            (egress,) = standin.egresses.values()
            assert session.egress_ids == [egress.info.egress_id]
            assert verify_key(SECRET, egress.url.rsplit("/", 1)[1], time.time()) == "early"
    assert standin.webhook_answers == [200, 200, 200]


async def api_list(standin: lk.LiveKitStandIn, room: str) -> pe.ListEgressResponse:
    async with api.LiveKitAPI(standin.url, lk.API_KEY, lk.API_SECRET) as lkapi:
        return await lkapi.egress.list_egress(pe.ListEgressRequest(room_name=room))


async def test_twirp_refuses_a_wrong_secret_and_takes_json() -> None:
    async with lk.LiveKitStandIn(rooms=("room-x", "room-j")) as standin:
        bad = LiveKitConfig(
            standin.url, lk.API_KEY, "not-the-secret-but-just-as-long-0123456789", SECRET, "h", 1935
        )
        async with EgressManager(bad) as manager:
            with pytest.raises(api.TwirpError) as caught:
                await manager.start("room-x")
        assert caught.value.status == 401 and caught.value.code == "unauthenticated"
        assert standin.requests("StartRoomCompositeEgress") == []
        # Twirp's JSON encoding works too, with the same auth.
        token = api.AccessToken(lk.API_KEY, lk.API_SECRET).with_grants(api.VideoGrants(room_record=True))
        body = {"roomName": "room-j", "audioOnly": True,
                "streamOutputs": [{"protocol": "RTMP", "urls": ["rtmp://h:1/live/x"]}]}  # fmt: skip
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"{standin.url}/twirp/livekit.Egress/StartRoomCompositeEgress",
                json=body,
                headers={"Authorization": f"Bearer {token.to_jwt()}"},
            )
            answer = await resp.json()
        assert resp.status == 200 and answer["roomName"] == "room-j"
        (req,) = standin.requests("StartRoomCompositeEgress")
        assert req.audio_only and req.stream_outputs[0].urls == ["rtmp://h:1/live/x"]


# --- Room Composite end to end: GStreamer egress -> edge -> app ---------------------------------


@pytest.mark.slow
async def test_room_composite_egress_audio_reaches_the_app(tmp_path: Path) -> None:
    async with (
        Relay(tmp_path) as relay,
        lk.LiveKitStandIn(worker=lk.rtmp_worker(lk.Part(3.0, 440)), rooms=("standup",)) as standin,
    ):
        assert relay.edge is not None
        async with App(relay.receiver).run(
            standin, rtmp_host="127.0.0.1", rtmp_port=relay.edge.rtmp_port
        ) as app:
            assert app.manager is not None
            session = await app.manager.start("standup", slug="standup-7")
            await standin.wait_done(40)
            stats = await relay.ended("standup-7")
            await until(lambda: session.ended, 5, "egress_ended webhook not applied")
        assert standin.webhook_answers == [200, 200, 200]  # started, updated (active), ended
    assert session.status == {session.egress_id: "EGRESS_COMPLETE"}
    pcm = relay.pcm("standup-7")
    assert abs(len(pcm) / 2 / 16000 - 3.0) <= 0.15
    assert dominant_frequency(pcm, 16000, 1) == pytest.approx(440, abs=1.0)
    assert stats["codecs"] == {"audio": "aac"} and stats["gaps"] == 0


@pytest.mark.slow
async def test_egress_retry_continues_the_same_stream(tmp_path: Path) -> None:
    """LiveKit retries its RTMP sink after a network error with the same URL: one stream, both parts."""
    async with Relay(tmp_path) as relay:

        async def app_has_a_second() -> None:
            await until(lambda: len(relay.pcm("retry")) >= 2 * 16000, 30, "no audio from part 1")

        worker = lk.rtmp_worker(lk.Part(20.0, 440, cut=app_has_a_second), lk.Part(2.0, 660))
        async with lk.LiveKitStandIn(worker=worker, rooms=("room-r",)) as standin:
            assert relay.edge is not None
            cfg = config(standin, rtmp_host="127.0.0.1", rtmp_port=relay.edge.rtmp_port)
            async with EgressManager(cfg) as manager:
                await manager.start("room-r", slug="retry")
                await standin.wait_done(60)
            await relay.ended("retry")
        assert relay.edge.metrics.publisher_reconnects._value.get() == 1  # type: ignore[union-attr]
        assert relay.receiver.metrics.streams._value.get() == 1  # one Stream object, not two
        assert standin.egresses[manager.sessions["room-r"].egress_id].info.retry_count == 1
    assert list(relay.chunks) == ["retry"] and list(relay.streams) == ["retry"]
    pcm = relay.pcm("retry")
    assert dominant_frequency(pcm[: 16000 * 2], 16000, 1) == pytest.approx(440, abs=1.0)  # part 1, first 1 s
    assert dominant_frequency(pcm[-16000 * 3 : -1600], 16000, 1) == pytest.approx(660, abs=1.0)  # part 2
    assert len(pcm) / 2 / 16000 >= 1.0 + 2.0 - 0.15


async def test_edge_acknowledges_a_livekit_egress_within_a_second_of_media(tmp_path: Path) -> None:
    """LiveKit retries a dropped RTMP output only if rtmp2sink's out-bytes-acked > 0 (issue 12 item 2)."""
    async with Relay(tmp_path) as relay:
        pub = await publishers.gst_livekit(relay.url("acked"), seconds=2.0, env=lk.GST_RTMP_LOG)
        async with pub:
            await pub.wait_ok(30)
        await relay.ended("acked")
    acked = lk.acknowledged(pub.output)
    # One early ack (the 2.5 MB window is ~150 s of this audio), after at most 1 s of AAC frames
    # (44100 / 1024 = 43 a second) and with the first media counted in it.
    assert len(acked) == 1, acked
    assert 1 <= lk.sent_before_first_ack(pub.output, "audio") < 43
    assert acked[0] > 3073 + 200  # more than the handshake, connect and publish: media was counted


@pytest.mark.slow
async def test_an_expired_key_continues_its_live_stream_but_starts_no_new_one(tmp_path: Path) -> None:
    """Issue 12 item 3: the egress retries with the same URL for as long as its session lives."""
    async with Relay(tmp_path) as relay:
        url = relay.url("long-call", ttl=1)
        expiry = int(url.rsplit(".", 2)[1])
        async with await publishers.gst_livekit(url, seconds=30) as pub:
            await until(lambda: len(relay.pcm("long-call")) > 0 and time.time() > expiry + 0.5, 10)
            await pub.kill()  # the network drops after the key expired; LiveKit retries the same URL
        async with await publishers.gst_livekit(url, seconds=1.0, frequency=660) as retry:
            await retry.wait_ok(30)
        await relay.ended("long-call")
        assert relay.edge is not None
        assert relay.edge.metrics.publisher_reconnects._value.get() == 1  # type: ignore[attr-defined]
        assert list(relay.streams) == ["long-call"]  # one stream, both publishers
        # The stream is over: the same expired key starts nothing new.
        async with await publishers.gst_livekit(url, seconds=1.0) as late:
            assert await late.wait(30) != 0
        assert "publish denied" in late.output or "Unauthorized" in late.output
        assert list(relay.streams) == ["long-call"]


async def flood(port: int, name: str, tags: list[flv.Tag], stop: asyncio.Event) -> int:
    """Publish ``tags`` looped, as fast as the edge reads them, until ``stop``; return the bytes sent."""
    conn = Connection(port, "live", keys.mint_key(SECRET, name, now=time.time()), chunk_size=4096)
    await conn.open()
    config, frames = split(tags)
    for tag in config:
        conn.send(tag, 0)
    for n, (ts, tag) in enumerate(looped(frames)):
        conn.send(tag, ts)
        if n % 16 == 0:
            conn.flush()
            await conn.writer.drain()
            if stop.is_set():
                break
    await conn.close()
    return conn.result.bytes


@pytest.mark.slow
async def test_a_stalled_link_pauses_the_publisher_at_most_max_pause_then_drops_a_reported_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12 item 4: rtmp2sink fails a write after 5 s, so a backpressure pause must end in 2 s.

    The publisher is a Room Composite egress (AAC and 3000 kbit/s H.264 through rtmp2sink). The
    app's link really stalls: its TCP path stops forwarding edge -> app. A video flood sharing the
    link fills the kernel's buffers at once, so the edge's writes block and the egress's unsent
    bytes pass ``pause_bytes`` while its credit is far from used: the edge stops reading it, reads
    it again after ``max_pause`` (the link is still stalled), and the buffer's bound drops the
    oldest tags: a gap the edge and the app both report. The stall lasts 25 s of the egress's
    media. With ``max_pause=60`` this fails: rtmp2sink's send buffer fills and its write times out
    ("Socket I/O timed out", ~20 s into the pause on loopback) before the edge reads again.
    """
    caplog.set_level(logging.WARNING, "relay_edge")
    seconds = 34.0
    limits = with_limits(
        credit_bytes=1024 * MIB,  # the stalled kernel buffers count as in flight: never credit-bound
        pause_bytes=16 * KIB,  # ~40 ms of the egress
        buffer_seconds=3.0,  # then drop: a gap soon after reading again
        ping_timeout=60.0,  # a stalled path, not a dead link: the same link carries on after it
    )
    video = media.av_flv(tmp_path / "flood.flv", seconds=2, size=(1280, 720), fps=30)
    proxy = TcpProxy(0)
    async with Relay(tmp_path, limits=limits, app_proxy=proxy) as relay:
        assert relay.edge is not None and limits.max_pause == 2.0  # the shipped bound
        async with await publishers.gst_livekit(relay.url("held"), seconds=seconds, video_kbit=3000) as pub:
            await until(lambda: len(relay.pcm("held")) > 16000, 15, "no audio")  # 0.5 s at 16 kHz mono
            held = relay.edge.streams["held"]
            conn = relay.edge.publisher_conn(held)
            assert conn is not None and not conn.paused and held.last_ts is not None
            proxy.hold(up=True)  # the path to the app stalls
            stalled, stalled_ts = proxy.bytes_up, held.last_ts
            stop = asyncio.Event()
            tags = media.read_tags(video)
            flooding = asyncio.ensure_future(flood(relay.edge.rtmp_port, "flood", tags, stop))
            await until(lambda: conn.paused or flooding.done(), 30, "the egress was never paused")
            assert conn.paused, flooding  # not a flood that died first
            stop.set()
            await until(lambda: not conn.paused or pub.returncode is not None, 40, "never read again")
            assert pub.returncode is None, f"the publisher died in the pause:\n{pub.output[-2000:]}"
            assert conn.overrun and proxy.bytes_up == stalled  # by max_pause: the link is still stalled
            await until(lambda: held.last_ts >= stalled_ts + 25_000 or pub.returncode is not None, 60)
            assert pub.returncode is None, f"the publisher died in the stall:\n{pub.output[-2000:]}"
            proxy.release()
            flooded = await flooding
            await pub.wait_ok(40)  # the publisher survived: no write timeout, no reconnect
        stats = await relay.ended("held", timeout=60)
    assert relay.edge.metrics.publisher_reconnects._value.get() == 0  # type: ignore[attr-defined]
    assert stats["resumes"] == 0
    # The edge reported the drop (per stream, in its log) and the app got it as a gap of the same tags.
    reported = [r.args for r in caplog.records if r.getMessage().startswith("gap in held:")]
    assert held.gaps == len(reported) == stats["gaps"] >= 1
    assert sum(args[1] for args in reported) == stats["gap_tags"]  # type: ignore[index]
    assert sum(args[3] for args in reported) == stats["gap_ms"]  # type: ignore[index]
    decoded = len(relay.pcm("held")) / 2 / 16000
    gap_ms = stats["gap_ms"]
    print(f"max_pause: decoded {decoded:.2f} s + gap {gap_ms} ms of {seconds} s; {flooded} B flooded")
    assert stats["gap_ms"] >= 20_000  # the stall (25 s) less the 3 s buffer_seconds kept
    assert abs(decoded + stats["gap_ms"] / 1000 - seconds) <= 0.3


# --- Track Egress fallback -----------------------------------------------------------------------


async def test_track_egress_fallback_pcm_reaches_the_app(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "relay_client")
    streams: list[PcmStream] = []
    audio: dict[str, bytes] = {}
    events: dict[str, list[Any]] = {}

    async def on_stream(stream: Any) -> None:
        streams.append(stream)
        name = stream.info.name

        async def take_events() -> None:
            events[name] = [e async for e in stream.events()]

        task = asyncio.ensure_future(take_events())
        audio[name] = b"".join([c.data async for c in stream.audio()])
        await task

    receiver = Receiver(SECRET, audio_format=AudioFormat(16000, 1), on_stream=on_stream)
    worker = lk.websocket_worker({"TR_alice": 440.0, "TR_bob": 660.0}, seconds=2.0, mute_at=1.0)
    async with lk.LiveKitStandIn(worker=worker) as standin:
        standin.rooms["room-t"] = [
            lk.participant("alice", ("TR_alice", AUDIO), ("TR_cam", VIDEO)),
            lk.participant("bob", ("TR_bob", AUDIO)),
        ]
        async with App(receiver).run(standin) as app:  # no RTMP_HOST/RTMP_PORT: the fallback
            assert app.manager is not None
            session = await app.manager.start("room-t", slug="demo")
            assert (await app.manager.start("room-t", slug="demo")) is session
            await standin.wait_done(30)
            await until(lambda: len(audio) == 2 and session.ended, 10, "streams or egress did not end")
            assert receiver.live == {}  # both streams reaped when they ended
    assert [r.room for r in standin.requests("ListParticipants")] == ["room-t"]
    requests = standin.requests("StartTrackEgress")
    assert sorted(r.track_id for r in requests) == ["TR_alice", "TR_bob"]  # audio only, once each
    for r in requests:
        assert r.room_name == "room-t"
        assert r.websocket_url.startswith(app.url.replace("http://", "ws://") + "/livekit/track?")
        token = r.websocket_url.rsplit("token=", 1)[1]
        assert token not in caplog.text  # the per-egress token never reaches the logs
    assert session.mode == "track" and set(session.status.values()) == {"EGRESS_COMPLETE"}
    by_track = {s.info.publisher["track_id"]: s for s in streams}
    for track, who, freq in (("TR_alice", "alice", 440.0), ("TR_bob", "bob", 660.0)):
        s = by_track[track]
        assert s.info.codecs == {"audio": "pcm_s16le"}
        assert s.info.publisher["participant"] == who and s.info.name == stream_name(f"demo-{who}-{track}")
        pcm = audio[s.info.name]
        assert len(pcm) / 2 / 16000 == pytest.approx(2.0, abs=0.005)  # PCM in, no codec delay
        assert dominant_frequency(pcm, 16000, 1) == pytest.approx(freq, abs=1.0)
        assert [e.muted for e in events[s.info.name] if isinstance(e, MuteEvent)] == [True, False]
        assert events[s.info.name][0].timestamp == 1000
        # LiveKit keeps sending while muted: silence, not a hole (1.0-1.2 s), the tone either side
        windows = np.frombuffer(pcm, "<i2")[:32000].reshape(20, 1600)  # 100 ms each at 16 kHz
        assert [i for i, w in enumerate(np.abs(windows).mean(axis=1)) if w < 100] == [10, 11]


async def test_track_websocket_refuses_bad_tokens_and_writes_files(tmp_path: Path) -> None:
    receiver = Receiver(SECRET, consume=frozenset(), out_dir=str(tmp_path))  # files only, like `serve --out`
    async with lk.LiveKitStandIn() as standin, App(receiver).run(standin) as app:
        good = app.endpoint.url_for(app.url, name="n1", room="r", participant="p", track="TR_1")
        expired = app.endpoint.url_for(app.url, name="n1", room="r", participant="p", track="TR_1", ttl=-1)
        tampered = good.replace("track=TR_1", "track=TR_2")
        other = TrackAudioEndpoint("another-secret", receiver).url_for(
            app.url, name="n1", room="r", participant="p", track="TR_1"
        )
        async with aiohttp.ClientSession() as http:
            for url in (expired, tampered, other, good.split("&token=")[0]):
                with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                    await http.ws_connect(url)
                assert caught.value.status == 401
            async with http.ws_connect(good) as ws:
                for offset in range(0, 48000 * 4, 3840):  # 1 s of 48 kHz stereo, in 20 ms messages
                    await ws.send_bytes(lk.sine_s16(523.25, 1.0)[offset : offset + 3840])
                await until(
                    lambda: bool(receiver.live) and receiver.status()["streams"][0]["bytes"] == 192000, 5
                )
                (status,) = receiver.status()["streams"]
                assert status["name"] == "n1" and status["codecs"] == {"audio": "pcm_s16le"}
                assert status["publisher"]["participant"] == "p" and status["link"] == "down"
            await until(lambda: receiver.live == {}, 5)
        assert receiver.metrics.streams._value.get() == 1  # type: ignore[attr-defined]
    with wave.open(str(tmp_path / "n1.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16000, 1, 16000)
        assert dominant_frequency(w.readframes(16000), 16000, 1) == pytest.approx(523.25, abs=1.0)
    summary = json.loads((tmp_path / "n1.json").read_text())
    assert summary["end_reason"] == "track egress websocket closed" and summary["audio_samples"] == 16000


async def test_track_token_fields_are_length_prefixed_and_one_connection_per_token() -> None:
    """Issue 13 item 5: no two field sets share a token; a second live socket with one is refused."""
    receiver = Receiver(SECRET)
    async with lk.LiveKitStandIn() as standin, App(receiver).run(standin) as app:
        a = app.endpoint.url_for(app.url, name="n2", room="r\np", participant="x", track="TR_1")
        b = app.endpoint.url_for(app.url, name="n2", room="r", participant="p\nx", track="TR_1")
        token_a, token_b = a.rsplit("token=", 1)[1], b.rsplit("token=", 1)[1]
        assert token_a != token_b  # "\n".join() of the fields made these equal
        forged = b.rsplit("token=", 1)[0] + "token=" + token_a
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await http.ws_connect(forged)
            assert caught.value.status == 401
            async with http.ws_connect(a) as ws:
                await ws.send_bytes(lk.sine_s16(440, 0.02))
                await until(lambda: bool(receiver.live), 5)
                with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                    await http.ws_connect(a)  # the same token while the first socket lives
                assert caught.value.status == 409
                assert not ws.closed
            await until(lambda: receiver.live == {}, 5)


async def test_a_failed_track_egress_is_restarted_and_the_gap_reported() -> None:
    """Issue 12 item 5: LiveKit never reconnects; the manager starts a new egress, one stream goes on."""
    streams: list[Any] = []
    audio: list[bytes] = []
    events: list[Any] = []

    async def on_stream(stream: Any) -> None:
        streams.append(stream)

        async def take_events() -> None:
            events.extend([e async for e in stream.events()])

        task = asyncio.ensure_future(take_events())
        audio.extend([c.data async for c in stream.audio()])
        await task

    receiver = Receiver(SECRET, audio_format=AudioFormat(16000, 1), on_stream=on_stream)
    worker = lk.websocket_worker({"TR_f": 440.0}, seconds=1.0, fail_at=0.5)
    async with lk.LiveKitStandIn(worker=worker) as standin:
        standin.rooms["room-f"] = [lk.participant("fay", ("TR_f", AUDIO))]
        async with App(receiver).run(standin) as app:
            assert app.manager is not None
            app.manager.restart_backoff = 0.05
            session = await app.manager.start("room-f", slug="f")
            await until(lambda: len(standin.egresses) == 2, 10, "no new egress after the failure")
            await until(lambda: all(e.task and e.task.done() for e in standin.egresses.values()), 30)
            await until(lambda: receiver.live == {}, 10, "stream did not end")
    first, second = standin.egresses.values()
    assert first.info.status == pe.EgressStatus.EGRESS_FAILED and "write failed" in first.info.error
    assert second.info.status == pe.EgressStatus.EGRESS_COMPLETE
    assert [r.track_id for r in standin.requests("StartTrackEgress")] == ["TR_f", "TR_f"]
    assert session.tracks == {second.info.egress_id: ("fay", "TR_f")}
    (stream,) = streams  # one stream across both egresses
    gaps = [e for e in events if isinstance(e, GapEvent)]
    assert len(gaps) == 1 and gaps[0].ms > 0 and stream.stats.gaps == 1
    pcm = b"".join(audio)
    assert len(pcm) / 2 / 16000 == pytest.approx(
        0.5 + 1.0, abs=0.03
    )  # the first half, then all of the second
    assert dominant_frequency(pcm, 16000, 1) == pytest.approx(440, abs=1.0)


async def test_without_a_restart_a_closed_socket_ends_the_stream_at_once() -> None:
    """No reconnect grace: LiveKit never reconnects, so waiting for one only delays the end."""
    receiver = Receiver(SECRET)
    async with lk.LiveKitStandIn() as standin, App(receiver).run(standin) as app:
        url = app.endpoint.url_for(app.url, name="once", room="r", participant="p", track="TR_1")
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_bytes(lk.sine_s16(440, 0.02))
            await until(lambda: bool(receiver.live), 5)
            (stream,) = receiver.live.values()
        await until(lambda: stream.ended, 5)
    assert stream.end_reason == "track egress websocket closed" and stream.stats.gaps == 0


async def test_after_an_app_restart_egress_ended_restarts_our_track() -> None:
    """The webhook of a failed egress whose websocket path is ours is enough to start a new one."""
    receiver = Receiver(SECRET)
    async with lk.LiveKitStandIn() as standin, App(receiver).run(standin) as app:
        standin.rooms["room-z"] = [lk.participant("zoe", ("TR_z", AUDIO))]
        assert app.manager is not None and app.webhook is not None
        app.manager.restart_backoff = 0.05
        ours = lk.redact_url_query_values(
            app.endpoint.url_for(app.url, name="z", room="room-z", participant="zoe", track="TR_z")
        )
        for egress_id, url in (("EG_theirs", "wss://other.example/track?token=x"), ("EG_old", ours)):
            info = pe.EgressInfo(
                egress_id=egress_id, room_name="room-z", status=pe.EgressStatus.EGRESS_FAILED,
                error="websocket: write failed",
                track=pe.TrackEgressRequest(room_name="room-z", track_id="TR_z", websocket_url=url),
            )  # fmt: skip
            await app.webhook.dispatch(WebhookEvent(event="egress_ended", egress_info=info, id=egress_id))
        await until(lambda: bool(standin.requests("StartTrackEgress")), 5, "no new egress")
        (req,) = standin.requests("StartTrackEgress")
        assert req.track_id == "TR_z" and req.websocket_url.startswith(app.endpoint.base_url(app.url) + "?")
        assert "participant=zoe" in req.websocket_url


async def test_track_fallback_adopts_running_egress_from_another_process() -> None:
    receiver = Receiver(SECRET)
    async with lk.LiveKitStandIn() as standin, App(receiver).run(standin) as app:
        standin.rooms["room-a"] = [lk.participant("dave", ("TR_d", AUDIO))]
        assert app.manager is not None
        first = await app.manager.start("room-a")
        async with EgressManager(app.manager.config, track_endpoint=app.endpoint) as other:
            second = await other.start("room-a")
        assert second.adopted and second.egress_ids == first.egress_ids
        assert len(standin.requests("StartTrackEgress")) == 1
        assert second.tracks == {first.egress_id: ("dave", "TR_d")}


async def test_track_published_webhook_starts_the_late_track() -> None:
    receiver = Receiver(SECRET)
    async with lk.LiveKitStandIn() as standin, App(receiver).run(standin) as app:
        standin.rooms["room-l"] = [lk.participant("erin")]  # in the room, not talking yet
        assert app.manager is not None and app.webhook is not None
        session = await app.manager.start("room-l", slug="late")
        assert session.egress_ids == [] and standin.requests("StartTrackEgress") == []
        standin.rooms["room-l"] = [lk.participant("erin", ("TR_e", AUDIO))]
        body = json_format.MessageToJson(
            WebhookEvent(
                event="track_published",
                room=pm.Room(name="room-l"),
                participant=lk.participant("erin"),
                track=pm.TrackInfo(sid="TR_e", type=AUDIO),
            )
        )
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": lk.sign_webhook(body)}
            async with http.post(f"{app.url}/livekit/webhook", data=body, headers=headers) as resp:
                assert resp.status == 200
        (req,) = standin.requests("StartTrackEgress")
        assert req.track_id == "TR_e" and session.tracks == {session.egress_id: ("erin", "TR_e")}


# --- webhooks ------------------------------------------------------------------------------------


async def test_webhooks_signed_accepted_others_refused() -> None:
    async with lk.LiveKitStandIn(rooms=("room-w",)) as standin:
        cfg = config(standin, rtmp_host="edge", rtmp_port=1935)
        async with EgressManager(cfg) as manager:
            session = await manager.start("room-w")
            handler = WebhookHandler(lk.API_KEY, lk.API_SECRET, manager=manager)
            app = web.Application()
            app.router.add_post("/hook", handler.handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]

            def event(status: int, name: str = "egress_updated") -> str:
                info = pe.EgressInfo(egress_id=session.egress_id, room_name="room-w", status=status)
                return json_format.MessageToJson(WebhookEvent(event=name, egress_info=info, id=f"EV_{name}"))

            active = event(pe.EgressStatus.EGRESS_ACTIVE)
            ended = event(pe.EgressStatus.EGRESS_COMPLETE, "egress_ended")
            cases = [
                (
                    active,
                    lk.sign_webhook(active, api_secret="wrong-secret-but-just-as-long-0123456789"),
                    401,
                ),  # wrong key
                (active, lk.sign_webhook(active, ttl=-600), 401),  # expired (past the 60 s leeway)
                (ended, lk.sign_webhook(active), 401),  # tampered: body differs from the signed one
                (active, "", 401),  # unsigned
                (active, lk.sign_webhook(active, api_key="APIother"), 401),  # another key's issuer
                (active, lk.sign_webhook(active), 200),
            ]
            async with aiohttp.ClientSession() as http:
                for body, auth, expected in cases:
                    headers = {"Authorization": auth} if auth else {}
                    async with http.post(url, data=body, headers=headers) as resp:
                        assert resp.status == expected, body
                assert session.status[session.egress_id] == "EGRESS_ACTIVE"
                assert not session.ended
                async with http.post(url, data=ended, headers={"Authorization": lk.sign_webhook(ended)}) as r:
                    assert r.status == 200
            await runner.cleanup()
        assert session.ended and handler.accepted == 2 and handler.refused == 5


async def test_webhooks_replayed_backwards_or_twice_change_nothing() -> None:
    """LiveKit delivers webhooks at least once and out of order (issue 12 item 8)."""
    seen: list[str] = []

    async def on_event(event: WebhookEvent) -> None:
        seen.append(event.id)

    async with (
        lk.LiveKitStandIn(rooms=("room-o",)) as standin,
        EgressManager(config(standin, rtmp_host="edge", rtmp_port=1935)) as manager,
    ):
        session = await manager.start("room-o")
        handler = WebhookHandler(lk.API_KEY, lk.API_SECRET, manager=manager, on_event=on_event)

        def event(event_id: str, name: str, status: int) -> WebhookEvent:
            info = pe.EgressInfo(egress_id=session.egress_id, room_name="room-o", status=status)
            return WebhookEvent(event=name, egress_info=info, id=event_id)

        ended = event("EV_2", "egress_ended", pe.EgressStatus.EGRESS_COMPLETE)
        for e, status in (
            (event("EV_1", "egress_updated", pe.EgressStatus.EGRESS_ACTIVE), "EGRESS_ACTIVE"),
            (ended, "EGRESS_COMPLETE"),
            (event("EV_0", "egress_started", pe.EgressStatus.EGRESS_STARTING), "EGRESS_COMPLETE"),
            (event("EV_3", "egress_updated", pe.EgressStatus.EGRESS_ACTIVE), "EGRESS_COMPLETE"),
            (ended, "EGRESS_COMPLETE"),  # the same event again
        ):
            await handler.dispatch(e)
            assert session.status == {session.egress_id: status}, e.id
        assert session.ended
    assert seen == ["EV_1", "EV_2", "EV_0", "EV_3"]  # EV_2 once; stale ones reach the app's hook


async def test_webhook_token_without_exp_is_refused() -> None:
    """livekit-api >= 1.2.1 requires ``exp`` (python-sdks #779); a signed token without it is refused."""
    body = json_format.MessageToJson(WebhookEvent(event="room_started", id="EV_x"))
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    forever = jwt.encode({"iss": lk.API_KEY, "sha256": digest}, lk.API_SECRET, algorithm="HS256")
    handler = WebhookHandler(lk.API_KEY, lk.API_SECRET)
    with pytest.raises(jwt.MissingRequiredClaimError):
        handler.verify(body, forever)
    assert handler.verify(body, lk.sign_webhook(body)).id == "EV_x"


# --- CLI -----------------------------------------------------------------------------------------


async def test_cli_start_and_stop_egress() -> None:
    async with lk.LiveKitStandIn(rooms=("room-c",)) as standin:
        env = {"LIVEKIT_URL": standin.url, "LIVEKIT_API_KEY": lk.API_KEY, "LIVEKIT_API_SECRET": lk.API_SECRET,
               "RELAY_SECRET": SECRET, "RTMP_HOST": "edge.example.net", "RTMP_PORT": "1935",
               "PATH": "/usr/bin:/bin"}  # fmt: skip

        async def cli(*args: str) -> str:
            proc = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "relay-client"), "livekit", *args, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            assert SECRET not in (out + err).decode() and lk.API_SECRET not in (out + err).decode()
            return out.decode()

        started = await cli("start-egress", "room-c", "--slug", "cli-slug")
        egress_id = standin.requests("StartRoomCompositeEgress")[0]
        lines = dict(line.split(" ", 1) for line in started.splitlines())
        assert lines["stream"] == "cli-slug" and lines["egress_id"].startswith("EG_standin")
        url = egress_id.stream_outputs[0].urls[0]
        assert verify_key(SECRET, url.rsplit("/", 1)[1], time.time()) == "cli-slug"
        stopped = await cli("stop-egress", lines["egress_id"])
        assert f"egress_id {lines['egress_id']}" in stopped and "status EGRESS_COMPLETE" in stopped
        # A room nobody joined: one clear line, exit 1, no traceback.
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "relay-client"), "livekit", "start-egress", "empty-room",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1 and "room empty-room does not exist yet" in err.decode()
        assert "Traceback" not in err.decode()
