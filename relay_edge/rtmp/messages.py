"""RTMP message types, protocol control bodies and command encoding (RTMP spec 1.0, sections 5.4, 6, 7).

Pure functions over message bodies; :mod:`.session` and :mod:`.client` decide
when to send what.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from .. import flv
from ..errors import MessageError
from ..limits import DEFAULT_LIMITS, Limits
from . import amf0

# --- message type ids -----------------------------------------------------------------
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

# --- user control event types (spec 7.1.7) -------------------------------------------
STREAM_BEGIN = 0
STREAM_EOF = 1
STREAM_DRY = 2
SET_BUFFER_LENGTH = 3
STREAM_IS_RECORDED = 4
PING_REQUEST = 6
PING_RESPONSE = 7

# Set Peer Bandwidth limit types.
LIMIT_HARD = 0
LIMIT_SOFT = 1
LIMIT_DYNAMIC = 2

# --- chunk stream ids we send on -------------------------------------------------------
CSID_PROTOCOL = 2  # protocol control and user control, message stream 0 (spec 5.4)
CSID_COMMAND = 3  # NetConnection commands and their answers
CSID_AUDIO = 4
CSID_DATA = 5
CSID_VIDEO = 6
CSID_STREAM_COMMAND = 8  # NetStream commands (publish, ...) from our client

# What our connect answer claims; FMS 3 values, as nginx-rtmp and MediaMTX send.
FMS_VERSION = "FMS/3,0,1,123"
CAPABILITIES = 31

# Enhanced RTMP v2, "Enhancing NetConnection connect Command". The edge forwards every
# codec's bytes untouched, so it answers the wildcard with CanForward; it passes multitrack
# bodies and parses ModEx, and sends no reconnect requests (capsEx bits 0x02 | 0x04).
ENHANCED_KEYS = ("fourCcList", "videoFourCcInfoMap", "audioFourCcInfoMap", "capsEx")
FOURCC_CAN_FORWARD = 0x04
CAPS_EX = 0x02 | 0x04


def enhanced_rtmp_answer(connect_props: dict[str, Any]) -> dict[str, Any]:
    """What ``_result`` adds for a publisher that declared Enhanced RTMP in ``connect``; {} otherwise.

    A legacy publisher gets the legacy answer, unchanged.
    """
    if not any(key in connect_props for key in ENHANCED_KEYS):
        return {}
    forward = {"*": float(FOURCC_CAN_FORWARD)}
    answer: dict[str, Any] = {"videoFourCcInfoMap": forward, "audioFourCcInfoMap": dict(forward)}
    answer["capsEx"] = float(CAPS_EX)
    if "fourCcList" in connect_props:  # v1 clients read this one
        answer["fourCcList"] = ["*"]
    return answer


OUT_CHUNK_SIZE = 4096  # what we ask peers to read our chunks with; nginx-rtmp's default

SET_DATA_FRAME = "@setDataFrame"
_SET_DATA_FRAME_AMF = amf0.encode(SET_DATA_FRAME)

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_FLV_TAG = struct.Struct(">BBHBHB3x")  # type, size(3), timestamp(3) + extension, stream id(3)
_FLV_TAG_SIZE = 11


# --- protocol control bodies --------------------------------------------------------------


def u32(value: int) -> bytes:
    """A 4-byte big-endian body, for Set Chunk Size, Abort, Acknowledgement, Window Ack Size."""
    return _U32.pack(value & 0xFFFFFFFF)


def set_peer_bandwidth(window: int, limit_type: int = LIMIT_DYNAMIC) -> bytes:
    return _U32.pack(window) + bytes((limit_type,))


def user_control(event: int, *values: int) -> bytes:
    """A User Control body: event type, then each value as u32 (stream id, timestamp, ...)."""
    return _U16.pack(event) + b"".join([_U32.pack(v & 0xFFFFFFFF) for v in values])


def read_u32(body: bytes, what: str) -> int:
    """The leading u32 of a protocol control body; MessageError if it is short."""
    if len(body) < 4:
        raise MessageError(f"{what} message of {len(body)} bytes (needs 4)")
    return _U32.unpack_from(body)[0]


def parse_user_control(body: bytes) -> tuple[int, bytes]:
    """``(event type, event data)`` of a User Control body."""
    if len(body) < 2:
        raise MessageError(f"User Control message of {len(body)} bytes (needs at least 2)")
    return _U16.unpack_from(body)[0], body[2:]


# --- commands ---------------------------------------------------------------------------


class Command(NamedTuple):
    """A decoded command message: name, transaction id, command object, further arguments."""

    name: str
    transaction_id: float
    command_object: Any
    args: list[Any]


def encode_command(name: str, transaction_id: float, command_object: Any = None, *args: Any) -> bytes:
    """The AMF0 body of a command message."""
    return amf0.encode(name, transaction_id, command_object, *args)


def decode_command(
    body: bytes,
    amf3: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    wanted: frozenset[str] | None = None,
) -> Command:
    """Decode a command message body (type 20, or type 17 when ``amf3``).

    Type 17 bodies start with one 0x00 format byte, then AMF0 values (spec 7.1.1).
    With ``wanted``, a command whose name is not in it comes back without its
    transaction id and arguments, which are never decoded: a caller that ignores
    unknown commands spends nothing on their bodies.
    """
    if amf3 and body[:1] == b"\x00":
        body = body[1:]
    name, pos = amf0.decode_value(body, 0, limits) if body else (None, 0)
    if not isinstance(name, str):
        raise MessageError("command message does not start with a command name string")
    if wanted is not None and name not in wanted:
        return Command(name, 0.0, None, [])
    values = [name, *amf0.decode(body, limits, pos)]
    txn = values[1] if len(values) > 1 else 0.0
    if isinstance(txn, bool) or not isinstance(txn, float):
        raise MessageError(f"command {name!r}: transaction id is {type(txn).__name__}, not a number")
    obj = values[2] if len(values) > 2 else None
    return Command(name, txn, obj, values[3:])


def status_info(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    """The information object of ``onStatus``/``_result``/``_error``."""
    return {"level": level, "code": code, "description": description, **extra}


# --- data and aggregate messages -------------------------------------------------------


def strip_set_data_frame(body: bytes) -> bytes:
    """Drop a leading ``"@setDataFrame"`` AMF0 string, leaving e.g. ``"onMetaData"`` + ECMA array.

    Publishers send metadata as ``@setDataFrame, onMetaData, {...}``; the
    stored (FLV) form is without the first string. Other bodies come back as is.
    """
    if body.startswith(_SET_DATA_FRAME_AMF):
        return body[len(_SET_DATA_FRAME_AMF) :]
    return body


def data_tags(msg_type: int, body: bytes, timestamp: int) -> list[tuple[int, int, bytes]]:
    """``(FLV type, timestamp, data)`` of a Data (AMF0/AMF3) or Aggregate message, as FLV stores them.

    Metadata loses its ``@setDataFrame`` (and an AMF3 data message its leading AMF0 marker);
    aggregate sub-tags other than audio, video and script are skipped. Servers and players
    both report media this way.
    """
    if msg_type == AGGREGATE:
        return [
            (t, ts, strip_set_data_frame(data) if t == flv.SCRIPT else data)
            for t, ts, data in split_aggregate(body, timestamp)
            if t in flv.TAG_TYPES
        ]
    if msg_type == DATA_AMF3 and body[:1] == b"\x00":
        body = body[1:]
    return [(flv.SCRIPT, timestamp, strip_set_data_frame(body))]


def split_aggregate(body: bytes, timestamp: int) -> list[tuple[int, int, bytes]]:
    """``(type, timestamp, data)`` for each FLV tag inside an Aggregate (22) message.

    Each sub-tag is an FLV tag header, its body and a 4-byte back pointer.
    Timestamps are rebased so the first sub-tag has the aggregate's own
    timestamp (spec 7.1.6), modulo 2**32. A missing final back pointer is
    tolerated; a sub-tag running past the end is not.
    """
    out: list[tuple[int, int, bytes]] = []
    pos, end = 0, len(body)
    first: int | None = None
    while pos < end:
        if end - pos < _FLV_TAG_SIZE:
            raise MessageError(
                f"aggregate message: {end - pos} trailing bytes at offset {pos} (tag header needs 11)"
            )
        tag_type, size_hi, size_lo, ts_hi, ts_lo, ts_ext = _FLV_TAG.unpack_from(body, pos)
        size = (size_hi << 16) | size_lo
        ts = (ts_ext << 24) | (ts_hi << 16) | ts_lo
        start = pos + _FLV_TAG_SIZE
        if start + size > end:
            raise MessageError(
                f"aggregate message: sub-tag at offset {pos} declares {size} bytes, {end - start} left"
            )
        if first is None:
            first = ts
        out.append((tag_type & 0x1F, (timestamp + ts - first) & 0xFFFFFFFF, body[start : start + size]))
        pos = start + size + 4
    return out
