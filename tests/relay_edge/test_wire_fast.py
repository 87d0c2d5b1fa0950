"""The hot-path encoders against their references, byte for byte.

``wire.encode_data`` must give exactly what ``msgpack.packb`` gives for the same Data frame, and
``flv.tag_header`` exactly what the FLV spec's field-by-field layout (the former implementation,
kept here) gives.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_edge import flv, wire
from relay_edge.errors import LimitExceeded


def reference_tag_header(tag_type: int, timestamp: int, size: int) -> bytes:
    """FLV spec v10.1 E.4.1, field by field: type, size (24), timestamp (24), extended (8), stream id (24)."""
    ts = timestamp & 0xFFFFFFFF
    return struct.pack(
        ">B3s3sB3x", tag_type, size.to_bytes(3, "big"), (ts & 0xFFFFFF).to_bytes(3, "big"), ts >> 24
    )


def reference_data(sid: int, seq: int, tags: list[bytes], publisher: dict | None = None) -> bytes:
    frame = {"t": "data", "s": sid, "q": seq, "d": tags}
    if publisher is not None:
        frame["p"] = publisher
    return msgpack.packb(frame, use_bin_type=True)


# Lengths on both sides of every msgpack bin header size (bin8 < 256 <= bin16 < 65536 <= bin32).
EDGE_LENGTHS = (0, 1, 11, 255, 256, 65535, 65536, 70000)
tag_bytes = st.one_of(
    st.binary(max_size=600),
    st.sampled_from(EDGE_LENGTHS).map(lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256)),
)
uints = st.one_of(st.integers(0, 300), st.sampled_from((127, 128, 255, 256, 65535, 65536, 2**32 - 1)))


@settings(max_examples=300, deadline=None)
@given(
    sid=st.one_of(uints, st.integers(0, wire.MAX_SID)),
    seq=st.one_of(uints, st.integers(1, wire.MAX_U63)),
    tags=st.lists(tag_bytes, max_size=20),
    publisher=st.one_of(
        st.none(),
        st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8)),
    ),
)
def test_encode_data_is_msgpacks_encoding(
    sid: int, seq: int, tags: list[bytes], publisher: dict | None
) -> None:
    assert wire.encode_data(sid, seq, tags, publisher) == reference_data(sid, seq, tags, publisher)


# Tag sizes across bin8/bin16/bin32 and around PARTS_MIN_BYTES (either encoder may be chosen).
PARTS_LENGTHS = (*EDGE_LENGTHS, 8191, 8192, 65537)
part_tags = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(PARTS_LENGTHS).map(lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256)),
)
publishers = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8)),
)


@settings(max_examples=200, deadline=None)
@given(
    sid=st.one_of(uints, st.integers(0, wire.MAX_SID)),
    seq=st.one_of(uints, st.integers(1, wire.MAX_U63)),
    # 0..20 tags: the fixarray (< 16) / array16 boundary, with big and small tags.
    tags=st.lists(part_tags, max_size=20),
    publisher=publishers,
)
def test_data_parts_join_to_msgpacks_encoding(
    sid: int, seq: int, tags: list[bytes], publisher: dict | None
) -> None:
    want = reference_data(sid, seq, tags, publisher)
    parts: list[bytes] = []
    wire._data_parts(parts, sid, seq, tags, publisher)  # the hand encoder, whatever the size
    assert b"".join(parts) == want
    parts = [b"before"]
    wire.append_data(parts, sid, seq, tags, publisher)  # the chosen encoder, after other frames
    assert parts[0] == b"before" and b"".join(parts[1:]) == want


def test_big_tags_are_parts_not_copies() -> None:
    """A frame past PARTS_MIN_BYTES carries its tag objects themselves: the join copies them once."""
    tags = [b"\x09" + bytes(wire.PARTS_MIN_BYTES), b"\x09" + bytes(70000)]
    parts: list[bytes] = []
    wire.append_data(parts, 3, 9, tags)
    assert [p for p in parts if len(p) > 100] == tags and all(any(p is t for p in parts) for t in tags)
    parts = []
    wire.append_data(parts, 3, 9, [b"\x08" + bytes(100)])  # small: one msgpack-packed part
    assert len(parts) == 1


@settings(max_examples=50, deadline=None)
@given(count=st.sampled_from((15, 16, 17, 65535, 65536)), size=st.sampled_from((0, 11, 300)))
def test_data_parts_array_headers(count: int, size: int) -> None:
    """fixarray, array16 and array32 headers (past MAX_TAGS_PER_DATA: the hand encoder alone)."""
    tags = [bytes(size)] * count
    parts: list[bytes] = []
    wire._data_parts(parts, 1, 1, tags, None)
    assert b"".join(parts) == reference_data(1, 1, tags)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_encode_data_takes_any_buffer(wrap: type) -> None:
    tags = [b"\x08" + bytes(10) + b"abc", b"\x09" + bytes(300)]
    assert wire.encode_data(3, 9, [wrap(t) for t in tags]) == reference_data(3, 9, tags)


@pytest.mark.parametrize(
    "count", [wire.MAX_TAGS_PER_DATA, wire.MAX_TAGS_PER_DATA + 1, 2 * wire.MAX_TAGS_PER_DATA + 3]
)
def test_long_runs_split_like_msgpack_frames(count: int) -> None:
    tags = [flv.tag_header(flv.AUDIO, i, 2) + b"\xaf\x01" for i in range(count)]
    per = wire.MAX_TAGS_PER_DATA
    expected = b"".join(
        reference_data(5, 100 + start, tags[start : start + per], {"k": 1} if not start else None)
        for start in range(0, count, per)
    )
    assert wire.encode_data(5, 100, tags, {"k": 1}) == expected
    frames = wire.decode_message(expected)
    assert [f.seq for f in frames] == list(range(100, 100 + count, per))
    assert sum(len(f.tags) for f in frames) == count


def test_encode_data_from_many_threads_at_once() -> None:
    """Each thread packs with its own Packer: concurrent frames never mix."""
    results: dict[int, list[bool]] = {}

    def work(n: int) -> None:
        tags = [bytes([flv.AUDIO]) + bytes(10) + bytes([n]) * (n * 37 % 500) for _ in range(n % 7 + 1)]
        want = reference_data(n, n + 1, tags)
        results[n] = [wire.encode_data(n, n + 1, tags) == want for _ in range(2000)]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {n: all(ok) for n, ok in results.items()} == {n: True for n in range(1, 9)}


@settings(max_examples=500, deadline=None)
@given(
    tag_type=st.integers(0, 255),
    timestamp=st.one_of(st.integers(0, 2**32 - 1), st.integers(-(2**40), 2**40)),
    size=st.one_of(st.integers(0, 0xFFFFFF), st.sampled_from((0, 0xFFFF, 0x10000, 0xFFFFFF))),
)
def test_tag_header_is_the_spec_layout(tag_type: int, timestamp: int, size: int) -> None:
    header = flv.tag_header(tag_type, timestamp, size)
    assert header == reference_tag_header(tag_type, timestamp, size)
    if tag_type in flv.TAG_TYPES:
        assert flv.parse_tag_header(header) == (tag_type, size, timestamp & 0xFFFFFFFF)


def test_tag_header_refuses_what_does_not_fit() -> None:
    with pytest.raises(LimitExceeded):
        flv.tag_header(flv.VIDEO, 0, 0x1000000)
    with pytest.raises(struct.error):
        flv.tag_header(256, 0, 1)
    with pytest.raises(struct.error):
        flv.tag_header(-1, 0, 1)


# Integers on both sides of every msgpack unsigned width, and past the sid and seq ranges.
EDGE_UINTS = (0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1)
uints = st.one_of(st.sampled_from(EDGE_UINTS), st.integers(0, 2**64 - 1))


def answer(decode: Callable[[bytes], list[wire.Frame]], message: bytes) -> list[wire.Frame] | str:
    """What a decoder makes of ``message``: the frames, or its error's type and text."""
    try:
        return decode(message)
    except (wire.WireError, LimitExceeded) as exc:
        return f"{type(exc).__name__}: {exc}"


