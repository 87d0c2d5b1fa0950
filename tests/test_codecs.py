"""The publisher matrix: real programs publish to a real edge, the app decodes, we check it all.

Each publisher sends ~2 s of 320x240 video at 25 fps (where it has video) and a 440 Hz tone.
The app (a Receiver with consume={"audio", "video"}) must report the codec names the
publisher used (by FourCC for Enhanced RTMP), decode every coded video frame the edge
forwarded (the decoders are flushed at the end of the stream), at the published size, and
the tone. Publishers:

- Debian's ffmpeg 5.1: legacy FLV (H.264 + AAC).
- PyAV's FFmpeg 8: Enhanced RTMP v1/v2 (HEVC + Opus, AV1 + FLAC, VP9 + AC-3; and H.264 +
  AAC, which it still writes as legacy FLV), and multitrack audio (v2).
- GStreamer rtmp2sink, shaped like LiveKit egress (AAC).
- librtmp (the RTMP stack OBS grew from): a few lines of C, built here, sending an FLV file.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay_client.decode import AudioFormat
from relay_client.stream import Stream
from relay_client.tone import dominant_frequency
from relay_edge import flv, keys, tagbody
from tests.support import media, publishers
from tests.support.net import LOOPBACK, TcpProxy
from tests.support.raw import RtmpClient
from tests.support.relay import SECRET, Relay, until
from tests.test_resume import App, routed_edge

pytestmark = pytest.mark.slow

SECONDS = 2
FPS = 25
SIZE = (320, 240)
FORMAT = AudioFormat(16000, 1)
PYAV_PUBLISHER = Path(__file__).parent / "support" / "pyav_av_publisher.py"


class MatrixRelay(Relay):
    """A relay whose app reads decoded video and audio (and any audio tracks asked for)."""

    def __init__(self, out_dir: Path, tracks: tuple[int, ...] = (0,)) -> None:
        super().__init__(out_dir, consume=frozenset({"audio", "video"}), audio_format=FORMAT)
        self.tracks = tracks
        self.frames: dict[str, list[Any]] = {}
        self.audio: dict[str, dict[int, bytes]] = {}
        self.done: dict[str, asyncio.Future[None]] = {}

    async def _on_stream(self, stream: Stream) -> None:
        name = stream.info.name
        self.streams[name] = stream
        done = self.done.setdefault(name, asyncio.get_running_loop().create_future())

        async def video() -> None:
            self.frames[name] = [(f.width, f.height, f.pts) async for f in stream.video()]

        async def audio(track: int) -> None:
            self.audio.setdefault(name, {})[track] = b"".join([c.data async for c in stream.audio(track)])

        await asyncio.gather(video(), *(audio(t) for t in self.tracks))
        done.set_result(None)

    async def finished(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        """NAME.json once the app has read everything of ``name``."""
        stats = await self.ended(name, timeout)
        await asyncio.wait_for(asyncio.shield(self.done[name]), timeout)
        return stats


def coded_video_frames(path: Path) -> int:
    """Video tags in NAME.flv that carry a coded frame of track 0: what the app must decode."""
    count = 0
    for tag in media.read_tags(path):
        if tag.type == flv.VIDEO:
            count += sum(p.kind == tagbody.FRAMES and p.track == 0 for p in tagbody.parse_video(tag.data))
    return count


def published_pts(path: Path) -> list[int]:
    """Presentation times (ms: timestamp + composition offset) of the coded track-0 frames in NAME.flv."""
    return [
        tag.timestamp + p.cts
        for tag in media.read_tags(path)
        if tag.type == flv.VIDEO
        for p in tagbody.parse_video(tag.data)
        if p.kind == tagbody.FRAMES and p.track == 0
    ]


def codec_gauge(text: bytes) -> dict[tuple[str, str], float]:
    """The ``*_stream_codecs`` samples of a /metrics page: (track, codec) -> live streams."""
    return {
        (sample.labels["track"], sample.labels["codec"]): sample.value
        for family in text_string_to_metric_families(text.decode())
        if family.name.endswith("_stream_codecs")
        for sample in family.samples
    }


def check_tone(pcm: bytes, seconds: float, frequency: float = 440.0) -> None:
    duration = len(pcm) / 2 / FORMAT.sample_rate
    assert abs(duration - seconds) < 0.15, f"{duration:.3f} s of audio decoded, published {seconds} s"
    assert abs(dominant_frequency(pcm, FORMAT.sample_rate, 1) - frequency) < 2


def check_video(relay: MatrixRelay, name: str, expected_frames: int) -> None:
    frames = relay.frames[name]
    flv_frames = coded_video_frames(relay.out_dir / f"{name}.flv")
    assert flv_frames == expected_frames, f"the edge forwarded {flv_frames} coded frames of {expected_frames}"
    assert len(frames) == expected_frames, f"decoded {len(frames)} of {expected_frames} frames"
    assert {(w, h) for w, h, _ in frames} == {SIZE}
    pts = [p for _, _, p in frames]
    # In presentation order, each at the time its publisher gave it. Not "strictly increasing": a
    # live GStreamer pipeline starved of CPU stamps several frames alike (seen: 50 frames, 26 times).
    published = published_pts(relay.out_dir / f"{name}.flv")
    assert pts == sorted(published), "frames out of order, lost or repeated"
    assert relay.streams[name].stats.decode_errors == 0


async def pyav_publish(
    url: str,
    video: str | None,
    audio: list[str],
    frequencies: list[float],
    seconds: float = SECONDS,
    realtime: bool = False,
    dropped: bool = False,
) -> dict:
    """Run tests/support/pyav_av_publisher.py; the URL goes on stdin (it holds the key).

    ``dropped``: the server is expected to cut this publisher off (exit 1 with an error).
    """
    config = {"url": url, "video": video, "audio": audio, "frequencies": frequencies}
    config |= {"seconds": seconds, "fps": FPS, "size": SIZE, "realtime": realtime}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PYAV_PUBLISHER),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(config).encode() + b"\n"), 120)
    detail = err.decode(errors="replace")[-3000:]
    assert proc.returncode == int(dropped), f"PyAV publisher exited {proc.returncode}:\n{detail}"
    return json.loads(out)


# --- PyAV's FFmpeg: Enhanced RTMP ------------------------------------------------------------

ENHANCED = [
    ("libx264", "aac", "h264", "aac"),
    ("libx265", "libopus", "hevc", "opus"),
    ("libsvtav1", "flac", "av1", "flac"),
    ("libvpx-vp9", "ac3", "vp9", "ac3"),
]


@pytest.mark.parametrize(("encoder", "audio_encoder", "video_codec", "audio_codec"), ENHANCED)
async def test_pyav_ffmpeg_publishes_every_codec_pair(
    tmp_path: Path, encoder: str, audio_encoder: str, video_codec: str, audio_codec: str
) -> None:
    name = f"pyav-{video_codec}"
    async with MatrixRelay(tmp_path) as relay:
        sent = await pyav_publish(relay.url(name), encoder, [audio_encoder], [440.0])
        stats = await relay.finished(name)
    assert relay.streams[name].info.codecs == {"video": video_codec, "audio": audio_codec}
    assert stats["codecs"] == {"video": video_codec, "audio": audio_codec}
    assert sent["video_frames"] == SECONDS * FPS
    check_video(relay, name, SECONDS * FPS)
    check_tone(relay.audio[name][0], SECONDS)


async def test_multitrack_audio_passes_intact_and_each_track_decodes(tmp_path: Path) -> None:
    """PyAV's FFmpeg writes a second audio stream as Enhanced RTMP v2 multitrack (track 1)."""
    name = "multitrack"
    async with MatrixRelay(tmp_path, tracks=(0, 1)) as relay:
        sent = await pyav_publish(relay.url(name), None, ["libopus", "aac"], [440.0, 880.0])
        stats = await relay.finished(name)
    assert stats["codecs"] == {"audio": "opus", "audio.1": "aac"}
    check_tone(relay.audio[name][0], SECONDS, 440.0)
    check_tone(relay.audio[name][1], SECONDS, 880.0)
    # NAME.flv keeps both tracks, every packet the publisher sent.
    per_track = [0, 0]
    for tag in media.read_tags(tmp_path / f"{name}.flv"):
        if tag.type == flv.AUDIO:
            for packet in tagbody.parse_audio(tag.data):
                per_track[packet.track] += packet.kind == tagbody.FRAMES
    assert per_track == sent["audio_packets"]


