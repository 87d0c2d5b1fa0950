"""Nothing lost: resume across link drops and app restarts, overflow gaps, publisher takeover.

The chaos test runs the real CLIs as processes (``relay-edge serve``, ``relay-client serve --out``)
with a :class:`~tests.support.net.TcpProxy` between them that the test cuts on cue, and SIGKILLs the
app once. The other tests run in-process (:class:`~tests.support.relay.Relay`) with small limits.
Every test asserts on bytes and counts: the app's ``NAME.flv`` against the source, tag for tag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relay_client.decode import AudioFormat
from relay_client.output import StreamFiles
from relay_client.receiver import Receiver
from relay_client.tone import dominant_frequency
from relay_edge import flv, keys
from relay_edge.edge import Edge, EdgeConfig
from relay_edge.loop import loop_name
from tests.support import media, publishers
from tests.support.net import LOOPBACK, TcpProxy, free_port, wait_for_port_async
from tests.support.relay import SECRET, Relay, until, with_limits

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
AAC_FRAME_S = 1024 / 44100  # one AAC-LC frame of the 44.1 kHz test tone


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def source_seconds(path: Path) -> float:
    """Audio length of an AAC FLV file: 1024 samples per raw frame."""
    return len(media.media_tags(media.read_tags(path))) * AAC_FRAME_S


def cli_pair(
    tmp_path: Path, out: Path, app_port: int, upstream_port: int, rtmp_port: int, http_port: int
) -> tuple[Proc, Proc]:
    """``relay-client serve --out`` and ``relay-edge serve`` pushing to ``upstream_port`` (the
    app's, or a proxy's in front of it): the real CLIs, as a deploy runs them."""
    env = {**os.environ, "RELAY_SECRET": SECRET, "RELAY_UPSTREAM": f"ws://{LOOPBACK}:{upstream_port}/relay"}
    # The CLIs run on the loop this test is parametrized with, so [uvloop]/[asyncio] cover both there too.
    env["RELAY_LOOP"] = loop_name()
    # One link, so each proxy cut is the cut of the stream's link (several links: tests/test_links.py).
    env["RELAY_LINKS"] = "1"
    client = [
        str(VENV_BIN / "relay-client"),
        "serve",
        "--listen",
        f"{LOOPBACK}:{app_port}",
        "--out",
        str(out),
    ]
    edge = [str(VENV_BIN / "relay-edge"), "serve", "--rtmp", f"{LOOPBACK}:{rtmp_port}"]
    return Proc("app", client, env, tmp_path), Proc(
        "edge", [*edge, "--http", f"{LOOPBACK}:{http_port}"], env, tmp_path
    )


class Proc:
    """A CLI child process with its output in a log file (a pipe could fill and block it)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it; closed below
        log.write(f"--- start {self.starts} ---\n".encode())
        log.flush()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
        )
        log.close()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code (kills after ``timeout``)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                await self.kill()
        assert self.proc.returncode is not None
        return self.proc.returncode

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.json()


async def edge_links(http_port: int) -> int:
    with contextlib.suppress(aiohttp.ClientError, OSError):
        return len((await get_json(f"http://{LOOPBACK}:{http_port}/api/rtmp/status"))["links"])
    return 0


async def wait_link(http_port: int, timeout: float) -> float:
    """Seconds until the edge reports a link up."""
    start = time.monotonic()
    while not await edge_links(http_port):
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"no link after {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def resumes_logged(app: Proc) -> int:
    """How often the app logged taking its stream up again: on a new link, or after a restart."""
    log = app.log
    return log.count("resumed on a new link") + log.count("continuing after a restart")


@pytest.fixture(scope="module")
def minute_tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s of a 440 Hz AAC tone (2584 audio tags), the chaos test's source."""
    return media.tone_flv(tmp_path_factory.mktemp("media") / "minute.flv", seconds=60, frequency=440)