def general(message: bytes) -> list[wire.Frame] | str:
    """The schema-driven decoder's answer (decode_message without its Ack fast path)."""
    return answer(lambda m: wire._decode_frames(m, wire.DEFAULT_LIMITS), message)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(uints, uints), min_size=1, max_size=8), st.integers(0, 64), st.booleans())
def test_ack_fast_path_is_the_general_decoder(acks: list[tuple[int, int]], cut: int, other: bool) -> None:
    """Canonical Acks (any ints), cut short or followed by another frame: the same frames, or the
    fast path steps aside and the general decoder answers (errors included)."""
    message = b"".join(msgpack.packb({"t": "ack", "s": s, "q": q}) for s, q in acks)
    if other:
        message += wire.encode(wire.Accept(sid=1))
    message = message[: len(message) - cut] or message
    assert answer(wire.decode_message, message) == general(message)
    fast = wire._acks_only(message, wire.DEFAULT_LIMITS.wire_max_frames)
    pairs = wire.ack_pairs(message)
    if pairs is not None:  # the pump's direct entry: only ever the Acks the decoder gives
        assert [wire.Ack(sid=s, seq=q) for s, q in pairs] == general(message)
    if all(s <= wire.MAX_SID and q <= wire.MAX_U63 for s, q in acks) and not cut and not other:
        assert fast == [wire.Ack(sid=s, seq=q) for s, q in acks]  # the common case takes the fast path
        assert pairs == acks


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_ack_fast_path_on_any_bytes(message: bytes) -> None:
    """Whatever bytes: the fast path answers only where the general decoder gives the same frames."""
    message = b"\x83\xa1t\xa3ack\xa1s" + message
    assert answer(wire.decode_message, message) == general(message)