async def test_takeover_flushes_the_first_publishers_frames(tmp_path: Path) -> None:
    """A second publisher takes the key over mid-stream (HEVC with B-frames): every coded frame
    the edge forwarded from either publisher is decoded, in one stream."""
    name = "takeover"
    async with MatrixRelay(tmp_path) as relay:
        url = relay.url(name)
        first = asyncio.ensure_future(
            pyav_publish(url, "libx265", ["libopus"], [440.0], seconds=10, realtime=True, dropped=True)
        )
        await until(lambda: name in relay.streams and relay.streams[name].stats.video_tags >= 20, 30)
        # While it is live, status and metrics on both sides name the codecs by FourCC.
        codecs = {"video": "hevc", "audio": "opus"}
        assert [s["codecs"] for s in relay.edge.status()["streams"]] == [codecs]
        assert [s["codecs"] for s in relay.receiver.status()["streams"]] == [codecs]
        for metrics in (relay.edge.metrics, relay.receiver.metrics):
            assert codec_gauge(metrics.render()) == {("video", "hevc"): 1, ("audio", "opus"): 1}
        await pyav_publish(url, "libx265", ["libopus"], [440.0], seconds=1)
        kicked = await first
        stats = await relay.finished(name)
    assert kicked["video_frames"] < 10 * FPS and "error" in kicked
    assert stats["publisher_reconnects"] == 1 and stats["streams"] == 1
    check_video(relay, name, coded_video_frames(tmp_path / f"{name}.flv"))
    assert len(relay.frames[name]) > FPS + 20


