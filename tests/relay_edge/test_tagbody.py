"""relay_edge.tagbody: legacy and Enhanced RTMP (v1, v2) audio/video tag bodies.

Cases are built byte by byte from the spec (veovera enhanced-rtmp v2, "Enhanced Audio",
"Enhanced Video", "Multitrack"); the first bytes of the PyAV/FFmpeg 8 cases are what its
FLV muxer wrote (checked with tests/test_codecs.py's publisher). Every truncation of a
valid body either parses or raises FLVError, never anything else.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay_edge import flv, tagbody
from relay_edge.errors import FLVError
from relay_edge.tagbody import CONFIG, END, FRAMES, METADATA, MULTICHANNEL, parse_audio, parse_video

OPUS_HEAD = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


# (body, [(codec, kind, payload, track)]) for audio.
AUDIO_CASES = [
    (b"\xaf\x00\x12\x10", [("aac", CONFIG, b"\x12\x10", 0)]),
    (b"\xaf\x01abc", [("aac", FRAMES, b"abc", 0)]),
    (b"\x2fmp3", [("mp3", FRAMES, b"mp3", 0)]),
    (b"\x72g711", [("alaw", FRAMES, b"g711", 0)]),
    # FFmpeg 8: Opus SequenceStart (0x90), MultichannelConfig (0x94), CodedFrames (0x91).
    (b"\x90Opus" + OPUS_HEAD, [("opus", CONFIG, OPUS_HEAD, 0)]),
    (b"\x94Opus\x01\x02\x00\x00\x00\x03", [("opus", MULTICHANNEL, b"\x01\x02\x00\x00\x00\x03", 0)]),
    (b"\x91Opus\xfc\xff\xfe", [("opus", FRAMES, b"\xfc\xff\xfe", 0)]),
    (b"\x90fLaC\x00\x00\x00\x22", [("flac", CONFIG, b"\x00\x00\x00\x22", 0)]),
    (b"\x90ac-3", [("ac3", CONFIG, b"", 0)]),
    (b"\x91ec-3\x0b\x77", [("eac3", FRAMES, b"\x0b\x77", 0)]),
    (b"\x91.mp3\xff\xfb", [("mp3", FRAMES, b"\xff\xfb", 0)]),
    (b"\x90mp4a\x12\x10", [("aac", CONFIG, b"\x12\x10", 0)]),
    (b"\x92Opus", [("opus", END, b"", 0)]),
    # Multitrack OneTrack (what FFmpeg 8 writes for its second audio stream): 0x95, then
    # type<<4 | packet type, FourCC, track id, body.
    (b"\x95\x00mp4a\x01\x11\x90", [("aac", CONFIG, b"\x11\x90", 1)]),
    (b"\x95\x01Opus\x02\xfc\xff", [("opus", FRAMES, b"\xfc\xff", 2)]),
    # ManyTracks: one FourCC, then per track id + UI24 size + body.
    (
        b"\x95\x11Opus" + b"\x00" + u24(2) + b"AA" + b"\x01" + u24(3) + b"BBB",
        [("opus", FRAMES, b"AA", 0), ("opus", FRAMES, b"BBB", 1)],
    ),
    # ManyTracksManyCodecs: FourCC per track.
    (
        b"\x95\x21" + b"Opus\x00" + u24(1) + b"A" + b"mp4a\x01" + u24(2) + b"BB",
        [("opus", FRAMES, b"A", 0), ("aac", FRAMES, b"BB", 1)],
    ),
    # ModEx (TimestampOffsetNano, 3 bytes): size-1, data, then modExType<<4 | packet type.
    (b"\x97\x02\x00\x01\x00\x01Opus\xfc", [("opus", FRAMES, b"\xfc", 0)]),
    # An unknown FourCC passes, named by its text.
    (b"\x91zzzz\x01", [("zzzz", FRAMES, b"\x01", 0)]),
]

VIDEO_CASES = [
    (b"\x17\x00\x00\x00\x00\x01\x64", [("h264", CONFIG, b"\x01\x64", 0, 0, True)]),
    (b"\x27\x01\x00\x00\x50frame", [("h264", FRAMES, b"frame", 0, 80, False)]),
    (b"\x1c\x01\xff\xff\xd8nal", [("hevc", FRAMES, b"nal", 0, -40, True)]),
    (b"\x17\x02\x00\x00\x00", [("h264", END, b"", 0, 0, True)]),
    (b"\x22h263", [("h263", FRAMES, b"h263", 0, 0, False)]),
    # FFmpeg 8: hvc1 SequenceStart (0x90), CodedFrames with SI24 cts (0x91/0xa1).
    (b"\x90hvc1\x01\x01\x60", [("hevc", CONFIG, b"\x01\x01\x60", 0, 0, True)]),
    (b"\x91hvc1\x00\x00\x50nal", [("hevc", FRAMES, b"nal", 0, 80, True)]),
    (b"\xa1hvc1\xff\xff\xffnal", [("hevc", FRAMES, b"nal", 0, -1, False)]),
    (b"\xb3avc1nal", [("h264", FRAMES, b"nal", 0, 0, False)]),  # CodedFramesX: cts 0
    (b"\x91av01\x12\x00", [("av1", FRAMES, b"\x12\x00", 0, 0, True)]),  # no cts for AV1
    (b"\xa1vp09\x82\x49", [("vp9", FRAMES, b"\x82\x49", 0, 0, False)]),
    (b"\x92av01", [("av1", END, b"", 0, 0, True)]),
    # Metadata with FrameType Command (0xd4), as FFmpeg writes colorInfo: FourCC, AMF.
    (b"\xd4vp09\x02\x00\x09colorInfo", [("vp9", METADATA, b"\x02\x00\x09colorInfo", 0, 0, False)]),
    # Multitrack ManyTracks CodedFrames of avc1: cts inside each track's sized body.
    (
        b"\x96\x11avc1" + b"\x00" + u24(5) + b"\x00\x00\x28AB" + b"\x01" + u24(4) + b"\x00\x00\x00C",
        [("h264", FRAMES, b"AB", 0, 40, True), ("h264", FRAMES, b"C", 1, 0, True)],
    ),
    (b"\x96\x00av01\x01\x0a\x0b", [("av1", CONFIG, b"\x0a\x0b", 1, 0, True)]),
    # ModEx with a 256+ byte form: UI8 255 -> UI16 size follows.
    (
        b"\x97\xff\x01\x00" + bytes(257) + b"\x03av01\x12",
        [("av1", FRAMES, b"\x12", 0, 0, True)],
    ),
]


@pytest.mark.parametrize(("body", "expected"), AUDIO_CASES)
def test_audio_bodies(body: bytes, expected: list[tuple[str, str, bytes, int]]) -> None:
    packets = parse_audio(body)
    assert [(p.codec, p.kind, p.payload, p.track) for p in packets] == expected
    assert all(p.enhanced == (body[0] >> 4 == 9) for p in packets)


@pytest.mark.parametrize(("body", "expected"), VIDEO_CASES)
def test_video_bodies(body: bytes, expected: list[tuple[str, str, bytes, int, int, bool]]) -> None:
    packets = parse_video(body)
    assert [(p.codec, p.kind, p.payload, p.track, p.cts, p.keyframe) for p in packets] == expected


@pytest.mark.parametrize(
    ("parse", "body", "message"),
    [
        (parse_audio, b"", "empty audio tag body"),
        (parse_audio, b"\xaf", "has no AACPacketType"),
        (parse_audio, b"\xaf\x02", "unknown AACPacketType 2"),
        (parse_audio, b"\x90Op", "ends inside its FourCC"),
        (parse_audio, b"\x93Opus", "unknown AudioPacketType 3"),
        (parse_audio, b"\x95\x31Opus", "unknown AvMultitrackType 3"),
        (parse_audio, b"\x95\x05Opus", "nested in a multitrack"),
        (parse_audio, b"\x95\x11Opus\x00" + u24(9) + b"AB", "track 0 declares 9 bytes, the tag has 2"),
        (parse_audio, b"\x97\x05\x00", "ends inside its ModEx data"),
        (parse_video, b"", "empty video tag body"),
        (parse_video, b"\x17\x00\x00", "shorter than its 5-byte header"),
        (parse_video, b"\x17\x03\x00\x00\x00", "unknown AVCPacketType 3"),
        (parse_video, b"\x98hvc1", "unknown VideoPacketType 8"),
        (parse_video, b"\x91hvc1\x00", "hevc CodedFrames of track 0 has no composition time"),
        (parse_video, b"\x96\x11avc1\x00" + u24(2) + b"\x00\x00", "has no composition time"),
    ],
)
def test_malformed_bodies_name_the_problem(parse: object, body: bytes, message: str) -> None:
    with pytest.raises(FLVError, match=message):
        parse(body)  # type: ignore[operator]


@pytest.mark.parametrize(("body", "_"), AUDIO_CASES)
def test_audio_truncations_parse_or_raise_flv_error(body: bytes, _: object) -> None:
    for end in range(len(body)):
        with contextlib.suppress(FLVError):
            parse_audio(body[:end])


@pytest.mark.parametrize(("body", "_"), VIDEO_CASES)
def test_video_truncations_parse_or_raise_flv_error(body: bytes, _: object) -> None:
    for end in range(len(body)):
        with contextlib.suppress(FLVError):
            parse_video(body[:end])


@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_flv_error(data: bytes) -> None:
    for parse in (parse_audio, parse_video):
        try:
            packets = parse(data)
        except FLVError:
            continue
        assert packets and all(isinstance(p.codec, str) for p in packets)


def test_sequence_keys_name_one_replay_slot_per_track() -> None:
    """The edge keeps the last SequenceStart of each track to replay on a resume."""
    keys = {
        (flv.AUDIO, b"\xaf\x00\x12\x10"): "audio",
        (flv.AUDIO, b"\xaf\x01\x00"): None,
        (flv.AUDIO, b"\x90Opus" + OPUS_HEAD): "audio",
        (flv.AUDIO, b"\x94Opus\x01\x02"): None,  # MultichannelConfig is not a SequenceStart
        (flv.AUDIO, b"\x95\x00mp4a\x01\x11\x90"): "audio.1",
        (flv.AUDIO, b"\x95\x01mp4a\x01\x11\x90"): None,
        (flv.AUDIO, b"\x95\x10Opus\x00" + u24(1) + b"A\x02" + u24(1) + b"B"): "audio.0.2",
        (flv.AUDIO, b"\x97\x02\x00\x01\x00\x00Opus" + OPUS_HEAD): "audio",  # behind a ModEx
        (flv.VIDEO, b"\x17\x00\x00\x00\x00\x01"): "video",
        (flv.VIDEO, b"\x57\x00"): None,  # legacy command frame, not a header
        (flv.VIDEO, b"\x90av01\x81"): "video",
        (flv.VIDEO, b"\xd4av01\x02"): None,  # Metadata
        (flv.VIDEO, b"\x96\x00av01\x03\x81"): "video.3",
        (flv.SCRIPT, b"\x02\x00\x0aonMetaData"): None,
    }
    for (tag_type, body), key in keys.items():
        assert flv.sequence_key(tag_type, body) == key, body
        assert flv.is_sequence_header(tag_type, body) == (key is not None)


def test_edge_codec_names_come_from_the_fourcc() -> None:
    assert flv.audio_codec(b"\x90Opus" + OPUS_HEAD) == "opus"
    assert flv.audio_codec(b"\x90fLaC") == "flac" and flv.audio_codec(b"\x91ac-3\x0b") == "ac3"
    assert flv.video_codec(b"\x90hvc1\x01") == "hevc" and flv.video_codec(b"\x90vp09") == "vp9"
    assert flv.track_codecs(flv.AUDIO, b"\x95\x21Opus\x00" + u24(0) + b"mp4a\x01" + u24(0)) == {
        "audio": "opus",
        "audio.1": "aac",
    }
    assert flv.is_multitrack(flv.AUDIO, b"\x95\x00") and not flv.is_multitrack(flv.AUDIO, b"\x91")
    assert flv.is_multitrack(flv.VIDEO, b"\x96\x00") and not flv.is_multitrack(flv.VIDEO, b"\x16")
    assert tagbody.codec_name(b"vp08", audio=False) == ("vp8", True)


@pytest.mark.parametrize(("body", "expected"), VIDEO_CASES)
def test_edge_composition_time_is_the_parsers(body: bytes, expected: list[tuple]) -> None:
    """The edge reads a frame's composition time per tag cheaply; it must agree with the parser."""
    assert flv.composition_time(body) == max((cts for *_, cts, _ in expected), default=0)
    assert flv.composition_time(memoryview(body)) == flv.composition_time(body)
