"""``--republish``: every stream published to the app's own RTMP server, surviving what the link goes through.

Real peers throughout: ffmpeg publishes to the edge; the app re-publishes to nginx-rtmp or
node-media-server; an ffmpeg reader pulls from that server as the runbook's ``rtmp-ingest.ts`` does
(``ffmpeg -i rtmp://localhost:1935/live/NAME -f s16le ...``). The reader resamples with
``aresample=async=1``, so a hole in the timestamps would come out as silence and a wrong length.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay_client.republish import LocalPublish, RepublishError, Target, Timeline
from relay_client.tone import dominant_frequency, silent_gaps
from relay_edge import flv, keys
from tests.support import media, publishers
from tests.support.net import LOOPBACK, free_port, port_is_open, wait_for_port_async
from tests.support.nginx import NginxRtmp
from tests.support.nms import SCRIPT, NodeMediaServer, require_nms
from tests.support.publishers import FFMPEG_BASE, Publisher
from tests.support.relay import until, with_limits
from tests.test_resume import VENV_BIN, Proc, ProxiedRelay, cli_pair, wait_link

READER_RATE = 16000


# --- sans-I/O: the URL and the timeline -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "app", "stream"),
    [
        ("rtmp://127.0.0.1:1935/live", "live", "room1"),
        ("rtmp://127.0.0.1:1935/live/", "live", "room1"),
        ("rtmp://127.0.0.1/live/{name}", "live", "room1"),
        ("rtmp://127.0.0.1/live/in_{name}", "live", "in_room1"),
        ("rtmp://127.0.0.1/{name}/main", "room1", "main"),
    ],
)
def test_target_places_the_name(url: str, app: str, stream: str) -> None:
    target = Target.parse(url)
    assert target.app_and_stream("room1") == (app, stream)
    assert target.url("room1") == f"rtmp://127.0.0.1:{target.port}/{app}/{stream}"


def test_target_sends_a_query_with_the_stream_name_but_never_shows_it() -> None:
    target = Target.parse("rtmp://127.0.0.1:1935/live?sign=1700000000-secretpart")
    assert target.app_and_stream("room1") == ("live", "room1?sign=1700000000-secretpart")
    assert target.url("room1") == "rtmp://127.0.0.1:1935/live/room1"


@pytest.mark.parametrize(
    ("url", "words"),
    [("rtmps://h/live", "rtmp://"), ("http://h/live", "rtmp://"), ("rtmp:///live", "no host"),
     ("rtmp://h", "application"), ("rtmp://h/", "application")],
)  # fmt: skip
def test_target_refuses_what_it_cannot_publish_to(url: str, words: str) -> None:
    with pytest.raises(RepublishError, match=words):
        Target.parse(url)


def test_cli_refuses_a_bad_republish_url_naming_the_option() -> None:
    from click.testing import CliRunner

    from relay_client.cli import main

    result = CliRunner().invoke(main, ["connect", "ws://127.0.0.1:1/link", "--republish", "http://h/live"],
                                env={"RELAY_SECRET": "s" * 32})  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--republish" in result.output and "rtmp://" in result.output


def test_timeline_passes_the_streams_clock_through_and_keeps_gaps() -> None:
    line = Timeline(1000)
    assert [line.map(ts, 0.0) for ts in (0, 0, 23, 46)] == [0, 0, 23, 46]
    assert line.map(5046, 0.1) == 5046  # a 5 s gap at the edge: the time stays in the timestamps
    assert line.map(5040, 0.1) == 5040  # video a few ms behind audio: untouched, as FLV allows
    assert line.map(5069, 0.1) == 5069
    assert line.rebases == 0


def test_timeline_rebases_a_clock_going_back_unannounced() -> None:
    line = Timeline(1000)
    line.map(60_000, 1.0)
    assert line.map(100, 1.25) == 60_250  # beyond the tolerance: a new clock, not reordering
    assert line.map(123, 1.3) == 60_273
    assert line.rebases == 1


# --- real servers -----------------------------------------------------------------------------


def nginx_publishes(server: NginxRtmp, name: str) -> int:
    """``publish`` commands for NAME nginx-rtmp received (its ``publish: name='NAME'`` info lines).

    It logs the command before deciding, so a refused one counts too.
    """
    return len(re.findall(rf"publish: name='{re.escape(name)}'", server.log_text()))


def publishes(server: Any, name: str) -> int:
    return server.publishes(name) if isinstance(server, NodeMediaServer) else nginx_publishes(server, name)


def local_server(kind: str, workdir: Path, **options: Any) -> Any:
    return NodeMediaServer(workdir / kind) if kind == "nms" else NginxRtmp(workdir / kind, **options)


def base_url(server: Any) -> str:
    return f"rtmp://{server.host}:{server.port}/live"


class Reader(Publisher):
    """ffmpeg reading NAME from the local server, as ``rtmp-ingest.ts`` does: 16 kHz mono s16 on stdout."""

    @classmethod
    async def pull(cls, url: str) -> Reader:
        publishers.require(publishers.FFMPEG)
        argv = [*FFMPEG_BASE, "-i", url, "-vn", "-af", "aresample=async=1:min_hard_comp=0.01", "-f", "s16le",
                "-ac", "1", "-ar", str(READER_RATE), "pipe:1"]  # fmt: skip
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        reader = cls("reader", argv, proc, started)
        reader.pcm = bytearray()
        return reader

    async def _read_output(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        errors = asyncio.ensure_future(self.proc.stderr.read())
        while chunk := await self.proc.stdout.read(65536):
            self.pcm += chunk
        self._out += await errors

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / READER_RATE

    def check_tone(self, frequency: float, joined: float, seconds: float) -> None:
        """The reader's audio: the tone with no silent hole, as long as the stream from ``joined`` s on.

        Up to the whole ``seconds``: node-media-server's GOP cache (on by default, as in most apps)
        holds an audio-only stream from its start and gives a late reader all of it.
        """
        pcm = bytes(self.pcm)
        assert seconds - joined - 0.5 < self.seconds < seconds + 0.5, (
            f"read {self.seconds:.2f} s of a {seconds:g} s stream joined at {joined:.2f} s"
        )
        assert abs(dominant_frequency(pcm, READER_RATE, 1) - frequency) < 2
        assert silent_gaps(pcm, READER_RATE, 1) == []


def republish_status(relay: ProxiedRelay, name: str) -> dict[str, Any]:
    for stream in relay.receiver.status()["streams"]:
        if stream["name"] == name and stream["republish"]:
            return stream["republish"]  # type: ignore[no-any-return]
    return {}


async def reader_once_published(relay: ProxiedRelay, server: Any, name: str) -> Reader:
    """Start the reader once the app publishes NAME locally (as the runbook's ingest starts after egress)."""
    await until(lambda: republish_status(relay, name).get("tags", 0) > 0, 15.0, f"{name} never republished")
    return await Reader.pull(server.url(name))


@pytest.mark.parametrize("kind", ["nginx", "nms"])
async def test_link_cuts_never_reach_the_local_server(kind: str, tmp_path: Path) -> None:
    """24 s stream, the edge-app link cut 5 times: one local publish, one reader session, no hole."""
    seconds, name = 24.0, "room"
    # The edge's dialer starts its backoff over only after a link that lived ping_interval: at the
    # default 5 s, links cut every 3.5 s never do, each relink takes twice as long as the one before
    # (up to 10 s), and the last cut's link comes back after the stream ended.
    limits = with_limits(ping_interval=0.5)
    async with (
        local_server(kind, tmp_path) as server,
        ProxiedRelay(
            tmp_path / "out", limits=limits, receiver_options={"republish": base_url(server)}
        ) as relay,
    ):
        async with await publishers.ffmpeg_tone(relay.url(name), seconds) as publisher:
            reader = await reader_once_published(relay, server, name)
            joined = time.monotonic() - publisher.started
            for cut in range(5):
                await until(lambda c=cut: time.monotonic() - publisher.started > 4 + 3.5 * c, 30.0)
                await relay.outage(0.2 + 0.2 * cut)
                assert reader.returncode is None, f"reader ended at cut {cut}:\n{reader.output}"
            await publisher.wait_ok(40)
        stats = await relay.ended(name, 30)
        await reader.wait_ok(20)  # the local publish ended with the stream: the reader sees EOF
        assert stats["resumes"] >= 5, stats
        assert stats["gaps"] == 0, stats
        assert publishes(server, name) == 1, server.log_text()[-3000:]
        local = relay.streams[name].republish
        assert local is not None and local.connects == 1 and local.failures == 0
        assert local.tags == stats["tags"]  # every tag the app received went to the local server
    # The reader joined ~1 s in (nginx gives it the AAC sequence header, then live audio).
    reader.check_tone(440, joined, seconds)


async def test_local_server_restart_costs_nothing_and_reconnects_once(tmp_path: Path) -> None:
    """nginx killed 3 s in, back 2 s later: the app retries, acks nothing meanwhile, publishes again once.

    nginx records with ``record_append``: both publishes end up in one file, which must hold every
    AAC frame of the source, in order (a re-sent batch may repeat a few at the reconnect).
    """
    name = "restart"
    source = media.tone_flv(tmp_path / "source.flv", seconds=10, frequency=440)
    want = [t.data for t in media.media_tags(media.read_tags(source))]
    assert len(set(want)) == len(want), "the source's frames must be distinguishable"
    port = free_port()
    server = NginxRtmp(tmp_path / "nginx", port=port, record=True, extra_app_config="record_append on;")
    server.start()
    try:
        async with ProxiedRelay(tmp_path / "out", receiver_options={"republish": base_url(server)}) as relay:
            async with await publishers.ffmpeg_copy(relay.url(name), source) as publisher:
                await until(lambda: republish_status(relay, name).get("tags", 0) > 0, 15.0)
                await until(lambda: time.monotonic() - publisher.started > 3, 10.0)
                server.proc.kill()  # type: ignore[union-attr]  # a crash: no unpublish, connections reset
                server.proc.wait()  # type: ignore[union-attr]
                await until(lambda: republish_status(relay, name).get("state") == "retrying", 10.0)
                acked = relay.receiver.live[relay.streams[name].info.uid].delivered
                written = republish_status(relay, name)["tags"]
                doc = relay.receiver.status()["streams"][0]
                assert doc["republish"]["error"], doc
                assert b"relay_client_republish_retrying 1.0" in relay.receiver.metrics.render()
                await until(lambda: time.monotonic() - publisher.started > 5, 10.0)
                # Nothing written meanwhile, so nothing acked: the edge holds it.
                assert relay.receiver.live[relay.streams[name].info.uid].delivered == acked
                assert republish_status(relay, name)["tags"] == written
                server = NginxRtmp(tmp_path / "nginx", port=port, record=True,
                                   extra_app_config="record_append on;").start()  # fmt: skip
                await wait_for_port_async(LOOPBACK, port)
                await until(lambda: republish_status(relay, name).get("state") == "publishing", 10.0)
                reader = await Reader.pull(server.url(name))
                joined = time.monotonic() - publisher.started
                await publisher.wait_ok(30)
            await relay.ended(name, 30)
            await reader.wait_ok(20)
            local = relay.streams[name].republish
            assert local is not None and local.connects == 2, local.status()
            assert nginx_publishes(server, name) == 2  # one log for both nginx runs: one clean reconnect
        recorded = await server.recorded_tags(name)
    finally:
        server.stop()
    got = [want.index(t.data) for t in recorded if t.type == flv.AUDIO and t.data in want]
    assert sorted(set(got)) == list(range(len(want))), "frames missing from the local server"
    repeats = [i for i, j in enumerate(got[1:]) if j <= got[i]]
    assert len(repeats) <= 1, f"out of order away from the reconnect at {repeats}"
    reader.check_tone(440, joined, 10)


async def test_two_streams_with_out_through_the_cli(tmp_path: Path) -> None:
    """``relay-client serve --republish ... --out DIR`` and ``relay-edge serve``, two streams at once."""
    out = tmp_path / "out"
    app_port, rtmp_port, http_port = free_port(), free_port(), free_port()
    async with NodeMediaServer(tmp_path / "nms") as server:
        client, edge = cli_pair(tmp_path, out, app_port, app_port, rtmp_port, http_port)
        client.argv += ["--republish", f"rtmp://{LOOPBACK}:{server.port}/live/in-{{name}}"]
        await client.start()
        await edge.start()
        try:
            await wait_for_port_async(LOOPBACK, rtmp_port, 20)
            streams = {"alpha": 440.0, "beta": 660.0}
            pubs = {}
            for name, freq in streams.items():
                key = keys.mint_key(edge.env["RELAY_SECRET"], name, ttl=600, now=time.time())
                pubs[name] = await publishers.ffmpeg_tone(
                    f"rtmp://{LOOPBACK}:{rtmp_port}/live/{key}", 8, freq
                )
            readers = {}
            for name in streams:
                await until_published(server, f"in-{name}")
                readers[name] = await Reader.pull(server.url(f"in-{name}"))
            joined = {name: time.monotonic() - pubs[name].started for name in streams}
            for pub in pubs.values():
                await pub.wait_ok(30)
            for name in streams:
                await until((out / f"{name}.json").exists, 30.0, f"{name} did not end")
                await readers[name].wait_ok(20)
        finally:
            await client.terminate()
            await edge.terminate()
        for name, freq in streams.items():
            assert server.publishes(f"in-{name}") == 1
            stats = json.loads((out / f"{name}.json").read_text())
            assert stats["tags"] > 300 and (out / f"{name}.flv").stat().st_size > 0
            readers[name].check_tone(freq, joined[name], 8)
        assert "republish alpha: publishing to rtmp://" in client.log


async def until_published(server: NodeMediaServer, name: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not server.publishes(name):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} never published to node-media-server:\n{server.log_text()[-2000:]}")
        await asyncio.sleep(0.05)


async def test_app_restart_is_one_clean_reconnect_with_sequence_headers_first(tmp_path: Path) -> None:
    """``relay-client serve --republish`` SIGKILLed 3 s in and started again: the edge replays from the
    last ack, the new process publishes again (metadata and AAC header first: a reader that joins
    then decodes), and nginx holds every frame of the source."""
    name = "apprestart"
    source = media.tone_flv(tmp_path / "source.flv", seconds=10, frequency=440)
    want = [t.data for t in media.media_tags(media.read_tags(source))]
    out = tmp_path / "out"
    app_port, rtmp_port, http_port = free_port(), free_port(), free_port()
    with NginxRtmp(tmp_path / "nginx", record=True, extra_app_config="record_append on;") as server:
        app, edge = cli_pair(tmp_path, out, app_port, app_port, rtmp_port, http_port)
        app.argv += ["--republish", base_url(server)]
        try:
            await app.start()
            await edge.start()
            await wait_for_port_async(LOOPBACK, rtmp_port, 20)
            key = keys.mint_key(edge.env["RELAY_SECRET"], name, ttl=600, now=time.time())
            async with await publishers.ffmpeg_copy(
                f"rtmp://{LOOPBACK}:{rtmp_port}/live/{key}", source
            ) as pub:
                await until(lambda: nginx_publishes(server, name) == 1, 20.0, "never republished")
                await until(lambda: time.monotonic() - pub.started > 3, 10.0)
                await app.kill()  # no unpublish, no last acks: the edge keeps what was not acked
                await app.start()
                await until(lambda: nginx_publishes(server, name) == 2, 20.0, "no second publish")
                reader = await Reader.pull(server.url(name))
                joined = time.monotonic() - pub.started
                await pub.wait_ok(30)
            await until((out / f"{name}.json").exists, 30.0, f"{name} did not end")
            await reader.wait_ok(20)
            assert await app.terminate() == 0
        finally:
            await app.kill()
            await edge.kill()
        recorded = await server.recorded_tags(name)
    assert nginx_publishes(server, name) == 2, server.log_text()[-3000:]
    got = [want.index(t.data) for t in recorded if t.type == flv.AUDIO and t.data in want]
    assert sorted(set(got)) == list(range(len(want))), "frames missing from the local server"
    reader.check_tone(440, joined, 10)


# --- examples/node_republish: what the Render start command runs --------------------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "node_republish"


def test_example_render_yaml_validates_and_runs_the_sidecar() -> None:
    from tests.test_deploy import schema, validate

    blueprint = yaml.safe_load((EXAMPLE / "render.yaml").read_text())
    validate(blueprint, schema("render-blueprint.schema.json"))
    (service,) = blueprint["services"]
    assert service["runtime"] == "node"
    assert "./relay-sidecar.sh " in service["startCommand"]
    assert {e["key"] for e in service["envVars"]} >= {"RELAY_EDGE_URL", "RELAY_SECRET", "RELAY_REPUBLISH"}


async def test_sidecar_with_node_media_server_and_a_node_minted_key(tmp_path: Path) -> None:
    """The example's start command for real: relay-sidecar.sh runs ``relay-client connect`` (pull) next
    to the "Node app" (node-media-server); a key minted by mint-key.js publishes through the edge and
    the reader gets the tone from node-media-server. SIGTERM stops both."""
    secret = "sidecar-secret-7d1e0b-at-least-32-characters"  # the CLIs refuse shorter ones
    rtmp_port, http_port, nms_port, nms_http = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "RELAY_SECRET": secret}
    edge = Proc("edge", [str(VENV_BIN / "relay-edge"), "serve", "--rtmp", f"{LOOPBACK}:{rtmp_port}",
                         "--http", f"{LOOPBACK}:{http_port}"], env, tmp_path)  # fmt: skip
    side_env = {
        **env,
        "RELAY_EDGE_URL": f"ws://{LOOPBACK}:{http_port}/link",
        "RELAY_REPUBLISH": f"rtmp://{LOOPBACK}:{nms_port}/live",
        "RELAY_CLIENT": str(VENV_BIN / "relay-client"),
    }
    nms_run = [str(SCRIPT), "run", str(nms_port), str(nms_http)]
    sidecar = Proc("sidecar", [str(EXAMPLE / "relay-sidecar.sh"), *nms_run], side_env, tmp_path)
    require_nms()
    try:
        await edge.start()
        await sidecar.start()
        await wait_for_port_async(LOOPBACK, nms_port, 20)
        await wait_link(http_port, 20)
        minted = subprocess.run(["node", str(EXAMPLE / "mint-key.js"), "session-slug-1", "600"],
                                env=env, capture_output=True, text=True, check=True)  # fmt: skip
        key = minted.stdout.strip()
        assert keys.verify_key(secret, key, time.time()) == "session-slug-1"
        async with await publishers.ffmpeg_tone(f"rtmp://{LOOPBACK}:{rtmp_port}/live/{key}", 6) as pub:
            deadline = time.monotonic() + 20
            while "streamPath=/live/session-slug-1" not in sidecar.log:
                assert time.monotonic() < deadline, sidecar.log[-3000:]
                await asyncio.sleep(0.05)
            reader = await Reader.pull(f"rtmp://{LOOPBACK}:{nms_port}/live/session-slug-1")
            await pub.wait_ok(30)
        await reader.wait_ok(20)
        assert await sidecar.terminate() in (0, 143)  # SIGTERM reached both and ended the script
        assert sidecar.proc is not None and sidecar.proc.returncode is not None
    finally:
        await sidecar.kill()
        await edge.kill()
    assert not port_is_open(LOOPBACK, nms_port), "the Node app outlived the sidecar script"
    assert "republish session-slug-1: publishing to rtmp://" in sidecar.log
    assert secret not in sidecar.log
    reader.check_tone(440, 0.0, 6)


