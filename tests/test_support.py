"""The test helpers against real peers: every publisher into a real nginx-rtmp, recordings checked.

If these fail, end-to-end failures elsewhere say nothing about the relay.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from relay_client.publish import PublishError, publish_tone, redact_url
from relay_edge.flv import (
    AUDIO,
    SCRIPT,
    VIDEO,
    Tag,
    audio_codec,
    is_keyframe,
    is_sequence_header,
    video_codec,
)
from tests.support import media, publishers
from tests.support.net import TcpProxy, free_port, wait_for_port, wait_for_port_async
from tests.support.nginx import NginxRtmp
from tests.support.relay import until

AAC_TAGS_PER_SECOND = 44100 / 1024  # one AAC frame is 1024 samples


def assert_aac_stream(tags: list[Tag], seconds: float) -> list[int]:
    """AAC header first, ~seconds*43 frames, monotonic timestamps spanning ~seconds; return the stamps."""
    audio = [t for t in tags if t.type == AUDIO]
    assert audio, "no audio tags"
    assert is_sequence_header(AUDIO, audio[0].data), "first audio tag is not the AAC sequence header"
    assert all(audio_codec(t.data) == "aac" for t in audio)
    frames = media.media_tags(tags)
    # Encoders add up to 2 frames (priming + flush), and may drop a partial last one.
    assert abs(len(frames) - seconds * AAC_TAGS_PER_SECOND) <= 3, len(frames)
    stamps = [t.timestamp for t in frames]
    assert stamps == sorted(stamps), "timestamps go backwards"
    assert stamps[-1] - stamps[0] == pytest.approx(seconds * 1000, abs=100)
    return stamps


# --- net -----------------------------------------------------------------------------------------


async def test_wait_for_port_times_out_then_succeeds() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=str(port)):
        wait_for_port("127.0.0.1", port, timeout=0.1)
    assert time.monotonic() - start < 1.0
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    async with server:
        assert await wait_for_port_async("127.0.0.1", port, timeout=2) < 1.0


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then close: exercises both directions and the half-close."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_tcp_proxy_forwards_both_ways_and_half_close() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with server, TcpProxy(server.sockets[0].getsockname()[1]) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        payload = bytes(range(256)) * 4096  # 1 MiB
        writer.write(payload)
        writer.write_eof()  # the echo server sees EOF only if the proxy forwards the half-close
        assert await asyncio.wait_for(reader.read(), 5) == payload
        writer.close()
        assert proxy.bytes_up == proxy.bytes_down == len(payload)
        assert proxy.accepted == 1


async def test_tcp_proxy_cut_resets_both_sides_and_keeps_listening() -> None:
    server_side: list[asyncio.StreamReader] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_side.append(reader)
        await reader.read()  # until the cut

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    async with server, TcpProxy(server.sockets[0].getsockname()[1]) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"hello")
        await writer.drain()
        while proxy.connections < 1 or not server_side:
            await asyncio.sleep(0.01)
        assert await proxy.cut() == 1
        assert proxy.connections == 0
        with pytest.raises(ConnectionResetError):  # RST, not a clean EOF
            await asyncio.wait_for(reader.read(), 5)
        writer.close()
        # The proxy still accepts new connections after a cut.
        _, writer2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer2.close()


async def test_tcp_proxy_hold_stalls_one_direction_until_release() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with server, TcpProxy(server.sockets[0].getsockname()[1]) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"before")
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"before"
        proxy.hold(up=True)
        payload = bytes(range(256)) * 64 * 1024  # 16 MiB: more than loopback's buffers hold
        writer.write(payload)
        with pytest.raises(asyncio.TimeoutError):  # the sender stalls: its TCP is full
            await asyncio.wait_for(writer.drain(), 1.0)
        assert proxy.bytes_up == 6 and proxy.bytes_down == 6  # nothing went by
        proxy.release()
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 30) == payload  # all, in order
        writer.close()


async def test_tcp_proxy_pause_refuses_new_connections_only() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with server, TcpProxy(server.sockets[0].getsockname()[1]) as proxy:
        port = proxy.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await proxy.pause()
        assert proxy.paused
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"still here")  # the established connection keeps flowing
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
        await proxy.resume()
        assert proxy.port == port
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
        writer2.write(b"back")
        assert await asyncio.wait_for(reader2.readexactly(4), 5) == b"back"
        writer.close()
        writer2.close()


# --- media ---------------------------------------------------------------------------------------


def test_tone_flv_is_aac_with_the_right_tone(tone_flv_file: Path) -> None:
    tags = media.read_tags(tone_flv_file)
    assert tags[0].type == SCRIPT  # onMetaData
    assert_aac_stream(tags, 3)
    samples, rate = media.decode_aac(tags)
    assert rate == 44100
    assert len(samples) == pytest.approx(3 * 44100, abs=2048)
    assert media.dominant_frequency(samples, rate) == pytest.approx(440, abs=1)
    assert media.audio_payloads(tone_flv_file)[0] == media.sequence_header(tags).data


def test_mp3_flv(mp3_flv_file: Path) -> None:
    audio = [t for t in media.read_tags(mp3_flv_file) if t.type == AUDIO]
    assert {audio_codec(t.data) for t in audio} == {"mp3"}
    assert len(audio) == pytest.approx(3 * 44100 / 1152, abs=3)  # MP3 frames are 1152 samples


def test_av_flv_has_h264_keyframes_every_gop(av_flv_file: Path) -> None:
    tags = media.read_tags(av_flv_file)
    video = [t for t in tags if t.type == VIDEO]
    assert is_sequence_header(VIDEO, video[0].data) and video_codec(video[0].data) == "h264"
    frames = [t for t in video[1:] if t.data[1] == 1]  # AVCPacketType 1: NALUs (2 is end of sequence)
    assert len(frames) == 75  # 3 s at 25 fps
    keys = [i for i, t in enumerate(frames) if is_keyframe(t.data)]
    assert keys == [0, 25, 50]
    assert_aac_stream(tags, 3)


# --- publishers into nginx-rtmp --------------------------------------------------------------------


async def test_ffmpeg_copy_records_byte_identical_audio(nginx_rtmp: NginxRtmp, tone_flv_file: Path) -> None:
    async with await publishers.ffmpeg_copy(nginx_rtmp.url("copy"), tone_flv_file) as pub:
        await pub.wait_ok(20)
    elapsed = time.monotonic() - pub.started
    assert 2.8 < elapsed < 6, f"-re should take the file's 3 s, took {elapsed:.2f} s"
    recorded = await nginx_rtmp.recorded_tags("copy")
    assert media.audio_payloads(recorded) == media.audio_payloads(tone_flv_file)


async def test_ffmpeg_tone_with_timestamps_past_24_bits(nginx_rtmp: NginxRtmp) -> None:
    async with await publishers.ffmpeg_tone(nginx_rtmp.url("late"), seconds=2, ts_offset_s=16777) as pub:
        await pub.wait_ok(20)
    tags = await nginx_rtmp.recorded_tags("late")
    stamps = assert_aac_stream(tags, 2)
    # The header goes at 0, the frames at the offset minus the 23 ms priming: they cross 0xFFFFFF.
    assert media.sequence_header(tags).timestamp == 0
    assert stamps[0] < 0xFFFFFF < stamps[-1]
    assert stamps[0] == pytest.approx(16_777_000, abs=50)


async def test_ffmpeg_av(nginx_rtmp: NginxRtmp) -> None:
    async with await publishers.ffmpeg_av(nginx_rtmp.url("av"), seconds=2) as pub:
        await pub.wait_ok(20)
    tags = await nginx_rtmp.recorded_tags("av")
    video = [t for t in tags if t.type == VIDEO]
    assert is_sequence_header(VIDEO, video[0].data) and video_codec(video[0].data) == "h264"
    assert is_keyframe(video[1].data)
    frames = [t for t in video if t.data[1] == 1]
    assert len(frames) == pytest.approx(50, abs=2)  # 2 s at 25 fps
    assert sum(is_keyframe(t.data) for t in frames) == 2  # -g 25: one per second
    assert_aac_stream(tags, 2)


async def test_gst_livekit_shape_decodes_to_the_tone(nginx_rtmp: NginxRtmp) -> None:
    async with await publishers.gst_livekit(nginx_rtmp.url("gst"), seconds=2, frequency=440) as pub:
        await pub.wait_ok(20)
    tags = await nginx_rtmp.recorded_tags("gst")
    assert_aac_stream(tags, 2)
    assert len(media.sequence_header(tags).data) == 4  # voaacenc: 2-byte AudioSpecificConfig
    samples, rate = media.decode_aac(tags)
    assert rate == 44100
    assert media.dominant_frequency(samples, rate) == pytest.approx(440, abs=1)


async def test_pyav_publisher_stamps_match_the_wire(nginx_rtmp: NginxRtmp) -> None:
    plain = await publishers.pyav_tone(nginx_rtmp.url("pyav"), seconds=2, frequency=523.25)
    late = await publishers.pyav_tone(nginx_rtmp.url("pyav_late"), seconds=2, ts_offset_ms=16_777_000)
    async with plain, late:
        await asyncio.gather(plain.wait_ok(20), late.wait_ok(20))
    for pub, name, offset in ((plain, "pyav", 0), (late, "pyav_late", 16_777_000)):
        assert pub.result is not None
        tags = await nginx_rtmp.recorded_tags(name)
        stamps = assert_aac_stream(tags, 2)
        assert stamps[0] == offset
        assert sorted(pub.result.written_at) == stamps  # what it says it sent is what nginx got
        assert pub.result.packets == len(stamps)
        assert pub.result.connect_seconds < 2
        times = [pub.result.written_at[s] for s in stamps]
        assert times[-1] - times[0] == pytest.approx(2, abs=0.2)  # paced in real time
    samples, rate = media.decode_aac(await nginx_rtmp.recorded_tags("pyav"))
    assert media.dominant_frequency(samples, rate) == pytest.approx(523.25, abs=1)


async def test_pyav_publisher_not_realtime(nginx_rtmp: NginxRtmp) -> None:
    """60 s of audio as fast as it encodes: no pacing, and thousands of packets reported back."""
    seen: list[int] = []
    result = await publish_tone(nginx_rtmp.url("fast"), seconds=60, realtime=False, on_packet=seen.append)
    assert result.elapsed < 10
    assert len(seen) == result.packets == len(result.written_at)
    stamps = assert_aac_stream(await nginx_rtmp.recorded_tags("fast"), 60)
    assert stamps == seen


# --- how publishers fail --------------------------------------------------------------------------


def recorded_bytes(nginx: NginxRtmp, name: str) -> int:
    """Bytes nginx has recorded of NAME so far: it records only a stream it accepted for publishing."""
    path = nginx.record_path(name)
    return path.stat().st_size if path.exists() else 0


async def _start_all(url: str, seconds: float) -> list[publishers.Publisher | publishers.PyAvPublisher]:
    return [
        await publishers.ffmpeg_tone(url + "_ffmpeg", seconds),
        await publishers.gst_livekit(url + "_gst", seconds),
        await publishers.pyav_tone(url + "_pyav", seconds),
    ]


async def test_connection_refused_exits_1_at_once() -> None:
    pubs = await _start_all(f"rtmp://127.0.0.1:{free_port()}/live/x", 2)
    codes = await asyncio.gather(*(p.wait(10) for p in pubs))
    assert codes == [1, 1, 1], [p.output for p in pubs]
    assert all(time.monotonic() - p.started < 2 for p in pubs)
    assert "refused" in pubs[2].output.lower()


async def test_rejected_publish_exits_1(nginx_rtmp: NginxRtmp) -> None:
    """A second publisher of a live name gets NetStream.Publish.BadName: what an edge refusal looks like."""
    async with await publishers.ffmpeg_tone(nginx_rtmp.url("taken"), 5) as first:
        await until(lambda: recorded_bytes(nginx_rtmp, "taken") > 4096, 10, "nginx recording the first")
        pubs = [
            await publishers.ffmpeg_tone(nginx_rtmp.url("taken"), 2),
            await publishers.gst_livekit(nginx_rtmp.url("taken"), 2),
            await publishers.pyav_tone(nginx_rtmp.url("taken"), 2),
        ]
        codes = await asyncio.gather(*(p.wait(10) for p in pubs))
        assert codes == [1, 1, 1], [p.output for p in pubs]
        assert "Already publishing" in pubs[0].output
        assert "NetStream.Publish.BadName" in pubs[1].output  # rtmp2sink shows the whole onStatus
        assert first.returncode is None  # the first one is unaffected


async def test_link_cut_mid_stream_ends_every_publisher_with_an_error(nginx_rtmp: NginxRtmp) -> None:
    async with TcpProxy(nginx_rtmp.port) as proxy:
        pubs = await _start_all(f"rtmp://127.0.0.1:{proxy.port}/live/cut", 5)
        names = ("cut_ffmpeg", "cut_gst", "cut_pyav")

        def streaming() -> bool:
            return all(recorded_bytes(nginx_rtmp, n) > 8000 for n in names)

        await until(streaming, 10, "all three streaming into nginx")
        assert await proxy.cut() == 3
        cut_at = time.monotonic()
        codes = await asyncio.gather(*(p.wait(5) for p in pubs))
        took = time.monotonic() - cut_at
    assert codes == [1, 1, 1], [p.output for p in pubs]
    assert took < 1.0, f"publishers took {took:.2f} s to notice"  # none retries or hangs
    # rtmp2sink reports the reset as the kernel hands it over: a read gets ECONNRESET, or a write takes
    # the error first and the read then sees end of stream. GIO gives both code 44 (CONNECTION_CLOSED).
    gst = pubs[1].output
    assert "Connection error:" in gst and "g-io-error-quark, code 44" in gst, gst
    assert "Connection reset by peer" in gst or "connection closed remotely" in gst, gst
    assert "lost after" in pubs[2].output


async def test_stop_unpublishes_cleanly(nginx_rtmp: NginxRtmp) -> None:
    pubs = await _start_all(nginx_rtmp.url("stop"), 10)
    names = ("stop_ffmpeg", "stop_gst", "stop_pyav")
    await until(lambda: all(recorded_bytes(nginx_rtmp, n) > 0 for n in names), 10, "all three recording")
    await asyncio.sleep(1.5)  # the stimulus: publish for 1.5 s, then stop (the recordings are measured)
    codes = [await p.stop() for p in pubs]
    # ffmpeg exits 255 on SIGINT even though it finishes the stream; gst-launch -e sends EOS.
    assert codes == [255, 0, 0], [p.output for p in pubs]
    assert pubs[2].result is not None and pubs[2].result.stopped
    for suffix in ("_ffmpeg", "_gst", "_pyav"):
        tags = await nginx_rtmp.recorded_tags("stop" + suffix)
        assert 0.7 < len(media.media_tags(tags)) / AAC_TAGS_PER_SECOND < 2.5


async def test_publish_error_hides_the_key_signature() -> None:
    url = f"rtmp://user:pw@127.0.0.1:{free_port()}/live/room1.1700000000.c2lnbmF0dXJlc2lnbmF0dXJl?t=1"
    with pytest.raises(PublishError) as caught:
        await publish_tone(url, seconds=1)
    message = str(caught.value)
    assert "rtmp://127.0.0.1:" in message and "/live/room1..." in message
    for secret in ("c2lnbmF0dXJl", "1700000000", "pw", "t=1"):
        assert secret not in message
    assert redact_url("rtmp://h/live/plain") == "rtmp://h/live/plain"
