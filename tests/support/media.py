"""Test media, generated with PyAV's encode API (never downloaded), and ways to look inside FLV.

Files are written once per session by the fixtures in ``tests/conftest.py``; every function here takes
the output path and returns it, so benchmarks can call them directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import av
import numpy as np

from relay_client import tone
from relay_client.publish import tone_frames
from relay_edge.flv import AUDIO, FlvReader, Tag, is_sequence_header


def tone_flv(
    path: Path,
    seconds: float = 5,
    frequency: float = 440,
    sample_rate: int = 44100,
    channels: int = 2,
    bitrate: int = 128000,
    codec: str = "aac",
) -> Path:
    """An audio-only FLV file of a sine: AAC-LC (LiveKit's shape) or ``codec="mp3"``.

    MP3 in FLV only allows 11025, 22050 and 44100 Hz.
    """
    encoder = {"aac": "aac", "mp3": "libmp3lame"}[codec]
    with av.open(str(path), "w", format="flv") as out:
        stream = out.add_stream(encoder, rate=sample_rate, layout="stereo" if channels == 2 else "mono")
        stream.bit_rate = bitrate
        for frame in tone_frames(seconds, frequency, sample_rate, channels):
            out.mux(stream.encode(frame))  # PyAV converts and re-chunks (MP3 frames are 1152)
        out.mux(stream.encode(None))
    return Path(path)


def av_flv(
    path: Path,
    seconds: float = 5,
    size: tuple[int, int] = (320, 240),
    fps: int = 25,
    gop: int = 25,
    frequency: float = 440,
    bframes: int = 0,
) -> Path:
    """An FLV file with H.264 (libx264, a moving gradient, keyframe every ``gop`` frames) and AAC audio.

    ``bframes > 0`` gives B-frames, so video tags carry non-zero composition time offsets.
    """
    width, height = size
    with av.open(str(path), "w", format="flv") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "g": str(gop), "bf": str(bframes), "keyint_min": str(gop)}
        audio = out.add_stream("aac", rate=44100, layout="stereo")
        audio.bit_rate = 128000
        frames = (_video_frame(i, width, height) for i in range(round(seconds * fps)))
        for frame in _merge_by_time(frames, tone_frames(seconds, frequency, 44100, 2), fps):
            stream = video if isinstance(frame, av.VideoFrame) else audio
            out.mux(stream.encode(frame))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return Path(path)


def read_tags(path: Path) -> list[Tag]:
    """Every tag of an FLV file, in order, parsed by the project's own :class:`FlvReader`."""
    return FlvReader().feed(Path(path).read_bytes())


def audio_payloads(source: Path | Iterable[Tag]) -> list[bytes]:
    """Bodies of the audio tags (sequence header included), in order, for byte-identity checks."""
    tags = read_tags(source) if isinstance(source, (str, Path)) else source
    return [t.data for t in tags if t.type == AUDIO]


def sequence_header(tags: Iterable[Tag], tag_type: int = AUDIO) -> Tag | None:
    """The first AAC (or AVC, with ``tag_type=VIDEO``) sequence header tag, if any."""
    return next((t for t in tags if t.type == tag_type and is_sequence_header(t.type, t.data)), None)


def media_tags(tags: Iterable[Tag], tag_type: int = AUDIO) -> list[Tag]:
    """The coded frames of one type: sequence headers and script tags left out."""
    return [t for t in tags if t.type == tag_type and not is_sequence_header(t.type, t.data)]


def decode_aac(tags: Sequence[Tag]) -> tuple[np.ndarray, int]:
    """Decode the AAC audio in ``tags`` to mono float32 samples; return ``(samples, sample_rate)``.

    Works the way the client will: a decoder opened from the sequence header's AudioSpecificConfig,
    fed the raw frames, no probing. Channels are averaged.
    """
    header = sequence_header(tags)
    if header is None:
        raise ValueError("no AAC sequence header among the tags")
    codec = av.CodecContext.create("aac", "r")
    codec.extradata = header.data[2:]  # skip SoundFormat byte and AACPacketType 0
    chunks: list[np.ndarray] = []
    for tag in media_tags(tags):
        for frame in codec.decode(av.Packet(tag.data[2:])):
            chunks.append(frame.to_ndarray().reshape(-1, frame.samples).mean(axis=0))
    for frame in codec.decode(None):
        chunks.append(frame.to_ndarray().reshape(-1, frame.samples).mean(axis=0))
    return np.concatenate(chunks).astype(np.float32), codec.sample_rate


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    """:func:`relay_client.tone.dominant_frequency` of :func:`decode_aac`'s mono float samples."""
    return tone.dominant_frequency(samples.astype(np.float32).tobytes(), sample_rate, 1, "flt")


def _video_frame(index: int, width: int, height: int) -> av.VideoFrame:
    """A diagonal gradient that moves one step per frame: cheap, and never a static image."""
    ramp = (np.arange(width)[None, :] + np.arange(height)[:, None] + 4 * index) % 256
    rgb = np.repeat(ramp[:, :, None], 3, axis=2).astype(np.uint8)
    rgb[:, :, 1] = 255 - rgb[:, :, 1]
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    frame.pts = index
    return frame


def _merge_by_time(
    video: Iterable[av.VideoFrame], audio: Iterable[av.AudioFrame], fps: int
) -> Iterable[av.VideoFrame | av.AudioFrame]:
    """Interleave video and audio frames by presentation time, as a live source would."""
    pending = list(audio)
    for frame in video:
        t = frame.pts / fps
        while pending and pending[0].pts / pending[0].sample_rate <= t:
            yield pending.pop(0)
        yield frame
    yield from pending
