"""The RTMP handshake, sans-I/O, for both roles.

Wire shape (RTMP spec 1.0, section 5.2): C0/S0 is the version byte 3; C1/S1
and C2/S2 are 1536 bytes each. The server answers C0+C1 with S0+S1+S2 in one
go: GStreamer's rtmp2 waits for all 3073 bytes before it sends C2.

Two flavours of C1 exist in the wild:

* the *simple* handshake (spec): time, four zero bytes, 1528 random bytes.
  S2 echoes C1.
* the *digest* ("complex", Flash Player 9+) handshake: C1's bytes 4..7 hold a
  player version and 32 bytes at a position derived from C1 itself are an
  HMAC-SHA256 over the rest. FFmpeg's client sends this. FFmpeg only *checks*
  the server's answer when it plays (``is_input``) and S1's version byte is
  >= 3 (``rtmp_handshake`` in libavformat/rtmpproto.c); a publishing ffmpeg
  just echoes S1. We still answer a valid digest C1 in kind, as nginx-rtmp
  and MediaMTX do, so players and picky clients accept us too; a C1 whose
  digest does not verify gets the simple answer.

C2 is read and ignored: no publisher fixes a broken C2, and checking it only
turns harmless client quirks into refused streams.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from ..errors import HandshakeError

VERSION = 3
PACKET_SIZE = 1536
_DIGEST_SIZE = 32

# The public constants every RTMP implementation carries (librtmp, FFmpeg,
# nginx-rtmp): the keys are the ASCII names followed by 32 fixed bytes.
_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL  # 68 bytes
FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL  # 62 bytes
_FMS_KEY_SHORT = FMS_KEY[:36]
_FP_KEY_SHORT = FP_KEY[:30]

# What S1 announces in digest mode (nginx-rtmp's 13.14.10.13). FFmpeg's client
# sends 9.0.124.2 in C1.
SERVER_VERSION = bytes((13, 14, 10, 13))
CLIENT_VERSION = bytes((9, 0, 124, 2))

RandomBytes = Callable[[int], bytes]


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_offset(packet: bytes, scheme: int) -> int:
    """Where the 32-byte digest sits in a C1/S1 under scheme 0 (base 8) or 1 (base 772)."""
    base = 8 if scheme == 0 else 772
    return sum(packet[base : base + 4]) % 728 + base + 4


def _digest_at(packet: bytes, offset: int, key: bytes) -> bytes:
    return _hmac(key, packet[:offset] + packet[offset + _DIGEST_SIZE :])


def find_digest(packet: bytes, key: bytes = _FP_KEY_SHORT) -> int | None:
    """Offset of a valid digest in ``packet`` (either scheme), or None."""
    for scheme in (0, 1):
        offset = digest_offset(packet, scheme)
        if hmac.compare_digest(packet[offset : offset + _DIGEST_SIZE], _digest_at(packet, offset, key)):
            return offset
    return None


def imprint_digest(packet: bytearray, key: bytes, scheme: int = 0) -> int:
    """Write a digest into ``packet`` in place; return its offset."""
    offset = digest_offset(bytes(packet), scheme)
    packet[offset : offset + _DIGEST_SIZE] = _digest_at(bytes(packet), offset, key)
    return offset


def signed_response(peer_digest: bytes, key: bytes, random_bytes: RandomBytes) -> bytes:
    """An S2/C2 for the digest handshake: random bytes, then their HMAC keyed by the peer's digest."""
    body = random_bytes(PACKET_SIZE - _DIGEST_SIZE)
    return body + _hmac(_hmac(key, peer_digest), body)


def _version_error(byte: int, who: str) -> HandshakeError:
    # Name the usual mistakes: a TLS client on the plain port, or an HTTP request.
    if byte == 0x16:
        hint = " (a TLS ClientHello: rtmps:// sent to a plain rtmp:// port)"
    elif byte in b"GPHCO":
        hint = " (looks like an HTTP request)"
    elif byte in (6, 8, 9):
        hint = " (RTMPE encryption is not supported)"
    else:
        hint = ""
    return HandshakeError(f"unsupported RTMP version {byte} in {who} (only {VERSION} is supported){hint}")


