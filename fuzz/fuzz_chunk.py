"""Fuzz the RTMP chunk stream reader; what parses must re-chunk to the same messages."""

from __future__ import annotations

import _harness

from relay_edge.errors import ChunkError, LimitExceeded
from relay_edge.rtmp.chunk import ChunkReader, ChunkWriter

LIMITS = _harness.FUZZ_LIMITS


def test_one(data: bytes) -> None:
    reader = ChunkReader(LIMITS)
    messages = []
    try:
        for piece in _harness.splits(data):
            messages += reader.feed(piece)
    except (ChunkError, LimitExceeded):
        return
    for msg in messages:
        assert len(msg.body) <= LIMITS.max_message_size
    # Round trip: our writer's chunking of the same messages reads back identically.
    # (Set Chunk Size and Abort act on the reader itself, so they are left out.)
    kept = [m for m in messages if m.type not in (1, 2)]
    writer = ChunkWriter(128)
    again = ChunkReader(LIMITS).feed(
        b"".join(writer.write(m.csid, m.type, m.stream_id, m.timestamp, m.body) for m in kept)
    )
    assert [(m.csid, m.type, m.stream_id, m.timestamp, m.body) for m in again] == [
        (m.csid, m.type, m.stream_id, m.timestamp, m.body) for m in kept
    ]


if __name__ == "__main__":
    _harness.main(test_one)
