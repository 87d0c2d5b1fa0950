"""FLV tags in, decoded audio chunks and video frames out, with PyAV and no probing.

The edge forwards every FLV tag untouched, sequence headers included, so the codec is
known before the first media byte: each decoder builds an ``av.CodecContext`` straight
from the tag bytes (the way aiortc does) instead of letting libavformat probe, which
costs seconds on a live stream (see MEASURED.md). The first raw AAC tag after the
sequence header comes out as audio at once.

One decoder per stream, called from one worker thread: PyAV contexts are not
thread-safe. Bad media never raises: a broken packet is logged (logger
``relay_client.decode``), counted in ``errors`` and skipped, and decoding goes on.
Only programmer misuse (a video tag given to the audio decoder, a bad
:class:`AudioFormat`) raises.

Timestamps are milliseconds on the stream's FLV timeline, as Python ints: no 24- or
32-bit wrapping happens here.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from errno import EAGAIN
from fractions import Fraction
from typing import NamedTuple

import av
import av.filter
import numpy as np

from relay_edge import tagbody
from relay_edge.errors import FLVError
from relay_edge.flv import AUDIO, VIDEO, Tag

__all__ = ["AudioChunk", "AudioDecoder", "AudioFormat", "VideoDecoder"]

log = logging.getLogger("relay_client.decode")

_MS = Fraction(1, 1000)  # FLV time base

# A gap or jump in the input tag timestamps larger than this re-anchors the output
# timeline. FLV rounds to whole ms (<= 1 ms of error) and publishers derive audio
# timestamps from sample counts, so honest streams stay far below it; one dropped AAC
# frame (21-23 ms at 44.1/48 kHz) is above it and gets noticed.
DISCONTINUITY_MS = 15

# Bad packets are logged one by one up to LOG_FIRST_ERRORS, then once every
# LOG_EVERY_ERRORS: a stream of garbage must not flood the app's logs.
LOG_FIRST_ERRORS = 10
LOG_EVERY_ERRORS = 100

# Bound on remembered timeline anchors. Anchors are dropped as soon as the output
# passes them, which is within the resampler's few-ms delay; this only caps memory if
# a broken decoder keeps producing nothing.
_MAX_ANCHORS = 64

_SAMPLE_BYTES = {"s16": 2, "s32": 4, "flt": 4, "dbl": 8}
_LAYOUTS = {1: "mono", 2: "stereo"}
# FFmpeg's packed formats are native-endian; numpy's plain dtypes match that.
_SAMPLE_DTYPES = {"s16": np.int16, "s32": np.int32, "flt": np.float32, "dbl": np.float64}


class _BadMedia(Exception):
    """A tag that can't be decoded; the message says why. Never leaves this module."""


# --- audio -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """The audio the app wants: rate, channel count (layout derived) and packed sample format."""

    sample_rate: int = 16000
    channels: int = 1  # 1 mono, 2 stereo
    format: str = "s16"  # packed (interleaved) PyAV sample format: s16, s32, flt or dbl

    def __post_init__(self) -> None:
        if self.format not in _SAMPLE_BYTES:
            raise ValueError(f"sample format {self.format!r} is not one of {sorted(_SAMPLE_BYTES)}")
        if self.channels not in _LAYOUTS:
            raise ValueError(f"channels must be 1 (mono) or 2 (stereo), got {self.channels}")
        if not 1000 <= self.sample_rate <= 384000:
            raise ValueError(f"sample_rate must be 1000..384000 Hz, got {self.sample_rate}")

    @property
    def layout(self) -> str:
        """The FFmpeg channel layout name, e.g. ``"mono"``."""
        return _LAYOUTS[self.channels]

    @property
    def bytes_per_frame(self) -> int:
        """Bytes per sample frame (one sample of every channel)."""
        return _SAMPLE_BYTES[self.format] * self.channels


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """One resampled piece of audio handed to the app.

    ``timestamp`` is the FLV time (ms) of its first sample; ``data`` is interleaved PCM
    in ``format`` (native endianness).
    """

    timestamp: int
    sample_rate: int
    channels: int
    format: str
    data: bytes

    @property
    def samples(self) -> int:
        """Samples per channel."""
        return len(self.data) // (_SAMPLE_BYTES[self.format] * self.channels)

    @property
    def duration_ms(self) -> float:
        return self.samples * 1000 / self.sample_rate

    def to_ndarray(self) -> np.ndarray:
        """The samples as a ``(samples, channels)`` array (a read-only view of ``data``)."""
        return np.frombuffer(self.data, dtype=_SAMPLE_DTYPES[self.format]).reshape(-1, self.channels)

    def __repr__(self) -> str:  # never dump media bytes into logs
        return (
            f"AudioChunk(timestamp={self.timestamp}, {self.sample_rate} Hz, {self.channels} ch, "
            f"{self.format}, samples={self.samples})"
        )


