"""relay_edge.wire: the doc's test vectors, shared valid/invalid case tables, bounds, fuzzing.

Run this file as a script to print the vector blocks for docs/PROTOCOL.md
after an intentional change to the wire format.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_edge import flv, wire
from relay_edge.errors import LimitExceeded, WireError
from relay_edge.limits import DEFAULT_LIMITS, Limits
from relay_edge.wire import (
    MAX_FRAMES,
    MAX_ITEMS,
    MAX_STR,
    Accept,
    Ack,
    Close,
    Data,
    Gap,
    Hello,
    Open,
    Ping,
    Pong,
    Reject,
    ResumePoint,
    TcpAck,
    TcpClose,
    TcpData,
    TcpOpen,
    decode_message,
    encode,
    encode_data,
    encode_many,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
FRAME_TYPES = (
    Hello,
    Open,
    Accept,
    Reject,
    Data,
    Ack,
    Gap,
    Close,
    Ping,
    Pong,
    TcpOpen,
    TcpData,
    TcpAck,
    TcpClose,
)


def doc_block(marker: str) -> Any:
    """The JSON block that follows ``<!-- marker -->`` in docs/PROTOCOL.md."""
    match = re.search(rf"<!-- {marker} -->\s*```json\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.S)
    assert match, f"no ```json block after <!-- {marker} --> in {DOC}"
    return json.loads(match.group(1))


# --- JSON form of frames: attribute names, bytes as hex ------------------------------------


def frame_to_json(frame: wire.Frame) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(frame).__name__}
    for field in dataclasses.fields(frame):
        out[field.name] = _to_json(getattr(frame, field.name))
    return out


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, ResumePoint):
        return {"uid": value.uid, "seq": value.seq}
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def frame_from_json(data: dict[str, Any]) -> wire.Frame:
    cls = getattr(wire, data["type"])
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name in data:
            kwargs[field.name] = _from_json(field.type, data[field.name])
    return cls(**kwargs)


def _from_json(annotation: str, value: Any) -> Any:
    if annotation == "bytes":
        return bytes.fromhex(value)
    if annotation == "tuple[bytes, ...]":
        return tuple(bytes.fromhex(v) for v in value)
    if annotation == "tuple[ResumePoint, ...]":
        return tuple(ResumePoint(**v) for v in value)
    if annotation.startswith("tuple"):
        return tuple(value)
    return value


# --- the vectors ------------------------------------------------------------------------------

AAC_SEQUENCE_HEADER = flv.Tag(flv.AUDIO, 0, bytes.fromhex("af001210")).encode()
AAC_FRAME_1 = flv.Tag(flv.AUDIO, 25920, bytes.fromhex("af01210049900e")).encode()
AAC_FRAME_2 = flv.Tag(flv.AUDIO, 25943, bytes.fromhex("af01211a24")).encode()
ACCEPTOR_PROOF = "TMxF6lMRHxF-PHgqTqcVPB_xFHW0BI7sw_DOgtynM0w"  # the auth vector's acceptor proof

VECTOR_FRAMES: list[tuple[str, wire.Frame]] = [
    (
        "hello from a dialing edge",
        Hello(1, "edge", "e-7f3a9c", (ResumePoint("e-7f3a9c/1", 1234),), name="fly-ams"),
    ),
    (
        "hello from an accepting client",
        Hello(
            1, "client", "c-51b2", (ResumePoint("e-7f3a9c/1", 1200),), ACCEPTOR_PROOF, "myapp", ("room-*",)
        ),
    ),
    (
        "open, resumed",
        Open(
            sid=1,
            uid="e-7f3a9c/1",
            name="room-42",
            publisher={
                "addr": "203.0.113.7:50412",
                "app": "live",
                "flash_ver": "FMLE/3.0 (compatible; FMSc/1.0)",
            },
            codecs={"audio": "aac"},
            seq=1201,
            resumed=True,
            header=flv.file_header(audio=True, video=False),
            edge="fly-ams",
            init=(AAC_SEQUENCE_HEADER,),
        ),
    ),
    ("accept", Accept(1)),
    ("reject", Reject(2, "forbidden", "no such room")),
    ("data, two AAC tags", Data(1, 1201, (AAC_FRAME_1, AAC_FRAME_2))),
    (
        "data, first tags of a reconnected publisher",
        Data(1, 1203, (AAC_SEQUENCE_HEADER,), publisher={"addr": "203.0.113.7:50418", "app": "live"}),
    ),
    ("ack", Ack(1, 1202)),
    ("gap", Gap(1, 1500, 250, 93750, 5805)),
    ("close a stream", Close(1, "publisher unpublished", "unpublished")),
    ("close the link", Close(None, "edge shutting down", "shutdown")),
    ("ping", Ping(1700000000.25)),
    ("pong", Pong(1700000000.25)),
    ("tcp_open", TcpOpen(7, "rtmp", "203.0.113.7:50420")),
    ("tcp_data", TcpData(7, b"\x03" + bytes(8))),
    ("tcp_ack", TcpAck(7, 1537)),
    ("tcp_close, clean EOF", TcpClose(7, "")),
    ("tcp_close, error", TcpClose(7, "forward 'rtmp' unreachable")),
]


def render_frame_vectors() -> str:
    vectors = [{"name": n, "frame": frame_to_json(f), "hex": encode(f).hex()} for n, f in VECTOR_FRAMES]
    return "[\n" + ",\n".join("  " + json.dumps(v, ensure_ascii=False) for v in vectors) + "\n]"


FRAME_VECTORS = [] if __name__ == "__main__" else doc_block("vectors:frames")


@pytest.mark.parametrize("vector", FRAME_VECTORS, ids=[v["name"] for v in FRAME_VECTORS])
def test_doc_vector_encodes_to_its_hex(vector: dict[str, Any]) -> None:
    assert encode(frame_from_json(vector["frame"])).hex() == vector["hex"]


@pytest.mark.parametrize("vector", FRAME_VECTORS, ids=[v["name"] for v in FRAME_VECTORS])
def test_doc_vector_hex_decodes_to_its_frame(vector: dict[str, Any]) -> None:
    assert decode_message(bytes.fromhex(vector["hex"])) == [frame_from_json(vector["frame"])]


def test_doc_vectors_cover_every_frame_type_and_match_this_file() -> None:
    assert {v["frame"]["type"] for v in FRAME_VECTORS} == {cls.__name__ for cls in FRAME_TYPES}
    assert json.loads(render_frame_vectors()) == FRAME_VECTORS


def test_doc_wire_key_tables_match_the_code() -> None:
    """Every "| `key` | attribute |" row in PROTOCOL.md's frame tables is what the code writes."""
    text = DOC.read_text(encoding="utf-8")
    for cls in FRAME_TYPES:
        spec = wire._SPECS[cls]
        section = re.search(rf"### `{spec.type}`.*?(?=\n### |\n## )", text, re.S)
        assert section, f"no section for {spec.type}"
        rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \|", section.group(0), re.M)
        assert rows == [("t", "type")] + [(f.key, f.attr) for f in spec.fields], spec.type


