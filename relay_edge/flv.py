"""FLV tags, sans-I/O: the unit rtmp-relay forwards byte for byte.

On the link a tag travels as its 11-byte header plus body (no trailing
PreviousTagSize, which is derivable). A file is :func:`file_header` followed by
``tag + previous_tag_size(tag)`` for each tag (FLV spec v10.1, annex E).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import FLVError, LimitExceeded

AUDIO = 8
VIDEO = 9
SCRIPT = 18
TAG_TYPES = (AUDIO, VIDEO, SCRIPT)

TAG_HEADER_SIZE = 11
FILE_HEADER_SIZE = 13  # 9-byte header + PreviousTagSize0
_TIMESTAMP_MASK = 0xFFFFFFFF

# SoundFormat (upper 4 bits of an audio tag's first byte).
AUDIO_CODECS = {
    0: "pcm",
    1: "adpcm",
    2: "mp3",
    3: "pcm_le",
    4: "nellymoser16",
    5: "nellymoser8",
    6: "nellymoser",
    7: "alaw",
    8: "mulaw",
    10: "aac",
    11: "speex",
    14: "mp3_8k",
}
# CodecID (lower 4 bits of a video tag's first byte), legacy FLV.
VIDEO_CODECS = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 7: "h264", 12: "hevc"}
# Enhanced RTMP FourCCs (video tags whose first byte has 0x80 set).
VIDEO_FOURCCS = {b"avc1": "h264", b"hvc1": "hevc", b"av01": "av1", b"vp09": "vp9"}


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


def tag_header(tag_type: int, timestamp: int, size: int) -> bytes:
    """The 11-byte tag header: type, 24-bit size, 24+8-bit timestamp, stream id 0."""
    if size > 0xFFFFFF:
        raise LimitExceeded("flv_tag_size", size, 0xFFFFFF)
    ts = timestamp & _TIMESTAMP_MASK
    return struct.pack(
        ">B3s3sB3x", tag_type, size.to_bytes(3, "big"), (ts & 0xFFFFFF).to_bytes(3, "big"), ts >> 24
    )


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


def is_sequence_header(tag_type: int, data: bytes | memoryview) -> bool:
    """True for an AAC AudioSpecificConfig or a video decoder configuration record."""
    if tag_type == AUDIO:
        return len(data) >= 2 and data[0] >> 4 == 10 and data[1] == 0
    if tag_type == VIDEO and data:
        if data[0] & 0x80:  # enhanced RTMP: PacketType 0 = SequenceStart
            return data[0] & 0x0F == 0
        return len(data) >= 2 and data[0] & 0x0F in (7, 12) and data[1] == 0
    return False


def is_keyframe(data: bytes | memoryview) -> bool:
    """True for a video tag whose FrameType is 1 (key frame)."""
    return bool(data) and (data[0] >> 4) & 0x07 == 1


def audio_codec(data: bytes | memoryview) -> str:
    """Codec name of an audio tag body, e.g. ``"aac"``."""
    if not data:
        return "unknown"
    return AUDIO_CODECS.get(data[0] >> 4, f"audio{data[0] >> 4}")


def video_codec(data: bytes | memoryview) -> str:
    """Codec name of a video tag body, e.g. ``"h264"``."""
    if not data:
        return "unknown"
    if data[0] & 0x80:
        return VIDEO_FOURCCS.get(bytes(data[1:5]), "unknown")
    return VIDEO_CODECS.get(data[0] & 0x0F, f"video{data[0] & 0x0F}")
