"""Hostile clients over real sockets while a real publisher streams: each is closed, nobody else notices.

One edge + app pair (push mode) with tightened timeouts; ffmpeg publishes a
10 s, 440 Hz tone the whole time. Meanwhile: 500 connections stall mid-
handshake, garbage arrives before and after a handshake, a message declares
16 MiB, another declares 8 MiB (within the limit) and never finishes, chunk
sizes 0 and 0x7FFFFFFF, 10,000-deep AMF, a publisher goes silent, and the
WebSocket endpoints get frames declaring 4 GiB. For each we assert how and
when the connection closed and the logged reason; for the whole run that the
edge's memory stayed bounded and the real stream's decoded audio is complete.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import struct
import time
import wave
from pathlib import Path

import msgpack
import pytest

from relay_client.tone import count_silent_gaps, dominant_frequency
from relay_edge import flv
from relay_edge.auth import make_proof
from relay_edge.rtmp.chunk import ChunkWriter
from relay_edge.rtmp.handshake import PACKET_SIZE
from tests.support import publishers
from tests.support.raw import RtmpClient, wait_closed, ws_upgrade
from tests.support.relay import Relay, until, with_limits

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "relay_edge" / "rtmp" / "fixtures"
HANDSHAKE = b"\x03" + bytes(PACKET_SIZE) * 2  # C0 C1 C2 of a plain handshake

LIMITS = with_limits(
    handshake_timeout=2.0,
    idle_timeout=3.0,
    reconnect_grace=1.0,
    max_connections=2000,
    max_connections_per_ip=1000,  # every test client is 127.0.0.1
)
# The edge checks timeouts once a second: a stalled socket closes between the
# timeout and the timeout plus one sweep. SLACK absorbs a loaded CI machine.
SWEEP = 1.0
SLACK = 5.0
STALLS = 500
REAL_SECONDS = 10.0

log = logging.getLogger("tests.hostile")


def rss_mib() -> float:
    """This process's resident set (the edge and the app run in it), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def wav_pcm(path: Path) -> tuple[int, bytes]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.readframes(w.getnframes())


