"""The pluggable speech-to-text interface, and a default that writes WAV segments and logs levels.

Plug a real service in by implementing :class:`Transcriber` (see README.md): ``open`` is called
once per stream (one per room with the edge, one per participant track with the Track Egress
fallback) and returns a :class:`TranscriptSink` that gets every piece of 16 kHz mono s16 PCM.
"""

from __future__ import annotations

import logging
import wave
from pathlib import Path
from typing import Any, Protocol

from relay_client.tone import rms_dbfs
from relay_edge.keys import safe_filename

log = logging.getLogger("livekit_transcriber")

SAMPLE_RATE = 16000
CHANNELS = 1
SAMPLE_WIDTH = 2  # s16


class TranscriptSink(Protocol):
    """Receives one stream's audio: 16 kHz mono s16 little-endian PCM, in order."""

    async def feed(self, pcm: bytes, timestamp_ms: int) -> None:
        """A piece of audio; ``timestamp_ms`` is the stream time of its first sample."""

    async def close(self, reason: str) -> None:
        """The stream ended (``reason`` says why): flush and finish."""


class Transcriber(Protocol):
    """Makes one :class:`TranscriptSink` per stream."""

    def open(self, name: str, publisher: dict[str, Any]) -> TranscriptSink:
        """A stream called ``name`` started (``publisher`` says who: participant, track, room...)."""


class WavSegmentTranscriber:
    """The default: ``OUT/NAME-0001.wav``, ``NAME-0002.wav``... of ``segment_seconds`` each.

    It also logs the audio level (RMS dBFS) once per second of audio, so a deploy shows at a glance
    whether sound is arriving. Swap it for a real speech-to-text client (README.md).
    """

    def __init__(self, out_dir: str | Path = "transcripts", segment_seconds: float = 30.0) -> None:
        self.out_dir = Path(out_dir)
        self.segment_seconds = segment_seconds

    def open(self, name: str, publisher: dict[str, Any]) -> WavSegments:
        log.info("transcribing %s (%s)", name, ", ".join(f"{k}={v}" for k, v in publisher.items() if v))
        return WavSegments(self.out_dir, safe_filename(name), self.segment_seconds)


class WavSegments:
    """One stream's WAV segments and level log."""

    def __init__(self, out_dir: Path, base: str, segment_seconds: float) -> None:
        self.out_dir = out_dir
        self.base = base
        self.segment_bytes = max(1, round(segment_seconds * SAMPLE_RATE)) * SAMPLE_WIDTH * CHANNELS
        self.paths: list[Path] = []
        self._wav: wave.Wave_write | None = None
        self._in_segment = 0
        self._level = bytearray()

    async def feed(self, pcm: bytes, timestamp_ms: int) -> None:
        view = memoryview(pcm)
        while view:
            if self._wav is None:
                self._next_segment()
            take = min(len(view), self.segment_bytes - self._in_segment)
            assert self._wav is not None
            self._wav.writeframes(view[:take])
            self._in_segment += take
            view = view[take:]
            if self._in_segment >= self.segment_bytes:
                self._wav.close()
                self._wav = None
        self._level += pcm
        second = SAMPLE_RATE * SAMPLE_WIDTH
        while len(self._level) >= second:
            level = rms_dbfs(bytes(self._level[:second]), CHANNELS)
            log.info("%s: audio level %.1f dBFS at %.1f s", self.base, level, timestamp_ms / 1000)
            del self._level[:second]

    def _next_segment(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{self.base}-{len(self.paths) + 1:04d}.wav"
        wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed when the segment is full
        wav.setnchannels(CHANNELS)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(SAMPLE_RATE)
        self._wav, self._in_segment = wav, 0
        self.paths.append(path)

    async def close(self, reason: str) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None
        log.info("%s ended (%s): %d segment(s) in %s", self.base, reason, len(self.paths), self.out_dir)