# --- shared valid cases: encode -> decode -> equal --------------------------------------------

VIDEO_KEYFRAME = flv.Tag(flv.VIDEO, 40, b"\x17\x01\x00\x00\x00" + bytes(1000)).encode()
SCRIPT_TAG = flv.Tag(flv.SCRIPT, 0, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09").encode()
BIG_TAG = flv.Tag(flv.VIDEO, 2**32 - 1, bytes(70000)).encode()  # bin32, extended timestamp

VALID: list[tuple[str, wire.Frame]] = [
    *VECTOR_FRAMES,
    ("hello, minimal", Hello(1, "client", "")),
    (
        "hello, future version",
        Hello(7, "edge", "x" * 200, tuple(ResumePoint(f"u{i}", i) for i in range(100))),
    ),
    ("hello, unicode name", Hello(1, "client", "c", name="Приложение 🎙")),
    (
        "open, fresh a/v",
        Open(
            2**32 - 1,
            "u",
            "n",
            {"n": None, "t": True, "f": False, "i": -5, "x": 1.5, "big": 2**63},
            {"audio": "aac", "video": "h264"},
            1,
            False,
            flv.file_header(True, True),
        ),
    ),
    (
        "open, init of three",
        Open(3, "u", "n", {}, {}, 10, True, flv.file_header(False, True), "", (SCRIPT_TAG,) * 3),
    ),
    ("data, one tag", Data(0, 1, (AAC_FRAME_1,))),
    ("data, video and script", Data(5, 2**62, (VIDEO_KEYFRAME, SCRIPT_TAG))),
    ("data, 70 kB tag", Data(5, 9, (BIG_TAG,))),
    ("data, max tags", Data(1, 1, (AAC_FRAME_2,) * MAX_ITEMS)),
    ("data, publisher reconnected", Data(1, 7, (AAC_FRAME_1,), {"addr": "[::1]:5000", "n": None})),
    ("ack, zero", Ack(0, 0)),
    ("ack, max", Ack(2**32 - 1, 2**63 - 1)),
    ("gap, 1 tag", Gap(1, 2, 1, 0, 0)),
    ("close, empty code", Close(7, "")),
    ("ping, int-valued", Ping(0.0)),
    ("pong, negative", Pong(-12.5)),
]


@pytest.mark.parametrize("frame", [f for _, f in VALID], ids=[n for n, _ in VALID])
def test_valid_frame_round_trips(frame: wire.Frame) -> None:
    encoded = encode(frame)
    assert decode_message(encoded) == [frame]
    assert encode(decode_message(encoded)[0]) == encoded  # canonical: re-encodes to the same bytes


def test_encode_many_is_concatenation_and_decodes_in_order() -> None:
    frames = [f for _, f in VALID]
    message = encode_many(frames)
    assert message == b"".join(encode(f) for f in frames)
    assert decode_message(message) == frames


def test_frames_split_into_messages_at_random_decode_the_same() -> None:
    frames = [f for _, f in VALID]
    rng = random.Random(1935)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(frames)), rng.randint(0, len(frames) - 1)))
        groups = [frames[a:b] for a, b in zip([0, *cuts], [*cuts, len(frames)], strict=True)]
        decoded = [f for group in groups for f in decode_message(encode_many(group))]
        assert decoded == frames


