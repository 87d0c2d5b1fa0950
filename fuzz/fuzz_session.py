"""Fuzz the whole RTMP server session (handshake, chunks, messages, AMF commands) after a valid handshake."""

from __future__ import annotations

from collections.abc import Iterator

import _harness

from relay_edge.errors import ProtocolError
from relay_edge.rtmp.events import Event, PublishRequested
from relay_edge.rtmp.handshake import PACKET_SIZE
from relay_edge.rtmp.session import ServerSession

LIMITS = _harness.FUZZ_LIMITS
# C0 + C1 + C2 of the plain (non-digest) handshake: lets the fuzzer start at the chunk stream.
HANDSHAKE = b"\x03" + bytes(PACKET_SIZE) * 2


def outputs(data: bytes) -> Iterator[Event | bytes]:
    """``data`` through a fresh session in the fuzzers' parts: each event, and after each part
    the bytes it sends back (publishes are accepted). Raises ProtocolError at bad input."""
    sess = ServerSession(LIMITS, random_bytes=lambda n: bytes(n))
    if data[:1] != b"\x03":  # the fuzzer may also play the handshake itself
        sess.receive_data(HANDSHAKE)
    for piece in _harness.splits(data):
        for event in sess.receive_data(piece):
            yield event
            if isinstance(event, PublishRequested):
                sess.accept_publish(event.stream_id)
        yield sess.data_to_send()


def test_one(data: bytes) -> None:
    try:
        for _ in outputs(data):
            pass
    except ProtocolError:
        return


if __name__ == "__main__":
    _harness.main(test_one)
