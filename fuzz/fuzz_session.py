"""Fuzz the whole RTMP server session (handshake, chunks, messages, AMF commands) after a valid handshake."""

from __future__ import annotations

import _harness

from relay_edge.errors import ProtocolError
from relay_edge.rtmp.events import PublishRequested
from relay_edge.rtmp.handshake import PACKET_SIZE
from relay_edge.rtmp.session import ServerSession

LIMITS = _harness.FUZZ_LIMITS
# C0 + C1 + C2 of the plain (non-digest) handshake: lets the fuzzer start at the chunk stream.
HANDSHAKE = b"\x03" + bytes(PACKET_SIZE) * 2


def test_one(data: bytes) -> None:
    sess = ServerSession(LIMITS, random_bytes=lambda n: bytes(n))
    try:
        if data[:1] != b"\x03":  # the fuzzer may also play the handshake itself
            sess.receive_data(HANDSHAKE)
        for piece in _harness.splits(data):
            for event in sess.receive_data(piece):
                if isinstance(event, PublishRequested):
                    sess.accept_publish(event.stream_id)
            sess.data_to_send()
    except ProtocolError:
        return


if __name__ == "__main__":
    _harness.main(test_one)