class TrackApp(App):
    """One app instance with its own disk, reading audio tracks 0 and 1 of its stream."""

    def __init__(self, out: Path) -> None:
        self.pcm: dict[int, bytearray] = {0: bytearray(), 1: bytearray()}
        self.streams: list[Stream] = []
        self.read_all = asyncio.Event()
        super().__init__(out, consume=frozenset({"audio"}), audio_format=FORMAT, on_stream=self._on_stream)

    async def _on_stream(self, stream: Stream) -> None:
        self.streams.append(stream)

        async def read(track: int) -> None:
            async for chunk in stream.audio(track):
                self.pcm[track] += chunk.data

        await asyncio.gather(read(0), read(1))
        self.read_all.set()


async def test_deploy_mid_stream_resumes_opus_and_every_audio_track(tmp_path: Path) -> None:
    """The app is redeployed mid-stream: the new instance starts with the replayed Enhanced RTMP
    SequenceStart of each track (Opus on track 0, AAC on track 1) and decodes both to the end."""
    old = await TrackApp(tmp_path / "old").start()
    router = await TcpProxy(old.port).start()  # the platform's router: one public URL
    edge = routed_edge(router)
    new: TrackApp | None = None
    seconds = 5  # the switch happens after ~1 s: 4 s of margin for a loaded machine
    try:
        await edge.start()
        await until(lambda: bool(edge.links), 5)
        key = keys.mint_key(SECRET, "deploy", ttl=600, now=time.time())
        url = f"rtmp://{LOOPBACK}:{edge.rtmp_port}/live/{key}"
        pub = asyncio.ensure_future(
            pyav_publish(url, None, ["libopus", "aac"], [440.0, 880.0], seconds=seconds, realtime=True)
        )
        await until(lambda: len(old.pcm[1]) > FORMAT.sample_rate * 2, 15)  # 1 s of track 1 there
        new = await TrackApp(tmp_path / "new").start()
        router.target = (LOOPBACK, new.port)
        await old.stop()
        await until(lambda: bool(new and new.receiver.live), 5)
        await pub
        await asyncio.wait_for(new.read_all.wait(), 20)
    finally:
        await edge.stop()
        if new is not None:
            await new.stop()
        await router.close()
    assert new.streams[0].info.resumed and new.streams[0].stats.decode_errors == 0
    for track, frequency in ((0, 440.0), (1, 880.0)):
        before, after = bytes(old.pcm[track]), bytes(new.pcm[track])
        assert len(after) > FORMAT.sample_rate * 2 // 2, f"track {track}: under 0.5 s after the deploy"
        assert abs(dominant_frequency(after, FORMAT.sample_rate, 1) - frequency) < 2
        total = (len(before) + len(after)) / 2 / FORMAT.sample_rate
        assert abs(total - seconds) < 0.2, f"track {track}: {total:.3f} s decoded in all, published {seconds}"


