"""Frames of the edge <-> client link, sans-I/O: encode to and decode from msgpack.

One WebSocket binary message carries one or more frames, concatenated. A frame
is a msgpack map whose first key is ``"t"`` (the frame type, a short string),
followed by short field keys. ``docs/PROTOCOL.md`` is the specification, with
the wire key of every field and test vectors that ``tests/relay_edge/test_wire.py``
checks against this module.

The decoder is schema-driven: it looks at each value's msgpack type byte and
declared length *before* unpacking it, so it only ever builds the scalars and
byte strings a known field expects. Unknown fields are skipped without being
built, a declared length over a limit raises :class:`LimitExceeded` before any
allocation, and no input can make it build a container it didn't ask for. Only
:class:`WireError` and :class:`LimitExceeded` leave :func:`decode_message`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, dataclass
from typing import Any, Union

import msgpack

from .errors import LimitExceeded, WireError
from .flv import FILE_HEADER_SIZE, TAG_HEADER_SIZE
from .limits import DEFAULT_LIMITS, Limits

PROTOCOL_VERSION = 1
# WebSocket subprotocol: names the framing (msgpack frames below). A framing
# change that old peers can't parse gets a new name; everything else is
# negotiated with Hello.version.
SUBPROTOCOL = "rtmp-relay.v1"

ROLES = ("edge", "client")

# --- the default bounds (Limits.wire_max_*; the reasons are in limits.py) -------------
# The decoder reads them from the Limits it is given; these names are the defaults.
MAX_STR = DEFAULT_LIMITS.wire_max_str
MAX_ITEMS = DEFAULT_LIMITS.wire_max_items
# Senders split longer runs of tags (a resume after a long outage) into several
# Data frames, so a default receiver always takes them.
MAX_TAGS_PER_DATA = MAX_ITEMS
MAX_FRAMES = DEFAULT_LIMITS.wire_max_frames
# Ranges of integer fields: sids are 32-bit, sequence numbers and counters fit
# a signed 64-bit integer so that every language can hold them.
MAX_SID = 2**32 - 1
MAX_U63 = 2**63 - 1

FLV_SIGNATURE = b"FLV\x01"
_TAG_TYPES = frozenset((8, 9, 18))  # audio, video, script; filter/reserved bits clear


class Code:
    """Well-known ``code`` values of Reject and Close frames. Unknown codes mean "error"."""

    # Stream level: Reject, or Close with a sid.
    UNPUBLISHED = "unpublished"  # edge: the publisher ended the stream
    PUBLISHER_LOST = "publisher_lost"  # edge: the publisher's connection dropped or timed out
    FORBIDDEN = "forbidden"  # client: the app refuses this stream (bad or unknown key, policy)
    BUSY = "busy"  # client: the app can't take more streams now
    DONE = "done"  # client: the app needs no more of this stream
    OVERFLOW = "overflow"  # edge: the stream's buffer limits forced it closed
    ERROR = "error"  # anything else; the reason says what
    # Link level: Close with sid None.
    SHUTDOWN = "shutdown"  # the process is stopping (deploy, restart): redial
    VERSION = "version"  # no common protocol version
    PROTOCOL = "protocol"  # the peer sent something invalid; the reason is our error message
    AUTH = "auth"  # the acceptor's proof did not verify
    TIMEOUT = "timeout"  # nothing received for Limits.ping_timeout
    REPLACED = "replaced"  # a newer link from the same peer instance took over


# --- frames --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """A stream a peer holds: ``seq`` is the highest sequence number it delivered."""

    uid: str
    seq: int


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame each way. The acceptor's Hello carries ``proof`` (see auth.acceptor_proof).

    ``streams``: from the client, the streams it holds (resume points); from
    the edge, the streams live at the edge with the highest seq assigned.
    ``patterns``: from the client, name globs it wants (empty = all).
    """

    version: int
    role: str
    instance: str
    streams: tuple[ResumePoint, ...] = ()
    proof: str = ""
    name: str = ""
    patterns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, repr=False)