class _AudioConfig(NamedTuple):
    """How to open a decoder; equal configs (a replayed sequence header) keep the open one."""

    codec: str  # our label, e.g. "pcm_s16le"; also the FFmpeg decoder name
    extradata: bytes = b""
    sample_rate: int = 0  # 0: the decoder finds out from extradata or the bitstream
    channels: int = 0


class _AudioUnit(NamedTuple):
    """What one audio tag asks for: a (re)configuration, a payload to decode, or both."""

    config: _AudioConfig | None  # None: keep the current decoder
    payload: bytes  # b"": nothing to decode
    codec: str | None = None  # the codec the payload needs (checked against the decoder)
    end: bool = False  # enhanced-RTMP SequenceEnd
    lazy: bool = False  # config is a fallback: any open decoder of the same codec will do


# Enhanced RTMP audio codecs (tagbody names are FFmpeg's decoder names). Those without
# a sequence header (MP3, AC-3, E-AC-3) open on their first coded frame.
_AUDIO_NEEDS_HEADER = {"opus", "flac", "aac"}

# Legacy SoundFormat codecs (tagbody names) -> FFmpeg decoder.
_LEGACY_AUDIO_DECODERS = {
    "pcm": "pcm",
    "pcm_le": "pcm",
    "adpcm": "adpcm_swf",
    "mp3": "mp3",
    "mp3_8k": "mp3",
    "nellymoser16": "nellymoser",
    "nellymoser8": "nellymoser",
    "nellymoser": "nellymoser",
    "alaw": "pcm_alaw",
    "mulaw": "pcm_mulaw",
    "speex": "speex",
}
# Codecs with a fixed rate (the rate bits are ignored) and those defined as mono.
_FIXED_RATES = {"nellymoser16": 16000, "nellymoser8": 8000, "alaw": 8000, "mulaw": 8000, "speex": 16000}
_MONO = {"nellymoser16", "nellymoser8", "speex"}


def _legacy_audio_config(codec: str, flags: int) -> _AudioConfig:
    """Decoder settings for a non-AAC legacy audio tag: ``codec`` and its first byte.

    Mirrors libavformat's flvdec: rate index 0..3 is 5512/11025/22050/44100 Hz, and the
    codecs with a fixed rate (Nellymoser 8/16 kHz, G.711, Speex) ignore the rate bits.
    """
    decoder = _LEGACY_AUDIO_DECODERS.get(codec)
    if decoder is None:
        raise _BadMedia(f"unsupported audio SoundFormat {flags >> 4}")
    rate = 44100 << ((flags >> 2) & 3) >> 3
    channels = 2 if flags & 1 else 1
    if decoder == "pcm":
        # "Platform endian" PCM (0) is little-endian in practice: every Flash-era
        # authoring host was x86, and flvdec reads it as s16le too.
        return _AudioConfig("pcm_s16le" if flags & 2 else "pcm_u8", b"", rate, channels)
    if decoder == "mp3":  # the MP3 frame headers carry rate and channels
        return _AudioConfig("mp3", b"", 8000 if codec == "mp3_8k" else 0, 0)
    return _AudioConfig(decoder, b"", _FIXED_RATES.get(codec, rate), 1 if codec in _MONO else channels)