class ServerHandshake:
    """Server side: feed client bytes, send what :meth:`data_to_send` returns.

    ``random_bytes`` is injectable so tests get deterministic S1/S2.
    """

    def __init__(self, random_bytes: RandomBytes = os.urandom) -> None:
        self._random = random_bytes
        self._buf = bytearray()
        self._out = b""
        self._answered = False
        self.complete = False
        self.digest = False  # True when C1 carried a valid digest and we answered in kind

    def receive_data(self, data: bytes | bytearray | memoryview) -> bytes | None:
        """Consume handshake bytes. Returns None until C2 is in, then the bytes after C2."""
        if self.complete:
            raise HandshakeError("handshake already complete")
        self._buf += data
        buf = self._buf
        if buf and buf[0] != VERSION:
            raise _version_error(buf[0], "C0")
        if not self._answered and len(buf) >= 1 + PACKET_SIZE:
            self._answer(bytes(buf[1 : 1 + PACKET_SIZE]))
        end = 1 + 2 * PACKET_SIZE
        if len(buf) < end:
            return None
        self.complete = True
        rest = bytes(buf[end:])
        self._buf = bytearray()
        return rest

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def _answer(self, c1: bytes) -> None:
        self._answered = True
        offset = find_digest(c1) if any(c1[4:8]) else None
        if offset is None:
            s1 = bytes(8) + self._random(PACKET_SIZE - 8)
            s2 = c1
        else:
            self.digest = True
            packet = bytearray(bytes(4) + SERVER_VERSION + self._random(PACKET_SIZE - 8))
            imprint_digest(packet, _FMS_KEY_SHORT)
            s1 = bytes(packet)
            s2 = signed_response(c1[offset : offset + _DIGEST_SIZE], FMS_KEY, self._random)
        self._out = bytes((VERSION,)) + s1 + s2


class ClientHandshake:
    """Client side: :meth:`initiate` queues C0+C1; feeding S0+S1+S2 queues C2.

    With ``digest=True`` C1 carries an FFmpeg-style digest and a digest S1/S2
    from the server is verified the way a playing FFmpeg verifies it.
    """

    def __init__(self, digest: bool = False, random_bytes: RandomBytes = os.urandom) -> None:
        self._random = random_bytes
        self._digest = digest
        self._c1 = b""
        self._c1_digest = b""
        self._buf = bytearray()
        self._out = b""
        self.complete = False

    def initiate(self) -> None:
        """Queue C0+C1."""
        if self._digest:
            packet = bytearray(bytes(4) + CLIENT_VERSION + self._random(PACKET_SIZE - 8))
            offset = imprint_digest(packet, _FP_KEY_SHORT)
            self._c1 = bytes(packet)
            self._c1_digest = self._c1[offset : offset + _DIGEST_SIZE]
        else:
            self._c1 = bytes(8) + self._random(PACKET_SIZE - 8)
        self._out += bytes((VERSION,)) + self._c1

    def receive_data(self, data: bytes | bytearray | memoryview) -> bytes | None:
        """Consume S0+S1+S2. Returns None until complete, then the bytes after S2."""
        if not self._c1:
            raise HandshakeError("server bytes before C0+C1 was sent")
        self._buf += data
        buf = self._buf
        if buf and buf[0] != VERSION:
            raise _version_error(buf[0], "S0")
        end = 1 + 2 * PACKET_SIZE
        if len(buf) < end:
            return None
        s1 = bytes(buf[1 : 1 + PACKET_SIZE])
        s2 = bytes(buf[1 + PACKET_SIZE : end])
        if self._digest and s1[4] >= 3:
            self._verify(s1, s2)
        self._out += s1  # C2 echoes S1, as a publishing FFmpeg does
        self.complete = True
        rest = bytes(buf[end:])
        self._buf = bytearray()
        return rest

    def _verify(self, s1: bytes, s2: bytes) -> None:
        if find_digest(s1, _FMS_KEY_SHORT) is None:
            raise HandshakeError("S1 digest does not verify")
        body = s2[: PACKET_SIZE - _DIGEST_SIZE]
        expected = _hmac(_hmac(FMS_KEY, self._c1_digest), body)
        if not hmac.compare_digest(expected, s2[PACKET_SIZE - _DIGEST_SIZE :]):
            raise HandshakeError("S2 signature does not match our C1 digest")

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out