def many_tracks_tags(seconds: float, frequencies: tuple[float, float]) -> list[flv.Tag]:
    """Two Opus tones in ManyTracks bodies, built from the spec: no publisher here writes them.

    PyAV's FFmpeg encodes (its FLV muxer gives one tag per track); we repack each pair of
    frames into one tag: 0x95, ManyTracks | CodedFrames, one FourCC, then per track its id,
    a UI24 size and the body. The SequenceStart uses ManyTracksManyCodecs (a FourCC per track).
    """
    buf = io.BytesIO()
    with av.open(buf, "w", format="flv") as out:
        streams = [out.add_stream("libopus", rate=48000, layout="stereo") for _ in frequencies]
        step = 960
        for start in range(0, round(seconds * 48000), step):
            t = np.arange(start, start + step) / 48000
            for stream, frequency in zip(streams, frequencies, strict=True):
                wave = (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = 48000, start
                out.mux(stream.encode(frame))
        for stream in streams:
            out.mux(stream.encode(None))
    heads: dict[int, bytes] = {}
    frames: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}
    for tag in flv.FlvReader().feed(buf.getvalue()):
        if tag.type == flv.AUDIO:
            for packet in tagbody.parse_audio(tag.data):
                if packet.kind == tagbody.CONFIG:
                    heads[packet.track] = packet.payload
                elif packet.kind == tagbody.FRAMES:
                    frames[packet.track].append((tag.timestamp, packet.payload))

    def track(track_id: int, body: bytes) -> bytes:
        return bytes([track_id]) + len(body).to_bytes(3, "big") + body

    config = b"\x95\x20" + b"".join(b"Opus" + track(n, heads[n]) for n in (0, 1))
    tags = [flv.Tag(flv.AUDIO, 0, config)]
    for (ts, a), (_, b) in zip(frames[0], frames[1], strict=True):
        tags.append(flv.Tag(flv.AUDIO, ts, b"\x95\x11Opus" + track(0, a) + track(1, b)))
    tags.append(flv.Tag(flv.AUDIO, tags[-1].timestamp, b"\x95\x12Opus" + track(0, b"") + track(1, b"")))
    return tags


