"""The codec of the edge <-> client link, sans-I/O: frames to and from msgpack.

One WebSocket binary message carries one or more frames, concatenated. A frame
is a msgpack map whose first key is ``"t"`` (the frame type, a short string),
followed by short field keys. ``docs/PROTOCOL.md`` is the specification, with
the wire key of every field and test vectors that ``tests/relay_edge/test_wire.py``
checks against this module.

The frame types live in :mod:`relay_edge.frames` (re-exported here) and the
bounded reader in :mod:`relay_edge.msgpack_reader`. The decoder is
schema-driven: it looks at each value's msgpack type byte and declared length
*before* unpacking it, so it only ever builds the scalars and
byte strings a known field expects. Unknown fields are skipped without being
built, a declared length over a limit raises :class:`LimitExceeded` before any
allocation, and no input can make it build a container it didn't ask for. Only
:class:`WireError` and :class:`LimitExceeded` leave :func:`decode_message`.
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, Final

import msgpack

from .errors import LimitExceeded, WireError
from .flv import FILE_HEADER_SIZE, TAG_HEADER_SIZE, TAG_TYPES
from .frames import (
    PROTOCOL_VERSION,
    ROLES,
    SUBPROTOCOL,
    Accept,
    Ack,
    Close,
    Code,
    Data,
    Frame,
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
)
from .limits import DEFAULT_LIMITS, Limits
from .msgpack_reader import ARRAY, BOOL, FLOAT, INT, KIND_NAMES, MAP, NIL, Reader, show

# The frame types are re-exported: callers write ``wire.Open`` next to ``wire.encode``.
__all__ = [
    "MAX_FRAMES",
    "MAX_ITEMS",
    "MAX_SID",
    "MAX_STR",
    "MAX_TAGS_PER_DATA",
    "MAX_U63",
    "PROTOCOL_VERSION",
    "ROLES",
    "SUBPROTOCOL",
    "Accept",
    "Ack",
    "Close",
    "Code",
    "Data",
    "Frame",
    "Gap",
    "Hello",
    "Open",
    "Ping",
    "Pong",
    "Reject",
    "ResumePoint",
    "TcpAck",
    "TcpClose",
    "TcpData",
    "TcpOpen",
    "append_data",
    "decode_message",
    "encode",
    "encode_data",
    "encode_many",
]

# --- the default bounds (Limits.wire_max_*; the reasons are in limits.py) -------------
# The decoder reads them from the Limits it is given; these names are the defaults.
MAX_STR = DEFAULT_LIMITS.wire_max_str
MAX_ITEMS = DEFAULT_LIMITS.wire_max_items
# Senders split longer runs of tags (a resume after a long outage) into several
# Data frames, so a default receiver always takes them.
MAX_TAGS_PER_DATA: Final = MAX_ITEMS
MAX_FRAMES = DEFAULT_LIMITS.wire_max_frames
# Ranges of integer fields: sids are 32-bit, sequence numbers and counters fit
# a signed 64-bit integer so that every language can hold them.
MAX_SID: Final = 2**32 - 1
MAX_U63: Final = 2**63 - 1

FLV_SIGNATURE = b"FLV\x01"
_TAG_TYPES = frozenset(TAG_TYPES)  # audio, video, script; filter/reserved bits clear


# --- field readers: one per wire type ---------------------------------------------------


def _sid(r: Reader) -> int:
    return r.uint(MAX_SID)


def _u63(r: Reader) -> int:
    return r.uint(MAX_U63)


def _str(r: Reader) -> str:
    return r.str()


def _bool(r: Reader) -> bool:
    r.expect(BOOL)
    return r.up.unpack()


def _float(r: Reader) -> float:
    kind, _ = r.peek()
    if kind not in (FLOAT, INT):
        raise WireError(f"must be a number, got {KIND_NAMES[kind]}")
    value = float(r.up.unpack())
    if not math.isfinite(value):
        raise WireError(f"number must be finite, got {value}")
    return value


def _opt_sid(r: Reader) -> int | None:
    if r.peek()[0] == NIL:
        r.up.unpack()
        return None
    return _sid(r)


def _role(r: Reader) -> str:
    role = r.str()
    if role not in ROLES:
        raise WireError(f"role must be 'edge' or 'client', got {show(role)}")
    return role


def _version(r: Reader) -> int:
    version = r.uint(MAX_SID)
    if version < 1:
        raise WireError("version must be at least 1")
    return version


def _tag(r: Reader) -> bytes:
    tag = r.bin()
    if len(tag) < TAG_HEADER_SIZE:
        raise WireError(f"FLV tag of {len(tag)} bytes is shorter than its {TAG_HEADER_SIZE}-byte header")
    if tag[0] not in _TAG_TYPES:
        raise WireError(f"FLV tag type byte {tag[0]:#04x} is not audio (8), video (9) or script (18)")
    size = int.from_bytes(tag[1:4], "big")
    if size != len(tag) - TAG_HEADER_SIZE:
        raise WireError(f"FLV tag declares {size} body bytes, carries {len(tag) - TAG_HEADER_SIZE}")
    return tag


def _tags(r: Reader) -> tuple[bytes, ...]:
    tags = _tag_list(r)
    if not tags:
        raise WireError("needs at least one tag")
    return tags


def _tag_list(r: Reader) -> tuple[bytes, ...]:
    return tuple(_tag(r) for _ in range(r.count(ARRAY)))


def _header(r: Reader) -> bytes:
    header = r.bin()
    if len(header) != FILE_HEADER_SIZE or not header.startswith(FLV_SIGNATURE):
        raise WireError(f"FLV file header must be {FILE_HEADER_SIZE} bytes starting with 'FLV\\x01'")
    return header


def _bin(r: Reader) -> bytes:
    return r.bin()


def _str_tuple(r: Reader) -> tuple[str, ...]:
    return tuple(r.str() for _ in range(r.count(ARRAY)))


def _resume_points(r: Reader) -> tuple[ResumePoint, ...]:
    return tuple(_resume_point(r) for _ in range(r.count(ARRAY)))


def _resume_point(r: Reader) -> ResumePoint:
    # [uid, seq, ...]: later versions may append elements, which we skip.
    length = r.count(ARRAY)
    if length < 2:
        raise WireError(f"resume point needs [uid, seq], got {length} elements")
    point = ResumePoint(r.str(), _u63(r))
    for _ in range(length - 2):
        r.up.skip()
    return point


def _scalar_map(r: Reader) -> dict[str, Any]:
    return {r.str(): r.scalar() for _ in range(r.count(MAP))}


def _str_map(r: Reader) -> dict[str, str]:
    return {r.str(): r.str() for _ in range(r.count(MAP))}


# --- frame specifications: wire key, attribute, reader, and how to write it ------------


def _points_out(points: Iterable[ResumePoint]) -> list[list[Any]]:
    return [[p.uid, p.seq] for p in points]


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    attr: str
    read: Callable[[Reader], Any]
    write: Callable[[Any], Any] | None = None
    # Optional field written only when set (not None): a rare event on a hot frame.
    omit_none: bool = False


_Class = type  # _Spec's field named ``type`` hides the builtin in its class body


@dataclass(frozen=True, slots=True)
class _Spec:
    type: str
    cls: _Class
    fields: tuple[_Field, ...]
    required: frozenset[str]
    check: Callable[[Any], None] | None = None

    def by_key(self) -> dict[str, _Field]:
        return {f.key: f for f in self.fields}


def _check_data(frame: Data) -> None:
    if frame.seq + len(frame.tags) - 1 > MAX_U63:
        raise WireError(f"seq {frame.seq} + {len(frame.tags)} tags overflows 63 bits")


def _check_gap(frame: Gap) -> None:
    # The dropped range is [seq - tags, seq); sequence numbers start at 1.
    if not 1 <= frame.tags < frame.seq:
        raise WireError(f"gap of {frame.tags} tags before seq {frame.seq} is not a range of seqs >= 1")


def _required(cls: type, fields: tuple[_Field, ...]) -> frozenset[str]:
    """Fields without a dataclass default: a frame missing one is invalid."""
    defaults = {
        f.name for f in dataclass_fields(cls) if f.default is not MISSING or f.default_factory is not MISSING
    }
    return frozenset(f.key for f in fields if f.attr not in defaults)


def _spec(type_name: str, cls: type, *fields: _Field, check: Callable[[Any], None] | None = None) -> _Spec:
    return _Spec(type_name, cls, fields, _required(cls, fields), check)


F = _Field
_SPECS: dict[type, _Spec] = {
    spec.cls: spec
    for spec in (
        _spec(
            "hello",
            Hello,
            F("v", "version", _version),
            F("r", "role", _role),
            F("i", "instance", _str),
            F("rp", "streams", _resume_points, _points_out),
            F("p", "proof", _str),
            F("n", "name", _str),
            F("g", "patterns", _str_tuple),
        ),
        _spec(
            "open",
            Open,
            F("s", "sid", _sid),
            F("u", "uid", _str),
            F("n", "name", _str),
            F("p", "publisher", _scalar_map),
            F("c", "codecs", _str_map),
            F("q", "seq", _u63),
            F("r", "resumed", _bool),
            F("h", "header", _header),
            F("e", "edge", _str),
            F("i", "init", _tag_list),
        ),
        _spec("accept", Accept, F("s", "sid", _sid)),
        _spec("reject", Reject, F("s", "sid", _sid), F("c", "code", _str), F("r", "reason", _str)),
        _spec(
            "data",
            Data,
            F("s", "sid", _sid),
            F("q", "seq", _u63),
            F("d", "tags", _tags),
            F("p", "publisher", _scalar_map, omit_none=True),
            check=_check_data,
        ),
        _spec("ack", Ack, F("s", "sid", _sid), F("q", "seq", _u63)),
        _spec(
            "gap",
            Gap,
            F("s", "sid", _sid),
            F("q", "seq", _u63),
            F("n", "tags", _u63),
            F("b", "bytes", _u63),
            F("ms", "ms", _u63),
            check=_check_gap,
        ),
        _spec("close", Close, F("s", "sid", _opt_sid), F("r", "reason", _str), F("c", "code", _str)),
        _spec("ping", Ping, F("at", "t", _float)),
        _spec("pong", Pong, F("at", "t", _float)),
        _spec("tcp_open", TcpOpen, F("c", "cid", _sid), F("n", "name", _str), F("a", "peer", _str)),
        _spec("tcp_data", TcpData, F("c", "cid", _sid), F("d", "data", _bin)),
        _spec("tcp_ack", TcpAck, F("c", "cid", _sid), F("b", "bytes", _u63)),
        _spec("tcp_close", TcpClose, F("c", "cid", _sid), F("r", "reason", _str)),
    )
}
del F
_BY_TYPE: dict[str, tuple[_Spec, dict[str, _Field]]] = {s.type: (s, s.by_key()) for s in _SPECS.values()}


# --- encoding -------------------------------------------------------------------------------


def _to_wire(frame: Frame) -> dict[str, Any]:
    spec = _SPECS.get(type(frame))
    if spec is None:
        raise TypeError(f"not a wire frame: {type(frame).__name__}")
    out: dict[str, Any] = {"t": spec.type}
    for field in spec.fields:
        value = getattr(frame, field.attr)
        if value is None and field.omit_none:
            continue
        out[field.key] = field.write(value) if field.write else value
    return out


def encode(frame: Frame) -> bytes:
    """One frame as msgpack bytes; fields in specification order, every field written."""
    return msgpack.packb(_to_wire(frame), use_bin_type=True)


def encode_many(frames: Iterable[Frame]) -> bytes:
    """Frames concatenated: the payload of one WebSocket binary message."""
    packer = msgpack.Packer(use_bin_type=True)
    return b"".join([packer.pack(_to_wire(frame)) for frame in frames])


# One Packer per thread, reused: ``msgpack.packb`` builds a Packer per call, which was half
# the cost of a one-tag Data frame (1.2 -> 0.5 µs). Per thread because a Packer keeps state.
_packers: Final = threading.local()


def _pack(obj: object) -> bytes:
    try:
        pack = _packers.pack
    except AttributeError:
        pack = _packers.pack = msgpack.Packer(use_bin_type=True).pack
    return pack(obj)


def encode_data(sid: int, seq: int, tags: Sequence[bytes], publisher: dict[str, Any] | None = None) -> bytes:
    """``encode(Data(sid, seq, tuple(tags)))`` without building the dataclass, as bytes.

    More than :data:`MAX_TAGS_PER_DATA` tags become several Data frames, concatenated.
    Byte for byte what ``msgpack.packb(..., use_bin_type=True)`` gives (tests/relay_edge/test_wire_fast.py).
    """
    parts: list[bytes] = []
    append_data(parts, sid, seq, tags, publisher)
    return parts[0] if len(parts) == 1 else b"".join(parts)


# Below this many tag bytes a frame of several tags goes through msgpack's Packer: one C call
# beats building headers here (a lone tag under 256 bytes, an audio stream's usual frame, is
# one join of ready pieces: 111 bytes 0.95 -> 0.4 us compiled, 1.0 -> 0.6 us pure, and a frame
# of 3 tags by hand was no faster compiled, 40% slower pure). From it on, by hand as parts, so
# the tags are copied once, by the link's join, not three times (Packer buffer, its bytes,
# the join). Timed per frame on this machine: tie near 8 KiB; at 100 KB 4.3 -> 2.8 us.
PARTS_MIN_BYTES: Final = 8192


def append_data(
    parts: list[bytes], sid: int, seq: int, tags: Sequence[bytes], publisher: dict[str, Any] | None = None
) -> None:
    """Append the Data frame(s) of :func:`encode_data` to ``parts``, the pieces of one link message.

    ``b"".join(parts)`` is byte for byte :func:`encode_data`'s result; a big frame's tags are
    appended as they are (not copied) between msgpack headers built here, so the join that
    makes the WebSocket message is their only copy (the hot path of a video flood).
    """
    count = len(tags)
    # One tag (an audio stream's usual batch) first: this test is on every small frame's path.
    if count == 1:
        tag = tags[0]
        size = len(tag)
        if size < 0x100 and publisher is None:  # an audio tag: one join of its pieces
            parts.append(
                b"".join((_DATA_HEAD, _uint_bytes(sid), b"\xa1q", _uint_bytes(seq), _D1, _BIN8[size], tag))
            )
            return
        small = size < PARTS_MIN_BYTES
    elif count > MAX_TAGS_PER_DATA:
        for start in range(0, count, MAX_TAGS_PER_DATA):
            chunk = tags[start : start + MAX_TAGS_PER_DATA]
            append_data(parts, sid, seq + start, chunk, publisher if not start else None)
        return
    else:
        small = sum(map(len, tags)) < PARTS_MIN_BYTES
    if small:
        frame = {"t": "data", "s": sid, "q": seq, "d": tags}
        if publisher is not None:
            frame["p"] = publisher
        parts.append(_pack(frame))
    else:
        _data_parts(parts, sid, seq, tags, publisher)


def _data_parts(
    parts: list[bytes], sid: int, seq: int, tags: Sequence[bytes], publisher: dict[str, Any] | None
) -> None:
    """One Data frame by hand: msgpack headers built here, each tag appended as it is."""
    # {"t": "data", "s": sid, "q": seq, "d": [bin, ...], ("p": publisher)}: msgpack's key order.
    append = parts.append
    append(
        (_DATA_HEAD_P if publisher is not None else _DATA_HEAD)
        + _uint_bytes(sid)
        + b"\xa1q"
        + _uint_bytes(seq)
        + b"\xa1d"
        + _sized_header(len(tags), _FIXARRAYS, b"\xdc", b"\xdd")
    )
    for tag in tags:
        append(_sized_header(len(tag), _BIN8, b"\xc5", b"\xc6"))
        append(tag)
    if publisher is not None:
        append(b"\xa1p" + _pack(publisher))


_DATA_HEAD: Final = b"\x84\xa1t\xa4data\xa1s"  # fixmap of 4, "t": "data", "s"
_DATA_HEAD_P: Final = b"\x85" + _DATA_HEAD[1:]  # the same with "p" (fixmap of 5)
_D1: Final = b"\xa1d\x91"  # "d": a fixarray of one
_FIXINTS: Final = tuple(bytes((n,)) for n in range(128))
_BIN8: Final = tuple(b"\xc4" + bytes((n,)) for n in range(256))
_FIXARRAYS: Final = tuple(bytes((0x90 | n,)) for n in range(16))


def _uint_bytes(n: int) -> bytes:
    """msgpack's encoding of an int (the smallest form, as msgpack writes it)."""
    if 0 <= n < 128:
        return _FIXINTS[n]
    if 0 < n < 0x100000000:  # uint 8, 16, 32 (a seq past 127 takes one of these on every frame)
        return _UINT8[n] if n < 0x100 else _UINT16(0xCD, n) if n < 0x10000 else _UINT32(0xCE, n)
    return _pack(n)


