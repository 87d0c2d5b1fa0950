"""Operating the pair: /metrics counters, /api/rtmp/status fields, logs, and SIGTERM.

The counters are checked against what the test itself sent (a file's tags, a bad
key), the status documents against the fields docs/DEPLOY.md and DESIGN.md list,
and the CLIs are stopped the way Render and Fly stop them.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay_edge import flv
from tests.support import media, publishers
from tests.support.relay import SECRET, Relay, until
from tests.test_deploy import fly_config, render_service, start_pair, wait_http

pytestmark = pytest.mark.slow

EDGE_STREAM_FIELDS = {
    "name",
    "codecs",
    "bytes",
    "bitrate",
    "publisher",
    "link",
    "buffered_bytes",
    "acked_seq",
}
APP_STREAM_FIELDS = {
    "name",
    "codecs",
    "bytes",
    "publisher",
    "link",
    "acked_seq",
    "audio_samples",
    "audio_level_dbfs",
    "bitrate",
}


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed with prometheus_client's own parser: (sample name, labels) → value."""
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200
        return await r.json()


def flv_tags(path: Path) -> list[tuple[int, bytes]]:
    """(type, payload) of every tag in an FLV file."""
    data = path.read_bytes()
    pos, tags = 13, []
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        tags.append((data[pos], data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return tags


async def test_metrics_count_what_was_sent(tmp_path: Path, tone_flv_file: Path) -> None:
    async with Relay(tmp_path) as relay:
        assert relay.edge is not None
        edge_metrics = f"http://127.0.0.1:{relay.edge.http_port}/metrics"
        app_metrics = f"http://127.0.0.1:{relay.app_port}/metrics"
        async with await publishers.ffmpeg_copy(relay.url("counted"), tone_flv_file, realtime=False) as pub:
            await pub.wait_ok(30)
        stats = await relay.ended("counted")
        # A key signed with another secret: refused at publish, counted as an auth failure.
        bad = relay.url("intruder").replace("/live/", "/live/x")
        async with await publishers.ffmpeg_tone(bad, seconds=1) as pub:
            assert await pub.wait(15) != 0
        await until(lambda: relay.edge is not None and relay.edge.metrics.auth_failures._metrics, 5)
        edge = await scrape(edge_metrics)
        app = await scrape(app_metrics)

    received = flv_tags(tmp_path / "counted.flv")  # what the app wrote: every media tag, in order
    sent = media.audio_payloads(tone_flv_file)
    assert [p for t, p in received if t == flv.AUDIO] == sent
    tags, payload = len(received), sum(len(p) for _, p in received)
    # Edge: what publishers sent it (tag payloads). App: what it got (tags with their 11-byte headers).
    assert edge[("relay_edge_streams_total", ())] == 1
    assert edge[("relay_edge_tags_total", ())] == tags == stats["tags"]
    assert edge[("relay_edge_bytes_total", ())] == payload
    assert app[("relay_client_streams_total", ())] == 1
    assert app[("relay_client_tags_total", ())] == tags
    assert app[("relay_client_bytes_total", ())] == payload + 11 * tags == stats["bytes"]
    assert edge[("relay_edge_auth_failures_total", (("kind", "stream_key"),))] == 1
    assert edge[("relay_edge_link_connects_total", ())] == 1 == app[("relay_client_link_connects_total", ())]
    for side, prefix in ((edge, "relay_edge"), (app, "relay_client")):
        assert side[(f"{prefix}_gaps_total", ())] == 0
        assert side[(f"{prefix}_resumes_total", ())] == 0
        assert side[(f"{prefix}_live_streams", ())] == 0
    assert edge[("relay_edge_publisher_reconnects_total", ())] == 0
    assert edge[("relay_edge_links", ())] == 1
    print(f"\nmetrics: {tags} tags, {payload} payload bytes, 1 stream, 1 auth failure")


async def test_status_documents_have_the_documented_fields(tmp_path: Path) -> None:
    async with Relay(tmp_path) as relay:
        assert relay.edge is not None
        url = relay.url("live-status")
        key = url.rsplit("/", 1)[1]
        async with await publishers.ffmpeg_tone(url, seconds=4, frequency=440) as pub:
            await until(lambda: "live-status" in relay.streams, 10)
            await until(lambda: relay.streams["live-status"].stats.audio_samples > 16000, 10)
            # The edge's bitrate is the byte rate between status reads (the dashboard polls every second).
            edge_url = f"http://127.0.0.1:{relay.edge.http_port}/api/rtmp/status"
            await get_json(edge_url)
            await asyncio.sleep(1.0)
            edge_doc = await get_json(edge_url)
            app_doc = await get_json(f"http://127.0.0.1:{relay.app_port}/api/rtmp/status")
            await pub.wait_ok(30)
    (es,) = edge_doc["streams"]
    (as_,) = app_doc["streams"]
    assert es.keys() >= EDGE_STREAM_FIELDS, EDGE_STREAM_FIELDS - es.keys()
    assert as_.keys() >= APP_STREAM_FIELDS, APP_STREAM_FIELDS - as_.keys()
    assert es["name"] == as_["name"] == "live-status"
    assert es["codecs"]["audio"] == as_["codecs"]["audio"] == "aac"
    assert 100_000 < as_["bitrate"] < 200_000, json.dumps(as_)  # the app's first read: since the start
    assert es["bitrate"] > 50_000, json.dumps(es)  # a 128 kbit/s AAC stream, measured over the last seconds
    assert es["link"] and as_["link"] == "up"
    assert es["publisher"]["addr"].startswith("127.0.0.1:")
    assert es["acked_seq"] > 0 and as_["acked_seq"] > 0
    # ffmpeg's lavfi sine has amplitude 1/8: about -21 dBFS in RMS (-24 after the stereo-to-mono mix).
    assert -30 < as_["audio_level_dbfs"] < -15
    for doc in (edge_doc, app_doc):
        text = json.dumps(doc)
        assert key not in text and relay.secret not in text  # no key, no secret in status


async def test_edge_buffer_drains_after_stream_end(tmp_path: Path, tone_flv_file: Path) -> None:
    async with Relay(tmp_path) as relay:
        assert relay.edge is not None
        async with await publishers.ffmpeg_copy(relay.url("drained"), tone_flv_file, realtime=False) as pub:
            await pub.wait_ok(30)
        await relay.ended("drained")
        edge = relay.edge
        await until(lambda: not edge.status()["streams"], 1.5, f"edge still holds {edge.status()['streams']}")
        metrics = await scrape(f"http://127.0.0.1:{edge.http_port}/metrics")
    assert metrics[("relay_edge_buffered_bytes", ())] == 0


def test_sigterm_stops_both_clis_cleanly(tmp_path: Path) -> None:
    """SIGTERM as Render and Fly send it: both exit 0 within the deploy files' own deadlines."""
    app, edge, info = start_pair(tmp_path, None)
    try:
        wait_http(f"http://127.0.0.1:{info['app_port']}/healthz", 20, app)
        deadline = time.monotonic() + 10
        while not wait_http(f"http://127.0.0.1:{info['http_port']}/api/rtmp/status", 5, edge)["links"]:  # type: ignore[index]
            assert time.monotonic() < deadline, edge.output()
            time.sleep(0.1)
        page = wait_http(f"http://127.0.0.1:{info['http_port']}/", 5, edge)
        assert isinstance(page, str) and "api/rtmp/status" in page
        edge_code, edge_took = edge.terminate(fly_config()["kill_timeout"])
        app_code, app_took = app.terminate(render_service()["maxShutdownDelaySeconds"])
        assert edge_code == 0, edge.output()
        assert app_code == 0, app.output()
        print(f"\nSIGTERM: edge exited 0 in {edge_took:.2f} s, app in {app_took:.2f} s")
        assert f"RTMP server started on port {info['rtmp_port']}" in edge.output()
    finally:
        app.stop()
        edge.stop()


def test_json_logs(tmp_path: Path) -> None:
    from tests.test_deploy import BIN, Service

    port = __import__("tests.support.net", fromlist=["free_port"]).free_port()
    edge = Service(
        "relay-edge serve",
        [str(BIN / "relay-edge"), "serve", "--rtmp", f"127.0.0.1:{port}", "--http", "127.0.0.1:0"],
        {"RELAY_SECRET": SECRET, "RELAY_LOG_FORMAT": "json"},
        tmp_path / "edge.log",
    )
    try:
        deadline = time.monotonic() + 15
        while "RTMP server started" not in edge.output():
            assert time.monotonic() < deadline and edge.proc.poll() is None, edge.output()
            time.sleep(0.05)
        code, _ = edge.terminate(30)
        assert code == 0
        lines = [json.loads(line) for line in edge.output().splitlines() if line.strip()]
        started = [d for d in lines if d["message"] == f"RTMP server started on port {port}"]
        assert started and started[0]["level"] == "info" and started[0]["logger"] == "relay_edge"
        assert SECRET not in edge.output()
    finally:
        edge.stop()
