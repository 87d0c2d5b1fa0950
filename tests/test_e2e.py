"""Push and pull mode end to end: real publishers → edge → WebSocket → app; decoded audio and files checked.

Every test asserts on content: the decoded tone's frequency and duration, the
received FLV's payloads byte for byte against what was published, timestamps.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest

from relay_client.tone import count_silent_gaps, dominant_frequency
from relay_edge import flv
from tests.support import media, publishers
from tests.support.relay import Relay, until

pytestmark = pytest.mark.slow


def wav_info(path: Path) -> tuple[float, int, bytes]:
    """(seconds, sample rate, PCM) of a WAV file."""
    with wave.open(str(path), "rb") as w:
        frames = w.getnframes()
        return frames / w.getframerate(), w.getframerate(), w.readframes(frames)


def assert_tone(
    pcm: bytes, seconds: float, frequency: float, *, rate: int = 16000, tolerance_s: float = 0.1
) -> None:
    duration = len(pcm) / 2 / rate
    assert abs(duration - seconds) <= tolerance_s, f"{duration:.3f} s decoded, {seconds} s published"
    assert dominant_frequency(pcm, rate, 1) == pytest.approx(frequency, abs=1.0)
    # Skip the first/last 50 ms: AAC priming and the encoder's tail fade.
    assert count_silent_gaps(pcm[1600:-1600], rate, 1) == 0


@pytest.fixture(params=["push", "pull"])
def mode(request: pytest.FixtureRequest) -> str:
    """Every end-to-end test runs both ways: the edge dials the app, and the app dials the edge."""
    return request.param


@pytest.fixture(scope="module")
def tone_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return media.tone_flv(tmp_path_factory.mktemp("media") / "tone.flv", seconds=4, frequency=440)


@pytest.fixture(scope="module")
def av_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return media.av_flv(tmp_path_factory.mktemp("media") / "av.flv", seconds=3)


async def test_ffmpeg_copy_is_byte_identical_and_decodes(mode: str, tmp_path: Path, tone_file: Path) -> None:
    async with Relay(tmp_path, mode=mode) as relay:
        async with await publishers.ffmpeg_copy(relay.url("copy"), tone_file) as pub:
            await pub.wait_ok(30)
        stats = await relay.ended("copy")
    sent = media.audio_payloads(tone_file)
    received = media.audio_payloads(tmp_path / "copy.flv")
    assert len(received) == len(sent)
    assert received == sent  # every AAC payload, sequence header included, byte for byte
    _, rate, pcm = wav_info(tmp_path / "copy.wav")
    assert rate == 16000
    assert_tone(pcm, 4.0, 440)
    assert relay.pcm("copy") == pcm  # the app's iterator saw exactly what the file holds
    assert stats["gaps"] == 0 and stats["codecs"] == {"audio": "aac"}
    assert stats["audio_tags"] == len(sent)


async def test_gstreamer_shaped_like_livekit_egress(mode: str, tmp_path: Path) -> None:
    async with Relay(tmp_path, mode=mode) as relay:
        async with await publishers.gst_livekit(relay.url("livekit"), seconds=3, frequency=440) as pub:
            await pub.wait_ok(30)
        stats = await relay.ended("livekit")
    _, _, pcm = wav_info(tmp_path / "livekit.wav")
    assert_tone(pcm, 3.0, 440)
    tags = media.read_tags(tmp_path / "livekit.flv")
    # flvmux sends onMetaData (with a non-zero timestamp) and the AAC config before the frames.
    assert tags[0].type == flv.SCRIPT and tags[0].data[3:13] == b"onMetaData"
    assert flv.is_sequence_header(flv.AUDIO, media.audio_payloads(tags)[0])
    assert stats["publisher"]["flash_ver"]  # what the publisher said it was
    assert stats["gaps"] == 0


async def test_pyav_native_publisher(mode: str, tmp_path: Path) -> None:
    async with Relay(tmp_path, mode=mode) as relay:
        async with await publishers.pyav_tone(relay.url("pyav"), seconds=3, frequency=523.25) as pub:
            await pub.wait_ok(30)
        await relay.ended("pyav")
    _, _, pcm = wav_info(tmp_path / "pyav.wav")
    assert_tone(pcm, 3.0, 523.25)


async def test_timestamps_past_24_bits(mode: str, tmp_path: Path) -> None:
    async with Relay(tmp_path, mode=mode) as relay:
        async with await publishers.ffmpeg_tone(relay.url("late"), seconds=3, ts_offset_s=16777) as pub:
            await pub.wait_ok(30)
        stats = await relay.ended("late")
    frames = [t for t in media.read_tags(tmp_path / "late.flv") if t.type == flv.AUDIO][1:]
    stamps = [t.timestamp for t in frames]
    assert stamps == sorted(stamps)
    assert stamps[0] < 0xFFFFFF < stamps[-1]  # crosses into the extended byte
    assert stamps[-1] - stamps[0] == pytest.approx(3000, abs=100)
    assert stats["last_timestamp"] == stamps[-1]
    _, _, pcm = wav_info(tmp_path / "late.wav")
    assert_tone(pcm, 3.0, 440, tolerance_s=0.15)


async def test_h264_and_aac(mode: str, tmp_path: Path, av_file: Path) -> None:
    async with Relay(tmp_path, consume=frozenset({"audio", "video"}), mode=mode) as relay:
        frames: list = []

        async def take_video() -> None:
            await until(lambda: "av" in relay.streams, 30, "stream av opened at the app")
            async for frame in relay.streams["av"].video():
                frames.append(frame)

        reader = asyncio.create_task(take_video())
        async with await publishers.ffmpeg_copy(relay.url("av"), av_file) as pub:
            await pub.wait_ok(30)
        stats = await relay.ended("av")
        await asyncio.wait_for(reader, 10)
    source = media.read_tags(av_file)
    received = media.read_tags(tmp_path / "av.flv")
    for kind in (flv.AUDIO, flv.VIDEO):
        assert [t.data for t in received if t.type == kind] == [t.data for t in source if t.type == kind]
    assert stats["codecs"] == {"audio": "aac", "video": "h264"}
    assert len(frames) == 75  # 3 s at 25 fps
    assert (frames[0].width, frames[0].height) == (320, 240)
    pts = [f.pts for f in frames]
    assert pts == sorted(pts)
    header = (tmp_path / "av.flv").read_bytes()[:13]
    assert header == flv.file_header(audio=True, video=True)


async def test_two_streams_on_one_link_stay_separate(mode: str, tmp_path: Path) -> None:
    async with Relay(tmp_path, mode=mode) as relay:
        a = await publishers.ffmpeg_tone(relay.url("low"), seconds=3, frequency=330)
        b = await publishers.gst_livekit(relay.url("high"), seconds=3, frequency=880)
        async with a, b:
            await asyncio.gather(a.wait_ok(30), b.wait_ok(30))
        await asyncio.gather(relay.ended("low"), relay.ended("high"))
        assert relay.edge is not None and len(relay.receiver.links) == 1
    for name, freq in (("low", 330), ("high", 880)):
        _, _, pcm = wav_info(tmp_path / f"{name}.wav")
        assert_tone(pcm, 3.0, freq, tolerance_s=0.15)
