"""relay_edge.flv: tag headers, link tags and the incremental file reader.

Valid files are fed whole, one byte at a time and in random splits and must
give the same tags; arbitrary bytes may only raise FLVError or LimitExceeded.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_edge import flv, tagbody
from relay_edge.errors import FLVError, LimitExceeded
from relay_edge.flv import FlvReader, Tag, decode_tag, parse_tag_header, tag_header

AAC_CONFIG = b"\xaf\x00\x12\x10"  # AAC-LC, 44.1 kHz, stereo
AAC_FRAME = b"\xaf\x01" + bytes(range(40))
AVC_CONFIG = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1"
METADATA = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"

TAGS = [
    Tag(flv.SCRIPT, 0, METADATA),
    Tag(flv.AUDIO, 0, AAC_CONFIG),
    Tag(flv.VIDEO, 0, AVC_CONFIG),
    Tag(flv.AUDIO, 23, AAC_FRAME),
    Tag(flv.AUDIO, 0xFFFFFF, AAC_FRAME),  # last 24-bit timestamp
    Tag(flv.AUDIO, 0x01000000, AAC_FRAME),  # first one using the extended byte
    Tag(flv.AUDIO, 0xFFFFFFFF, b""),  # empty body, largest timestamp
]


def flv_file(tags: list[Tag], audio: bool = True, video: bool = True) -> bytes:
    """A complete FLV file: header, then each tag and its PreviousTagSize."""
    out = bytearray(flv.file_header(audio, video))
    for tag in tags:
        encoded = tag.encode()
        out += encoded + flv.previous_tag_size(encoded)
    return bytes(out)


def feed_in(reader: FlvReader, data: bytes, cuts: list[int]) -> list[Tag]:
    tags: list[Tag] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        tags += reader.feed(data[start:cut])
        start = cut
    return tags


# --- tag headers -------------------------------------------------------------------------------

HEADER_CASES = [
    # (type, timestamp, size, bytes)
    (flv.AUDIO, 0, 0, b"\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
    (flv.VIDEO, 0x123456, 0x0A0B0C, b"\x09\x0a\x0b\x0c\x12\x34\x56\x00\x00\x00\x00"),
    (flv.SCRIPT, 0x89ABCDEF, 0xFFFFFF, b"\x12\xff\xff\xff\xab\xcd\xef\x89\x00\x00\x00"),
]


@pytest.mark.parametrize(("tag_type", "timestamp", "size", "encoded"), HEADER_CASES)
def test_tag_header_table(tag_type: int, timestamp: int, size: int, encoded: bytes) -> None:
    assert tag_header(tag_type, timestamp, size) == encoded
    assert parse_tag_header(encoded) == (tag_type, size, timestamp)


def test_tag_header_refuses_a_body_past_24_bits() -> None:
    with pytest.raises(LimitExceeded, match=r"flv_tag_size: 16777216 bytes exceeds limit of 16777215"):
        tag_header(flv.AUDIO, 0, 0x1000000)


def test_tag_header_wraps_timestamps_to_32_bits() -> None:
    assert parse_tag_header(tag_header(flv.AUDIO, 2**32 + 5, 0))[2] == 5


def test_short_header_and_encrypted_tags_are_refused() -> None:
    with pytest.raises(FLVError, match="tag header needs 11 bytes, got 10"):
        parse_tag_header(bytes(10))
    with pytest.raises(FLVError, match="encrypted"):
        parse_tag_header(b"\x28" + bytes(10))


def test_tag_repr_shows_length_not_bytes() -> None:
    assert repr(Tag(flv.AUDIO, 7, b"secret-ish payload")) == "Tag(type=8, timestamp=7, len=18)"


# --- link tags ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", TAGS, ids=lambda t: f"{t.type}@{t.timestamp}")
def test_decode_tag_round_trips(tag: Tag) -> None:
    assert decode_tag(tag.encode()) == tag
    assert decode_tag(memoryview(tag.encode())) == tag


def test_decode_tag_checks_the_declared_size() -> None:
    encoded = Tag(flv.AUDIO, 0, AAC_FRAME).encode()
    size = len(AAC_FRAME)
    with pytest.raises(FLVError, match=f"tag declares {size} body bytes, carries {size - 1}"):
        decode_tag(encoded[:-1])
    with pytest.raises(FLVError, match=f"tag declares {size} body bytes, carries {size + 1}"):
        decode_tag(encoded + b"\x00")


# --- the file reader ----------------------------------------------------------------------------

FILE = flv_file(TAGS)


def test_reader_whole_file() -> None:
    reader = FlvReader()
    assert reader.feed(FILE) == TAGS
    assert (reader.has_audio, reader.has_video) == (True, True)


def test_reader_byte_by_byte() -> None:
    reader = FlvReader()
    tags = [tag for i in range(len(FILE)) for tag in reader.feed(FILE[i : i + 1])]
    assert tags == TAGS


@pytest.mark.parametrize("seed", range(20))
def test_reader_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    cuts = [rng.randrange(len(FILE)) for _ in range(rng.randrange(1, 30))]
    assert feed_in(FlvReader(), FILE, cuts) == TAGS


def test_reader_header_flags() -> None:
    reader = FlvReader()
    reader.feed(flv_file([], audio=True, video=False))
    assert (reader.has_audio, reader.has_video) == (True, False)


def test_reader_waits_for_previous_tag_size() -> None:
    """A tag is only returned once its 4-byte trailer has arrived too."""
    reader = FlvReader()
    one = flv_file(TAGS[:1])
    assert reader.feed(one[:-1]) == []
    assert reader.feed(one[-1:]) == TAGS[:1]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"FLX\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00", "bad signature"),
        (b"X", "bad signature"),  # refused from the first byte, before a whole header
        (b"FLV\x01\x05\x00\x00\x00\x0a\x00\x00\x00\x00", "unsupported FLV header size 10"),
        (flv.file_header(True, False) + b"\x28" + bytes(14), "encrypted"),
    ],
)
def test_reader_refuses_invalid_files(data: bytes, message: str) -> None:
    with pytest.raises(FLVError, match=message):
        FlvReader().feed(data)


def test_reader_checks_declared_size_before_buffering() -> None:
    reader = FlvReader(max_tag_size=1000)
    header = flv.file_header(True, False) + tag_header(flv.AUDIO, 0, 1001)
    with pytest.raises(LimitExceeded, match="flv_tag_size: 1001 bytes exceeds limit of 1000"):
        reader.feed(header)  # no body sent: the declared size alone is refused


def test_reader_accepts_a_tag_at_the_limit() -> None:
    tag = Tag(flv.AUDIO, 0, bytes(1000))
    assert FlvReader(max_tag_size=1000).feed(flv_file([tag])) == [tag]


def test_file_header_bytes() -> None:
    assert flv.file_header(True, True) == b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    assert flv.file_header(False, False)[4] == 0
    assert struct.unpack(">I", flv.previous_tag_size(bytes(27)))[0] == 27


# --- codec facts --------------------------------------------------------------------------------


def test_codec_facts() -> None:
    assert flv.is_sequence_header(flv.AUDIO, AAC_CONFIG)
    assert not flv.is_sequence_header(flv.AUDIO, AAC_FRAME)
    assert flv.is_sequence_header(flv.VIDEO, AVC_CONFIG)
    assert flv.is_sequence_header(flv.VIDEO, b"\x90hvc1")  # enhanced RTMP SequenceStart
    assert not flv.is_sequence_header(flv.SCRIPT, METADATA)
    assert flv.audio_codec(AAC_CONFIG) == "aac" and flv.audio_codec(b"") == "unknown"
    assert flv.audio_codec(b"\x90") == "unknown"  # ExHeader without its FourCC
    assert flv.audio_codec(b"\x90Opus\x01") == "opus"  # enhanced audio is named by its FourCC
    assert flv.video_codec(AVC_CONFIG) == "h264" and flv.video_codec(b"\x91av01") == "av1"
    assert flv.video_codec(b"") == "unknown"
    assert flv.is_keyframe(AVC_CONFIG) and not flv.is_keyframe(b"\x27")


# --- properties ---------------------------------------------------------------------------------

tags_strategy = st.lists(
    st.builds(
        Tag,
        st.sampled_from(flv.TAG_TYPES),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=300),
    ),
    max_size=12,
)


@given(tags=tags_strategy, cuts=st.lists(st.integers(0, 5000), max_size=20))
def test_property_files_round_trip_in_any_split(tags: list[Tag], cuts: list[int]) -> None:
    data = flv_file(tags)
    assert feed_in(FlvReader(), data, [c % (len(data) + 1) for c in cuts]) == tags
    for tag in tags:
        assert decode_tag(tag.encode()) == tag


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_property_arbitrary_bytes_only_raise_flv_errors(data: bytes, cuts: list[int]) -> None:
    reader = FlvReader(max_tag_size=4096)
    try:
        tags = feed_in(reader, data, [c % (len(data) + 1) for c in cuts])
    except (FLVError, LimitExceeded):
        return
    assert all(len(t.data) <= 4096 for t in tags)


@given(data=st.binary(max_size=200))
def test_property_decode_tag_only_raises_flv_error(data: bytes) -> None:
    try:
        tag = decode_tag(data)
    except FLVError:
        return
    assert tag.encode() == data


@given(prefix=tags_strategy, body=st.binary(min_size=10, max_size=64))
def test_property_valid_prefix_then_a_bad_tag(prefix: list[Tag], body: bytes) -> None:
    """Tags before a bad one come back from the feed that completes them; the bad header raises."""
    reader = FlvReader()
    assert reader.feed(flv_file(prefix)) == prefix
    with pytest.raises(FLVError, match="encrypted"):
        reader.feed(b"\x3f" + body)  # filter bit set: an encrypted tag


def test_inlined_sound_formats_match_tagbody() -> None:
    """flv keeps tagbody's sound formats as literals (the compiled core inlines them): the same values."""
    assert flv._EX_AUDIO == tagbody.SOUND_FORMAT_EX_HEADER
    assert flv._AAC == tagbody.SOUND_FORMAT_AAC