async def open_rtmp(port: int, first: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if first:
        writer.write(first)
        await writer.drain()
    return reader, writer


def edge_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The reasons of every 'closing RTMP connection' line the edge logged."""
    pattern = re.compile(r"closing RTMP connection from [\d.:]+: (.*)")
    return [m.group(1) for r in caplog.records if (m := pattern.match(r.getMessage()))]


class Case:
    """One hostile connection's outcome, for the assertions and the printed report."""

    def __init__(self, name: str, seconds: float, how: str) -> None:
        self.name, self.seconds, self.how = name, seconds, how

    def __repr__(self) -> str:
        return f"{self.name}: closed ({self.how}) after {self.seconds:.2f} s"


# --- the attacks -------------------------------------------------------------------------------


async def stall_handshakes(port: int) -> Case:
    """500 sockets send C0 and half of C1, then nothing; all must close at handshake_timeout."""
    timeout = LIMITS.handshake_timeout + SWEEP + SLACK

    async def one() -> tuple[float, str, bytes]:
        reader, writer = await open_rtmp(port, b"\x03" + bytes(700))
        try:
            return await wait_closed(reader, timeout)  # timed from this socket's own connect
        finally:
            writer.close()

    results = await asyncio.gather(*(one() for _ in range(STALLS)))
    assert all(data == b"" for _, _, data in results)  # no S0/S1 without a whole C1
    assert min(r[0] for r in results) >= LIMITS.handshake_timeout - 0.1  # none before its timeout
    return Case(f"{STALLS} stalled handshakes (slowest)", max(r[0] for r in results), results[0][1])


async def garbage_before_handshake(port: int) -> Case:
    junk = bytes([0x47]) + random.Random(1).randbytes(64 * 1024 - 1)  # 'G': not RTMP version 3
    reader, writer = await open_rtmp(port, junk)
    seconds, how, data = await wait_closed(reader, SLACK)
    writer.close()
    assert data == b""
    return Case("garbage instead of C0", seconds, how)


async def garbage_after_handshake(port: int) -> Case:
    reader, writer = await open_rtmp(port, HANDSHAKE + random.Random(2).randbytes(16 * 1024))
    seconds, how, _ = await wait_closed(reader, LIMITS.idle_timeout + SWEEP + SLACK)
    writer.close()
    return Case("garbage after the handshake", seconds, how)


async def fixture_case(port: int, fixture: str) -> Case:
    """Send one of the RTMP session fixtures (bad chunk size, 16 MiB message, deep AMF) and wait."""
    reader, writer = await open_rtmp(port, (FIXTURES / fixture).read_bytes())
    seconds, how, _ = await wait_closed(reader, SLACK)
    writer.close()
    # An abort (RST) also discards the S0+S1+S2 still unread in our socket: no data check here.
    return Case(fixture, seconds, how)


async def unfinished_message(port: int, key: str) -> Case:
    """A publishing connection declares an 8 MiB audio message (within limits), sends 64 KiB, stalls."""
    client = await RtmpClient.publish(port, key)
    assert client.started, client.codes
    stream_id = client.session.stream_id
    assert stream_id is not None
    body = ChunkWriter(4096).write(10, 8, stream_id, 0, bytes(8 * 1024 * 1024))
    await client.send_raw(body[: 64 * 1024])
    sent = time.monotonic()
    seconds, how, _ = await wait_closed(client.reader, LIMITS.idle_timeout + SWEEP + SLACK)
    assert time.monotonic() - sent >= LIMITS.idle_timeout - 0.1
    client.close()
    return Case("8 MiB message never finished", seconds, how)


async def silent_publisher(port: int, key: str) -> Case:
    """A valid publisher sends its AAC config and a few frames, then goes quiet with the socket open."""
    client = await RtmpClient.publish(port, key)
    assert client.started and client.codes == ["NetStream.Publish.Start"]
    await client.send_media(flv.AUDIO, 0, b"\xaf\x00\x12\x10")
    for i in range(5):
        await client.send_media(flv.AUDIO, 23 * i, b"\xaf\x01" + bytes(64))
    seconds, how, _ = await wait_closed(client.reader, LIMITS.idle_timeout + SWEEP + SLACK)
    assert seconds >= LIMITS.idle_timeout - 0.1
    client.close()
    return Case("publisher that stops sending", seconds, how)


async def ws_4gib_frame(port: int, path: str, role: str, secret: str) -> Case:
    """After a valid proof, a WebSocket frame header declaring a 4 GiB payload."""
    ws = await ws_upgrade(port, path, make_proof(secret, role, time.time(), target=f"127.0.0.1{path}"))
    assert ws.status == 101, ws.head
    await ws.send_frame_header(4 * 1024**3)
    ws.writer.write(bytes(4096))  # a little of it; the rest never comes
    seconds, code = await ws.close_code(SLACK)
    ws.writer.close()
    assert code == 1009, code  # "message too big", decided on the declared length
    return Case(f"{path}: WebSocket frame declaring 4 GiB", seconds, f"close {code}")


async def link_frame_4gib(port: int, path: str, role: str, secret: str) -> Case:
    """After a valid proof, a msgpack link frame whose bin field declares 4 GiB - 1 bytes."""
    ws = await ws_upgrade(port, path, make_proof(secret, role, time.time(), target=f"127.0.0.1{path}"))
    assert ws.status == 101, ws.head

    def pair(key: str, value: object) -> bytes:
        return msgpack.packb(key) + msgpack.packb(value)

    # A Data frame (see relay_edge.wire): {"t": "data", "s": 1, "q": 1, "d": [bin32 of 0xFFFFFFFF bytes]},
    # with 16 bytes of the 4 GiB actually sent.
    header = b"\x84" + pair("t", "data") + pair("s", 1) + pair("q", 1) + msgpack.packb("d")
    header += b"\x91\xc6" + struct.pack(">I", 0xFFFFFFFF) + bytes(16)
    await ws.send_message(header)
    seconds, code = await ws.close_code(SLACK)
    ws.writer.close()
    assert code == 1009, code  # the declared bin length alone breaches max_message_size
    return Case(f"{path}: link frame declaring 4 GiB", seconds, f"close {code}")


async def silent_link(port: int, path: str, role: str, secret: str) -> Case:
    """After a valid proof, a WebSocket that never sends its Hello: closed at handshake_timeout."""
    ws = await ws_upgrade(port, path, make_proof(secret, role, time.time(), target=f"127.0.0.1{path}"))
    assert ws.status == 101, ws.head
    seconds, code = await ws.close_code(LIMITS.handshake_timeout + SWEEP + SLACK)  # skips the peer's Hello
    ws.writer.close()
    assert seconds >= LIMITS.handshake_timeout - 0.1 and code == 1000  # a timeout, not a protocol error
    return Case(f"{path}: link that never says hello", seconds, f"close {code}")


# --- the test ----------------------------------------------------------------------------------


async def test_hostile_clients_leave_the_real_stream_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with Relay(tmp_path, limits=LIMITS) as relay:
        edge = relay.edge
        assert edge is not None
        port = edge.rtmp_port
        async with await publishers.ffmpeg_tone(
            relay.url("real"), seconds=REAL_SECONDS, frequency=440
        ) as pub:
            await until(lambda: "real" in relay.streams and relay.pcm("real"), 10, "real stream not live")
            before = rss_mib()
            peak = before
            sampling = True

            async def sample() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, rss_mib())
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            started = time.monotonic()
            cases = await asyncio.gather(
                stall_handshakes(port),
                garbage_before_handshake(port),
                garbage_after_handshake(port),
                fixture_case(port, "session_chunk_size_0.bin"),
                fixture_case(port, "session_chunk_size_0x7fffffff.bin"),
                fixture_case(port, "session_message_16mib.bin"),
                fixture_case(port, "session_connect_10000_deep.bin"),
                unfinished_message(port, relay.url("partial").rsplit("/", 1)[1]),
                silent_publisher(port, relay.url("silent").rsplit("/", 1)[1]),
                ws_4gib_frame(relay.app_port, "/relay", "edge", relay.secret),
                ws_4gib_frame(edge.http_port, "/link", "client", relay.secret),
                link_frame_4gib(relay.app_port, "/relay", "edge", relay.secret),
                link_frame_4gib(edge.http_port, "/link", "client", relay.secret),
                silent_link(relay.app_port, "/relay", "edge", relay.secret),
                silent_link(edge.http_port, "/link", "client", relay.secret),
            )
            attack_seconds = time.monotonic() - started
            sampling = False
            await sampler
            after = rss_mib()
            # While all that happened, the real stream stayed on its one link.
            assert pub.returncode is None, "the real publisher ended early"
            await pub.wait_ok(30)
        stats = await relay.ended("real")
        await until(lambda: not edge.connections, 5, "hostile connections still counted")
        metrics = edge.metrics.render().decode()
        assert len(edge.links) == 1 and len(relay.receiver.links) == 1

    report = "\n".join(map(repr, cases))
    report += f"\nRSS {before:.1f} MiB before, peak {peak:.1f}, after {after:.1f}"
    report += f" (attacks took {attack_seconds:.1f} s)"
    print(report)
    log.info("hostile report\n%s", report)

    # Every hostile connection ended, each for its own reason, with a metric.
    reasons = edge_reasons(caplog)
    assert sum(r.startswith("handshake_timeout") for r in reasons) == STALLS
    assert any(r.startswith("unsupported RTMP version 71 in C0") for r in reasons)
    assert "Set Chunk Size 0 is invalid (must be at least 1)" in reasons
    assert "max_chunk_size: 2147483647 bytes exceeds limit of 1048576 bytes" in reasons
    assert "max_message_size: 16777215 bytes exceeds limit of 10485760 bytes" in reasons
    assert "amf_max_depth: 33 levels exceeds limit of 32 levels" in reasons
    # The seeded garbage after the handshake is a chunk error, not an idle connection.
    assert "chunk stream 51: format 1 header with no previous format 0 header" in reasons
    assert sum(r.startswith("idle_timeout") for r in reasons) == 2  # the 8 MiB staller and the silent one
    assert len(reasons) == STALLS + 8  # and nothing else was closed: not the real publisher
    for kind, count in [
        ("timeout", STALLS + 2),
        ("max_message_size", 1),
        ("max_chunk_size", 1),
        ("amf_max_depth", 1),
        ("ChunkError", 2),  # chunk size 0 and the garbage
        ("HandshakeError", 1),
    ]:
        assert f'relay_edge_protocol_errors_total{{kind="{kind}"}} {count}.0' in metrics, kind

    # Memory stayed bounded: 500 sockets and the partial 8 MiB message cost a few MiB, not the declared sizes.
    assert peak - before < 64, report

    # The real stream: every tag, no gap, the whole tone.
    assert stats["gaps"] == 0
    rate, pcm = wav_pcm(tmp_path / "real.wav")
    duration = len(pcm) / 2 / rate
    assert abs(duration - REAL_SECONDS) <= 0.15, f"{duration:.3f} s decoded, {REAL_SECONDS} s published"
    assert dominant_frequency(pcm, rate, 1) == pytest.approx(440, abs=1.0)
    assert count_silent_gaps(pcm[1600:-1600], rate, 1) == 0
    # The silent publisher's stream ended as lost; no file for the never-finished message's bytes.
    assert (tmp_path / "silent.json").exists()


async def test_per_ip_limit_refuses_only_the_extra_connection(tmp_path: Path) -> None:
    limits = with_limits(max_connections_per_ip=3, handshake_timeout=30.0)
    async with Relay(tmp_path, limits=limits) as relay:
        edge = relay.edge
        assert edge is not None
        held = [await open_rtmp(edge.rtmp_port, b"\x03") for _ in range(3)]
        await until(lambda: len(edge.connections) == 3, 5)
        reader, writer = await open_rtmp(edge.rtmp_port)
        seconds, how, data = await wait_closed(reader, SLACK)
        writer.close()
        assert data == b"" and how in ("eof", "reset")  # closed at accept, before a single byte
        assert len(edge.connections) == 3  # the held ones are untouched
        for r, w in held:
            w.write(bytes(PACKET_SIZE))  # finish C1: each still gets its S0+S1+S2
            assert len(await asyncio.wait_for(r.readexactly(1 + 2 * PACKET_SIZE), 5)) == 1 + 2 * PACKET_SIZE
            w.close()
        metrics = edge.metrics.render().decode()
    assert 'relay_edge_limit_breaches_total{limit="max_connections_per_ip"} 1.0' in metrics
    print(f"per-IP refusal: reset after {seconds * 1000:.1f} ms")