def audio_stamps(tags: list[flv.Tag]) -> list[int]:
    return [t.timestamp for t in tags if t.type == flv.AUDIO]


async def test_publisher_takeover_and_an_edge_gap_continue_the_same_local_publish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A second publisher takes the key over, then a 4 s outage overflows a 1.5 s edge buffer (a gap):
    nginx sees one publish throughout, its timestamps never go back, and the gap's time is in them."""
    name = "takeover"
    first = media.tone_flv(tmp_path / "a.flv", seconds=4, frequency=440)
    second = media.tone_flv(tmp_path / "b.flv", seconds=12, frequency=440)
    server = NginxRtmp(tmp_path / "nginx", record=True)
    limits = with_limits(buffer_seconds=1.5)
    with server, caplog.at_level(logging.INFO, "relay_client.republish"):
        options = {"republish": base_url(server)}
        async with ProxiedRelay(tmp_path / "out", limits=limits, receiver_options=options) as relay:
            url = relay.url(name)
            async with await publishers.ffmpeg_copy(url, first) as a:
                reader = await reader_once_published(relay, server, name)
                await until(lambda: time.monotonic() - a.started > 2, 10.0)
                async with await publishers.ffmpeg_copy(url, second) as b:
                    assert await a.wait(10) != 0  # the edge closed the stale session
                    await until(lambda: time.monotonic() - b.started > 3, 10.0)
                    await relay.outage(4.0)
                    assert reader.returncode is None, reader.output
                    await b.wait_ok(30)
            stats = await relay.ended(name, 30)
            await reader.wait_ok(20)
        recorded = await server.recorded_tags(name)
        assert nginx_publishes(server, name) == 1, server.log_text()[-3000:]
    assert stats["publisher_reconnects"] == 1 and stats["gaps"] == 1, stats
    stamps = audio_stamps(recorded)
    assert stamps == sorted(stamps), "time went back at the local server"
    jumps = sorted(b - a for a, b in itertools.pairwise(stamps))
    assert jumps[-1] >= stats["gap_ms"] > 1000  # the edge's gap, in media time
    assert any("continuing after a gap of" in r.getMessage() for r in caplog.records)
    assert len(silent_gaps(bytes(reader.pcm), READER_RATE, 1)) <= 2  # the takeover's pause and the gap


