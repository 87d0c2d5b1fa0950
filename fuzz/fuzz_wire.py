"""Fuzz the link's msgpack frame decoder; decoded frames must re-encode and decode to themselves."""

from __future__ import annotations

import _harness

from relay_edge import wire
from relay_edge.errors import LimitExceeded, WireError

LIMITS = _harness.FUZZ_LIMITS


def test_one(data: bytes) -> None:
    try:
        frames = wire.decode_message(data, LIMITS)
    except (WireError, LimitExceeded):
        return
    assert 0 < len(frames) <= LIMITS.wire_max_frames
    again = wire.decode_message(wire.encode_many(frames), LIMITS)
    assert again == frames, (again, frames)


if __name__ == "__main__":
    _harness.main(test_one)
