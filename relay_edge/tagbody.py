"""FLV audio and video tag bodies, legacy and Enhanced RTMP, sans-I/O: bytes in, packets out.

One parser for the edge (codec names, sequence headers to replay on a resume) and the
app's decoders. Legacy bodies follow the FLV spec v10.1 (annex E.4.2, E.4.3); the
enhanced ones the veovera Enhanced RTMP spec v2 (which contains v1): a FourCC instead
of the codec nibble, a packet type (SequenceStart, CodedFrames, CodedFramesX,
SequenceEnd, Metadata, MultichannelConfig), ModEx prefixes, and multitrack bodies
carrying one or several tracks in one tag.

A body parses to a list of :class:`MediaPacket`: one for a plain tag, one per track for
a multitrack tag. A malformed body raises :class:`~relay_edge.errors.FLVError` naming
the byte counts; an unknown FourCC is not an error here (the edge passes every codec),
its ``codec`` is the FourCC as text and ``known`` is False.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FLVError

# Packet kinds, shared by audio and video (their packet type numbers differ).
CONFIG = "config"  # SequenceStart / AAC or AVC sequence header: decoder configuration
FRAMES = "frames"  # coded media
END = "end"  # SequenceEnd: flush the decoder
METADATA = "metadata"  # enhanced video Metadata (colorInfo, AMF)
MULTICHANNEL = "multichannel"  # enhanced audio MultichannelConfig
COMMAND = "command"  # video info/command frame: no picture
TS_CONFIG = "mpeg2ts-config"  # enhanced video MPEG2TSSequenceStart

# SoundFormat (upper 4 bits of a legacy audio tag's first byte), FLV spec E.4.2.1.
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
SOUND_FORMAT_AAC = 10
SOUND_FORMAT_EX_HEADER = 9  # Enhanced RTMP: the low nibble is an AudioPacketType, a FourCC follows
# CodecID (lower 4 bits of a legacy video tag's first byte), E.4.3.1; 12 is the HEVC
# extension Chinese CDNs used before Enhanced RTMP.
VIDEO_CODECS = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 7: "h264", 12: "hevc"}
# Enhanced RTMP FourCCs (spec v2, enum AudioFourCc / VideoFourCc) -> our codec names.
AUDIO_FOURCCS = {
    b"Opus": "opus",
    b"fLaC": "flac",
    b"ac-3": "ac3",
    b"ec-3": "eac3",
    b".mp3": "mp3",
    b"mp4a": "aac",
}
VIDEO_FOURCCS = {b"avc1": "h264", b"hvc1": "hevc", b"av01": "av1", b"vp09": "vp9", b"vp08": "vp8"}

# Packet type numbers (spec v2, enum AudioPacketType / VideoPacketType).
_A_START, _A_FRAMES, _A_END, _A_MULTICHANNEL, _A_MULTITRACK, _A_MODEX = 0, 1, 2, 4, 5, 7
_V_START, _V_FRAMES, _V_END, _V_FRAMES_X, _V_METADATA, _V_TS_START, _V_MULTITRACK, _V_MODEX = range(8)
_AUDIO_KINDS = {_A_START: CONFIG, _A_FRAMES: FRAMES, _A_END: END, _A_MULTICHANNEL: MULTICHANNEL}
_VIDEO_KINDS = {
    _V_START: CONFIG,
    _V_FRAMES: FRAMES,
    _V_END: END,
    _V_FRAMES_X: FRAMES,
    _V_METADATA: METADATA,
    _V_TS_START: TS_CONFIG,
}
# AvMultitrackType: one track in this tag, several of one codec, several of several codecs.
_ONE_TRACK, _MANY_TRACKS, _MANY_CODECS = 0, 1, 2
_FRAME_KEY, _FRAME_GENERATED_KEY, _FRAME_COMMAND = 1, 4, 5
# Codecs whose CodedFrames carry an SI24 composition time offset (spec v2: avc1, hvc1 only).
_HAS_CTS = ("h264", "hevc")


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One packet of one track, as a tag body carries it.

    ``codec`` is our name ("aac", "opus", "h264", "av1"...); ``payload`` is what the
    decoder takes (configuration record, coded frames, AMF metadata...).
    """

    codec: str
    kind: str
    payload: bytes = b""
    track: int = 0
    enhanced: bool = False
    known: bool = True  # False: a FourCC or codec id this module has no name for
    keyframe: bool = False  # video
    cts: int = 0  # video composition time offset, ms (pts = dts + cts)
    flags: int = 0  # legacy audio: the first byte (SoundRate, SoundSize, SoundType bits)

    def __repr__(self) -> str:  # never dump media bytes into logs
        return (
            f"MediaPacket({self.codec}, {self.kind}, track={self.track}, len={len(self.payload)}"
            f"{', key' if self.keyframe else ''})"
        )


def parse_audio(data: bytes) -> list[MediaPacket]:
    """The packets of an audio tag body. Raises :class:`FLVError` if it is malformed."""
    if not data:
        raise FLVError("empty audio tag body")
    fmt = data[0] >> 4
    if fmt == SOUND_FORMAT_EX_HEADER:
        return _parse_enhanced(data, audio=True)
    codec = AUDIO_CODECS.get(fmt)
    if codec is None:
        return [MediaPacket(f"audio{fmt}", FRAMES, data[1:], known=False, flags=data[0])]
    if fmt == SOUND_FORMAT_AAC:
        if len(data) < 2:
            raise FLVError("AAC audio tag of 1 byte has no AACPacketType")
        if data[1] > 1:
            raise FLVError(f"unknown AACPacketType {data[1]}")
        return [MediaPacket("aac", CONFIG if data[1] == 0 else FRAMES, data[2:], flags=data[0])]
    return [MediaPacket(codec, FRAMES, data[1:], flags=data[0])]


