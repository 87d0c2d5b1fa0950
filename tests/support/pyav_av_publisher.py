"""PyAV's own FFmpeg publishing video and audio over RTMP, as a child process for the codec matrix.

Run as ``python tests/support/pyav_av_publisher.py`` with one JSON object on stdin (the URL
holds a signed key, so never in argv): ``url``, ``video`` (an encoder name or null),
``audio`` (a list of encoder names: more than one gives Enhanced RTMP v2 multitrack audio,
track N carrying ``frequencies[N]``), ``seconds``, ``fps``, ``size``, and ``realtime``
(pace the frames at their time; otherwise as fast as the server takes them). It prints one
JSON line: the frames and packets it sent, and ``error`` if the server dropped it (then it
exits 1; a publisher kicked out by a takeover ends that way).

A child process, never a thread: PyAV holds the GIL through the RTMP connect, so a server
on the test's own event loop could not answer (see relay_client/publish.py). FFmpeg 8's
FLV muxer writes HEVC, AV1, VP9, Opus, FLAC, AC-3 and E-AC-3 as Enhanced RTMP (FourCC)
tags, and every audio stream after the first as a multitrack OneTrack body.
"""

from __future__ import annotations

import json
import sys
import time
from fractions import Fraction

import av
import numpy as np

# Fast settings: the matrix encodes on a shared 2-core machine. B-frames stay on where the
# encoder has them by default (x265), so the decoder has reordered frames to flush at the end.
_VIDEO_OPTIONS = {
    "libx264": {"preset": "ultrafast", "bf": "2"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libsvtav1": {"preset": "12", "svtav1-params": "lp=1"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}
_AUDIO_RATE = 48000


def _picture(index: int, width: int, height: int) -> av.VideoFrame:
    """A moving gradient, so every frame differs."""
    x = np.arange(width, dtype=np.uint16)[None, :]
    y = np.arange(height, dtype=np.uint16)[:, None]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = (x + 4 * index) & 0xFF
    rgb[..., 1] = (y + 2 * index) & 0xFF
    rgb[..., 2] = (x + y) & 0xFF
    return av.VideoFrame.from_ndarray(rgb, format="rgb24")


def _tone(start: int, count: int, frequency: float) -> av.AudioFrame:
    t = np.arange(start, start + count) / _AUDIO_RATE
    wave = (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
    frame.sample_rate = _AUDIO_RATE
    frame.pts = start
    frame.time_base = Fraction(1, _AUDIO_RATE)
    return frame


def publish(config: dict) -> dict:
    sent: dict = {"video_frames": 0, "video_packets": 0, "audio_packets": [0] * len(config["audio"])}
    try:
        _encode(config, sent)
    except (av.FFmpegError, OSError) as exc:
        sent["error"] = str(exc)
    return sent


def _encode(config: dict, sent: dict) -> None:
    seconds, fps = config["seconds"], config["fps"]
    width, height = config["size"]
    frequencies = config["frequencies"]
    started = time.monotonic()
    with av.open(config["url"], "w", format="flv") as out:
        video = None
        if config["video"]:
            video = out.add_stream(config["video"], rate=fps)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.options = {"g": str(fps), **_VIDEO_OPTIONS.get(config["video"], {})}
        audio = [out.add_stream(name, rate=_AUDIO_RATE, layout="stereo") for name in config["audio"]]
        chunk = _AUDIO_RATE // fps  # audio in step with the video frames
        for index in range(round(seconds * fps)):
            if config.get("realtime"):
                time.sleep(max(0.0, started + index / fps - time.monotonic()))
            if video is not None:
                picture = _picture(index, width, height)
                picture.pts = index
                for packet in video.encode(picture):
                    out.mux(packet)
                    sent["video_packets"] += 1
                sent["video_frames"] += 1
            for track, stream in enumerate(audio):
                for packet in stream.encode(_tone(index * chunk, chunk, frequencies[track])):
                    out.mux(packet)
                    sent["audio_packets"][track] += 1
        for track, stream in enumerate(audio):
            for packet in stream.encode(None):
                out.mux(packet)
                sent["audio_packets"][track] += 1
        if video is not None:
            for packet in video.encode(None):
                out.mux(packet)
                sent["video_packets"] += 1


if __name__ == "__main__":
    result = publish(json.loads(sys.stdin.readline()))
    print(json.dumps(result), flush=True)
    sys.exit(1 if "error" in result else 0)
