"""relay_client.decode: FLV tags made by PyAV's own FLV muxer, decoded without probing."""

from __future__ import annotations

import io
import itertools
import logging
import random
import time
from fractions import Fraction
from functools import cache

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_client.decode import AudioChunk, AudioDecoder, AudioFormat, VideoDecoder, _Timeline
from relay_client.tone import count_silent_gaps, dominant_frequency
from relay_edge.flv import AUDIO, SCRIPT, VIDEO, FlvReader, Tag

AAC_FRAME = 1024  # samples per AAC-LC frame, also the FFmpeg encoder's priming


# --- media made with PyAV's encode API --------------------------------------------------


def _tone_frames(rate: int, layout: str, seconds: float, freq: float):
    """1024-sample s16 frames of a sine; the encoder re-frames them as its codec needs."""
    channels = av.AudioLayout(layout).nb_channels
    total = round(rate * seconds)
    t = np.arange(total) / rate
    wave = np.round(0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    for start in range(0, total, 1024):
        part = wave[start : start + 1024]
        frame = av.AudioFrame.from_ndarray(np.repeat(part, channels)[None, :], format="s16", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        yield frame


def _add_audio(out, codec: str, rate: int, layout: str, bit_rate: int):
    stream = out.add_stream(codec, rate=rate, layout=layout)
    if bit_rate:
        stream.bit_rate = bit_rate
    return stream


@cache
def audio_flv(
    codec: str = "aac",
    rate: int = 44100,
    layout: str = "stereo",
    seconds: float = 1.0,
    freq: float = 440.0,
    bit_rate: int = 128000,
) -> bytes:
    """An FLV file holding one encoded tone."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flv") as out:
        stream = _add_audio(out, codec, rate, layout, bit_rate)
        for frame in _tone_frames(rate, layout, seconds, freq):
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def _gray_frames(count: int, width: int, height: int):
    """Flat frames whose luma tells their index (index * 4 + 16): decoded order is checkable."""
    for index in range(count):
        plane = np.full((height, width), 16 + 4 * index, np.uint8)
        frame = av.VideoFrame.from_ndarray(plane, format="gray")
        frame.pts = index
        yield frame


@cache
def video_flv(
    codec: str = "libx264",
    frames: int = 50,
    width: int = 160,
    height: int = 120,
    with_audio: bool = True,
    options: tuple[tuple[str, str], ...] = (("bf", "2"), ("g", "12"), ("preset", "veryfast")),
) -> bytes:
    """25 fps video (B-frames for x264 by default), muxed with a 440 Hz AAC tone."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flv") as out:
        video = out.add_stream(codec, rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = dict(options)
        audio = _add_audio(out, "aac", 44100, "stereo", 128000) if with_audio else None
        audio_frames = _tone_frames(44100, "stereo", frames / 25, 440.0) if audio else iter(())
        for frame in _gray_frames(frames, width, height):
            out.mux(video.encode(frame.reformat(format="yuv420p")))
            for audio_frame in audio_frames:
                out.mux(audio.encode(audio_frame))
                if audio_frame.pts / 44100 > frame.pts / 25:
                    break
        out.mux(video.encode(None))
        if audio:
            for audio_frame in audio_frames:
                out.mux(audio.encode(audio_frame))
            out.mux(audio.encode(None))
    return buf.getvalue()


def flv_tags(data: bytes, tag_type: int | None = None) -> list[Tag]:
    tags = FlvReader().feed(data)
    return [t for t in tags if tag_type is None or t.type == tag_type]


def decode_all(decoder: AudioDecoder, tags: list[Tag]) -> list[AudioChunk]:
    chunks = []
    for tag in tags:
        chunks += decoder.decode(tag)
    return chunks + decoder.flush()


def pcm(chunks: list[AudioChunk]) -> bytes:
    return b"".join(c.data for c in chunks)


def seconds_of(chunks: list[AudioChunk]) -> float:
    return sum(c.samples for c in chunks) / chunks[0].sample_rate


def jumps(chunks: list[AudioChunk]) -> list[float]:
    """For each consecutive pair: next timestamp minus where the previous chunk ended."""
    return [b.timestamp - (a.timestamp + a.duration_ms) for a, b in itertools.pairwise(chunks)]


def is_raw_aac(tag: Tag) -> bool:
    return tag.type == AUDIO and tag.data[0] >> 4 == 10 and tag.data[1] == 1


# --- AAC, the LiveKit case ---------------------------------------------------------------


def test_aac_44k_stereo_becomes_16k_mono_s16_tone():
    tags = flv_tags(audio_flv(), AUDIO)
    raw = [t for t in tags if is_raw_aac(t)]
    decoder = AudioDecoder()
    chunks = decode_all(decoder, tags)

    assert {(c.sample_rate, c.channels, c.format) for c in chunks} == {(16000, 1, "s16")}
    array = chunks[0].to_ndarray()
    assert array.dtype == np.int16 and array.shape == (chunks[0].samples, 1)
    assert dominant_frequency(pcm(chunks), 16000, 1) == pytest.approx(440, abs=1)
    assert count_silent_gaps(pcm(chunks), 16000, 1) == 0
    # FFmpeg's AAC encoder primes with one frame, and FLV carries no skip info.
    assert seconds_of(chunks) == pytest.approx(1.0 + AAC_FRAME / 44100, abs=AAC_FRAME / 44100)
    assert seconds_of(chunks) == pytest.approx(len(raw) * AAC_FRAME / 44100, abs=0.001)
    assert (decoder.codec, decoder.input_rate, decoder.input_channels) == ("aac", 44100, 2)
    assert (decoder.frames_decoded, decoder.errors) == (len(raw), 0)


def test_aac_chunk_timestamps_are_continuous_and_follow_the_tags():
    tags = flv_tags(audio_flv(), AUDIO)
    chunks = decode_all(AudioDecoder(), tags)
    assert chunks[0].timestamp == 0
    assert all(abs(j) <= 1 for j in jumps(chunks))
    last = [t for t in tags if is_raw_aac(t)][-1]
    end = chunks[-1].timestamp + chunks[-1].duration_ms
    assert end == pytest.approx(last.timestamp + AAC_FRAME * 1000 / 44100, abs=1.5)


def test_first_chunk_comes_out_on_the_first_raw_tag():
    tags = flv_tags(audio_flv(), AUDIO)
    header, first = tags[0], tags[1]
    assert not is_raw_aac(header) and is_raw_aac(first)
    decoder = AudioDecoder()
    assert decoder.decode(header) == []
    started = time.perf_counter()
    chunks = decoder.decode(first)
    elapsed = time.perf_counter() - started
    assert chunks and chunks[0].timestamp == first.timestamp
    assert elapsed < 0.1  # measured ~2 ms; generous for a loaded CI box


@pytest.mark.parametrize(("rate", "layout"), [(48000, "mono"), (8000, "mono"), (22050, "stereo")])
def test_aac_input_rates(rate, layout):
    tags = flv_tags(audio_flv(rate=rate, layout=layout, bit_rate=64000), AUDIO)
    decoder = AudioDecoder()
    chunks = decode_all(decoder, tags)
    assert decoder.input_rate == rate and decoder.errors == 0
    assert dominant_frequency(pcm(chunks), 16000, 1) == pytest.approx(440, abs=1)
    assert seconds_of(chunks) == pytest.approx(1.0 + AAC_FRAME / rate, abs=AAC_FRAME / rate)
    assert all(abs(j) <= 1 for j in jumps(chunks))


@pytest.mark.parametrize(
    ("out", "dtype"),
    [
        (AudioFormat(48000, 2, "flt"), np.float32),
        (AudioFormat(22050, 1, "s32"), np.int32),
        (AudioFormat(44100, 2, "dbl"), np.float64),
    ],
)
def test_other_output_formats(out, dtype):
    chunks = decode_all(AudioDecoder(out), flv_tags(audio_flv(), AUDIO))
    assert {(c.sample_rate, c.channels, c.format) for c in chunks} == {
        (out.sample_rate, out.channels, out.format)
    }
    array = np.concatenate([c.to_ndarray() for c in chunks])
    assert array.dtype == dtype and array.shape[1] == out.channels
    if out.channels == 2:  # the same tone on both channels, give or take AAC's stereo coding
        scale = 1.0 if out.format in ("flt", "dbl") else 2.0**31
        assert np.allclose(array[:, 0] / scale, array[:, 1] / scale, atol=0.01)
    assert dominant_frequency(pcm(chunks), out.sample_rate, out.channels, out.format) == pytest.approx(
        440, abs=1
    )
    assert seconds_of(chunks) == pytest.approx(1.0 + AAC_FRAME / 44100, abs=AAC_FRAME / 44100)
    assert all(abs(j) <= 1 for j in jumps(chunks))


def _reference_pcm(tags: list[Tag], out: AudioFormat) -> list[bytes]:
    """Each output frame of PyAV's own ``AudioResampler``, fed one decoded frame at a time."""
    ctx = av.CodecContext.create("aac", "r")
    ctx.extradata = tags[0].data[2:]
    ctx.open()
    resampler = av.AudioResampler(format=out.format, layout=out.layout, rate=out.sample_rate)
    frames = []
    for tag in tags[1:]:
        packet = av.Packet(tag.data[2:])
        packet.pts, packet.time_base = tag.timestamp, Fraction(1, 1000)
        for frame in ctx.decode(packet):
            frames += resampler.resample(frame)
    for frame in ctx.decode(None):
        frames += resampler.resample(frame)
    frames += resampler.resample(None)
    return [bytes(f.planes[0])[: f.samples * out.bytes_per_frame] for f in frames if f.samples]


@pytest.mark.parametrize(
    ("rate", "layout", "out"),
    [
        (44100, "stereo", AudioFormat()),
        (48000, "mono", AudioFormat()),
        (22050, "stereo", AudioFormat(48000, 2, "flt")),
        (44100, "stereo", AudioFormat(8000, 1, "s32")),
    ],
)
def test_resampled_audio_is_pyavs_audio_resampler_output_exactly(rate, layout, out):
    """The decoder's own filter graph gives PyAV's AudioResampler's samples, frame for frame."""
    tags = flv_tags(audio_flv(rate=rate, layout=layout, seconds=2.0, bit_rate=64000), AUDIO)
    chunks = decode_all(AudioDecoder(out), tags)
    reference = _reference_pcm(tags, out)
    assert [c.data for c in chunks] == reference
    assert len(reference) == len([t for t in tags if is_raw_aac(t)]) + 1  # one per frame, and the tail


def test_sequence_header_change_midstream_keeps_decoding():
    first = flv_tags(audio_flv(seconds=0.5), AUDIO)
    second = flv_tags(audio_flv(rate=48000, layout="mono", seconds=0.5, freq=880.0, bit_rate=64000), AUDIO)
    switch = first[-1].timestamp + 23
    tags = first + [Tag(t.type, t.timestamp + switch, t.data) for t in second]
    decoder = AudioDecoder()
    chunks = decode_all(decoder, tags)

    assert decoder.errors == 0
    assert (decoder.input_rate, decoder.input_channels) == (48000, 1)
    before = [c for c in chunks if c.timestamp < switch - 5]
    after = [c for c in chunks if c.timestamp >= switch]
    assert dominant_frequency(pcm(before), 16000, 1) == pytest.approx(440, abs=1)
    assert dominant_frequency(pcm(after), 16000, 1) == pytest.approx(880, abs=1)
    assert after[0].timestamp == switch
    assert all(abs(j) <= 1.5 for j in jumps(chunks))
    expected = seconds_of(decode_all(AudioDecoder(), first)) + seconds_of(decode_all(AudioDecoder(), second))
    assert seconds_of(chunks) == pytest.approx(expected, abs=0.002)


def test_repeated_identical_sequence_header_changes_nothing():
    """The edge replays sequence headers on resume: the decoder must not restart."""
    tags = flv_tags(audio_flv(), AUDIO)
    header = tags[0]
    replayed = [*tags[:20], header, *tags[20:]]
    assert pcm(decode_all(AudioDecoder(), replayed)) == pcm(decode_all(AudioDecoder(), tags))


def test_timestamps_past_24_bits():
    base = 16_777_000
    tags = [Tag(t.type, t.timestamp + base, t.data) for t in flv_tags(audio_flv(), AUDIO)]
    chunks = decode_all(AudioDecoder(), tags)
    assert chunks[0].timestamp == base
    assert chunks[-1].timestamp > 0xFFFFFF
    assert all(abs(j) <= 1 for j in jumps(chunks))


def test_gap_in_tags_shows_as_one_timestamp_jump():
    tags = flv_tags(audio_flv(), AUDIO)
    dropped = tags[20:25]  # five AAC frames lost upstream: 116 ms
    chunks = decode_all(AudioDecoder(), tags[:20] + tags[25:])
    big = [j for j in jumps(chunks) if abs(j) > 1]
    assert len(big) == 1
    assert big[0] == pytest.approx(len(dropped) * AAC_FRAME * 1000 / 44100, abs=2)
    after = next(c for c in chunks if c.timestamp >= tags[25].timestamp - 1)
    assert after.timestamp == pytest.approx(tags[25].timestamp, abs=1)


def test_timestamps_going_back_reanchor():
    """A publisher that reconnects starts its clock again; chunks follow the tags."""
    tags = flv_tags(audio_flv(), AUDIO)
    restarted = tags + [Tag(t.type, t.timestamp, t.data) for t in tags[1:]]
    chunks = decode_all(AudioDecoder(), restarted)
    backwards = [j for j in jumps(chunks) if j < -1]
    assert len(backwards) == 1
    assert any(c.timestamp == 0 for c in chunks[5:])


# --- bad media ------------------------------------------------------------------------


def test_corrupted_packets_are_counted_and_skipped(caplog):
    tags = flv_tags(audio_flv(), AUDIO)
    rnd = random.Random(7)
    broken = list(tags)
    for index in (5, 15, 25):
        broken[index] = Tag(
            AUDIO, tags[index].timestamp, b"\xaf\x01" + rnd.randbytes(len(tags[index].data) - 2)
        )
    broken[35] = Tag(AUDIO, tags[35].timestamp, tags[35].data[: len(tags[35].data) // 2])
    extra = [b"", b"\xaf", b"\xaf\x07abc", b"\xaf\x00", b"\x9f", b"\x90Bad!\x00\x00"]
    broken[40:40] = [Tag(AUDIO, tags[40].timestamp, body) for body in extra]

    decoder = AudioDecoder()
    with caplog.at_level(logging.WARNING, logger="relay_client.decode"):
        chunks = decode_all(decoder, broken)
    assert decoder.errors == 4 + len(extra)
    assert decoder.frames_decoded == sum(map(is_raw_aac, tags)) - 4
    assert "skipped bad audio tag" in caplog.text
    tail = [c for c in chunks if c.timestamp > tags[41].timestamp]
    assert dominant_frequency(pcm(tail), 16000, 1) == pytest.approx(440, abs=1)
    # Each lost frame shows as a timestamp jump of one frame, not as drift.
    last = [t for t in tags if is_raw_aac(t)][-1]
    end = chunks[-1].timestamp + chunks[-1].duration_ms
    assert end == pytest.approx(last.timestamp + AAC_FRAME * 1000 / 44100, abs=1.5)


def test_frames_before_any_sequence_header_are_errors_then_decoding_starts():
    tags = flv_tags(audio_flv(), AUDIO)
    header, raw = tags[0], tags[1:]
    decoder = AudioDecoder()
    assert decode_all(decoder, raw[:3]) == []
    assert decoder.errors == 3
    assert decoder.decode(Tag(AUDIO, 0, b"\xaf\x00\xff\xff")) == []  # an invalid AudioSpecificConfig
    assert decoder.errors == 4
    chunks = decode_all(decoder, [header, *raw[3:]])
    assert decoder.errors == 4
    assert chunks[0].timestamp == raw[3].timestamp
    assert dominant_frequency(pcm(chunks), 16000, 1) == pytest.approx(440, abs=1)


def test_misuse_raises():
    with pytest.raises(ValueError, match="audio tags"):
        AudioDecoder().decode(Tag(VIDEO, 0, b"\x17\x00"))
    with pytest.raises(ValueError, match="video tags"):
        VideoDecoder().decode(Tag(SCRIPT, 0, b"\x02"))
    with pytest.raises(ValueError):
        AudioFormat(format="fltp")
    with pytest.raises(ValueError, match="mono"):
        AudioFormat(channels=6)
    with pytest.raises(ValueError):
        AudioFormat(sample_rate=0)
    with pytest.raises(ValueError):
        VideoDecoder(pixel_format="no-such-format")


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_audio_bodies_never_raise(bodies):
    tags = flv_tags(audio_flv(), AUDIO)
    decoder = AudioDecoder()
    decoder.decode(tags[0])
    for body in bodies:
        assert isinstance(decoder.decode(Tag(AUDIO, 0, body)), list)
    decoder.decode(tags[1])
    decoder.flush()


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_video_bodies_never_raise(bodies):
    tags = flv_tags(video_flv(), VIDEO)
    decoder = VideoDecoder()
    decoder.decode(tags[0])
    for body in bodies:
        assert isinstance(decoder.decode(Tag(VIDEO, 0, body)), list)
    decoder.flush()


# --- other audio codecs ---------------------------------------------------------------


def test_mp3():
    tags = flv_tags(audio_flv("libmp3lame"), AUDIO)
    decoder = AudioDecoder()
    chunks = decode_all(decoder, tags)
    assert (decoder.codec, decoder.input_rate, decoder.input_channels, decoder.errors) == ("mp3", 44100, 2, 0)
    assert dominant_frequency(pcm(chunks), 16000, 1) == pytest.approx(440, abs=1)
    # LAME's priming and padding: at most two 1152-sample frames beyond the source.
    assert 1.0 <= seconds_of(chunks) <= 1.0 + 2 * 1152 / 44100
    assert all(abs(j) <= 1 for j in jumps(chunks))


@pytest.mark.parametrize(
    ("codec", "rate", "layout", "label", "frame"),
    [  # frame: samples per coded frame, the most framing and priming may add
        ("pcm_s16le", 44100, "mono", "pcm_s16le", 1024),
        ("pcm_u8", 22050, "stereo", "pcm_u8", 1024),
        ("pcm_alaw", 8000, "mono", "pcm_alaw", 1024),
        ("pcm_mulaw", 8000, "mono", "pcm_mulaw", 1024),
        ("nellymoser", 16000, "mono", "nellymoser", 256),
        ("nellymoser", 8000, "mono", "nellymoser", 256),
        ("nellymoser", 22050, "mono", "nellymoser", 256),
        ("adpcm_swf", 22050, "mono", "adpcm_swf", 4096),
        ("libopus", 48000, "stereo", "opus", 960),
        ("flac", 48000, "stereo", "flac", 4608),
        ("ac3", 48000, "stereo", "ac3", 1536),
        ("eac3", 48000, "stereo", "eac3", 1536),
        ("libmp3lame", 44100, "stereo", "mp3", 1152),
    ],
)
def test_legacy_and_enhanced_audio_codecs(codec, rate, layout, label, frame):
    tags = flv_tags(audio_flv(codec, rate, layout, bit_rate=0 if codec.startswith("pcm") else 64000), AUDIO)
    decoder = AudioDecoder()
    chunks = decode_all(decoder, tags)
    assert (decoder.codec, decoder.input_rate, decoder.errors) == (label, rate, 0)
    assert decoder.input_channels == av.AudioLayout(layout).nb_channels
    assert dominant_frequency(pcm(chunks), 16000, 1) == pytest.approx(440, abs=1)
    assert 1.0 - 0.001 <= seconds_of(chunks) <= 1.0 + 2 * frame / rate
    assert all(abs(j) <= 1 for j in jumps(chunks))


def test_headerless_enhanced_codec_keeps_one_decoder():
    """AC-3 needs no configuration: a SequenceStart with a body must not reopen it per frame."""
    tags = flv_tags(audio_flv("ac3", 48000, "stereo", bit_rate=64000), AUDIO)
    start = next(i for i, t in enumerate(tags) if t.data[0] & 0x0F == 0)
    header = Tag(AUDIO, tags[start].timestamp, tags[start].data[:5] + b"\x00\x01")
    odd = [*tags[:start], header, *tags[start + 1 : 15], header, *tags[15:]]  # replayed mid-stream
    decoder = AudioDecoder()
    assert pcm(decode_all(decoder, odd)) == pcm(decode_all(AudioDecoder(), tags))
    assert decoder.errors == 0


def test_pcm_passthrough_is_bit_exact():
    """Hand-made SoundFormat 3 tags, already in the output format: bytes must come back as sent."""
    rnd = np.random.default_rng(3)
    source = rnd.integers(-30000, 30000, size=44100, dtype=np.int16).tobytes()
    tags = [
        Tag(AUDIO, i * 1000 // 44100, b"\x3e" + source[i * 2 : (i + 882) * 2]) for i in range(0, 44100, 882)
    ]
    chunks = decode_all(AudioDecoder(AudioFormat(44100, 1, "s16")), tags)
    assert pcm(chunks) == source
    assert [c.timestamp for c in chunks] == [t.timestamp for t in tags]


# --- video ----------------------------------------------------------------------------


def _index_of(frame: av.VideoFrame) -> int:
    return round((float(frame.to_ndarray(format="gray").mean()) - 16) / 4)


def test_h264_with_b_frames_and_aac():
    data = video_flv()
    video_tags = flv_tags(data, VIDEO)
    ctss = [int.from_bytes(t.data[2:5], "big", signed=True) for t in video_tags if t.data[1] == 1]
    assert any(ctss), "the encoder should have made B-frames"

    decoder = VideoDecoder()
    frames = [f for tag in video_tags for f in decoder.decode(tag)]
    assert decoder.flush() == []  # the FLV's end-of-sequence tag already drained the decoder
    assert len(frames) == 50 == decoder.frames_decoded
    assert {(f.width, f.height) for f in frames} == {(160, 120)}
    assert (decoder.codec, decoder.width, decoder.height, decoder.errors) == ("h264", 160, 120, 0)
    pts = [f.pts for f in frames]
    assert pts == sorted(set(pts))
    # Presentation order: frame i shows picture i, at the first pts plus 40 ms per frame.
    assert [_index_of(f) for f in frames] == list(range(50))
    assert pts == [pts[0] + 40 * i for i in range(50)]
    assert all(f.time_base == Fraction(1, 1000) for f in frames)

    audio = decode_all(AudioDecoder(), flv_tags(data, AUDIO))
    assert dominant_frequency(pcm(audio), 16000, 1) == pytest.approx(440, abs=1)


def test_pixel_format_conversion_keeps_pts():
    decoder = VideoDecoder(pixel_format="rgb24")
    frames = [f for tag in flv_tags(video_flv(), VIDEO) for f in decoder.decode(tag)]
    assert len(frames) == 50 and {f.format.name for f in frames} == {"rgb24"}
    assert [f.pts for f in frames] == sorted(f.pts for f in frames)
    assert frames[0].to_ndarray().shape == (120, 160, 3)


def test_video_waits_for_a_keyframe_after_joining_mid_gop():
    tags = flv_tags(video_flv(), VIDEO)
    header, coded = tags[0], tags[1:-1]
    keys = [i for i, t in enumerate(coded) if t.data[0] >> 4 == 1]
    start = keys[1] - 5
    decoder = VideoDecoder()
    frames = [f for tag in [header, *coded[start:]] for f in decoder.decode(tag)] + decoder.flush()
    assert decoder.skipped == 5
    assert len(frames) == len(coded) - keys[1]
    assert decoder.errors == 0


def test_video_frames_before_the_header_are_errors():
    tags = flv_tags(video_flv(), VIDEO)
    decoder = VideoDecoder()
    assert [f for tag in tags[1:4] for f in decoder.decode(tag)] == []
    assert decoder.errors == 3


def test_corrupted_video_is_skipped_until_decoding_recovers():
    tags = flv_tags(video_flv(), VIDEO)
    rnd = random.Random(5)
    broken = list(tags)
    for index in (3, 4, 5):
        tag = tags[index]
        broken[index] = Tag(VIDEO, tag.timestamp, tag.data[:5] + rnd.randbytes(len(tag.data) - 5))
    broken[8:8] = [
        Tag(VIDEO, 0, b"\x17\x01"),
        Tag(VIDEO, 0, b"\x1f\x01\x00\x00\x00x"),
        Tag(VIDEO, 0, b"\x97ab"),
    ]
    decoder = VideoDecoder()
    frames = [f for tag in broken for f in decoder.decode(tag)] + decoder.flush()
    assert decoder.errors >= 3
    # Everything from the second keyframe on decodes cleanly.
    keys = [t for t in tags[1:] if t.data[0] >> 4 == 1]
    second_key_pts = keys[1].timestamp + int.from_bytes(keys[1].data[2:5], "big", signed=True)
    later = [_index_of(f) for f in frames if f.pts >= second_key_pts]
    assert later == list(range(12, 50))


def test_replayed_video_header_does_not_restart():
    tags = flv_tags(video_flv(), VIDEO)
    replayed = [*tags[:10], tags[0], *tags[10:]]
    decoder = VideoDecoder()
    frames = [f for tag in replayed for f in decoder.decode(tag)]
    assert len(frames) == 50 and decoder.skipped == 0


@pytest.mark.parametrize(
    ("encoder", "codec", "options"),
    [
        ("libx265", "hevc", (("x265-params", "log-level=none:bframes=2"),)),
        ("libvpx-vp9", "vp9", (("deadline", "realtime"),)),
        ("libsvtav1", "av1", (("preset", "12"),)),
        ("flv", "h263", ()),
    ],
)
def test_other_video_codecs(encoder, codec, options):
    try:
        av.Codec(encoder, "w")
    except ValueError:
        pytest.skip(f"this PyAV has no {encoder}")
    tags = flv_tags(video_flv(encoder, frames=12, with_audio=False, options=options), VIDEO)
    decoder = VideoDecoder()
    frames = [f for tag in tags for f in decoder.decode(tag)] + decoder.flush()
    assert (decoder.codec, decoder.errors) == (codec, 0)
    assert len(frames) == 12 and {(f.width, f.height) for f in frames} == {(160, 120)}
    assert [_index_of(f) for f in frames] == list(range(12))
    assert [f.pts for f in frames] == sorted({f.pts for f in frames})


# --- the output timeline --------------------------------------------------------------


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("feed"), st.none() | st.integers(0, 10**10), st.integers(1, 4096)),
            st.tuples(st.just("emit"), st.integers(1, 4096), st.just(0)),
        ),
        max_size=40,
    ),
    in_rate=st.sampled_from([8000, 11025, 22050, 44100, 48000]),
)
def test_timeline_emits_every_sample_in_non_empty_parts(steps, in_rate):
    timeline = _Timeline(16000)
    for op, a, b in steps:
        if op == "feed":
            timeline.feed(a, b, in_rate)
        else:
            parts = timeline.emit(a)
            assert all(count > 0 for _, count in parts) and sum(count for _, count in parts) == a


def test_timeline_cuts_at_a_discontinuity():
    timeline = _Timeline(1000)  # 1 sample per ms keeps the arithmetic visible
    timeline.feed(5000, 100, 1000)
    timeline.feed(5100, 100, 1000)  # continuous: no new anchor
    timeline.feed(9000, 100, 1000)  # a jump of 3800 ms at sample 200
    assert len(timeline.anchors) == 2
    assert timeline.emit(150) == [(5000, 150)]
    assert timeline.emit(100) == [(5150, 50), (9000, 50)]
    assert timeline.emit(50) == [(9050, 50)]


# --- Enhanced RTMP v2 multitrack ----------------------------------------------------


@cache
def multitrack_flv(codec: str, freqs: tuple[float, ...], seconds: float = 1.0) -> bytes:
    """One FLV with an audio stream per frequency. FFmpeg 8's muxer writes stream 0 as a plain
    enhanced (or legacy AAC) track and every later one as a multitrack OneTrack body, track N."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flv") as out:
        streams = [_add_audio(out, codec, 48000, "stereo", 0) for _ in freqs]
        sources = [_tone_frames(48000, "stereo", seconds, f) for f in freqs]
        for frames in zip(*sources, strict=True):
            for stream, frame in zip(streams, frames, strict=True):
                out.mux(stream.encode(frame))
        for stream in streams:
            out.mux(stream.encode(None))
    return buf.getvalue()


@pytest.mark.parametrize("codec", ["aac", "libopus"])
def test_each_multitrack_audio_track_decodes_on_its_own(codec):
    tags = flv_tags(multitrack_flv(codec, (440.0, 660.0, 880.0)), AUDIO)
    assert sum(t.data[0] == 0x95 for t in tags) > len(tags) // 2, "FFmpeg wrote no multitrack bodies"
    for track, freq in enumerate((440.0, 660.0, 880.0)):
        decoder = AudioDecoder(AudioFormat(16000, 1), track=track)
        chunks = decode_all(decoder, tags)
        assert decoder.errors == 0
        assert decoder.codec == ("aac" if codec == "aac" else "opus")
        assert abs(seconds_of(chunks) - 1.0) < 0.05
        assert abs(dominant_frequency(pcm(chunks), 16000, 1) - freq) < 2
