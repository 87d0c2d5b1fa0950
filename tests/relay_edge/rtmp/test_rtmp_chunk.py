"""Chunk stream: one case table for writer and reader, decode-only quirks, errors, properties."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtmp_support import SPLIT_MODES, feed_all, pieces

from relay_edge.errors import ChunkError, LimitExceeded
from relay_edge.limits import DEFAULT_LIMITS, Limits
from relay_edge.rtmp.chunk import ChunkReader, ChunkWriter, Message, basic_header

A32 = bytes(range(32))
B307 = bytes(i & 0xFF for i in range(307))
B200 = bytes(200)


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def le32(n: int) -> bytes:
    return struct.pack("<I", n)


def be32(n: int) -> bytes:
    return struct.pack(">I", n)


# (chunk size, messages as (csid, type, stream id, timestamp, body), exact wire bytes).
# Written from the RTMP spec 1.0, section 5.3; the writer must produce exactly
# these bytes and the reader must get the messages back from them.
CASES = [
    pytest.param(
        128,
        [(3, 8, 12345, 1000 + 20 * i, A32) for i in range(4)],
        # Spec 5.3.2.1 example 1: type 0, then type 2 (delta 20), then type 3 twice.
        b"\x03" + u24(1000) + u24(32) + b"\x08" + le32(12345) + A32
        + b"\x83" + u24(20) + A32
        + b"\xc3" + A32
        + b"\xc3" + A32,
        id="spec-example-1",
    ),
    pytest.param(
        128,
        [(4, 9, 12346, 1000, B307)],
        # Spec 5.3.2.2 example 2: one 307-byte message in 128-byte chunks.
        b"\x04" + u24(1000) + u24(307) + b"\x09" + le32(12346) + B307[:128]
        + b"\xc4" + B307[128:256]
        + b"\xc4" + B307[256:],
        id="spec-example-2",
    ),
    pytest.param(
        128,
        [(64, 8, 1, 0, b"a"), (319, 8, 1, 0, b"b"), (320, 8, 1, 0, b"c"), (65599, 8, 1, 0, b"d")],
        b"\x00\x00" + u24(0) + u24(1) + b"\x08" + le32(1) + b"a"
        + b"\x00\xff" + u24(0) + u24(1) + b"\x08" + le32(1) + b"b"
        + b"\x01\x00\x01" + u24(0) + u24(1) + b"\x08" + le32(1) + b"c"
        + b"\x01\xff\xff" + u24(0) + u24(1) + b"\x08" + le32(1) + b"d",
        id="two-and-three-byte-basic-headers",
    ),
    pytest.param(
        128,
        [(4, 8, 1, 0x01000000, B200)],
        # Extended timestamp, repeated on the continuation chunk (FFmpeg, GStreamer, librtmp).
        b"\x04\xff\xff\xff" + u24(200) + b"\x08" + le32(1) + be32(0x01000000) + B200[:128]
        + b"\xc4" + be32(0x01000000) + B200[128:],
        id="extended-timestamp-and-continuation",
    ),
    pytest.param(
        128,
        [(4, 8, 1, 0xFFFFFF, b"x")],
        b"\x04\xff\xff\xff" + u24(1) + b"\x08" + le32(1) + be32(0xFFFFFF) + b"x",
        id="timestamp-0xffffff-is-extended",
    ),
    pytest.param(
        128,
        [(4, 8, 1, 0, b"abcd"), (4, 8, 1, 0x01000000, b"efgh"), (4, 8, 1, 0x02000000, b"ijkl")],
        # A format-3 header starting a message repeats the extended delta.
        b"\x04" + u24(0) + u24(4) + b"\x08" + le32(1) + b"abcd"
        + b"\x84\xff\xff\xff" + be32(0x01000000) + b"efgh"
        + b"\xc4" + be32(0x01000000) + b"ijkl",
        id="format-3-new-message-with-extended-delta",
    ),
    pytest.param(
        128,
        [(4, 8, 1, 0xFFFFFFF0, b"a"), (4, 8, 1, 0x10, b"b")],
        # 32-bit wraparound: the delta is 0x20.
        b"\x04\xff\xff\xff" + u24(1) + b"\x08" + le32(1) + be32(0xFFFFFFF0) + b"a"
        + b"\x84" + u24(0x20) + b"b",
        id="timestamp-wraparound",
    ),
    pytest.param(
        128,
        [(4, 8, 1, 500, b"a"), (4, 8, 1, 400, b"b")],
        b"\x04" + u24(500) + u24(1) + b"\x08" + le32(1) + b"a"
        + b"\x04" + u24(400) + u24(1) + b"\x08" + le32(1) + b"b",
        id="backwards-timestamp-uses-format-0",
    ),
    pytest.param(
        128,
        [(5, 9, 1, 0, b"key"), (5, 9, 1, 40, b"frame"), (5, 8, 1, 80, b"frame"), (6, 9, 2, 0, b"")],
        b"\x05" + u24(0) + u24(3) + b"\x09" + le32(1) + b"key"
        + b"\x45" + u24(40) + u24(5) + b"\x09" + b"frame"
        + b"\x45" + u24(40) + u24(5) + b"\x08" + b"frame"
        + b"\x06" + u24(0) + u24(0) + b"\x09" + le32(2),
        id="format-1-and-empty-message",
    ),
    pytest.param(
        128,
        [(4, 8, 1, 0, b"ab"), (4, 8, 1, 23, b"cd"), (4, 8, 1, 46, b"ef"), (4, 8, 1, 69, b"gh")],
        # GStreamer rtmp2sink's AAC: type, size and delta repeat, so format 3 starts messages.
        b"\x04" + u24(0) + u24(2) + b"\x08" + le32(1) + b"ab"
        + b"\x84" + u24(23) + b"cd"
        + b"\xc4" + b"ef"
        + b"\xc4" + b"gh",
        id="gstreamer-format-3-new-messages",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("chunk_size", "msgs", "wire"), CASES)
def test_write(chunk_size: int, msgs: list[tuple], wire: bytes) -> None:
    writer = ChunkWriter(chunk_size)
    assert b"".join(writer.write(*msg) for msg in msgs) == wire


@pytest.mark.parametrize("mode", SPLIT_MODES)
@pytest.mark.parametrize(("chunk_size", "msgs", "wire"), CASES)
def test_read(chunk_size: int, msgs: list[tuple], wire: bytes, mode: str) -> None:
    reader = ChunkReader()
    reader.chunk_size = chunk_size
    got = feed_all(reader.feed, wire, mode, seed=len(wire))
    assert [tuple(msg) for msg in got] == msgs


# --- decode-only behaviour ------------------------------------------------------------


def read(wire: bytes, limits: Limits = DEFAULT_LIMITS) -> list[tuple]:
    return [tuple(msg) for msg in ChunkReader(limits).feed(wire)]


def test_continuation_without_repeated_extended_timestamp_is_tolerated() -> None:
    # Some old encoders omit the 4 bytes on continuation chunks (GStreamer and SRS tolerate it).
    wire = (
        b"\x04\xff\xff\xff" + u24(200) + b"\x08" + le32(1) + be32(0x01000000) + B200[:128]
        + b"\xc4" + B200[128:]
    )  # fmt: skip
    assert read(wire) == [(4, 8, 1, 0x01000000, B200)]


def test_continuation_repeating_the_absolute_timestamp_is_tolerated() -> None:
    # After a format-1 header with an extended delta, some encoders repeat the absolute time.
    wire = (
        b"\x04" + u24(5) + u24(1) + b"\x08" + le32(1) + b"a"
        + b"\x44\xff\xff\xff" + u24(200) + b"\x08" + be32(0x01000000) + B200[:128]
        + b"\xc4" + be32(0x01000005) + B200[128:]
    )  # fmt: skip
    assert read(wire) == [(4, 8, 1, 5, b"a"), (4, 8, 1, 0x01000005, B200)]


def test_format_3_after_format_0_repeats_its_timestamp_as_the_delta() -> None:
    # What FFmpeg (ts_field) and GStreamer (ts_delta) both write and read.
    wire = b"\x04" + u24(100) + u24(1) + b"\x08" + le32(1) + b"a" + b"\xc4" + b"b"
    assert read(wire) == [(4, 8, 1, 100, b"a"), (4, 8, 1, 200, b"b")]


def test_interleaved_chunk_streams() -> None:
    wire = (
        b"\x06" + u24(0) + u24(200) + b"\x09" + le32(1) + B200[:128]
        + b"\x04" + u24(0) + u24(2) + b"\x08" + le32(1) + b"au"
        + b"\xc6" + B200[128:]
    )  # fmt: skip
    assert read(wire) == [(4, 8, 1, 0, b"au"), (6, 9, 1, 0, B200)]


def test_set_chunk_size_applies_to_the_next_chunk_in_the_same_feed() -> None:
    body = bytes(300)
    wire = b"\x02" + u24(0) + u24(4) + b"\x01" + le32(0) + be32(300)
    wire += b"\x04" + u24(0) + u24(300) + b"\x08" + le32(1) + body
    reader = ChunkReader()
    msgs = reader.feed(wire)
    assert [(msg.type, msg.body) for msg in msgs] == [(1, be32(300)), (8, body)]
    assert reader.chunk_size == 300


def test_abort_discards_the_partial_message() -> None:
    wire = b"\x04" + u24(0) + u24(200) + b"\x08" + le32(1) + B200[:128]
    wire += b"\x02" + u24(0) + u24(4) + b"\x02" + le32(0) + be32(4)  # Abort csid 4
    wire += b"\x04" + u24(7) + u24(1) + b"\x08" + le32(1) + b"z"  # so a format 0 is fine again
    assert read(wire) == [(2, 2, 0, 0, be32(4)), (4, 8, 1, 7, b"z")]


def test_messages_yields_before_a_later_error() -> None:
    wire = b"\x04" + u24(0) + u24(1) + b"\x08" + le32(1) + b"a" + b"\xc5"
    got = []
    with pytest.raises(ChunkError):
        for msg in ChunkReader().messages(wire):
            got.append(msg)
    assert [m.body for m in got] == [b"a"]


def test_message_repr_hides_the_body() -> None:
    assert repr(Message(4, 8, 1, 0, b"secret")) == "Message(csid=4, type=8, stream_id=1, timestamp=0, len=6)"


def test_basic_header_rejects_reserved_ids() -> None:
    with pytest.raises(ValueError):
        basic_header(0, 1)
    with pytest.raises(ValueError):
        basic_header(0, 65600)


# --- errors -------------------------------------------------------------------------------


def scs(value: int) -> bytes:
    return b"\x02" + u24(0) + u24(4) + b"\x01" + le32(0) + be32(value)


@pytest.mark.parametrize(
    ("wire", "exc", "message"),
    [
        (b"\xc5\x00", ChunkError, "chunk stream 5: format 3 header with no previous message header"),
        (b"\x45" + bytes(7), ChunkError, "chunk stream 5: format 1 header with no previous format 0 header"),
        (b"\x85" + bytes(3), ChunkError, "chunk stream 5: format 2 header with no previous format 0 header"),
        (
            b"\x04" + u24(0) + u24(300) + b"\x08" + le32(1) + bytes(128) + b"\x04" + bytes(11),
            ChunkError,
            "chunk stream 4: format 0 header while a 300-byte message has 172 bytes left (expected format 3)",
        ),
        (
            b"\x04" + u24(0) + u24(0xFFFFFF) + b"\x09" + le32(1),
            LimitExceeded,
            "max_message_size: 16777215 bytes exceeds limit of 10485760 bytes",
        ),
        (scs(0), ChunkError, "Set Chunk Size 0 is invalid (must be at least 1)"),
        (scs(0x80000000), ChunkError, "Set Chunk Size 2147483648 has the reserved top bit set"),
        (scs(0x7FFFFFFF), LimitExceeded, "max_chunk_size: 2147483647 bytes exceeds limit of 1048576 bytes"),
        (
            b"\x02" + u24(0) + u24(2) + b"\x01" + le32(0) + b"\x00\x80",
            ChunkError,
            "Set Chunk Size message of 2 bytes (needs 4)",
        ),
        (
            b"\x02" + u24(0) + u24(1) + b"\x02" + le32(0) + b"\x04",
            ChunkError,
            "Abort message of 1 bytes (needs 4)",
        ),
    ],
)  # fmt: skip
@pytest.mark.parametrize("mode", SPLIT_MODES)
def test_errors(wire: bytes, exc: type[Exception], message: str, mode: str) -> None:
    reader = ChunkReader()
    with pytest.raises(exc) as info:
        for piece in pieces(wire, mode):
            reader.feed(piece)
    assert str(info.value) == message


def test_too_many_chunk_streams() -> None:
    reader = ChunkReader(Limits(max_chunk_streams=3))
    wire = b"".join(bytes((csid,)) + u24(0) + u24(0) + b"\x08" + le32(1) for csid in (3, 4, 5))
    assert len(reader.feed(wire)) == 3
    with pytest.raises(LimitExceeded) as info:
        reader.feed(b"\x06" + u24(0))
    assert str(info.value) == "max_chunk_streams: 4 chunk streams exceeds limit of 3 chunk streams"


def test_unfinished_messages_across_streams_are_bounded() -> None:
    limits = Limits(max_message_size=1000, max_partial_bytes=2000)
    reader = ChunkReader(limits)
    reader.chunk_size = 900
    wire = b"".join(bytes((csid,)) + u24(0) + u24(1000) + b"\x09" + le32(1) + bytes(900) for csid in (3, 4))
    reader.feed(wire)
    with pytest.raises(LimitExceeded) as info:
        reader.feed(b"\x05" + u24(0) + u24(1000) + b"\x09" + le32(1) + bytes(900))
    assert str(info.value) == "max_partial_bytes: 2700 bytes exceeds limit of 2000 bytes"


def test_unfinished_message_outlives_the_reads_it_came_in() -> None:
    """A message's chunks are held as views of the read only while it is parsed: a caller
    reusing its buffer (a BufferedProtocol) for the next read must not change the body."""
    body = bytes(range(256)) * 40  # 10240 bytes: three 4096-byte chunks
    writer = ChunkWriter(4096)
    chunks = writer.write(4, 9, 1, 0, body) + writer.write(4, 9, 1, 40, body[::-1])
    reader = ChunkReader()
    reader.chunk_size = 4096
    buf = bytearray(chunks[:5000])  # first chunk and part of the second
    assert reader.feed(buf) == []
    buf[:] = bytes(len(buf))  # the caller reuses its buffer
    got = [m.body for m in reader.feed(bytearray(chunks[5000:15000]))]
    got += [m.body for m in reader.feed(chunks[15000:])]
    assert got == [body, body[::-1]]
    assert reader._partial == 0 and reader._viewing == []


def test_views_of_one_read_join_into_bytes_once() -> None:
    """A multi-chunk message inside one read: its body is bytes, equal to what was sent."""
    body = bytes(range(256)) * 100
    writer = ChunkWriter(128)
    msgs = ChunkReader().feed(writer.write(5, 8, 1, 0, body))
    assert [type(m.body) for m in msgs] == [bytes] and msgs[0].body == body


# --- properties -----------------------------------------------------------------------------

CSIDS = [2, 3, 4, 8, 63, 64, 100, 319, 320, 1000, 65599]
TIMESTAMPS = st.one_of(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0xFFFFF0, 0x100000F),  # around the extended-timestamp switch
    st.integers(0xFFFFFF00, 0xFFFFFFFF),  # around the wrap
    st.sampled_from([0, 23, 0xFFFFFF]),
)
MESSAGES = st.lists(
    st.tuples(
        st.sampled_from(CSIDS),
        st.integers(3, 255),  # not 1/2: those change the reader, tested above
        st.sampled_from([0, 1, 2, 0xFFFFFFFF]),
        TIMESTAMPS,
        st.binary(max_size=600),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES, st.integers(1, 700), st.integers(0, 2**32))
def test_messages_round_trip(msgs: list[tuple], chunk_size: int, seed: int) -> None:
    writer = ChunkWriter(128)
    wire = writer.write(2, 1, 0, 0, be32(chunk_size))  # Set Chunk Size, as a peer would
    writer.chunk_size = chunk_size
    wire += b"".join(writer.write(*msg) for msg in msgs)
    got = feed_all(ChunkReader().feed, wire, "random", seed)
    assert [tuple(msg) for msg in got[1:]] == msgs


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_documented_errors(data: bytes) -> None:
    limits = Limits(max_message_size=4096, max_chunk_size=4096, max_chunk_streams=8)
    with contextlib.suppress(ChunkError, LimitExceeded):
        ChunkReader(limits).feed(data)