async def test_a_refusing_server_is_retried_until_it_takes_the_publish(tmp_path: Path) -> None:
    """nginx refuses a second publisher of a live name (``NetStream.Publish.BadName``): the write waits,
    retrying with backoff and saying why in status, and goes through once the other publisher left."""
    source = media.tone_flv(tmp_path / "tone.flv", seconds=2)
    tags = [t.encode() for t in media.read_tags(source)]
    with NginxRtmp(tmp_path / "nginx") as server:
        async with await publishers.ffmpeg_tone(server.url("busy"), 3) as squatter:
            await until(lambda: nginx_publishes(server, "busy") == 1, 10.0, "ffmpeg never published")
            local = LocalPublish(Target.parse(base_url(server)), "busy")
            write = asyncio.ensure_future(local.write(tags))
            await until(lambda: local.failures >= 2, 10.0)
            assert not write.done() and local.state in ("retrying", "connecting")
            assert "refused the publish: NetStream.Publish.BadName" in local.error, local.error
            assert local.tags == 0
            await squatter.wait_ok(20)
        assert await asyncio.wait_for(write, 20) is True
        assert (local.connects, local.tags) == (1, len(tags))
        await local.close()
        assert nginx_publishes(server, "busy") == 2 + local.failures  # ffmpeg, the refusals, ours