_UINT8: Final = tuple(b"\xcc" + bytes((n,)) for n in range(256))
_UINT16: Final = struct.Struct(">BH").pack
_UINT32: Final = struct.Struct(">BI").pack


def _sized_header(n: int, short: tuple[bytes, ...], head16: bytes, head32: bytes) -> bytes:
    """A msgpack bin or array header for ``n``: from ``short`` (bin8 / fixarray) if it has
    one, else the 16- or 32-bit length form."""
    if n < len(short):
        return short[n]
    if n < 0x10000:
        return head16 + n.to_bytes(2, "big")
    return head32 + n.to_bytes(4, "big")


# --- decoding -------------------------------------------------------------------------------


def decode_message(message: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> list[Frame]:
    """Every frame in one WebSocket binary message, in order.

    Raises :class:`WireError` naming the frame and field for anything invalid,
    or :class:`LimitExceeded` when a size or count passes its bound (checked on
    the declared value, before anything is read). Nothing else escapes.
    """
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise WireError(f"expected a binary message, got {type(message).__name__}")
    if isinstance(message, memoryview):
        message = message.tobytes()
    if len(message) > limits.ws_max_message:
        raise LimitExceeded("ws_max_message", len(message), limits.ws_max_message)
    if not message:
        raise WireError("empty message: needs at least one frame")
    frames = _acks_only(message, limits.wire_max_frames)
    if frames is None and type(message) is bytes:
        frames = _data_only(message, limits)
    return frames if frames is not None else _decode_frames(message, limits)


def _decode_frames(message: bytes | bytearray, limits: Limits) -> list[Frame]:
    """:func:`decode_message`'s general path, for any non-empty message within its size limit."""
    reader = Reader(message, limits)
    frames: list[Frame] = []
    while not reader.at_end():
        if len(frames) == limits.wire_max_frames:
            raise LimitExceeded("wire_max_frames", len(frames) + 1, limits.wire_max_frames, "frames")
        frames.append(_decode_frame(reader, len(frames)))
    return frames


# An Ack as every encoder writes it ({"t": "ack", "s": SID, "q": SEQ}, keys in this order):
# the map header and the bytes up to SID's value. Then "q" and SEQ's.
_ACK_HEAD: Final = b"\x83\xa1t\xa3ack\xa1s"
_ACK_Q: Final = b"\xa1q"
# msgpack's unsigned forms after the positive fixint: type byte -> bytes that follow.
_UINT_WIDTH: Final = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


def ack_pairs(
    message: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS
) -> list[tuple[int, int]] | None:
    """``(sid, seq)`` of every frame in a message of canonical Acks only, without Frame objects.

    What an app sends most: the edge's pump hands these straight to ``EdgeCore.acks``. None
    for anything else (another frame, an empty or oversized message, a memoryview), which
    :func:`decode_message` then decodes or rejects. Within its limits exactly the Acks
    :func:`decode_message` gives (tests/relay_edge/test_wire_fast.py).
    """
    if type(message) is memoryview or not message or len(message) > limits.ws_max_message:
        return None
    return _ack_pairs(message, limits.wire_max_frames)


def _acks_only(message: bytes | bytearray, max_frames: int) -> list[Frame] | None:
    """A message of canonical Ack frames only, decoded without the schema-driven reader; None
    for anything else, which then takes the general path (and gets its errors from there).
    Same frames as the general path (tests/relay_edge/test_wire_fast.py)."""
    pairs = _ack_pairs(message, max_frames)
    return None if pairs is None else [Ack(sid=sid, seq=seq) for sid, seq in pairs]


def _ack_pairs(message: bytes, max_frames: int) -> list[tuple[int, int]] | None:
    # ``bytes`` covers a bytearray too (compiled: bytes indexing and slicing take either).
    # Slices compared, not startswith: compiled, a method call with its argument tuple cost more.
    pairs: list[tuple[int, int]] = []
    pos, end = 0, len(message)
    while pos < end:
        if len(pairs) == max_frames or message[pos : pos + 9] != _ACK_HEAD:
            return None
        sid, pos = _uint(message, pos + 9, end)
        if sid > MAX_SID or message[pos : pos + 2] != _ACK_Q:
            return None
        seq, pos = _uint(message, pos + 2, end)
        if seq > MAX_U63:
            return None
        pairs.append((sid, seq))
    return pairs


def _data_only(message: bytes, limits: Limits) -> list[Frame] | None:
    """A message of canonical Data frames only (as :func:`append_data` writes them, without
    ``publisher``), decoded without the schema-driven reader; None for anything else, which
    then takes the general path (and gets its errors from there).

    What an app receives most. Each tag is sliced from the message, its only copy; the general
    path copies the message into msgpack's buffer and each tag out of it, and reads every value
    through a peek (20 one-tag audio frames: 171 -> 34 us compiled, 215 -> 79 pure; a 243 KB
    video message 97 -> 25 us compiled). Same frames as the general
    path (tests/relay_edge/test_wire_fast.py).
    """
    frames: list[Frame] = []
    pos, end = 0, len(message)
    max_bin = TAG_HEADER_SIZE + limits.max_message_size
    while pos < end:
        if len(frames) == limits.wire_max_frames or message[pos : pos + 10] != _DATA_HEAD:
            return None
        sid, pos = _uint(message, pos + 10, end)
        if sid > MAX_SID or message[pos : pos + 2] != _ACK_Q:
            return None
        seq, pos = _uint(message, pos + 2, end)
        if seq > MAX_U63 or message[pos : pos + 2] != b"\xa1d":
            return None
        count, pos = _array_header(message, pos + 2, end)
        if not 0 < count <= limits.wire_max_items or seq + count - 1 > MAX_U63:
            return None
        tags: list[bytes] = []
        for _ in range(count):
            size, pos = _bin_header(message, pos, end)
            start, pos = pos, pos + size
            if not 0 <= size <= max_bin or pos > end or not _is_tag(message, start, size):
                return None
            tags.append(message[start:pos])
        frames.append(Data(sid, seq, tuple(tags)))
    return frames


def _array_header(message: bytes, pos: int, end: int) -> tuple[int, int]:
    """The length of the msgpack array header at ``pos`` and the position after it (-1: none)."""
    if pos >= end:
        return -1, end
    first = message[pos]
    if 0x90 <= first < 0xA0:
        return first & 0x0F, pos + 1
    if first == 0xDC and pos + 3 <= end:
        return message[pos + 1] << 8 | message[pos + 2], pos + 3
    return -1, end  # array 32 holds more than wire_max_items can allow: the general path says so


def _bin_header(message: bytes, pos: int, end: int) -> tuple[int, int]:
    """The length of the msgpack bin header at ``pos`` and the position after it (-1: none)."""
    if pos + 2 > end:
        return -1, end
    first = message[pos]
    if first == 0xC4:
        return message[pos + 1], pos + 2
    if first == 0xC5 and pos + 3 <= end:
        return message[pos + 1] << 8 | message[pos + 2], pos + 3
    if first == 0xC6 and pos + 5 <= end:
        return int.from_bytes(message[pos + 1 : pos + 5], "big"), pos + 5
    return -1, end


def _is_tag(message: bytes, start: int, size: int) -> bool:
    """Whether ``message[start:start + size]`` is an FLV tag :func:`_tag` accepts."""
    if size < TAG_HEADER_SIZE or message[start] not in _TAG_TYPES:
        return False
    declared = message[start + 1] << 16 | message[start + 2] << 8 | message[start + 3]
    return declared == size - TAG_HEADER_SIZE


def _uint(message: bytes, pos: int, end: int) -> tuple[int, int]:
    """The unsigned msgpack integer at ``pos`` and the position after it.

    Anything else (another type, truncated) gives ``MAX_U63 + 1``: over every field's range,
    so the caller's range test turns it into "not a canonical Ack".
    """
    if pos >= end:
        return MAX_U63 + 1, end
    first = message[pos]
    if first < 0x80:
        return first, pos + 1
    if first == 0xCD and pos + 3 <= end:  # uint 16: a seq from 256 on
        return message[pos + 1] << 8 | message[pos + 2], pos + 3
    width = _UINT_WIDTH.get(first)
    if width is None or pos + 1 + width > end:
        return MAX_U63 + 1, end
    return int.from_bytes(message[pos + 1 : pos + 1 + width], "big"), pos + 1 + width


def _decode_frame(r: Reader, index: int) -> Frame:
    where = f"frame {index}"
    try:
        spec, by_key, fields = _frame_type(r)
        where = f"frame {index} ({spec.type})"
        values = _read_fields(r, spec, by_key, fields)
        frame = spec.cls(**values)
        if spec.check:
            spec.check(frame)
        return frame
    except _FieldError as field_error:  # one name per type: the compiled core types each
        raise WireError(
            f"{where}: field {field_error.key!r} ({field_error.attr}): {field_error.error}"
        ) from None
    except WireError as e:
        raise WireError(f"{where}: {e}") from None
    except msgpack.OutOfData:
        raise WireError(f"{where}: truncated") from None
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as bad:
        # Only reachable on invalid msgpack the peeks don't catch (byte 0xc1,
        # nesting past msgpack's stack inside a skipped unknown field).
        raise WireError(f"{where}: invalid msgpack ({type(bad).__name__})") from None


class _FieldError(Exception):
    """A field's error, on its way to :func:`_decode_frame` to get the frame's name."""

    def __init__(self, key: str, attr: str, error: str) -> None:
        self.key, self.attr, self.error = key, attr, error


def _frame_type(r: Reader) -> tuple[_Spec, dict[str, _Field], int]:
    """Consume the map header and ``"t"``; return the spec and how many fields follow."""
    kind, _ = r.peek()
    if kind != MAP:
        raise WireError(f"must be a map, got {KIND_NAMES[kind]}")
    length = r.count(MAP)
    if length == 0 or r.key() != "t":
        raise WireError("first key must be 't'")
    type_name = r.str()
    entry = _BY_TYPE.get(type_name)
    if entry is None:
        raise WireError(f"unknown frame type {show(type_name)}")
    return entry[0], entry[1], length - 1


def _read_fields(r: Reader, spec: _Spec, by_key: dict[str, _Field], count: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    seen: set[str] = {"t"}
    for _ in range(count):
        key = r.key()
        if key is None:
            raise WireError("field keys must be strings")
        if key in seen:
            raise WireError(f"duplicate field {show(key)}")
        seen.add(key)
        field = by_key.get(key)
        if field is None:
            r.up.skip()  # unknown field: forward compatible, and never built
            continue
        try:
            values[field.attr] = field.read(r)
        except WireError as e:
            raise _FieldError(key, field.attr, str(e)) from None
        except msgpack.OutOfData:  # a declared length runs past the message
            raise _FieldError(key, field.attr, "truncated") from None
    if len(values) < len(spec.fields):  # rare: defaults, or a required field missing
        for f in spec.fields:
            if f.key in spec.required and f.attr not in values:
                raise WireError(f"missing field {f.key!r} ({f.attr})")
    return values