class Open:
    """Edge -> client: a stream starts (or resumes) on this link as ``sid``.

    ``seq`` is the next sequence number the client should expect (the first
    tag of the next Data, unless a Gap reports it lost). ``header`` is the
    13-byte FLV file header; ``init`` are unsequenced tags (metadata, codec
    sequence headers) a fresh decoder needs before the first Data tag.
    """

    sid: int
    uid: str
    name: str
    publisher: dict[str, Any]
    codecs: dict[str, str]
    seq: int
    resumed: bool
    header: bytes
    edge: str = ""
    init: tuple[bytes, ...] = ()

    def __repr__(self) -> str:  # no media bytes in logs
        return (
            f"Open(sid={self.sid}, uid={self.uid!r}, name={self.name!r}, codecs={self.codecs!r}, "
            f"seq={self.seq}, resumed={self.resumed}, init={len(self.init)} tags, edge={self.edge!r})"
        )


@dataclass(frozen=True, slots=True)
class Accept:
    """Client -> edge: the app takes stream ``sid``."""

    sid: int


@dataclass(frozen=True, slots=True)
class Reject:
    """Client -> edge: the app refuses stream ``sid``; the edge fails the publish."""

    sid: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True, repr=False)
class Data:
    """Edge -> client: FLV tags (header + body each); ``tags[i]`` has sequence ``seq + i``.

    ``publisher`` is set only on the Data frame whose first tag is the first of a new
    publisher that took the stream over with the same key (a publisher reconnect).
    """

    sid: int
    seq: int
    tags: tuple[bytes, ...]
    publisher: dict[str, Any] | None = None

    def __repr__(self) -> str:
        size = sum(len(tag) for tag in self.tags)
        return f"Data(sid={self.sid}, seq={self.seq}, tags={len(self.tags)}, bytes={size})"


@dataclass(frozen=True, slots=True)
class Ack:
    """Client -> edge: every tag up to ``seq`` reached the app; frees credit."""

    sid: int
    seq: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Edge -> client: ``tags`` tags (``bytes`` bytes, ``ms`` of media) before ``seq`` were dropped."""

    sid: int
    seq: int
    tags: int
    bytes: int
    ms: int


@dataclass(frozen=True, slots=True)
class Close:
    """Either way: stream ``sid`` ends, or with ``sid`` None the whole link."""

    sid: int | None
    reason: str
    code: str = ""


@dataclass(frozen=True, slots=True)
class Ping:
    """Either way: ``t`` is the sender's clock; the peer echoes it in a Pong."""

    t: float


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to a Ping, echoing its ``t``."""

    t: float


@dataclass(frozen=True, slots=True)
class TcpOpen:
    """Edge -> client: a raw TCP connection arrived on tunnel ``name`` (raw TCP mode)."""

    cid: int
    name: str
    peer: str = ""


@dataclass(frozen=True, slots=True, repr=False)
class TcpData:
    """Either way: bytes of tunneled connection ``cid``."""

    cid: int
    data: bytes

    def __repr__(self) -> str:
        return f"TcpData(cid={self.cid}, len={len(self.data)})"


@dataclass(frozen=True, slots=True)
class TcpAck:
    """Either way: ``bytes`` of ``cid`` written to the socket so far; credit for the sender."""

    cid: int
    bytes: int


@dataclass(frozen=True, slots=True)
class TcpClose:
    """Either way: EOF on ``cid`` (``reason`` empty) or an error that ends it."""

    cid: int
    reason: str = ""


# Union, not |: isinstance() needs it on Python 3.10.
Frame = Union[  # noqa: UP007
    Hello, Open, Accept, Reject, Data, Ack, Gap, Close, Ping, Pong, TcpOpen, TcpData, TcpAck, TcpClose
]


# --- msgpack type bytes ----------------------------------------------------------------
# The decoder peeks at the type byte and declared length before unpacking.

_INT, _NIL, _BOOL, _FLOAT, _STR, _BIN, _ARRAY, _MAP, _EXT, _BAD = range(10)
_KIND_NAMES = ("int", "nil", "bool", "float", "str", "bin", "array", "map", "ext", "invalid byte")


def _head_table() -> list[tuple[int, int, int]]:
    """For each first byte: (kind, length held in the byte, width of a following length)."""
    table = [(_BAD, 0, 0)] * 256
    for b in [*range(0x00, 0x80), *range(0xE0, 0x100), *range(0xCC, 0xD4)]:
        table[b] = (_INT, 0, 0)
    for b in [*range(0xD4, 0xD9), 0xC7, 0xC8, 0xC9]:
        table[b] = (_EXT, 0, 0)
    for b in range(0x80, 0x90):
        table[b] = (_MAP, b & 0x0F, 0)
    for b in range(0x90, 0xA0):
        table[b] = (_ARRAY, b & 0x0F, 0)
    for b in range(0xA0, 0xC0):
        table[b] = (_STR, b & 0x1F, 0)
    table[0xC0], table[0xC2], table[0xC3] = (_NIL, 0, 0), (_BOOL, 0, 0), (_BOOL, 0, 0)
    table[0xCA] = table[0xCB] = (_FLOAT, 0, 0)
    for b, kind, width in (
        (0xC4, _BIN, 1),
        (0xC5, _BIN, 2),
        (0xC6, _BIN, 4),
        (0xD9, _STR, 1),
        (0xDA, _STR, 2),
        (0xDB, _STR, 4),
        (0xDC, _ARRAY, 2),
        (0xDD, _ARRAY, 4),
        (0xDE, _MAP, 2),
        (0xDF, _MAP, 4),
    ):
        table[b] = (kind, 0, width)
    return table


_HEAD = _head_table()


def _show(value: str, limit: int = 40) -> str:
    """A peer-supplied string, cut short, for an error message."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