def parse_video(data: bytes) -> list[MediaPacket]:
    """The packets of a video tag body. Raises :class:`FLVError` if it is malformed."""
    if not data:
        raise FLVError("empty video tag body")
    if data[0] & 0x80:
        return _parse_enhanced(data, audio=False)
    frame_type, codec_id = data[0] >> 4, data[0] & 0x0F
    keyframe = frame_type in (_FRAME_KEY, _FRAME_GENERATED_KEY)
    codec = VIDEO_CODECS.get(codec_id)
    if codec is None:
        return [MediaPacket(f"video{codec_id}", FRAMES, data[1:], known=False, keyframe=keyframe)]
    if frame_type == _FRAME_COMMAND:
        return [MediaPacket(codec, COMMAND, data[1:2])]
    if codec in _HAS_CTS:
        if len(data) < 5:
            raise FLVError(f"{codec} video tag of {len(data)} bytes is shorter than its 5-byte header")
        packet_type = data[1]
        if packet_type > 2:
            raise FLVError(f"unknown AVCPacketType {packet_type}")
        kind = (CONFIG, FRAMES, END)[packet_type]
        cts = _si24(data, 2) if kind == FRAMES else 0
        return [MediaPacket(codec, kind, data[5:], keyframe=keyframe, cts=cts)]
    return [MediaPacket(codec, FRAMES, data[1:], keyframe=keyframe)]


def codec_name(fourcc: bytes, audio: bool) -> tuple[str, bool]:
    """Our name for a FourCC and whether it is one we know; unknown ones keep their text."""
    name = (AUDIO_FOURCCS if audio else VIDEO_FOURCCS).get(fourcc)
    if name is not None:
        return name, True
    return fourcc.decode("ascii", "backslashreplace"), False


def _si24(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 3], "big", signed=True)


def _need(data: bytes, pos: int, count: int, what: str) -> None:
    if len(data) < pos + count:
        raise FLVError(f"enhanced tag of {len(data)} bytes ends inside its {what} (needs {pos + count})")


def _parse_enhanced(data: bytes, audio: bool) -> list[MediaPacket]:
    """ExAudioTagHeader / ExVideoTagHeader, then the body of each track (spec v2)."""
    packet_type = data[0] & 0x0F
    frame_type = 0 if audio else (data[0] >> 4) & 0x07
    pos = 1
    # ModEx prefixes (e.g. TimestampOffsetNano): skipped, they only refine this packet.
    while packet_type == (_A_MODEX if audio else _V_MODEX):
        _need(data, pos, 1, "ModEx size")
        size = data[pos] + 1
        pos += 1
        if size == 256:
            _need(data, pos, 2, "ModEx size")
            size = int.from_bytes(data[pos : pos + 2], "big") + 1
            pos += 2
        _need(data, pos, size + 1, "ModEx data")
        pos += size
        packet_type = data[pos] & 0x0F
        pos += 1
    if not audio and frame_type == _FRAME_COMMAND and packet_type != _V_METADATA:
        _need(data, pos, 1, "VideoCommand")  # no FourCC, no payload: a seek marker
        return [MediaPacket("command", COMMAND, data[pos : pos + 1], enhanced=True)]
    multitrack = packet_type == (_A_MULTITRACK if audio else _V_MULTITRACK)
    mode = _ONE_TRACK
    if multitrack:
        _need(data, pos, 1, "multitrack type")
        mode, packet_type = data[pos] >> 4, data[pos] & 0x0F
        pos += 1
        if mode > _MANY_CODECS:
            raise FLVError(f"unknown AvMultitrackType {mode}")
        if packet_type == (_A_MULTITRACK if audio else _V_MULTITRACK):
            raise FLVError("multitrack packet nested in a multitrack packet")
    kind = (_AUDIO_KINDS if audio else _VIDEO_KINDS).get(packet_type)
    if kind is None:
        media = "AudioPacketType" if audio else "VideoPacketType"
        raise FLVError(f"unknown {media} {packet_type}")
    fourcc = b""
    if mode != _MANY_CODECS:
        _need(data, pos, 4, "FourCC")
        fourcc = data[pos : pos + 4]
        pos += 4
    keyframe = frame_type in (_FRAME_KEY, _FRAME_GENERATED_KEY)
    packets = []
    while True:
        if mode == _MANY_CODECS:
            _need(data, pos, 4, "track FourCC")
            fourcc = data[pos : pos + 4]
            pos += 4
        track = 0
        end = len(data)
        if multitrack:
            _need(data, pos, 1, "track id")
            track = data[pos]
            pos += 1
            if mode != _ONE_TRACK:
                _need(data, pos, 3, "track size")
                end = pos + 3 + int.from_bytes(data[pos : pos + 3], "big")
                pos += 3
                if end > len(data):
                    raise FLVError(f"track {track} declares {end - pos} bytes, the tag has {len(data) - pos}")
        codec, known = codec_name(bytes(fourcc), audio)
        cts = 0
        if not audio and packet_type == _V_FRAMES and codec in _HAS_CTS:
            if end < pos + 3:
                raise FLVError(f"{codec} CodedFrames of track {track} has no composition time")
            cts = _si24(data, pos)
            pos += 3
        body = bytes(data[pos:end]) if kind != END else b""
        packets.append(MediaPacket(codec, kind, body, track, True, known, keyframe, cts))
        pos = end
        if mode == _ONE_TRACK or pos >= len(data):
            return packets