def test_every_prefix_of_a_message_is_whole_frames_or_an_error() -> None:
    frames = [f for _, f in VECTOR_FRAMES]
    message = encode_many(frames)
    boundaries = {0}
    for f in frames:
        boundaries.add(max(boundaries) + len(encode(f)))
    for cut in range(1, len(message)):
        if cut in boundaries:
            assert decode_message(message[:cut]) == frames[: sorted(boundaries).index(cut)]
        else:
            with pytest.raises(WireError):
                decode_message(message[:cut])


@pytest.mark.parametrize("tags", [[AAC_FRAME_1], (AAC_FRAME_1, AAC_FRAME_2), [BIG_TAG] * 3])
def test_encode_data_matches_encode(tags: list[bytes]) -> None:
    assert encode_data(4, 77, tags) == encode(Data(4, 77, tuple(tags)))
    who = {"addr": "127.0.0.1:4000"}
    assert encode_data(4, 77, tags, who) == encode(Data(4, 77, tuple(tags), who))


def test_data_without_a_publisher_omits_the_field() -> None:
    """The optional field costs nothing on ordinary Data frames, and old peers skip it when set."""
    assert b"\xa1p" not in encode(Data(1, 1, (AAC_FRAME_1,)))
    assert encode(Data(1, 1, (AAC_FRAME_1,), {"addr": "x"})).startswith(bytes([0x85]))  # 5 keys