class _Reader:
    """Walks one message: peeks at type and length, then unpacks exactly one scalar.

    msgpack's Unpacker is the cursor (and does the C-speed scalar decoding);
    its own max_*_len bounds are a second line behind the peeks.
    """

    __slots__ = ("buf", "end", "max_bin", "max_items", "max_str", "up")

    def __init__(self, message: bytes | bytearray, limits: Limits) -> None:
        self.buf = message
        self.end = len(message)
        # A bin is at most one FLV tag: header plus the largest RTMP message body.
        self.max_bin = TAG_HEADER_SIZE + limits.max_message_size
        self.max_str = limits.wire_max_str
        self.max_items = limits.wire_max_items
        self.up = msgpack.Unpacker(
            None,
            raw=False,
            use_list=False,
            max_buffer_size=max(self.end, 1),
            max_bin_len=self.max_bin,
            max_str_len=self.max_str,
            max_array_len=self.max_items,
            max_map_len=self.max_items,
            max_ext_len=0,
        )
        self.up.feed(message)

    def at_end(self) -> bool:
        return self.up.tell() >= self.end

    def peek(self) -> tuple[int, int]:
        """``(kind, declared length)`` of the next value, without consuming it."""
        pos = self.up.tell()
        if pos >= self.end:
            raise WireError("truncated: value missing")
        kind, length, width = _HEAD[self.buf[pos]]
        if width:
            if pos + 1 + width > self.end:
                raise WireError("truncated: length missing")
            length = int.from_bytes(self.buf[pos + 1 : pos + 1 + width], "big")
        return kind, length

    def expect(self, kind: int) -> int:
        """Check the next value is of ``kind``; return its declared length."""
        got, length = self.peek()
        if got != kind:
            raise WireError(f"must be {_KIND_NAMES[kind]}, got {_KIND_NAMES[got]}")
        return length

    def uint(self, maximum: int) -> int:
        self.expect(_INT)
        value = self.up.unpack()
        if not 0 <= value <= maximum:
            raise WireError(f"integer {value} out of range 0..{maximum}")
        return value

    def str(self) -> str:
        return self._str(self.expect(_STR))

    def key(self) -> str | None:
        """The next map key, or None when it is not a string."""
        kind, length = self.peek()
        return self._str(length) if kind == _STR else None

    def _str(self, length: int) -> str:
        if length > self.max_str:
            raise LimitExceeded("wire_max_str", length, self.max_str)
        try:
            return self.up.unpack()
        except UnicodeDecodeError:
            raise WireError("string is not valid UTF-8") from None

    def bin(self) -> bytes:
        length = self.expect(_BIN)
        if length > self.max_bin:
            # Name the Limits field behind the bound: a bin holds at most one tag.
            raise LimitExceeded("max_message_size", length - TAG_HEADER_SIZE, self.max_bin - TAG_HEADER_SIZE)
        return self.up.unpack()

    def count(self, kind: int) -> int:
        """Consume an array or map header, bounded by ``Limits.wire_max_items``."""
        length = self.expect(kind)
        if length > self.max_items:
            raise LimitExceeded("wire_max_items", length, self.max_items, "entries")
        return self.up.read_array_header() if kind == _ARRAY else self.up.read_map_header()

    def scalar(self) -> Any:
        """nil, boolean, integer, float or string (a publisher field's value)."""
        kind, length = self.peek()
        if kind == _STR:
            return self._str(length)
        if kind in (_NIL, _BOOL, _INT, _FLOAT):
            return self.up.unpack()
        raise WireError(f"must be a scalar, got {_KIND_NAMES[kind]}")


