"""Fuzz the RTMP server handshake: arbitrary C0/C1/C2 bytes, in arbitrary pieces."""

from __future__ import annotations

import _harness

from relay_edge.errors import HandshakeError
from relay_edge.rtmp.handshake import PACKET_SIZE, ServerHandshake


def test_one(data: bytes) -> None:
    hs = ServerHandshake(random_bytes=lambda n: bytes(n))
    rest = None
    try:
        for piece in _harness.splits(data):
            rest = hs.receive_data(piece)
            if rest is not None:
                break
    except HandshakeError:
        return
    out = hs.data_to_send()
    assert not out or len(out) == 1 + 2 * PACKET_SIZE, len(out)  # S0+S1+S2, once
    assert (rest is not None) == hs.complete


if __name__ == "__main__":
    _harness.main(test_one)