async def test_many_tracks_bodies_built_from_the_spec_pass_and_decode(tmp_path: Path) -> None:
    """ManyTracks / ManyTracksManyCodecs bodies, sent by our own RTMP client (no real publisher
    here writes them): the edge passes them byte for byte and each track decodes on its own."""
    tags = many_tracks_tags(SECONDS, (440.0, 880.0))
    async with MatrixRelay(tmp_path, tracks=(0, 1)) as relay:
        key = keys.mint_key(SECRET, "many", ttl=600, now=time.time())
        client = await RtmpClient.publish(relay.edge.rtmp_port, key)
        assert client.started, client.codes
        for tag in tags:
            await client.send_media(tag.type, tag.timestamp, tag.data)
        client.session.unpublish()  # FCUnpublish + deleteStream: the stream ends at once
        await client.send_raw(client.session.data_to_send())
        stats = await relay.finished("many")
        client.close()  # only now: a reset would drop what the edge has not read yet
    assert stats["codecs"] == {"audio": "opus", "audio.1": "opus"}
    received = [t.data for t in media.read_tags(tmp_path / "many.flv") if t.type == flv.AUDIO]
    assert received == [t.data for t in tags]
    check_tone(relay.audio["many"][0], SECONDS, 440.0)
    check_tone(relay.audio["many"][1], SECONDS, 880.0)


# --- Debian's ffmpeg 5.1: legacy FLV ---------------------------------------------------------


async def test_debian_ffmpeg_legacy_flv(tmp_path: Path) -> None:
    async with MatrixRelay(tmp_path) as relay:
        async with await publishers.ffmpeg_av(relay.url("ffmpeg"), SECONDS, SIZE, FPS) as pub:
            await pub.wait_ok(30)
        stats = await relay.finished("ffmpeg")
    assert stats["codecs"] == {"video": "h264", "audio": "aac"}
    check_video(relay, "ffmpeg", SECONDS * FPS)
    check_tone(relay.audio["ffmpeg"][0], SECONDS)


# --- GStreamer rtmp2sink, shaped like LiveKit egress -----------------------------------------


async def test_gstreamer_rtmp2sink(tmp_path: Path) -> None:
    """Room Composite egress's audio-only shape (the helper the rest of the suite uses)."""
    async with MatrixRelay(tmp_path) as relay:
        async with await publishers.gst_livekit(relay.url("gst"), SECONDS) as pub:
            await pub.wait_ok(30)
        stats = await relay.finished("gst")
    assert stats["codecs"] == {"audio": "aac"}
    assert relay.frames["gst"] == []
    check_tone(relay.audio["gst"][0], SECONDS)


async def test_gstreamer_rtmp2sink_with_video(tmp_path: Path) -> None:
    """LiveKit egress's video branch: x264enc (zerolatency, no B-frames) and AAC into flvmux."""
    publishers.require_gst_elements("videotestsrc", "x264enc", "h264parse", "voaacenc", "flvmux", "rtmp2sink")
    audio_buffers = SECONDS * publishers.GST_BUFFERS_PER_SECOND
    pipeline = [
        "flvmux", "name=mux", "streamable=true",
        "!", "rtmp2sink", 'location="{url}"', "sync=false", "async=false", "async-connect=false",
        "videotestsrc", "is-live=true", f"num-buffers={SECONDS * FPS}",
        "!", f"video/x-raw,width={SIZE[0]},height={SIZE[1]},framerate={FPS}/1",
        "!", "x264enc", "tune=zerolatency", "speed-preset=veryfast", f"key-int-max={FPS}", "bframes=0",
        "!", "h264parse", "!", "mux.",
        "audiotestsrc", "freq=440", "is-live=true", f"num-buffers={audio_buffers}",
        f"samplesperbuffer={publishers.GST_SAMPLES_PER_BUFFER}",
        "!", "audio/x-raw,rate=44100,channels=2", "!", "voaacenc", "bitrate=128000", "!", "aacparse",
        "!", "mux.",
    ]  # fmt: skip
    async with MatrixRelay(tmp_path) as relay:
        argv = [publishers.GST_LAUNCH, "-e", *(word.format(url=relay.url("gstav")) for word in pipeline)]
        async with await publishers.Publisher.spawn("gst_av", argv) as pub:
            await pub.wait_ok(30)
        stats = await relay.finished("gstav")
    assert stats["codecs"] == {"video": "h264", "audio": "aac"}
    check_video(relay, "gstav", SECONDS * FPS)
    check_tone(relay.audio["gstav"][0], SECONDS)


# --- librtmp ---------------------------------------------------------------------------------