# --- field readers: one per wire type ---------------------------------------------------


def _sid(r: _Reader) -> int:
    return r.uint(MAX_SID)


def _u63(r: _Reader) -> int:
    return r.uint(MAX_U63)


def _str(r: _Reader) -> str:
    return r.str()


def _bool(r: _Reader) -> bool:
    r.expect(_BOOL)
    return r.up.unpack()


def _float(r: _Reader) -> float:
    kind, _ = r.peek()
    if kind not in (_FLOAT, _INT):
        raise WireError(f"must be a number, got {_KIND_NAMES[kind]}")
    value = float(r.up.unpack())
    if not math.isfinite(value):
        raise WireError(f"number must be finite, got {value}")
    return value


def _opt_sid(r: _Reader) -> int | None:
    if r.peek()[0] == _NIL:
        r.up.unpack()
        return None
    return _sid(r)


def _role(r: _Reader) -> str:
    role = r.str()
    if role not in ROLES:
        raise WireError(f"role must be 'edge' or 'client', got {_show(role)}")
    return role


def _version(r: _Reader) -> int:
    version = r.uint(MAX_SID)
    if version < 1:
        raise WireError("version must be at least 1")
    return version


def _tag(r: _Reader) -> bytes:
    tag = r.bin()
    if len(tag) < TAG_HEADER_SIZE:
        raise WireError(f"FLV tag of {len(tag)} bytes is shorter than its {TAG_HEADER_SIZE}-byte header")
    if tag[0] not in _TAG_TYPES:
        raise WireError(f"FLV tag type byte {tag[0]:#04x} is not audio (8), video (9) or script (18)")
    size = int.from_bytes(tag[1:4], "big")
    if size != len(tag) - TAG_HEADER_SIZE:
        raise WireError(f"FLV tag declares {size} body bytes, carries {len(tag) - TAG_HEADER_SIZE}")
    return tag


def _tags(r: _Reader) -> tuple[bytes, ...]:
    tags = _tag_list(r)
    if not tags:
        raise WireError("needs at least one tag")
    return tags


def _tag_list(r: _Reader) -> tuple[bytes, ...]:
    return tuple(_tag(r) for _ in range(r.count(_ARRAY)))


def _header(r: _Reader) -> bytes:
    header = r.bin()
    if len(header) != FILE_HEADER_SIZE or not header.startswith(FLV_SIGNATURE):
        raise WireError(f"FLV file header must be {FILE_HEADER_SIZE} bytes starting with 'FLV\\x01'")
    return header


def _bin(r: _Reader) -> bytes:
    return r.bin()


def _str_tuple(r: _Reader) -> tuple[str, ...]:
    return tuple(r.str() for _ in range(r.count(_ARRAY)))


def _resume_points(r: _Reader) -> tuple[ResumePoint, ...]:
    return tuple(_resume_point(r) for _ in range(r.count(_ARRAY)))


def _resume_point(r: _Reader) -> ResumePoint:
    # [uid, seq, ...]: later versions may append elements, which we skip.
    length = r.count(_ARRAY)
    if length < 2:
        raise WireError(f"resume point needs [uid, seq], got {length} elements")
    point = ResumePoint(r.str(), _u63(r))
    for _ in range(length - 2):
        r.up.skip()
    return point


def _scalar_map(r: _Reader) -> dict[str, Any]:
    return {r.str(): r.scalar() for _ in range(r.count(_MAP))}