def _parse_audio(data: bytes, track: int = 0) -> _AudioUnit | None:
    """What an audio tag asks of the decoder of ``track``; None if it has nothing for it.

    Raises :class:`_BadMedia`.
    """
    if track == 0 and len(data) > 2 and data[1] == 1 and data[0] >> 4 == tagbody.SOUND_FORMAT_AAC:
        # A raw AAC frame: nearly every audio tag. What tagbody.parse_audio would say, without
        # building its packet list (2 of the ~12 µs Python adds per tag; bench/README.md).
        return _AudioUnit(None, data[2:], "aac")
    try:
        packets = tagbody.parse_audio(data)
    except FLVError as exc:
        raise _BadMedia(str(exc)) from exc
    packet = next((p for p in packets if p.track == track), None)
    if packet is None:
        return None
    codec, kind, payload = packet.codec, packet.kind, packet.payload
    if kind == tagbody.MULTICHANNEL:  # the decoders read channels from the bitstream
        return _AudioUnit(None, b"")
    if kind == tagbody.END:
        return _AudioUnit(None, b"", end=True)
    if not packet.known:
        raise _BadMedia(f"unsupported audio codec {codec!r}")
    if not packet.enhanced and codec != "aac":
        return _AudioUnit(_legacy_audio_config(codec, packet.flags), payload)
    if kind == tagbody.CONFIG:
        if codec in _AUDIO_NEEDS_HEADER and len(payload) < 2:
            raise _BadMedia(f"{codec} sequence header with a {len(payload)}-byte configuration record")
        return _AudioUnit(_AudioConfig(codec, payload), b"")
    if codec in _AUDIO_NEEDS_HEADER:
        return _AudioUnit(None, payload, codec)
    return _AudioUnit(_AudioConfig(codec), payload, codec, lazy=True)


