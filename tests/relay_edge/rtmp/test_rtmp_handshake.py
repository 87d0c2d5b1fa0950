"""Handshake: simple and digest answers, FFmpeg's checks, version errors, any split."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rtmp_support import SPLIT_MODES, pieces

from relay_edge.errors import HandshakeError
from relay_edge.rtmp import handshake as hs
from relay_edge.rtmp.handshake import PACKET_SIZE, ClientHandshake, ServerHandshake


def counting_random(n: int) -> bytes:
    return bytes(i & 0xFF for i in range(n))


def ffmpeg_c1() -> bytes:
    """C1 as FFmpeg's rtmp_handshake builds it: version 9.0.124.2, digest at scheme 0."""
    packet = bytearray(bytes(4) + bytes((9, 0, 124, 2)) + counting_random(PACKET_SIZE - 8))
    hs.imprint_digest(packet, hs.FP_KEY[:30])
    return bytes(packet)


def ffmpeg_validates(c1: bytes, s1: bytes, s2: bytes) -> None:
    """The checks a *playing* FFmpeg applies (rtmpproto.c, rtmp_handshake, is_input)."""
    server_pos = hs.find_digest(s1, hs.FMS_KEY[:36])
    assert server_pos is not None, "Server response validating failed"
    client_pos = hs.digest_offset(c1, 0)
    digest = hmac.new(hs.FMS_KEY, c1[client_pos : client_pos + 32], hashlib.sha256).digest()
    signature = hmac.new(digest, s2[: PACKET_SIZE - 32], hashlib.sha256).digest()
    assert signature == s2[PACKET_SIZE - 32 :], "Signature mismatch"


def run_server(data: bytes, mode: str = "whole") -> tuple[ServerHandshake, bytes, bytes | None]:
    """Feed ``data`` in ``mode`` pieces; bytes after C2 (in any piece) come back as ``rest``."""
    server = ServerHandshake(counting_random)
    sent = b""
    rest = None
    for piece in pieces(data, mode, seed=7):
        if rest is not None:
            rest += piece
            continue
        rest = server.receive_data(piece)
        sent += server.data_to_send()
    return server, sent, rest


@pytest.mark.parametrize("mode", SPLIT_MODES)
def test_simple_handshake(mode: str) -> None:
    c1 = bytes(8) + bytes(range(256)) * 6
    c1 = c1[:PACKET_SIZE]
    server, sent, rest = run_server(b"\x03" + c1 + bytes(PACKET_SIZE) + b"tail", mode)
    assert server.complete and not server.digest
    assert len(sent) == 1 + 2 * PACKET_SIZE
    assert sent[0] == 3
    assert sent[1:9] == bytes(8)  # S1: time 0, zero version: FFmpeg then skips digest checks
    assert sent[1 + PACKET_SIZE :] == c1  # S2 echoes C1
    assert rest == b"tail"


def test_s0_s1_s2_go_out_together_once_c1_is_in() -> None:
    # GStreamer's rtmp2 waits for all 3073 bytes before it sends C2.
    server = ServerHandshake()
    assert server.receive_data(b"\x03" + bytes(PACKET_SIZE - 1)) is None
    assert server.data_to_send() == b""
    assert server.receive_data(b"\x00") is None
    assert len(server.data_to_send()) == 1 + 2 * PACKET_SIZE
    assert server.receive_data(bytes(PACKET_SIZE)) == b""
    assert server.complete


@pytest.mark.parametrize("mode", SPLIT_MODES)
def test_ffmpeg_digest_c1_gets_a_digest_answer_ffmpeg_accepts(mode: str) -> None:
    c1 = ffmpeg_c1()
    server, sent, _ = run_server(b"\x03" + c1 + bytes(PACKET_SIZE), mode)
    assert server.digest
    s1, s2 = sent[1 : 1 + PACKET_SIZE], sent[1 + PACKET_SIZE :]
    assert s1[4] >= 3  # so a playing FFmpeg does validate it...
    ffmpeg_validates(c1, s1, s2)  # ...and it passes


def test_c1_with_a_version_but_no_valid_digest_gets_the_simple_answer() -> None:
    c1 = bytearray(ffmpeg_c1())
    c1[100] ^= 0xFF
    server, sent, _ = run_server(b"\x03" + bytes(c1) + bytes(PACKET_SIZE))
    assert not server.digest
    assert sent[1 + PACKET_SIZE :] == bytes(c1)


def test_digest_found_under_scheme_one() -> None:
    packet = bytearray(bytes(4) + bytes((9, 0, 124, 2)) + counting_random(PACKET_SIZE - 8))
    offset = hs.imprint_digest(packet, hs.FP_KEY[:30], scheme=1)
    assert offset >= 776
    assert hs.find_digest(bytes(packet)) == offset


@pytest.mark.parametrize("digest", [False, True])
def test_client_and_server_handshake(digest: bool) -> None:
    client = ClientHandshake(digest=digest)
    server = ServerHandshake()
    client.initiate()
    assert server.receive_data(client.data_to_send()) is None
    assert client.receive_data(server.data_to_send() + b"x") == b"x"
    assert server.receive_data(client.data_to_send()) == b""
    assert client.complete and server.complete
    assert server.digest is digest


def test_client_detects_a_bad_s2_signature() -> None:
    client = ClientHandshake(digest=True)
    server = ServerHandshake()
    client.initiate()
    server.receive_data(client.data_to_send())
    answer = bytearray(server.data_to_send())
    answer[-1] ^= 1
    with pytest.raises(HandshakeError, match="S2 signature does not match our C1 digest"):
        client.receive_data(bytes(answer))


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (
            b"\x06",
            "unsupported RTMP version 6 in C0 (only 3 is supported) (RTMPE encryption is not supported)",
        ),
        (b"\x00", "unsupported RTMP version 0 in C0 (only 3 is supported)"),
        (
            b"\x16\x03\x01",
            "unsupported RTMP version 22 in C0 (only 3 is supported) "
            "(a TLS ClientHello: rtmps:// sent to a plain rtmp:// port)",
        ),
        (
            b"GET / HTTP/1.1",
            "unsupported RTMP version 71 in C0 (only 3 is supported) (looks like an HTTP request)",
        ),
    ],
)
def test_bad_version_is_refused_on_the_first_byte(first: bytes, message: str) -> None:
    with pytest.raises(HandshakeError) as info:
        ServerHandshake().receive_data(first)
    assert str(info.value) == message


def test_client_refuses_bad_s0() -> None:
    client = ClientHandshake()
    client.initiate()
    with pytest.raises(HandshakeError, match="unsupported RTMP version 4 in S0"):
        client.receive_data(b"\x04")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3200), st.integers(1, 4000))
def test_arbitrary_bytes_raise_only_handshake_errors(data: bytes, split: int) -> None:
    server = ServerHandshake()
    try:
        for i in range(0, len(data), split):
            if server.complete:
                break
            server.receive_data(data[i : i + split])
    except HandshakeError:
        assert data[0] != 3