def _str_map(r: _Reader) -> dict[str, str]:
    return {r.str(): r.str() for _ in range(r.count(_MAP))}


# --- frame specifications: wire key, attribute, reader, and how to write it ------------


def _points_out(points: Iterable[ResumePoint]) -> list[list[Any]]:
    return [[p.uid, p.seq] for p in points]


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    attr: str
    read: Callable[[_Reader], Any]
    write: Callable[[Any], Any] | None = None
    # Optional field written only when set (not None): a rare event on a hot frame.
    omit_none: bool = False


@dataclass(frozen=True, slots=True)
class _Spec:
    type: str
    cls: type
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
    defaults = {name for name in cls.__dataclass_fields__ if _has_default(cls, name)}
    return frozenset(f.key for f in fields if f.attr not in defaults)


def _has_default(cls: type, name: str) -> bool:
    field = cls.__dataclass_fields__[name]
    return field.default is not MISSING or field.default_factory is not MISSING


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
    return b"".join(packer.pack(_to_wire(frame)) for frame in frames)


def encode_data(sid: int, seq: int, tags: Sequence[bytes], publisher: dict[str, Any] | None = None) -> bytes:
    """``encode(Data(sid, seq, tuple(tags)))`` without building the dataclass (the hot path).

    More than :data:`MAX_TAGS_PER_DATA` tags become several Data frames, concatenated.
    """
    if len(tags) <= MAX_TAGS_PER_DATA:
        frame = {"t": "data", "s": sid, "q": seq, "d": tags}
        if publisher is not None:
            frame["p"] = publisher
        return msgpack.packb(frame, use_bin_type=True)
    return b"".join(
        encode_data(
            sid, seq + start, tags[start : start + MAX_TAGS_PER_DATA], publisher if not start else None
        )
        for start in range(0, len(tags), MAX_TAGS_PER_DATA)
    )


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
    reader = _Reader(message, limits)
    frames: list[Frame] = []
    while not reader.at_end():
        if len(frames) == limits.wire_max_frames:
            raise LimitExceeded("wire_max_frames", len(frames) + 1, limits.wire_max_frames, "frames")
        frames.append(_decode_frame(reader, len(frames)))
    return frames


def _decode_frame(r: _Reader, index: int) -> Frame:
    where = f"frame {index}"
    try:
        spec, by_key, fields = _frame_type(r)
        where = f"frame {index} ({spec.type})"
        values = _read_fields(r, spec, by_key, fields)
        frame = spec.cls(**values)
        if spec.check:
            spec.check(frame)
        return frame
    except _FieldError as e:
        raise WireError(f"{where}: field {e.key!r} ({e.attr}): {e.error}") from None
    except WireError as e:
        raise WireError(f"{where}: {e}") from None
    except msgpack.OutOfData:
        raise WireError(f"{where}: truncated") from None
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as e:
        # Only reachable on invalid msgpack the peeks don't catch (byte 0xc1,
        # nesting past msgpack's stack inside a skipped unknown field).
        raise WireError(f"{where}: invalid msgpack ({type(e).__name__})") from None


class _FieldError(Exception):
    """A field's error, on its way to :func:`_decode_frame` to get the frame's name."""

    def __init__(self, key: str, attr: str, error: str) -> None:
        self.key, self.attr, self.error = key, attr, error


def _frame_type(r: _Reader) -> tuple[_Spec, dict[str, _Field], int]:
    """Consume the map header and ``"t"``; return the spec and how many fields follow."""
    kind, _ = r.peek()
    if kind != _MAP:
        raise WireError(f"must be a map, got {_KIND_NAMES[kind]}")
    length = r.count(_MAP)
    if length == 0 or r.key() != "t":
        raise WireError("first key must be 't'")
    type_name = r.str()
    entry = _BY_TYPE.get(type_name)
    if entry is None:
        raise WireError(f"unknown frame type {_show(type_name)}")
    return entry[0], entry[1], length - 1


def _read_fields(r: _Reader, spec: _Spec, by_key: dict[str, _Field], count: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    seen: set[str] = {"t"}
    for _ in range(count):
        key = r.key()
        if key is None:
            raise WireError("field keys must be strings")
        if key in seen:
            raise WireError(f"duplicate field {_show(key)}")
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