def test_encode_data_splits_long_runs_into_several_frames() -> None:
    tags = [AAC_FRAME_1] * (2 * MAX_ITEMS + 3)
    assert decode_message(encode_data(2, 10, tags)) == [
        Data(2, 10, (AAC_FRAME_1,) * MAX_ITEMS),
        Data(2, 10 + MAX_ITEMS, (AAC_FRAME_1,) * MAX_ITEMS),
        Data(2, 10 + 2 * MAX_ITEMS, (AAC_FRAME_1,) * 3),
    ]


def test_bytearray_and_memoryview_messages_decode() -> None:
    message = encode(Ack(1, 2))
    assert decode_message(bytearray(message)) == decode_message(memoryview(message)) == [Ack(1, 2)]


def test_repr_shows_sizes_not_media_bytes() -> None:
    assert repr(Data(1, 5, (AAC_FRAME_1, AAC_FRAME_2))) == "Data(sid=1, seq=5, tags=2, bytes=34)"
    opened = dict(VECTOR_FRAMES)["open, resumed"]
    assert "init=1 tags" in repr(opened)
    assert "\\x" not in repr(opened) and "203.0.113.7" not in repr(opened)


# --- forward compatibility ----------------------------------------------------------------------


def _raw(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_unknown_fields_are_skipped_anywhere_after_t() -> None:
    nested = {"deep": [[[{"x": b"\x00" * 100}]]] * 50, "ext": msgpack.ExtType(5, b"abc")}
    message = _raw({"t": "ack", "zz": nested, "s": 1, "future": "x", "q": 9, "last": [1, 2, 3]})
    assert decode_message(message) == [Ack(1, 9)]


def test_missing_optional_fields_take_their_defaults() -> None:
    assert decode_message(_raw({"t": "hello", "v": 1, "r": "edge", "i": "e1"})) == [Hello(1, "edge", "e1")]
    assert decode_message(_raw({"t": "close", "s": None, "r": "bye"})) == [Close(None, "bye")]
    assert decode_message(_raw({"t": "ping", "at": 3})) == [Ping(3.0)]


def test_resume_points_may_grow_extra_elements() -> None:
    message = _raw({"t": "hello", "v": 2, "r": "client", "i": "c", "rp": [["u1", 5, {"future": 1}, "x"]]})
    assert decode_message(message) == [Hello(2, "client", "c", (ResumePoint("u1", 5),))]


# --- shared invalid cases: exact messages ------------------------------------------------------

ACK = {"t": "ack", "s": 1, "q": 2}
DATA = {"t": "data", "s": 1, "q": 1, "d": [AAC_FRAME_1]}
HELLO = {"t": "hello", "v": 1, "r": "edge", "i": "e"}
OPEN = {
    "t": "open",
    "s": 1,
    "u": "u",
    "n": "n",
    "p": {},
    "c": {},
    "q": 1,
    "r": False,
    "h": flv.file_header(True, False),
}
DATA_HEAD = bytes.fromhex("84a174a464617461a17301a17101a164")  # {"t":"data","s":1,"q":1,"d": ...

INVALID: list[tuple[str, bytes, type[Exception], str]] = [
    ("empty", b"", WireError, "empty message: needs at least one frame"),
    ("array frame", _raw([1, 2]), WireError, "frame 0: must be a map, got array"),
    ("int frame", b"\x01", WireError, "frame 0: must be a map, got int"),
    ("empty map", b"\x80", WireError, "frame 0: first key must be 't'"),
    ("t not first", _raw({"s": 1, "t": "ack", "q": 2}), WireError, "frame 0: first key must be 't'"),
    ("t as bin key", _raw({b"t": "ack"}), WireError, "frame 0: first key must be 't'"),
    ("t not a string", _raw({"t": 5}), WireError, "frame 0: must be str, got int"),
    ("unknown type", _raw({"t": "nope"}), WireError, "frame 0: unknown frame type 'nope'"),
    ("long unknown type", _raw({"t": "n" * 100}), WireError, f"frame 0: unknown frame type '{'n' * 40}...'"),
    ("missing field", _raw({"t": "ack", "s": 1}), WireError, "frame 0 (ack): missing field 'q' (seq)"),
    (
        "wrong type",
        _raw({**ACK, "q": "2"}),
        WireError,
        "frame 0 (ack): field 'q' (seq): must be int, got str",
    ),
    (
        "bool as int",
        _raw({**ACK, "s": True}),
        WireError,
        "frame 0 (ack): field 's' (sid): must be int, got bool",
    ),
    (
        "float as int",
        _raw({**ACK, "s": 1.0}),
        WireError,
        "frame 0 (ack): field 's' (sid): must be int, got float",
    ),
    (
        "negative seq",
        _raw({**ACK, "q": -1}),
        WireError,
        "frame 0 (ack): field 'q' (seq): integer -1 out of range 0..9223372036854775807",
    ),
    (
        "seq past 63 bits",
        _raw({**ACK, "q": 2**63}),
        WireError,
        "frame 0 (ack): field 'q' (seq): integer 9223372036854775808 out of range 0..9223372036854775807",
    ),
    (
        "sid past 32 bits",
        _raw({**ACK, "s": 2**32}),
        WireError,
        "integer 4294967296 out of range 0..4294967295",
    ),
    (
        "duplicate field",
        b"\x84\xa1t\xa3ack\xa1s\x01\xa1q\x02\xa1q\x03",
        WireError,
        "frame 0 (ack): duplicate field 'q'",
    ),
    ("duplicate t", b"\x82\xa1t\xa3ack\xa1t\xa3ack", WireError, "frame 0 (ack): duplicate field 't'"),
    ("int key", b"\x82\xa1t\xa3ack\x01\x01", WireError, "frame 0 (ack): field keys must be strings"),
    (
        "bad UTF-8",
        _raw({**HELLO, "i": "x"})[:-1] + b"\xff",
        WireError,
        "field 'i' (instance): string is not valid UTF-8",
    ),
    (
        "bad role",
        _raw({**HELLO, "r": "admin"}),
        WireError,
        "field 'r' (role): role must be 'edge' or 'client', got 'admin'",
    ),
    ("version 0", _raw({**HELLO, "v": 0}), WireError, "field 'v' (version): version must be at least 1"),
    (
        "streams not a list",
        _raw({**HELLO, "rp": "x"}),
        WireError,
        "field 'rp' (streams): must be array, got str",
    ),
    (
        "short resume point",
        _raw({**HELLO, "rp": [["u"]]}),
        WireError,
        "resume point needs [uid, seq], got 1 elements",
    ),
    (
        "no tags",
        _raw({**DATA, "d": []}),
        WireError,
        "frame 0 (data): field 'd' (tags): needs at least one tag",
    ),
    ("tag not bin", _raw({**DATA, "d": ["x"]}), WireError, "field 'd' (tags): must be bin, got str"),
    (
        "tag too short",
        _raw({**DATA, "d": [b"\x08" * 10]}),
        WireError,
        "FLV tag of 10 bytes is shorter than its 11",
    ),
    (
        "tag type",
        _raw({**DATA, "d": [b"\x28" + AAC_FRAME_1[1:]]}),
        WireError,
        "FLV tag type byte 0x28 is not audio (8), video (9) or script (18)",
    ),
    (
        "tag size",
        _raw({**DATA, "d": [AAC_FRAME_1 + b"x"]}),
        WireError,
        "FLV tag declares 7 body bytes, carries 8",
    ),
    (
        "seq + tags past 63 bits",
        _raw({**DATA, "q": 2**63 - 1, "d": [AAC_FRAME_1] * 2}),
        WireError,
        "frame 0 (data): seq 9223372036854775807 + 2 tags overflows 63 bits",
    ),
    (
        "header length",
        _raw({**OPEN, "h": b"FLV\x01"}),
        WireError,
        "field 'h' (header): FLV file header must be 13",
    ),
    (
        "header signature",
        _raw({**OPEN, "h": b"XLV" + bytes(10)}),
        WireError,
        "FLV file header must be 13 bytes",
    ),
    (
        "nested publisher",
        _raw({**OPEN, "p": {"a": {}}}),
        WireError,
        "field 'p' (publisher): must be a scalar, got map",
    ),
    (
        "codec not str",
        _raw({**OPEN, "c": {"audio": 10}}),
        WireError,
        "field 'c' (codecs): must be str, got int",
    ),
    ("resumed not bool", _raw({**OPEN, "r": 0}), WireError, "field 'r' (resumed): must be bool, got int"),
    (
        "gap past start",
        _raw({"t": "gap", "s": 1, "q": 5, "n": 5, "b": 0, "ms": 0}),
        WireError,
        "frame 0 (gap): gap of 5 tags before seq 5 is not a range of seqs >= 1",
    ),
    (
        "gap of nothing",
        _raw({"t": "gap", "s": 1, "q": 5, "n": 0, "b": 0, "ms": 0}),
        WireError,
        "gap of 0 tags",
    ),
    (
        "close sid str",
        _raw({"t": "close", "s": "1", "r": ""}),
        WireError,
        "field 's' (sid): must be int, got str",
    ),
    (
        "ping nan",
        _raw({"t": "ping", "at": math.nan}),
        WireError,
        "field 'at' (t): number must be finite, got nan",
    ),
    ("pong inf", _raw({"t": "pong", "at": math.inf}), WireError, "number must be finite, got inf"),
    ("ping str", _raw({"t": "ping", "at": "1"}), WireError, "field 'at' (t): must be a number, got str"),
    ("ext value", _raw({"t": "ack", "s": msgpack.ExtType(1, b"x")}), WireError, "must be int, got ext"),
    ("0xc1", b"\x82\xa1t\xa3ack\xa1s\xc1", WireError, "field 's' (sid): must be int, got invalid byte"),
    ("second frame bad", _raw(ACK) + _raw({"t": "ack"}), WireError, "frame 1 (ack): missing field 's' (sid)"),
    ("trailing garbage", _raw(ACK) + b"\xc1", WireError, "frame 1: must be a map, got invalid byte"),
    ("truncated map", _raw(ACK)[:-1], WireError, "frame 0 (ack): field 'q' (seq): truncated: value missing"),
    (
        "truncated bin",
        DATA_HEAD + b"\x91\xc4\x20\x08",
        WireError,
        "frame 0 (data): field 'd' (tags): truncated",
    ),
    (
        "truncated length",
        DATA_HEAD + b"\x91\xc6\x00",
        WireError,
        "field 'd' (tags): truncated: length missing",
    ),
    (
        "unknown field too deep",
        b"\x82\xa1t\xa3ack\xa1x" + b"\x91" * 1100 + b"\x00",
        WireError,
        "invalid msgpack",
    ),
    ("text message", "ack", WireError, "expected a binary message, got str"),  # type: ignore[list-item]
    # Bounds, on declared sizes:
    (
        "4 GiB tag",
        DATA_HEAD + b"\x91\xc6\xff\xff\xff\xff",
        LimitExceeded,
        "max_message_size: 4294967284 bytes exceeds limit of 10485760 bytes",
    ),
    (
        "4 billion tags",
        DATA_HEAD + b"\xdd\xff\xff\xff\xff",
        LimitExceeded,
        "wire_max_items: 4294967295 entries exceeds limit of 4096 entries",
    ),
    ("4097 tags", _raw({**DATA, "d": [AAC_FRAME_1] * 4097}), LimitExceeded, "wire_max_items: 4097 entries"),
    ("huge map", b"\xdf\xff\xff\xff\xff", LimitExceeded, "wire_max_items: 4294967295 entries exceeds limit"),
    (
        "4 GiB string",
        b"\x81\xa1t\xdb\xff\xff\xff\xff",
        LimitExceeded,
        "wire_max_str: 4294967295 bytes exceeds",
    ),
    (
        "64 KiB + 1 string",
        _raw({**HELLO, "i": "x" * (MAX_STR + 1)}),
        LimitExceeded,
        "wire_max_str: 65537 bytes",
    ),
    (
        "too many frames",
        _raw(ACK) * (MAX_FRAMES + 1),
        LimitExceeded,
        "wire_max_frames: 8193 frames exceeds limit",
    ),
]


@pytest.mark.parametrize(("message", "error", "text"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_message_is_refused_with_a_clear_reason(
    message: bytes, error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as caught:
        decode_message(message)
    assert type(caught.value) is error
    assert text in str(caught.value), str(caught.value)


def test_message_over_ws_max_message_is_refused_before_parsing() -> None:
    message = encode(Ack(1, 2))
    limit = len(message) - 1
    with pytest.raises(
        LimitExceeded, match=f"ws_max_message: {len(message)} bytes exceeds limit of {limit} bytes"
    ):
        decode_message(message, Limits(ws_max_message=limit))
    assert decode_message(message, Limits(ws_max_message=len(message)))


def test_tag_size_bound_follows_limits_max_message_size() -> None:
    frame = encode(Data(1, 1, (flv.Tag(flv.AUDIO, 0, bytes(101)).encode(),)))
    with pytest.raises(LimitExceeded, match="max_message_size: 101 bytes exceeds limit of 100 bytes"):
        decode_message(frame, Limits(max_message_size=100))
    assert decode_message(frame, Limits(max_message_size=101))


@pytest.mark.parametrize(
    "message",
    [
        DATA_HEAD + b"\x91\xc6\xff\xff\xff\xff",  # a 4 GiB tag, declared
        DATA_HEAD + b"\xdd\xff\xff\xff\xff",  # a 4-billion-entry array, declared
        b"\x82\xa1t\xa3ack\xa1x\xdb\xff\xff\xff\xff",  # a 4 GiB unknown field, declared
    ],
)
def test_declared_giants_fail_at_once_without_allocating(message: bytes) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises((WireError, LimitExceeded)):
        decode_message(message)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 1024 and elapsed < 0.1


def test_unknown_field_full_of_containers_is_skipped_without_building_them() -> None:
    # 4096 arrays of 256 empty maps: ~1 MiB on the wire, ~70 MiB as Python dicts.
    bomb = b"\xdc\x10\x00" + (b"\xdc\x01\x00" + b"\x80" * 256) * 4096
    message = b"\x84\xa1t\xa3ack\xa1s\x01\xa1q\x02\xa1x" + bomb
    tracemalloc.start()
    assert decode_message(message) == [Ack(1, 2)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3 * len(message)


# --- property tests --------------------------------------------------------------------------

ERRORS = (WireError, LimitExceeded)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_wire_errors(message: bytes) -> None:
    try:
        frames = decode_message(message)
    except ERRORS:
        return
    assert decode_message(encode_many(frames)) == frames  # if it parses, it re-serializes


SEED_MESSAGES = [encode(f) for _, f in VALID if len(encode(f)) < 4096] + [
    encode_many(f for _, f in VECTOR_FRAMES)
]


@FUZZ
@given(
    st.sampled_from(SEED_MESSAGES),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
)
def test_mutated_valid_messages_raise_only_wire_errors(message: bytes, edits: list[tuple[int, int]]) -> None:
    mutated = bytearray(message)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    try:
        frames = decode_message(bytes(mutated))
    except ERRORS:
        return
    assert decode_message(encode_many(frames)) == frames


def _msgpack_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=40),
        st.sampled_from([AAC_FRAME_1, flv.file_header(True, True), "edge", "client", "data", "t"]),
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
        ),
        max_leaves=12,
    )


@FUZZ
@given(
    st.sampled_from([spec.type for spec in wire._SPECS.values()] + ["bogus"]),
    st.dictionaries(
        st.sampled_from(
            ["s", "q", "d", "v", "r", "i", "rp", "p", "n", "g", "u", "c", "h", "e", "b", "ms", "at", "zz"]
        ),
        _msgpack_values(),
        max_size=8,
    ),
)
def test_structured_garbage_raises_only_wire_errors(frame_type: str, fields: dict[str, Any]) -> None:
    try:
        frames = decode_message(_raw({"t": frame_type, **fields}))
    except ERRORS:
        return
    assert len(frames) == 1 and type(frames[0]) in FRAME_TYPES
    assert decode_message(encode(frames[0])) == frames


def _frames() -> st.SearchStrategy[wire.Frame]:
    sid, seq, text = st.integers(0, 2**32 - 1), st.integers(0, 2**62), st.text(max_size=30)
    tag = st.builds(
        lambda t, ts, body: flv.Tag(t, ts, body).encode(),
        st.sampled_from(flv.TAG_TYPES),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=64),
    )
    tags = st.lists(tag, min_size=1, max_size=5).map(tuple)
    scalar = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), text
    )
    header = st.builds(flv.file_header, st.booleans(), st.booleans())
    finite = st.floats(allow_nan=False, allow_infinity=False)
    return st.one_of(
        st.builds(
            Hello,
            st.integers(1, 2**32 - 1),
            st.sampled_from(wire.ROLES),
            text,
            st.lists(st.builds(ResumePoint, text, seq), max_size=3).map(tuple),
            text,
            text,
            st.lists(text, max_size=3).map(tuple),
        ),
        st.builds(
            Open,
            sid,
            text,
            text,
            st.dictionaries(text, scalar, max_size=4),
            st.dictionaries(text, text, max_size=2),
            seq,
            st.booleans(),
            header,
            text,
            st.lists(tag, max_size=3).map(tuple),
        ),
        st.builds(Accept, sid),
        st.builds(Reject, sid, text, text),
        st.builds(Data, sid, seq, tags),
        st.builds(Ack, sid, seq),
        # Halved so seq (q/2 + n/2 + 2) stays within 63 bits: q + n + 2 overflowed it now and then.
        st.builds(
            lambda s, q, n, b, ms: Gap(s, q // 2 + n // 2 + 2, n // 2 + 1, b, ms), sid, seq, seq, seq, seq
        ),
        st.builds(Close, st.none() | sid, text, text),
        st.builds(Ping, finite),
        st.builds(Pong, finite),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_frames(), min_size=1, max_size=6))
def test_valid_frames_round_trip(frames: list[wire.Frame]) -> None:
    assert decode_message(encode_many(frames)) == frames


def test_decoding_speed_is_sane() -> None:
    """Not a benchmark: catches an accidental quadratic or per-byte Python loop."""
    message = encode_many(Data(i, 1, (AAC_FRAME_1, AAC_FRAME_2)) for i in range(500))
    started = time.perf_counter()
    for _ in range(10):
        decode_message(message)
    per_frame = (time.perf_counter() - started) / 5000
    assert per_frame < 200e-6, f"{per_frame * 1e6:.1f} us per Data frame"


def test_defaults_fit_the_edge_limits() -> None:
    # A message carries the largest tag plus framing; strings carry AMF strings.
    assert DEFAULT_LIMITS.ws_max_message > DEFAULT_LIMITS.max_message_size + flv.TAG_HEADER_SIZE + 64
    assert DEFAULT_LIMITS.amf_max_string <= MAX_STR
    assert DEFAULT_LIMITS.max_streams * 2 < MAX_FRAMES


if __name__ == "__main__":
    if sys.argv[1:] != ["--vectors"]:
        sys.exit("usage: python tests/relay_edge/test_wire.py --vectors")
    print(render_frame_vectors())