def test_ack_fast_path_keeps_the_frame_limit() -> None:
    limits = wire.DEFAULT_LIMITS
    message = wire.encode_many([wire.Ack(sid=1, seq=2)] * (limits.wire_max_frames + 1))
    assert wire._acks_only(message, limits.wire_max_frames) is None
    with pytest.raises(LimitExceeded):
        wire.decode_message(message)
    exact = wire.encode_many([wire.Ack(sid=1, seq=2)] * limits.wire_max_frames)
    assert wire.decode_message(exact) == [wire.Ack(sid=1, seq=2)] * limits.wire_max_frames


def test_ack_pairs_steps_aside_for_what_it_must_not_judge() -> None:
    """Empty, oversized or memoryview messages go to decode_message, which rejects or decodes them."""
    acks = wire.encode_many([wire.Ack(sid=1, seq=2), wire.Ack(sid=3, seq=4)])
    assert wire.ack_pairs(acks) == [(1, 2), (3, 4)]
    assert wire.ack_pairs(bytearray(acks)) == [(1, 2), (3, 4)]
    assert wire.ack_pairs(memoryview(acks)) is None
    assert wire.ack_pairs(b"") is None
    small = replace(wire.DEFAULT_LIMITS, ws_max_message=len(acks) - 1)
    assert wire.ack_pairs(acks, small) is None
    with pytest.raises(LimitExceeded):
        wire.decode_message(acks, small)


# FLV tags of every bin width, and bins that are not tags (short, a bad type byte, a wrong size).
def flv_tag(size: int, tag_type: int = 8, declared: int | None = None) -> bytes:
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    return bytes((tag_type,)) + (size if declared is None else declared).to_bytes(3, "big") + bytes(7) + body