class _Timeline:
    """Gives each output chunk the FLV time of its first sample.

    Positions count output samples. Input frames advance ``in_pos`` and set an anchor
    (position, ms) whenever their own timestamp strays from the running sample count;
    output chunks advance ``out_pos`` and take their time from the last anchor at or
    before it. The resampler's internal delay therefore never shifts the timestamps, and
    a gap in the input shows as a jump at the right sample.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.in_pos = 0.0
        self.out_pos = 0
        self.anchors: deque[tuple[float, int]] = deque(maxlen=_MAX_ANCHORS)

    def feed(self, pts_ms: int | None, samples: int, in_rate: int) -> None:
        """Account for one decoded input frame whose first sample is at ``pts_ms``."""
        if pts_ms is not None:
            anchors = self.anchors
            if not anchors:
                anchors.append((self.in_pos, pts_ms))
            else:
                pos, ms = anchors[-1]
                if abs(pts_ms - ms - (self.in_pos - pos) * 1000 / self.rate) > DISCONTINUITY_MS:
                    if pos == self.in_pos:  # nothing came between: replace, don't stack
                        anchors.pop()
                    anchors.append((self.in_pos, pts_ms))
        self.in_pos += samples * self.rate / in_rate

    def emit(self, samples: int) -> list[tuple[int, int]]:
        """Count the next ``samples`` output samples; returns their ``(timestamp, samples)`` parts.

        Nearly always one part. An anchor falling inside cuts the run in two, so that no
        chunk spans a discontinuity and every chunk's timestamp is exact.
        """
        parts = []
        anchors = self.anchors
        while samples:
            out_pos = self.out_pos
            # An anchor counts from the output sample nearest to it. The same rounding
            # decides both tests below, so a cut is never empty.
            while len(anchors) > 1 and int(anchors[1][0] + 0.5) <= out_pos:
                anchors.popleft()
            pos, ms = anchors[0] if anchors else (out_pos, 0)
            count = samples
            if len(anchors) > 1:
                count = min(count, int(anchors[1][0] + 0.5) - out_pos)
            parts.append((ms + round((out_pos - pos) * 1000 / self.rate), count))
            self.out_pos += count
            samples -= count
        return parts

    def restart(self) -> None:
        """After a resampler flush: what came out is all there is; the next frame anchors anew."""
        self.in_pos = float(self.out_pos)
        self.anchors.clear()


class _Resampler:
    """PyAV's ``AudioResampler`` for one input shape, without its per-call overhead.

    The same filter graph (``abuffer`` -> ``aformat`` -> ``abuffersink``, FFmpeg inserting
    its default ``aresample``) and the same passthrough when the input already is the
    output, so the samples are identical. ``AudioResampler.resample`` pulls until the
    sink raises EAGAIN, an exception PyAV builds for every frame (with two look-ups of
    the sink by type): ~4 µs of the ~15 µs a 44.1 kHz stereo AAC frame takes to become
    16 kHz mono (bench/README.md). Here one frame in is pulled once: ``aresample`` gives
    at most one frame per input frame (none while it primes), so nothing is left behind.
    """

    def __init__(self, out: AudioFormat, layout: str, first: av.AudioFrame) -> None:
        self.passthrough = (
            first.format.name == out.format
            and first.layout.name == layout
            and first.sample_rate == out.sample_rate
        )
        if self.passthrough:
            return
        # Held here: the filter contexts only keep a weak reference to their graph.
        self._graph = graph = av.filter.Graph()
        extra = {} if first.time_base is None else {"time_base": str(first.time_base)}
        self._source = graph.add(
            "abuffer",
            sample_rate=str(first.sample_rate),
            sample_fmt=first.format.name,
            channel_layout=first.layout.name,
            **extra,
        )
        convert = graph.add(
            "aformat", sample_rates=str(out.sample_rate), sample_fmts=out.format, channel_layouts=layout
        )
        self._sink = graph.add("abuffersink")
        self._source.link_to(convert)
        convert.link_to(self._sink)
        graph.configure()

    def resample(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        """The output frame ``frame`` gives (none while the resampler primes)."""
        if self.passthrough:
            return [frame]
        self._source.push(frame)
        try:
            return [self._sink.pull()]
        except av.FFmpegError as exc:
            if exc.errno != EAGAIN:
                raise
            return []

    def flush(self) -> list[av.AudioFrame]:
        """What the resampler still holds (its delay), to the end."""
        if self.passthrough:
            return []
        self._source.push(None)
        frames: list[av.AudioFrame] = []
        while True:
            try:
                frames.append(self._sink.pull())
            except EOFError:
                return frames
            except av.FFmpegError as exc:
                if exc.errno != EAGAIN:
                    raise
                return frames


class AudioDecoder:
    """Decodes the audio tags of one stream into :class:`AudioChunk` in the ``out`` format.

    Handles AAC (configured by its sequence header; a changed header opens a new
    decoder and decoding goes on), MP3, linear PCM, G.711 A-law/µ-law, Nellymoser,
    Speex, ADPCM and the enhanced-RTMP FourCCs Opus, FLAC, AC-3, E-AC-3.
    """

    def __init__(self, out: AudioFormat = AudioFormat(), track: int = 0) -> None:  # frozen: safe default
        self.out = out
        self.track = track  # Enhanced RTMP v2 multitrack: the track decoded; legacy tags are track 0
        self.codec: str | None = None
        self.input_rate: int | None = None
        self.input_channels: int | None = None
        self.frames_decoded = 0
        self.errors = 0
        self._config: _AudioConfig | None = None
        self._ctx: av.AudioCodecContext | None = None
        self._resampler: _Resampler | None = None
        self._resampler_input: tuple[str, str, int] | None = None
        self._timeline = _Timeline(out.sample_rate)
        self._layout = out.layout
        self._frame_bytes = out.bytes_per_frame

    def decode(self, tag: Tag) -> list[AudioChunk]:
        """Decode one audio tag; returns the chunks that became ready (often one, maybe none)."""
        if tag.type != AUDIO:
            raise ValueError(f"AudioDecoder.decode takes audio tags (type {AUDIO}), got type {tag.type}")
        chunks: list[AudioChunk] = []
        try:
            unit = _parse_audio(tag.data, self.track)
            if unit is None:
                return chunks
            config = self._new_config(unit)
            if config is not None:
                chunks += self._drain()
                self._configure(config)
            if unit.payload:
                chunks += self._decode_payload(tag.timestamp, unit.payload, unit.codec)
            elif unit.end:
                chunks += self._drain()
        except _BadMedia as exc:
            self._bad(tag, str(exc))
        return chunks

    def flush(self) -> list[AudioChunk]:
        """Everything still buffered in the decoder and resampler (end of stream).

        The decoder stays usable: a later tag reopens it with the same configuration.
        """
        return self._drain()

    # -- internals --------------------------------------------------------------------

    def _new_config(self, unit: _AudioUnit) -> _AudioConfig | None:
        """The configuration to open a new decoder for, if ``unit`` calls for one."""
        config, current = unit.config, self._config
        if config is None or config == current:
            return None  # equal: e.g. a sequence header the edge replayed on resume
        if unit.lazy and current is not None and current.codec == config.codec:
            return None
        return config

    def _configure(self, config: _AudioConfig) -> None:
        """Open a decoder for ``config`` (the old one is drained already)."""
        self._config = None
        self._ctx = self._open(config)  # raises _BadMedia, leaving no decoder configured
        self._config = config
        self.codec = config.codec
        self.input_rate = self._ctx.sample_rate or None
        self.input_channels = self._ctx.channels or None

    @staticmethod
    def _open(config: _AudioConfig) -> av.AudioCodecContext:
        try:
            ctx = av.CodecContext.create(config.codec, "r")
            if config.sample_rate:
                ctx.sample_rate = config.sample_rate
            if config.channels:
                ctx.layout = _LAYOUTS[config.channels]
            if config.extradata:
                ctx.extradata = config.extradata
            ctx.open()
        except (av.FFmpegError, ValueError) as exc:  # UnknownCodecError is a ValueError
            raise _BadMedia(f"cannot open {config.codec} decoder: {exc}") from exc
        return ctx

    def _decode_payload(self, timestamp: int, payload: bytes, codec: str | None) -> list[AudioChunk]:
        config = self._config
        if config is None or (codec is not None and codec != config.codec):
            raise _BadMedia(f"{codec or 'audio'} frame before its sequence header")
        if self._ctx is None:  # flushed earlier; same configuration, fresh decoder
            self._ctx = self._open(config)
        packet = av.Packet(payload)  # one copy, no numpy
        packet.pts = timestamp
        packet.time_base = _MS
        try:
            frames = self._ctx.decode(packet)
        except av.FFmpegError as exc:
            raise _BadMedia(f"{config.codec} decoder: {exc}") from exc
        chunks: list[AudioChunk] = []
        for i, frame in enumerate(frames):
            pts = frame.pts
            if pts is None and i == 0:
                pts = timestamp
            chunks += self._resample(frame, pts)
        self.frames_decoded += len(frames)
        return chunks

    def _resample(self, frame: av.AudioFrame, pts: int | None) -> list[AudioChunk]:
        chunks: list[AudioChunk] = []
        rate = frame.sample_rate
        source = (frame.format.name, frame.layout.name, rate)
        if source != self._resampler_input:
            # New input shape (first frame, new codec, HE-AAC's implicit SBR): PyAV's
            # resampler is bound to its first frame's shape, so flush it and start over.
            chunks = self._flush_resampler()
            try:
                self._resampler = _Resampler(self.out, self._layout, frame)
            except (av.FFmpegError, ValueError) as exc:
                raise _BadMedia(f"resampler: {exc}") from exc
            self._resampler_input = source
            self.input_rate, self.input_channels = rate, frame.layout.nb_channels
        self._timeline.feed(pts, frame.samples, rate)
        try:
            resampled = self._resampler.resample(frame)
        except (av.FFmpegError, ValueError) as exc:
            raise _BadMedia(f"resampler: {exc}") from exc
        for resampled_frame in resampled:
            chunks += self._chunks(resampled_frame)
        return chunks

    def _chunks(self, frame: av.AudioFrame) -> list[AudioChunk]:
        samples = frame.samples
        # The plane buffer is padded past the last sample: cut at the real size.
        data = bytes(memoryview(frame.planes[0])[: samples * self._frame_bytes])
        out = self.out
        parts = self._timeline.emit(samples)
        if len(parts) == 1:
            return [AudioChunk(parts[0][0], out.sample_rate, out.channels, out.format, data)]
        chunks, start = [], 0
        for timestamp, count in parts:
            end = start + count * self._frame_bytes
            chunks.append(AudioChunk(timestamp, out.sample_rate, out.channels, out.format, data[start:end]))
            start = end
        return chunks

    def _flush_resampler(self) -> list[AudioChunk]:
        if self._resampler is None:
            return []
        try:
            tail = self._resampler.flush()
        except (av.FFmpegError, ValueError) as exc:
            log.warning("resampler flush failed, dropping its last samples: %s", exc)
            tail = []
        chunks = [chunk for frame in tail if frame.samples for chunk in self._chunks(frame)]
        self._resampler = None
        self._resampler_input = None
        self._timeline.restart()
        return chunks

    def _drain(self) -> list[AudioChunk]:
        """Flush decoder and resampler; the configuration stays for a later reopen."""
        chunks: list[AudioChunk] = []
        if self._ctx is not None:
            try:
                frames = self._ctx.decode(None)
            except av.FFmpegError:
                frames = []
            self._ctx = None
            self.frames_decoded += len(frames)
            try:
                for frame in frames:
                    chunks += self._resample(frame, frame.pts)
            except _BadMedia as exc:
                log.warning("dropped the decoder's last frames: %s", exc)
        return chunks + self._flush_resampler()

    def _bad(self, tag: Tag, reason: str) -> None:
        self.errors += 1
        _log_bad("audio", tag, reason, self.errors)


def _log_bad(kind: str, tag: Tag, reason: str, errors: int) -> None:
    if errors <= LOG_FIRST_ERRORS or errors % LOG_EVERY_ERRORS == 0:
        log.warning(
            "skipped bad %s tag at %d ms (%d bytes): %s [%d bad so far]",
            kind,
            tag.timestamp,
            len(tag.data),
            reason,
            errors,
        )


# --- video -------------------------------------------------------------------------

# FFmpeg decoders to try, best first. FFmpeg's native "av1" decoder only drives
# hardware; software AV1 is libdav1d.
_VIDEO_DECODERS = {
    "h264": ("h264",),
    "hevc": ("hevc",),
    "av1": ("libdav1d", "av1"),
    "vp9": ("vp9", "libvpx-vp9"),
    "vp8": ("vp8", "libvpx"),
    "h263": ("flv",),
    "vp6": ("vp6f",),
    "vp6a": ("vp6a",),
    "screen": ("flashsv",),
    "screen2": ("flashsv2",),
}
# These can't decode a frame without the configuration record from SequenceStart.
_VIDEO_NEEDS_HEADER = {"h264", "hevc", "av1"}


class _VideoUnit(NamedTuple):
    kind: str  # "config", "frame", "end" or "skip"
    codec: str = ""
    payload: bytes = b""
    cts: int = 0  # composition time offset, ms (pts = dts + cts)
    keyframe: bool = False


def _parse_video(data: bytes, track: int = 0) -> _VideoUnit:
    """Classify a video tag body for the decoder of ``track``. Raises :class:`_BadMedia`."""
    try:
        packets = tagbody.parse_video(data)
    except FLVError as exc:
        raise _BadMedia(str(exc)) from exc
    packet = next((p for p in packets if p.track == track), None)
    if packet is None or packet.kind not in (tagbody.CONFIG, tagbody.FRAMES, tagbody.END):
        return _VideoUnit("skip")  # another track, Metadata, a command frame
    if not packet.known:
        raise _BadMedia(f"unsupported video codec {packet.codec!r}")
    codec, payload = packet.codec, packet.payload
    if packet.kind == tagbody.CONFIG:
        return _VideoUnit("config", codec, payload)
    if packet.kind == tagbody.END:
        return _VideoUnit("end", codec)
    if codec in ("vp6", "vp6a"):
        # One leading byte of crop adjustment, which flvdec hands the decoder as extradata.
        if len(payload) < 2:
            return _VideoUnit("skip")
        return _VideoUnit("frame", codec, payload[1:], 0, packet.keyframe)
    return _VideoUnit("frame", codec, payload, packet.cts, packet.keyframe)


_decoder_names: dict[str, str | None] = {}


def _decoder_name(codec: str) -> str | None:
    """The first FFmpeg decoder this PyAV build has for ``codec``."""
    if codec not in _decoder_names:
        found = None
        for name in _VIDEO_DECODERS.get(codec, ()):
            try:
                av.Codec(name, "r")
            except ValueError:
                continue
            found = name
            break
        _decoder_names[codec] = found
    return _decoder_names[codec]


class VideoDecoder:
    """Decodes the video tags of one stream into ``av.VideoFrame`` with pts in ms (time base 1/1000).

    H.264 and HEVC (legacy CodecID 7/12 or enhanced FourCC), AV1 and VP9 (enhanced
    FourCC), and the legacy Sorenson H.263, VP6 and Screen Video where this PyAV has
    the decoder. After a (re)configuration, frames are skipped (counted in
    ``skipped``) until the next keyframe: a decoder started mid-GOP would only show
    corrupt pictures. ``pixel_format`` converts every frame, e.g. ``"rgb24"``.
    """

    def __init__(self, pixel_format: str | None = None, track: int = 0) -> None:
        self.track = track  # Enhanced RTMP v2 multitrack: the track decoded; legacy tags are track 0
        if pixel_format is not None:
            av.VideoFormat(pixel_format)  # raises ValueError for an unknown name, now rather than per frame
        self.pixel_format = pixel_format
        self.codec: str | None = None
        self.width: int | None = None
        self.height: int | None = None
        self.frames_decoded = 0
        self.errors = 0
        self.skipped = 0
        self._config: tuple[str, bytes] | None = None  # (codec, extradata)
        self._ctx: av.VideoCodecContext | None = None
        self._need_keyframe = True

    def decode(self, tag: Tag) -> list[av.VideoFrame]:
        """Decode one video tag; returns the frames that became ready, in presentation order."""
        if tag.type != VIDEO:
            raise ValueError(f"VideoDecoder.decode takes video tags (type {VIDEO}), got type {tag.type}")
        frames: list[av.VideoFrame] = []
        try:
            unit = _parse_video(tag.data, self.track)
            if unit.kind == "config":
                frames += self._configure(unit.codec, unit.payload)
            elif unit.kind == "end":
                frames += self._drain()
            elif unit.kind == "frame" and unit.payload:
                if self._config is None or self._config[0] != unit.codec:
                    frames += self._configure_headerless(tag, unit.codec)
                frames += self._decode_frame(tag, unit)
        except _BadMedia as exc:
            self.errors += 1
            _log_bad("video", tag, str(exc), self.errors)
        return frames

    def flush(self) -> list[av.VideoFrame]:
        """Every frame still held for reordering (end of stream). The decoder stays usable."""
        return self._drain()

    def _configure(self, codec: str, extradata: bytes) -> list[av.VideoFrame]:
        """Open a decoder for a new configuration; returns what the old one still held."""
        config = (codec, extradata)
        if config == self._config and self._ctx is not None:
            return []  # the same header again, e.g. replayed by the edge on resume
        frames = self._drain()
        self._config = None
        try:
            self._ctx = self._open(codec, extradata)
        except _BadMedia as exc:
            self.errors += 1
            log.warning("video sequence header rejected: %s [%d bad so far]", exc, self.errors)
            return frames
        self._config = config
        return frames

    def _open(self, codec: str, extradata: bytes) -> av.VideoCodecContext:
        name = _decoder_name(codec)
        if name is None:
            raise _BadMedia(f"this PyAV build has no {codec} decoder")
        try:
            ctx = av.CodecContext.create(name, "r")
            if extradata:
                ctx.extradata = extradata
            # PyAV's default slice threading adds no delay; frame threading would hold
            # back one frame per thread, which a live stream can't afford.
            ctx.open()
        except (av.FFmpegError, ValueError) as exc:
            raise _BadMedia(f"cannot open {name} decoder: {exc}") from exc
        self.codec = codec
        self._need_keyframe = True
        return ctx

    def _configure_headerless(self, tag: Tag, codec: str) -> list[av.VideoFrame]:
        """A frame of a codec the decoder isn't set up for: open it if it needs no header."""
        if codec in _VIDEO_NEEDS_HEADER:
            raise _BadMedia(f"{codec} frame before its sequence header")
        # VP9 may come without SequenceStart; the legacy codecs never have one. VP6's
        # crop byte is its extradata, as in flvdec.
        frames = self._drain()
        extra = tag.data[1:2] if codec in ("vp6", "vp6a") else b""
        self._config = None
        self._ctx = self._open(codec, extra)
        self._config = (codec, extra)
        return frames

    def _decode_frame(self, tag: Tag, unit: _VideoUnit) -> list[av.VideoFrame]:
        if self._ctx is None:  # after a SequenceEnd or flush: same configuration, fresh decoder
            self._ctx = self._open(*self._config)
        if self._need_keyframe:
            if not unit.keyframe:
                self.skipped += 1
                return []
            self._need_keyframe = False
        packet = av.Packet(unit.payload)
        packet.dts = tag.timestamp
        packet.pts = tag.timestamp + unit.cts
        packet.time_base = _MS
        packet.is_keyframe = unit.keyframe
        try:
            return self._finish(self._ctx.decode(packet))
        except av.FFmpegError as exc:
            raise _BadMedia(f"{unit.codec} decoder: {exc}") from exc

    def _finish(self, frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
        for frame in frames:  # frames drained by a flush have no packet to take it from
            frame.time_base = _MS
        if self.pixel_format:
            frames = [
                f if f.format.name == self.pixel_format else f.reformat(format=self.pixel_format)
                for f in frames
            ]
        if frames:
            self.width, self.height = frames[-1].width, frames[-1].height
            self.frames_decoded += len(frames)
        return frames

    def _drain(self) -> list[av.VideoFrame]:
        if self._ctx is None:
            return []
        try:
            frames = self._finish(self._ctx.decode(None))
        except av.FFmpegError as exc:
            log.warning("video decoder flush failed: %s", exc)
            frames = []
        self._ctx = None
        self._need_keyframe = True
        return frames