# Publishes an FLV file with librtmp's own write path, one whole tag (header, body, PreviousTagSize)
# per RTMP_Write, as OBS's librtmp output does: RTMP_Write reads a tag header without checking that
# the buffer holds all 11 bytes. Like OBS (obs-outputs rtmp-stream.c, send_packet: FIONREAD, then
# discard_recv_data), it throws away what the server sent before each write: a publisher that never
# reads closes with our Acknowledgement unread, and its kernel then resets the connection, which can
# take the unpublish with it. The URL comes on stdin: it holds the signed key.
LIBRTMP_PUBLISHER = r"""
#include <librtmp/rtmp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void discard_received(RTMP *r) {
    int pending = 0;
    char buf[512];
    while (ioctl(RTMP_Socket(r), FIONREAD, &pending) == 0 && pending > 0)
        if (recv(RTMP_Socket(r), buf, pending > 512 ? 512 : pending, 0) <= 0) return;
}

int main(int argc, char **argv) {
    static char url[4096];
    if (argc != 2 || !fgets(url, sizeof url, stdin)) return 2;
    url[strcspn(url, "\r\n")] = 0;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 3;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    unsigned char *flv = malloc(size);
    if (!flv || fread(flv, 1, size, f) != (size_t)size) return 3;
    RTMP *r = RTMP_Alloc();
    RTMP_Init(r);
    if (!RTMP_SetupURL(r, url)) return 4;
    RTMP_EnableWrite(r);
    if (!RTMP_Connect(r, NULL) || !RTMP_ConnectStream(r, 0)) return 5;
    int tags = 0;
    for (long pos = 13; pos + 11 <= size; tags++) {
        long len = 11 + ((flv[pos + 1] << 16) | (flv[pos + 2] << 8) | flv[pos + 3]) + 4;
        discard_received(r);
        if (pos + len > size || RTMP_Write(r, (char *)flv + pos, (int)len) <= 0) return 6;
        pos += len;
    }
    discard_received(r);
    RTMP_Close(r);
    RTMP_Free(r);
    printf("librtmp %d.%d sent %d tags\n", RTMP_LibVersion() >> 16, (RTMP_LibVersion() >> 8) & 0xff, tags);
    return 0;
}
"""


@pytest.fixture(scope="session")
def librtmp_publisher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C publisher above, compiled against Debian's librtmp-dev (scripts/setup --test)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler: scripts/setup --test installs gcc"
    assert Path("/usr/include/librtmp/rtmp.h").exists(), "librtmp-dev missing: scripts/setup --test"
    build = tmp_path_factory.mktemp("librtmp")
    source, binary = build / "publish.c", build / "publish"
    source.write_text(LIBRTMP_PUBLISHER)
    subprocess.run([cc, "-O1", "-o", str(binary), str(source), "-lrtmp"], check=True, capture_output=True)
    return binary


async def test_librtmp(tmp_path: Path, librtmp_publisher: Path) -> None:
    clip = media.av_flv(tmp_path / "clip.flv", seconds=SECONDS, size=SIZE, fps=FPS, gop=FPS, bframes=2)
    async with MatrixRelay(tmp_path / "out") as relay:
        proc = await asyncio.create_subprocess_exec(
            str(librtmp_publisher),
            str(clip),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(relay.url("librtmp").encode() + b"\n"), 30)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
        stats = await relay.finished("librtmp")
    assert stats["codecs"] == {"video": "h264", "audio": "aac"}
    check_video(relay, "librtmp", SECONDS * FPS)
    check_tone(relay.audio["librtmp"][0], SECONDS)
    # librtmp sends the file's tag bodies unchanged: NAME.flv holds the same media.
    sent = [(t.type, t.data) for t in media.read_tags(clip) if t.type != flv.SCRIPT]
    received = media.read_tags(tmp_path / "out" / "librtmp.flv")
    got = [(t.type, t.data) for t in received if t.type != flv.SCRIPT]
    assert got == sent