data_tags = st.one_of(
    st.sampled_from((0, 1, 244, 245, 371, 65524, 65525, 70000)).map(flv_tag),
    st.builds(flv_tag, st.integers(0, 300), st.sampled_from((8, 9, 18, 7, 0x28))),
    st.builds(flv_tag, st.integers(0, 300), st.just(9), st.integers(0, 300)),
    st.binary(max_size=12),
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(uints, uints, st.lists(data_tags, max_size=18), st.booleans()), min_size=1, max_size=5
    ),
    st.integers(0, 40),
    st.booleans(),
)
def test_data_fast_path_is_the_general_decoder(
    frames: list[tuple[int, int, list[bytes], bool]], cut: int, other: bool
) -> None:
    """Data frames as msgpack writes them (any ints, any bins, with or without a publisher), cut
    short or followed by another frame: the same frames, or the fast path steps aside."""
    message = b"".join(
        reference_data(sid, seq, tags, {"addr": "1.2.3.4"} if publisher else None)
        for sid, seq, tags, publisher in frames
    )
    if other:
        message += wire.encode(wire.Accept(sid=1))
    message = message[: len(message) - cut] or message
    got = answer(wire.decode_message, message)
    assert got == general(message)
    if not isinstance(got, str):  # the tags come out as bytes, whatever path
        assert all(type(tag) is bytes for f in got if isinstance(f, wire.Data) for tag in f.tags)
    fast = wire._data_only(message, wire.DEFAULT_LIMITS)
    if fast is not None:
        assert fast == general(message)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_data_fast_path_on_any_bytes(message: bytes) -> None:
    """Whatever follows a Data frame's head: the fast path answers only where the general
    decoder gives the same frames."""
    message = b"\x84\xa1t\xa4data\xa1s" + message
    assert answer(wire.decode_message, message) == general(message)


def test_data_fast_path_takes_what_the_edge_sends() -> None:
    """The edge's own encoder (one audio tag, several tags, a video frame as parts) is canonical."""
    audio, video = flv_tag(371), flv_tag(30000, tag_type=9)
    parts: list[bytes] = []
    wire.append_data(parts, 7, 300, [audio])
    wire.append_data(parts, 8, 2**40, [video, audio, flv_tag(3)])
    wire.append_data(parts, 9, 1, [flv_tag(3)])
    message = b"".join(parts)
    expected = [
        wire.Data(7, 300, (audio,)),
        wire.Data(8, 2**40, (video, audio, flv_tag(3))),
        wire.Data(9, 1, (flv_tag(3),)),
    ]
    assert wire._data_only(message, wire.DEFAULT_LIMITS) == expected
    assert wire.decode_message(message) == expected


def test_data_fast_path_keeps_every_limit() -> None:
    """Frames, tags a frame, a tag's size: past any limit the fast path steps aside and the
    general decoder raises, naming the limit."""
    tag = flv_tag(20)
    limits = wire.DEFAULT_LIMITS
    too_many_frames = wire.encode_many([wire.Data(1, 1, (tag,))] * (limits.wire_max_frames + 1))
    too_many_tags = wire.encode_data(1, 1, [tag] * 3)
    big = flv_tag(1000)
    cases = (
        (too_many_frames, limits, "wire_max_frames"),
        (too_many_tags, replace(limits, wire_max_items=2), "wire_max_items"),
        (wire.encode_data(1, 1, [big]), replace(limits, max_message_size=999), "max_message_size"),
    )
    for message, bounds, name in cases:
        assert wire._data_only(message, bounds) is None
        with pytest.raises(LimitExceeded, match=name):
            wire.decode_message(message, bounds)
    exact = replace(limits, wire_max_items=3, max_message_size=1000)
    assert wire._data_only(too_many_tags, exact) == [wire.Data(1, 1, (tag,) * 3)]
    assert wire._data_only(wire.encode_data(1, 1, [big]), exact) == [wire.Data(1, 1, (big,))]


def test_data_fast_path_leaves_a_bytearray_to_the_general_path() -> None:
    """Slices of a bytearray are bytearrays: the general path turns its tags into bytes."""
    message = bytearray(wire.encode_data(1, 1, [flv_tag(20)]))
    frames = wire.decode_message(message)
    assert frames == [wire.Data(1, 1, (flv_tag(20),))]
    assert type(frames[0].tags[0]) is bytes
