"""FLV tags, sans-I/O: the unit rtmp-relay forwards byte for byte.

On the link a tag travels as its 11-byte header plus body (no trailing
PreviousTagSize, which is derivable). A file is :func:`file_header` followed by
``tag + previous_tag_size(tag)`` for each tag (FLV spec v10.1, annex E).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from . import tagbody
from .errors import FLVError, LimitExceeded

# Final: the compiled core (relay_edge/accel.py) inlines these instead of looking them up per tag.
AUDIO: Final = 8
VIDEO: Final = 9
SCRIPT: Final = 18
TAG_TYPES = (AUDIO, VIDEO, SCRIPT)

TAG_HEADER_SIZE: Final = 11
FILE_HEADER_SIZE: Final = 13  # 9-byte header + PreviousTagSize0
_TIMESTAMP_MASK: Final = 0xFFFFFFFF

# Codec tables live with the tag-body parser; re-exported here for older imports.
AUDIO_CODECS = tagbody.AUDIO_CODECS
VIDEO_CODECS = tagbody.VIDEO_CODECS
VIDEO_FOURCCS = tagbody.VIDEO_FOURCCS
AUDIO_FOURCCS = tagbody.AUDIO_FOURCCS


@dataclass(frozen=True, slots=True)
class Tag:
    """One FLV tag. ``timestamp`` is in ms, 32 bits (24 + 8 extended)."""

    type: int
    timestamp: int
    data: bytes

    def encode(self) -> bytes:
        """Header and body, as carried on the link."""
        return tag_header(self.type, self.timestamp, len(self.data)) + self.data

    def __repr__(self) -> str:  # never dump media bytes into logs
        return f"Tag(type={self.type}, timestamp={self.timestamp}, len={len(self.data)})"


def file_header(audio: bool, video: bool) -> bytes:
    """The 9-byte FLV header plus PreviousTagSize0.

    The flags matter: libavformat's FLV demuxer waits for every stream they announce.
    """
    flags = (0x04 if audio else 0) | (0x01 if video else 0)
    return b"FLV\x01" + bytes([flags]) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


# Type and 24-bit size as one u32, then the 24-bit timestamp and its extension byte as
# another, then the 3-byte stream id (0): one precompiled pack, no to_bytes per field.
_TAG_HEADER: Final = struct.Struct(">II3x").pack


def tag_header(tag_type: int, timestamp: int, size: int) -> bytes:
    """The 11-byte tag header: type, 24-bit size, 24+8-bit timestamp, stream id 0."""
    if size > 0xFFFFFF:
        raise LimitExceeded("flv_tag_size", size, 0xFFFFFF)
    if not 0 <= tag_type <= 0xFF:
        raise struct.error(f"tag type {tag_type} does not fit a byte")
    ts = timestamp & _TIMESTAMP_MASK
    return _TAG_HEADER((tag_type << 24) | size, ((ts & 0xFFFFFF) << 8) | (ts >> 24))


def previous_tag_size(encoded_tag: bytes | memoryview) -> bytes:
    """The 4-byte trailer that follows ``encoded_tag`` in a file."""
    return struct.pack(">I", len(encoded_tag))


def parse_tag_header(header: bytes | memoryview) -> tuple[int, int, int]:
    """``(type, size, timestamp)`` from the first 11 bytes of ``header``."""
    if len(header) < TAG_HEADER_SIZE:
        raise FLVError(f"tag header needs {TAG_HEADER_SIZE} bytes, got {len(header)}")
    tag_type = header[0] & 0x1F
    if header[0] & 0x20:
        raise FLVError("encrypted (filtered) FLV tags are not supported")
    size = int.from_bytes(header[1:4], "big")
    timestamp = int.from_bytes(header[4:7], "big") | (header[7] << 24)
    return tag_type, size, timestamp


def decode_tag(encoded: bytes | memoryview) -> Tag:
    """Parse one tag as carried on the link (header + body, nothing more)."""
    tag_type, size, timestamp = parse_tag_header(encoded)
    if len(encoded) != TAG_HEADER_SIZE + size:
        raise FLVError(f"tag declares {size} body bytes, carries {len(encoded) - TAG_HEADER_SIZE}")
    return Tag(tag_type, timestamp, bytes(encoded[TAG_HEADER_SIZE:]))


class FlvReader:
    """Incremental FLV file parser: :meth:`feed` bytes, get whole tags back.

    ``max_tag_size`` bounds the body a tag may declare, checked before the body
    is buffered.
    """

    def __init__(self, max_tag_size: int = 0xFFFFFF) -> None:
        self.max_tag_size = max_tag_size
        self.has_audio: bool | None = None
        self.has_video: bool | None = None
        self._buf = bytearray()
        self._header_done = False

    def feed(self, data: bytes) -> list[Tag]:
        self._buf += data
        tags: list[Tag] = []
        buf = self._buf
        pos = 0
        if not self._header_done:
            if len(buf) < FILE_HEADER_SIZE:
                if not b"FLV".startswith(bytes(buf[:3])):
                    raise FLVError("not an FLV file: bad signature")
                return tags
            if buf[:3] != b"FLV":
                raise FLVError("not an FLV file: bad signature")
            offset = int.from_bytes(buf[5:9], "big")
            if offset != 9:
                raise FLVError(f"unsupported FLV header size {offset}")
            self.has_audio = bool(buf[4] & 0x04)
            self.has_video = bool(buf[4] & 0x01)
            pos = FILE_HEADER_SIZE
            self._header_done = True
        while len(buf) - pos >= TAG_HEADER_SIZE:
            tag_type, size, timestamp = parse_tag_header(memoryview(buf)[pos : pos + TAG_HEADER_SIZE])
            if size > self.max_tag_size:
                raise LimitExceeded("flv_tag_size", size, self.max_tag_size)
            end = pos + TAG_HEADER_SIZE + size
            if len(buf) < end + 4:
                break
            tags.append(Tag(tag_type, timestamp, bytes(buf[pos + TAG_HEADER_SIZE : end])))
            pos = end + 4
        del buf[:pos]
        return tags


# --- codec facts from a tag's first bytes -------------------------------------------
# These run per tag on the edge, so the common cases read a byte or two; only the rare
# multitrack (ManyTracks) and ModEx bodies go through the full parser in tagbody.

# tagbody's SOUND_FORMAT_* as literals: tagbody is not compiled, and a literal Final is inlined
# (tests/relay_edge/test_flv.py checks they agree).
_EX_AUDIO: Final = 9  # tagbody.SOUND_FORMAT_EX_HEADER
_AAC: Final = 10  # tagbody.SOUND_FORMAT_AAC
_A_MULTITRACK: Final = 5  # AudioPacketType
_A_MODEX: Final = 7
_V_MULTITRACK: Final = 6  # VideoPacketType
_V_MODEX: Final = 7


def sequence_key(tag_type: int, data: bytes | memoryview) -> str | None:
    """Where a decoder configuration tag is kept for a replay, else None.

    ``"audio"`` / ``"video"`` for track 0 (legacy AAC/AVC/HEVC sequence headers and
    enhanced SequenceStart), ``"audio.N"`` for track N of a multitrack stream (one
    key per track, so every track's decoder can start after a resume).
    """
    if not data:
        return None
    b0 = data[0]
    if tag_type == AUDIO:
        name = "audio"
        fmt, ptype = b0 >> 4, b0 & 0x0F
        if fmt == _AAC:
            return name if len(data) >= 2 and data[1] == 0 else None
        if fmt != _EX_AUDIO or ptype not in (0, _A_MULTITRACK, _A_MODEX) or len(data) < 5:
            return None
        multitrack = _A_MULTITRACK
    elif tag_type == VIDEO:
        name = "video"
        ptype = b0 & 0x0F
        if (b0 >> 4) & 0x07 == 5:  # a command frame, never a header
            return None
        if not b0 & 0x80:
            return name if len(data) >= 5 and ptype in (7, 12) and data[1] == 0 else None
        if ptype not in (0, _V_MULTITRACK, _V_MODEX) or len(data) < 5:
            return None
        multitrack = _V_MULTITRACK
    else:
        return None
    if ptype == 0:
        return name
    if ptype == multitrack and len(data) >= 7 and data[1] >> 4 == 0:  # OneTrack: id after the FourCC
        return (f"{name}.{data[6]}" if data[6] else name) if data[1] & 0x0F == 0 else None
    # ManyTracks or ModEx: rare, parse it all.
    try:
        packets = (tagbody.parse_audio if tag_type == AUDIO else tagbody.parse_video)(bytes(data))
    except FLVError:
        return None
    tracks = sorted({p.track for p in packets if p.kind == tagbody.CONFIG})
    if not tracks:
        return None
    return name if tracks == [0] else f"{name}." + ".".join(map(str, tracks))


def is_sequence_header(tag_type: int, data: bytes | memoryview) -> bool:
    """True for a decoder configuration tag (AAC/AVC sequence header, enhanced SequenceStart)."""
    return sequence_key(tag_type, data) is not None


def is_multitrack(tag_type: int, data: bytes | memoryview) -> bool:
    """True for an Enhanced RTMP v2 multitrack body (without ModEx prefixes)."""
    if not data:
        return False
    if tag_type == AUDIO:
        return data[0] == (_EX_AUDIO << 4) | _A_MULTITRACK
    return tag_type == VIDEO and data[0] & 0x8F == 0x80 | _V_MULTITRACK


def is_keyframe(data: bytes | memoryview) -> bool:
    """True for a video tag whose FrameType is 1 (key frame)."""
    return bool(data) and (data[0] >> 4) & 0x07 == 1


def composition_time(data: bytes | memoryview) -> int:
    """A video tag's composition time offset in ms (its frame shows at timestamp + this), else 0.

    Only H.264/HEVC coded frames carry one; for a multitrack body, the largest of its tracks'.
    """
    if len(data) < 5:
        return 0
    b0 = data[0]
    if not b0 & 0x80:  # legacy: codec id 7/12, AVCPacketType 1 (NALU), SI24 at 2
        return _si24(data, 2) if b0 & 0x0F in (7, 12) and data[1] == 1 and (b0 >> 4) != 5 else 0
    ptype = b0 & 0x0F
    if ptype == 1:  # CodedFrames: FourCC, then SI24 for avc1/hvc1 only
        return _si24(data, 5) if len(data) >= 8 and data[1:5] in (b"avc1", b"hvc1") else 0
    if ptype not in (_V_MULTITRACK, _V_MODEX):
        return 0
    try:  # rare: parse it all
        packets = tagbody.parse_video(bytes(data))
    except FLVError:
        return 0
    return max((p.cts for p in packets), default=0)


def _si24(data: bytes | memoryview, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 3], "big", signed=True)


def audio_codec(data: bytes | memoryview) -> str:
    """Codec name of an audio tag body (its first track), e.g. ``"aac"``, ``"opus"``."""
    return _first_codec(tagbody.parse_audio, data)


def video_codec(data: bytes | memoryview) -> str:
    """Codec name of a video tag body (its first track), e.g. ``"h264"``, ``"av1"``."""
    return _first_codec(tagbody.parse_video, data)


def track_codecs(tag_type: int, data: bytes | memoryview) -> dict[str, str]:
    """``{"audio": codec, "audio.N": codec, ...}``: the codec of each track a tag carries."""
    name = "audio" if tag_type == AUDIO else "video"
    parse = tagbody.parse_audio if tag_type == AUDIO else tagbody.parse_video
    try:
        packets = parse(bytes(data))
    except FLVError:
        return {}
    return {(f"{name}.{p.track}" if p.track else name): p.codec for p in packets}


def _first_codec(parse: Callable[[bytes], list[tagbody.MediaPacket]], data: bytes | memoryview) -> str:
    try:
        packets = parse(bytes(data))
    except FLVError:
        return "unknown"
    return packets[0].codec if packets else "unknown"