async def test_chaos_link_cuts_and_app_kill_lose_nothing(tmp_path: Path, minute_tone: Path) -> None:
    """60 s stream; the edge-app link is cut 5 times (0.1-3 s) and the app SIGKILLed and restarted once.

    Each cut comes only once the stream resumed after the one before, so each is a resume.

    The publisher never notices; the app's NAME.flv holds every source audio tag exactly once, in
    order, byte-identical; NAME.wav is as long as the source to within one AAC frame.
    """
    out = tmp_path / "out"
    rtmp_port, http_port, app_port = free_port(), free_port(), free_port()
    async with TcpProxy(app_port) as proxy:
        app, edge = cli_pair(tmp_path, out, app_port, proxy.port, rtmp_port, http_port)
        try:
            await app.start()
            await edge.start()
            await wait_for_port_async(LOOPBACK, rtmp_port, 20)
            await wait_link(http_port, 20)
            key = keys.mint_key(SECRET, "chaos", ttl=600, now=time.time())
            url = f"rtmp://{LOOPBACK}:{rtmp_port}/live/{key}"
            async with await publishers.ffmpeg_copy(url, minute_tone) as pub:
                t0 = time.monotonic()

                async def at(t: float) -> None:
                    await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))

                relinks: list[float] = []

                async def relinked(resumed_before: int) -> None:
                    # The link is up and the stream resumed on it: the next cut hits a link that
                    # carries it (one cut right after a relink could otherwise count one resume).
                    relinks.append(await wait_link(http_port, 30))
                    await until(lambda: resumes_logged(app) > resumed_before, 30, "the stream to resume")

                async def outage(start: float, seconds: float) -> None:
                    # Refuse redials for the outage, then reset the live link (RST both ways).
                    await at(start)
                    resumed_before = resumes_logged(app)
                    await proxy.pause()
                    assert await proxy.cut() == 1, "the link should have been up before each cut"
                    await asyncio.sleep(seconds)
                    await proxy.resume()
                    await relinked(resumed_before)

                await outage(5, 0.1)
                await outage(12, 1.0)
                await outage(19, 3.0)
                # The app dies without a chance to ack or close, then a new process starts.
                await at(28)
                resumed_before = resumes_logged(app)
                await app.kill()
                await asyncio.sleep(1.0)
                await app.start()
                await relinked(resumed_before)
                await outage(38, 0.5)
                await outage(45, 2.0)
                await pub.wait_ok(60)  # ffmpeg never saw any of it: exit 0
            assert pub.returncode == 0
            await until((out / "chaos.json").exists, 30, "the app never finished the stream")
            stats = json.loads((out / "chaos.json").read_text())
            edge_status = await get_json(f"http://{LOOPBACK}:{http_port}/api/rtmp/status")
            assert await app.terminate() == 0
            assert await edge.terminate() == 0
        finally:
            await app.kill()
            await edge.kill()
    try:
        sent = media.audio_payloads(minute_tone)
        received = media.audio_payloads(out / "chaos.flv")
        assert len(received) == len(sent), f"{len(received)} audio tags received, {len(sent)} sent"
        assert received == sent  # exactly once, in order, byte for byte
        wav_s, src_s = wav_seconds(out / "chaos.wav"), source_seconds(minute_tone)
        assert abs(wav_s - src_s) <= AAC_FRAME_S, f"wav {wav_s:.4f} s vs source {src_s:.4f} s"
        assert stats["gaps"] == 0 and stats["audio_tags"] == len(sent)
        assert stats["end_reason"]
        assert edge_status["streams"] == [] or all(s["gaps"] == 0 for s in edge_status["streams"])
        assert "continuing after a restart" in app.log  # the new process resumed from its checkpoint
        assert stats["resumes"] >= 6, stats  # 5 cuts and a restart, all resumed, none a new stream
        assert stats["streams"] == 1
    except AssertionError:
        print(f"relinks: {relinks}\n=== edge ===\n{edge.log[-6000:]}\n=== app ===\n{app.log[-6000:]}")
        raise
    print(f"chaos: {len(sent)} audio tags identical; relink seconds {[round(r, 2) for r in relinks]}; "
          f"wav {wav_s:.3f} s vs source {src_s:.3f} s")  # fmt: skip


