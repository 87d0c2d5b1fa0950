"""examples/livekit_transcriber: POST a room, its audio lands in WAV segments (Track Egress fallback).

The app is built exactly as on Render (env only), served on a real port, and driven by the LiveKit
stand-in: ListParticipants, StartTrackEgress, the egress's WebSocket PCM, signed webhooks.
"""

from __future__ import annotations

import logging
import socket
import wave
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from livekit.protocol import models as pm

from examples.livekit_transcriber.app import MANAGER, RECEIVER, build_app
from examples.livekit_transcriber.transcriber import WavSegmentTranscriber
from relay_client.tone import dominant_frequency
from relay_edge.edge import Edge, EdgeConfig
from relay_edge.web import derived_status_token
from tests.support import livekit_standin as lk
from tests.support.relay import SECRET, until

AUTH = {"Authorization": f"Bearer {derived_status_token(SECRET)}"}  # TRANSCRIBE_TOKEN's default


async def test_transcribe_a_room_into_wav_segments(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with lk.LiveKitStandIn(worker=lk.websocket_worker({"TR_mic": 440.0}, seconds=2.5)) as standin:
        standin.rooms["standup"] = [lk.participant("carol", ("TR_mic", pm.TrackType.AUDIO))]
        standin.webhook_url = f"{base}/livekit/webhook"
        env = {"RELAY_SECRET": SECRET, "LIVEKIT_URL": standin.url, "LIVEKIT_API_KEY": lk.API_KEY,
               "LIVEKIT_API_SECRET": lk.API_SECRET, "APP_PUBLIC_URL": base}  # fmt: skip
        app = build_app(env, transcriber=WavSegmentTranscriber(tmp_path, segment_seconds=1.0))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            async with aiohttp.ClientSession(headers=AUTH) as http:
                async with http.post(f"{base}/rooms/standup/transcribe", json={"slug": "standup-1"}) as r:
                    assert r.status == 200
                    first = await r.json()
                async with http.post(f"{base}/rooms/standup/transcribe", json={}) as r:
                    assert (await r.json())["egress_ids"] == first["egress_ids"]  # no second egress
                await standin.wait_done(30)
                session = app[MANAGER].sessions["standup"]
                await until(lambda: session.ended and "ended" in caplog.text, 10, "stream did not end")
                async with http.get(f"{base}/rooms/standup") as r:
                    state = await r.json()
                async with http.get(f"{base}/healthz") as r:
                    assert r.status == 200
        finally:
            await runner.cleanup()
    assert first["mode"] == "track" and len(first["egress_ids"]) == 1
    assert state["status"] == {first["egress_ids"][0]: "EGRESS_COMPLETE"}
    assert len(standin.requests("StartTrackEgress")) == 1
    segments = sorted(tmp_path.glob("standup-1-carol-TR_mic-*.wav"))
    assert [p.name[-8:] for p in segments] == ["0001.wav", "0002.wav", "0003.wav"]
    pcm = b""
    for path in segments:
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            pcm += w.readframes(w.getnframes())
    assert len(pcm) / 2 / 16000 == pytest.approx(2.5, abs=0.005)  # 1 s + 1 s + 0.5 s
    assert dominant_frequency(pcm, 16000, 1) == pytest.approx(440, abs=1.0)
    assert "audio level -9.0 dBFS" in caplog.text  # a 0.5 full-scale sine: -9.03 dBFS RMS


@pytest.mark.slow
async def test_with_an_edge_the_room_composite_reaches_the_transcriber(tmp_path: Path) -> None:
    """RTMP_HOST/RTMP_PORT set: Room Composite → GStreamer egress → real edge → the app's /relay."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    edge = Edge(EdgeConfig(secret=SECRET, rtmp_listen=("127.0.0.1", 0), http_listen=("127.0.0.1", 0),
                           upstreams=(f"ws://{base[7:]}/relay",), name="test-edge"))  # fmt: skip
    worker = lk.rtmp_worker(lk.Part(2.0, 440))
    hook = f"{base}/livekit/webhook"
    async with lk.LiveKitStandIn(worker=worker, webhook_url=hook, rooms=("weekly",)) as standin:
        await edge.start()
        env = {"RELAY_SECRET": SECRET, "LIVEKIT_URL": standin.url, "LIVEKIT_API_KEY": lk.API_KEY,
               "LIVEKIT_API_SECRET": lk.API_SECRET, "RTMP_HOST": "127.0.0.1",
               "RTMP_PORT": str(edge.rtmp_port)}  # fmt: skip
        transcriber = WavSegmentTranscriber(tmp_path, segment_seconds=30.0)
        app = build_app(env, transcriber=transcriber)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            await until(lambda: bool(edge.links), 10, "the edge did not link to the app")
            async with (
                aiohttp.ClientSession(headers=AUTH) as http,
                http.post(f"{base}/rooms/weekly/transcribe", json={"slug": "weekly-3"}) as r,
            ):
                assert r.status == 200
                started = await r.json()
            await standin.wait_done(40)
            session = app[MANAGER].sessions["weekly"]
            await until(lambda: session.ended and (tmp_path / "weekly-3-0001.wav").exists(), 10)
            await until(lambda: not app[RECEIVER].live, 20, "the stream did not end")
        finally:
            await edge.stop()
            await runner.cleanup()
    assert started["mode"] == "room_composite" and started["stream_name"] == "weekly-3"
    with wave.open(str(tmp_path / "weekly-3-0001.wav")) as w:
        pcm = w.readframes(w.getnframes())
    assert abs(len(pcm) / 2 / 16000 - 2.0) <= 0.15
    assert dominant_frequency(pcm, 16000, 1) == pytest.approx(440, abs=1.0)


async def test_the_room_routes_need_a_token_json_and_room_to_spare(tmp_path: Path) -> None:
    """Anyone could record any room or stop a transcription: not without the token, a JSON body and a cap."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with lk.LiveKitStandIn(worker=lk.websocket_worker({"TR_a": 440.0}, seconds=30)) as standin:
        for room in ("one", "two"):
            standin.rooms[room] = [lk.participant("carol", ("TR_a", pm.TrackType.AUDIO))]
        env = {"RELAY_SECRET": SECRET, "LIVEKIT_URL": standin.url, "LIVEKIT_API_KEY": lk.API_KEY,
               "LIVEKIT_API_SECRET": lk.API_SECRET, "APP_PUBLIC_URL": base,
               "TRANSCRIBE_TOKEN": "room-operator-token-0123456789", "TRANSCRIBE_MAX_ROOMS": "1"}  # fmt: skip
        app = build_app(env, transcriber=WavSegmentTranscriber(tmp_path))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        good = {"Authorization": "Bearer room-operator-token-0123456789"}
        url = f"{base}/rooms/one/transcribe"
        try:
            async with aiohttp.ClientSession() as http:
                for headers in ({}, AUTH, {"Authorization": "Bearer nope"}):  # AUTH: overridden by the env
                    for method in ("POST", "DELETE"):
                        async with http.request(method, url, json={}, headers=headers) as r:
                            assert r.status == 401, (method, headers)
                    async with http.get(f"{base}/rooms/one", headers=headers) as r:
                        assert r.status == 401
                async with http.post(url, data="slug=x", headers=good) as r:  # what an HTML form sends
                    assert r.status == 415
                async with http.post(
                    url, data="[1]", headers={**good, "Content-Type": "application/json"}
                ) as r:
                    assert r.status == 400
                async with http.post(f"{base}/rooms/a%20b/transcribe", json={}, headers=good) as r:
                    assert r.status == 400
                assert not standin.requests("StartTrackEgress")  # nothing above reached LiveKit
                async with http.post(url, json={}, headers=good) as r:
                    assert r.status == 200
                async with http.post(f"{base}/rooms/two/transcribe", json={}, headers=good) as r:
                    assert r.status == 429 and "TRANSCRIBE_MAX_ROOMS" in (await r.json())["error"]
                async with http.delete(url, json={}, headers=good) as r:
                    assert r.status == 200
                async with http.get(f"{base}/healthz") as r:
                    assert r.status == 200
                async with http.get(f"{base}/metrics", headers=good) as r:
                    assert r.status == 200
        finally:
            await runner.cleanup()
    assert len(standin.requests("StartTrackEgress")) == 1