class FreezingProxy(TcpProxy):
    """A :class:`TcpProxy` that can turn its open connections into a black hole: a half-open link.

    After :meth:`freeze`, bytes on the connections open then vanish, with no FIN and no RST, as when
    a NAT or load balancer forgets a flow. New connections work normally.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frozen: set[asyncio.StreamWriter] = set()

    def freeze(self) -> None:
        for writers in self._conns.values():
            self.frozen.update(writers)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        while data := await reader.read(self.chunk):
            if writer in self.frozen:
                continue  # swallowed: the sender's TCP sees its bytes acked, the receiver sees nothing
            writer.write(data)
            await writer.drain()


@pytest.fixture(params=["push", "pull"])
def mode(request: pytest.FixtureRequest) -> str:
    """Link-level behaviour is the same whichever side dials: these tests run both ways."""
    return request.param


class ProxiedRelay(Relay):
    """:class:`Relay` with a :class:`TcpProxy` between the edge and the app, to cut the link on cue."""

    proxy: TcpProxy
    proxy_cls: type[TcpProxy] = TcpProxy

    async def __aenter__(self) -> ProxiedRelay:
        if self.mode == "pull":
            return await self._enter_pull()
        app = web.Application()
        app.router.add_get("/relay", self.receiver.handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        self.app_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.proxy = await self.proxy_cls(self.app_port).start()
        config = EdgeConfig(
            secret=self.secret,
            rtmp_listen=(LOOPBACK, 0),
            http_listen=None,
            upstreams=(f"ws://{LOOPBACK}:{self.proxy.port}/relay",),
            name="test-edge",
            limits=self.limits,
        )
        self.edge = Edge(config)
        await self.edge.start()
        await until(lambda: bool(self.edge and self.edge.links and self.receiver.links), 5.0)
        return self

    async def _enter_pull(self) -> ProxiedRelay:
        """Pull mode: the proxy sits in front of the edge's /link and the app dials through it."""
        config = EdgeConfig(
            secret=self.secret,
            rtmp_listen=(LOOPBACK, 0),
            http_listen=(LOOPBACK, 0),
            name="test-edge",
            limits=self.limits,
        )
        self.edge = Edge(config)
        await self.edge.start()
        self.proxy = await self.proxy_cls(self.edge.http_port).start()
        self._dialer = asyncio.create_task(self.receiver.connect(f"ws://{LOOPBACK}:{self.proxy.port}/link"))
        await until(lambda: bool(self.edge and self.edge.links and self.receiver.links), 5.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.proxy.close()
        await super().__aexit__(*exc)

    async def outage(self, seconds: float) -> None:
        """Drop the link and refuse redials for ``seconds``; return once the link is back and every
        stream the app held has resumed on it (or ended).

        Both sides list the new link before the edge's Open for a held stream has reached the app:
        a cut then (a caller whose next cut is already due) would end the link before the stream
        resumed on it, and two cuts would make one resume.
        """
        held = {uid: s.stats.resumes for uid, s in self.receiver.live.items() if not s.ended}
        await self.proxy.pause()
        assert await self.proxy.cut() == 1
        await asyncio.sleep(seconds)
        await self.proxy.resume()

        def resumed() -> bool:
            if not (self.edge and self.edge.links and self.receiver.links):
                return False
            streams = [self.receiver.live.get(uid) for uid in held]
            return all(s is None or s.ended or s.stats.resumes > held[s.info.uid] for s in streams)

        await until(resumed, 30.0, f"the link back and the app's {len(held)} held stream(s) resumed on it")


async def test_outage_longer_than_the_buffer_loses_exactly_the_gap(mode: str, tmp_path: Path) -> None:
    """A 4 s outage with a 1.5 s buffer: the tags missing from NAME.flv are exactly the gap reported
    (count, bytes, media ms), one contiguous run, and everything after it arrives."""
    # 12 s, so the stream is still live when the link returns (the redial backoff reaches ~4 s).
    source = media.tone_flv(tmp_path / "src.flv", seconds=12, frequency=440)
    limits = with_limits(buffer_seconds=1.5)
    async with ProxiedRelay(tmp_path / "out", limits=limits, mode=mode) as relay:
        async with await publishers.ffmpeg_copy(relay.url("lossy"), source) as pub:
            await until(lambda: "lossy" in relay.streams, 10)
            await asyncio.sleep(2.0)
            await relay.outage(4.0)
            await pub.wait_ok(30)
        stats = await relay.ended("lossy")
        assert relay.edge is not None
        edge_gaps = relay.edge.metrics.gap_tags._value.get()  # type: ignore[attr-defined]
    events = [e async for e in relay.streams["lossy"].events()]
    sent_tags = [t for t in media.read_tags(source) if t.type == flv.AUDIO]
    received = media.audio_payloads(tmp_path / "out" / "lossy.flv")
    sent = [t.data for t in sent_tags]
    # One contiguous run is missing: a prefix and a suffix of the source, nothing else.
    head = next(i for i, (a, b) in enumerate(zip(sent, received, strict=False)) if a != b)
    tail = len(received) - head
    assert received == sent[:head] + sent[len(sent) - tail :]
    lost = sent_tags[head : len(sent) - tail]
    assert stats["gaps"] == 1 and len(events) == 1
    gap = events[0]
    assert (gap.tags, stats["gap_tags"], edge_gaps) == (len(lost), len(lost), len(lost))
    assert gap.bytes == stats["gap_bytes"] == sum(flv.TAG_HEADER_SIZE + len(t.data) for t in lost)
    assert gap.ms == stats["gap_ms"] == lost[-1].timestamp - lost[0].timestamp
    # About the outage plus the redial backoff, minus the 1.5 s the buffer held.
    assert 2.0 <= gap.ms / 1000 <= 10.0, gap
    print(f"gap: {gap.tags} tags, {gap.bytes} bytes, {gap.ms} ms lost of {len(sent)}; {tail} after it intact")


async def test_publisher_reconnect_with_the_same_key_continues_the_stream(mode: str, tmp_path: Path) -> None:
    """A second publisher with the same key replaces the first mid-stream, with another codec
    configuration (48 kHz instead of 44.1 kHz): one stream, one set of files, decoding goes on."""
    first = media.tone_flv(tmp_path / "a.flv", seconds=8, frequency=440)
    second = media.tone_flv(tmp_path / "b.flv", seconds=3, frequency=880, sample_rate=48000)
    async with Relay(tmp_path / "out", mode=mode) as relay:
        url = relay.url("room")
        async with await publishers.ffmpeg_copy(url, first) as a:
            await until(lambda: "room" in relay.streams, 10)
            await asyncio.sleep(2.0)
            async with await publishers.ffmpeg_copy(url, second) as b:
                assert await a.wait(10) != 0  # the stale session was closed by the edge
                await b.wait_ok(30)
        stats = await relay.ended("room")
        stream = relay.streams["room"]
    events = [e async for e in stream.events()]
    sent_a, sent_b = media.audio_payloads(first), media.audio_payloads(second)
    received = media.audio_payloads(tmp_path / "out" / "room.flv")
    kept = len(received) - len(sent_b)
    assert 40 < kept < len(sent_a)  # about 2 s of the first publisher
    assert received == sent_a[:kept] + sent_b  # then all of the second, its new AAC config first
    assert stats["streams"] == 1 and stats["publisher_reconnects"] == 1
    # One timeline: the second publisher's clock (restarting at 0) is shifted to go on from the first.
    stamps = [t.timestamp for t in media.read_tags(tmp_path / "out" / "room.flv") if t.type == flv.AUDIO]
    assert stamps == sorted(stamps)
    join = stamps[kept] - stamps[kept - 1]  # the wall-clock time between the two sessions' tags
    assert 0 <= join < 3000, join
    assert [type(e).__name__ for e in events] == ["PublisherReconnected"]
    assert events[0].publisher["addr"].startswith("127.0.0.1:")
    # One WAV, decoded across the change: 440 Hz, then 880 Hz resampled from 48 kHz.
    with wave.open(str(tmp_path / "out" / "room.wav"), "rb") as w:
        pcm = w.readframes(w.getnframes())
    rate = 16000
    expect_s = (kept - 1) * AAC_FRAME_S + (len(sent_b) - 1) * 1024 / 48000
    assert abs(len(pcm) / 2 / rate - expect_s) < 0.1
    one_s = rate * 2
    assert dominant_frequency(pcm[one_s // 2 : one_s // 2 + one_s], rate, 1) == pytest.approx(440, abs=2)
    assert dominant_frequency(pcm[-one_s - one_s // 2 : -one_s // 2], rate, 1) == pytest.approx(880, abs=2)
    assert stats["decode_errors"] == 0
    print(f"takeover: {kept} tags of the first publisher, {len(sent_b)} of the second, one stream")


class App:
    """One app instance: an aiohttp server with its own Receiver and its own disk (``out``)."""

    def __init__(self, out: Path, **receiver_options: Any) -> None:
        self.out = out
        options = {"consume": frozenset(), **receiver_options}
        self.receiver = Receiver(SECRET, out_dir=str(out), name=out.name, **options)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> App:
        app = web.Application()
        app.router.add_get("/relay", self.receiver.handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, LOOPBACK, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        """What ``relay-client serve`` does on SIGTERM."""
        await self.receiver.shutdown()
        assert self.runner is not None
        await self.runner.cleanup()


def routed_edge(router: TcpProxy) -> Edge:
    """An edge pushing to the platform's router (one public URL in front of the app instances)."""
    config = EdgeConfig(
        secret=SECRET,
        rtmp_listen=(LOOPBACK, 0),
        http_listen=None,
        upstreams=(f"ws://{LOOPBACK}:{router.port}/relay",),
        name="test-edge",
    )
    return Edge(config)


async def test_deploy_moves_streams_to_the_new_instance_without_loss(tmp_path: Path) -> None:
    """A Render deploy: the new instance comes up and gets the traffic, the old one keeps its link
    (and the stream) until SIGTERM; then the stream resumes on the new one. Together their files
    hold every tag exactly once."""
    source = media.tone_flv(tmp_path / "src.flv", seconds=8, frequency=440)
    old = await App(tmp_path / "old").start()
    router = await TcpProxy(old.port).start()  # the platform's router: one public URL
    edge = routed_edge(router)
    new: App | None = None
    try:
        await edge.start()
        await until(lambda: bool(edge.links), 5)
        key = keys.mint_key(SECRET, "deploy", ttl=600, now=time.time())
        async with await publishers.ffmpeg_copy(
            f"rtmp://{LOOPBACK}:{edge.rtmp_port}/live/{key}", source
        ) as pub:
            await until(lambda: bool(old.receiver.live), 10)
            await asyncio.sleep(1.5)
            new = await App(tmp_path / "new").start()
            router.target = (LOOPBACK, new.port)  # new connections reach the new instance
            await asyncio.sleep(1.0)
            assert old.receiver.live and not new.receiver.live  # the stream stays where it is
            await old.stop()  # SIGTERM to the old instance
            await until(lambda: bool(new.receiver.live), 5)  # redialled at once, resumed
            moved = next(iter(new.receiver.live.values()))
            assert moved.info.resumed
            await pub.wait_ok(30)
        await until(lambda: (tmp_path / "new" / "deploy.json").exists(), 20)
    finally:
        await edge.stop()
        if new is not None:
            await new.stop()
        await router.close()
    first = media.audio_payloads(tmp_path / "old" / "deploy.flv")
    second = media.read_tags(tmp_path / "new" / "deploy.flv")
    # The new instance's file starts with the replayed metadata and AAC sequence header (init).
    assert second[0].type == flv.SCRIPT and flv.is_sequence_header(flv.AUDIO, second[1].data)
    sent = media.audio_payloads(source)
    assert first + [t.data for t in second[2:] if t.type == flv.AUDIO] == sent
    assert 0 < len(first) < len(sent)
    assert not (tmp_path / "old" / "deploy.json").exists()  # the old instance did not end it
    print(f"deploy: {len(first)} tags on the old instance, {len(sent) - len(first)} on the new one")


class FreezingRelay(ProxiedRelay):
    proxy_cls = FreezingProxy


async def test_half_open_link_is_noticed_on_both_sides(mode: str, tmp_path: Path) -> None:
    """The link goes silent without a FIN or RST: both sides give up on it after ``ping_timeout``
    (pings both ways), the edge redials, and the stream resumes without loss."""
    source = media.tone_flv(tmp_path / "src.flv", seconds=10, frequency=440)
    limits = with_limits(ping_interval=0.5, ping_timeout=2.0)
    async with FreezingRelay(tmp_path / "out", limits=limits, mode=mode) as relay:
        assert relay.edge is not None
        async with await publishers.ffmpeg_copy(relay.url("silent"), source) as pub:
            await until(lambda: "silent" in relay.streams, 10)
            await asyncio.sleep(1.5)
            edge_link, app_link = relay.edge.links[0], relay.receiver.links[0]
            assert isinstance(relay.proxy, FreezingProxy)
            relay.proxy.freeze()
            frozen_at = time.monotonic()
            await until(lambda: edge_link not in relay.edge.links, 15, "the edge never noticed")  # type: ignore[union-attr]
            edge_s = time.monotonic() - frozen_at
            await until(lambda: app_link not in relay.receiver.links, 15, "the app never noticed")
            app_s = time.monotonic() - frozen_at
            await pub.wait_ok(30)
        stats = await relay.ended("silent")
    assert media.audio_payloads(tmp_path / "out" / "silent.flv") == media.audio_payloads(source)
    assert stats["gaps"] == 0 and stats["resumes"] >= 1
    print(f"half-open: edge noticed after {edge_s:.2f} s, app after {app_s:.2f} s (ping_timeout 2 s)")


async def test_name_json_adds_up_streams_appended_to_the_same_files(tmp_path: Path) -> None:
    """The same name published twice (two streams, one after the other): one NAME.flv holding both,
    and a NAME.json whose counters describe the whole file."""
    source = media.tone_flv(tmp_path / "src.flv", seconds=2, frequency=440)
    json_path = tmp_path / "out" / "twice.json"
    async with Relay(tmp_path / "out") as relay:
        for _ in range(2):
            async with await publishers.ffmpeg_copy(relay.url("twice"), source) as pub:
                await pub.wait_ok(30)
            # Ended: NAME.json written and the stream let go, before the next publish.
            await until(lambda: json_path.exists() and not relay.receiver.live, 20)
        await until(lambda: json.loads(json_path.read_text())["streams"] == 2, 20)
    stats = json.loads(json_path.read_text())
    sent = media.audio_payloads(source)
    assert media.audio_payloads(tmp_path / "out" / "twice.flv") == sent + sent
    assert stats["audio_tags"] == 2 * len(sent)
    assert stats["gaps"] == 0 and stats["publisher_reconnects"] == 0
    assert not (tmp_path / "out" / ".twice.resume.json").exists()  # no checkpoint once ended


def test_a_new_process_cuts_the_files_back_to_the_last_checkpoint(tmp_path: Path) -> None:
    """The crash window the chaos test hits by chance, on purpose: tags written after the last
    checkpoint (so never acked) are cut on restart, because the edge will send them again."""
    tags = [flv.Tag(flv.AUDIO, 23 * i, b"\xaf\x01" + bytes([i]) * 50).encode() for i in range(5)]
    files = StreamFiles(tmp_path, "crash", AudioFormat())
    files.open_flv(flv.file_header(True, False), [])
    files.write_tags(tags[:3])
    files.write_audio(b"\x01\x00" * 300)
    files.flush()
    files.checkpoint({"uid": "edge-1", "seq": 3, "stats": {"tags": 3}, "base": {}})
    files.write_tags(tags[3:])  # written, then the process is SIGKILLed before its checkpoint and ack
    files.write_audio(b"\x02\x00" * 200)
    files.flush()

    again = StreamFiles(tmp_path, "crash", AudioFormat())
    assert again.restore("edge-2") is None  # another stream: leaves the files alone
    assert len(media.read_tags(tmp_path / "crash.flv")) == 5
    state = again.restore("edge-1")
    assert state is not None and state["seq"] == 3 and state["stats"] == {"tags": 3}
    assert [t.encode() for t in media.read_tags(tmp_path / "crash.flv")] == tags[:3]
    with wave.open(str(tmp_path / "crash.wav"), "rb") as w:
        assert w.readframes(w.getnframes()) == b"\x01\x00" * 300
    again.open_flv(flv.file_header(True, False), [])  # appends: the header is not written again
    again.write_tags(tags[3:])
    again.write_audio(b"\x02\x00" * 200)
    again.close({"tags": 5})
    assert [t.encode() for t in media.read_tags(tmp_path / "crash.flv")] == tags
    assert wav_seconds(tmp_path / "crash.wav") == 500 / 16000
    assert not again.resume_path.exists()


async def test_sigterm_app_then_edge_hands_over_everything(tmp_path: Path, minute_tone: Path) -> None:
    """SIGTERM, real processes: the app mid-stream (a restart), then the edge. The app exits 0 after
    acking what it had; the next app process continues the files; the edge, on SIGTERM, drops the
    publisher, delivers the tail, ends the stream and exits 0. The files hold a prefix of the
    source, exactly once."""
    out = tmp_path / "out"
    rtmp_port, http_port, app_port = free_port(), free_port(), free_port()
    app, edge = cli_pair(tmp_path, out, app_port, app_port, rtmp_port, http_port)
    try:
        await app.start()
        await edge.start()
        await wait_for_port_async(LOOPBACK, rtmp_port, 20)
        await wait_link(http_port, 20)
        key = keys.mint_key(SECRET, "term", ttl=600, now=time.time())
        async with await publishers.ffmpeg_copy(
            f"rtmp://{LOOPBACK}:{rtmp_port}/live/{key}", minute_tone
        ) as pub:
            await until(lambda: (out / "term.flv").exists(), 15)
            await asyncio.sleep(2.0)
            assert await app.terminate() == 0
            assert not (out / "term.json").exists()  # handed over, not ended
            await app.start()
            await wait_link(http_port, 30)
            await asyncio.sleep(2.0)
            assert await edge.terminate() == 0
            assert await pub.wait(10) != 0  # the edge dropped it (a real publisher would retry elsewhere)
        await until((out / "term.json").exists, 15, "the stream never ended at the app")
        stats = json.loads((out / "term.json").read_text())
        assert await app.terminate() == 0
    finally:
        await app.kill()
        await edge.kill()
    sent = media.audio_payloads(minute_tone)
    received = media.audio_payloads(out / "term.flv")
    assert 100 < len(received) < len(sent)
    assert received == sent[: len(received)]  # a prefix, exactly once
    assert stats["end_reason"] == "edge shutting down" and stats["gaps"] == 0
    assert stats["audio_tags"] == len(received) and stats["streams"] == 1
    assert "tags not acked" not in edge.log  # the edge saw every tail acked before it left
    print(f"sigterm: {len(received)} tags handed over across an app restart and an edge shutdown")
