"""Fuzz the FLV file reader and link-tag decoder; tags must re-encode to the bytes they came from."""

from __future__ import annotations

import _harness

from relay_edge import flv
from relay_edge.errors import FLVError, LimitExceeded


def test_one(data: bytes) -> None:
    try:
        tag = flv.decode_tag(data)
    except FLVError:
        pass
    else:
        # Reserved bits and the StreamID (always 0 in the spec) are not kept: compare by value.
        assert flv.decode_tag(tag.encode()) == tag
        assert tag.encode()[:7] == bytes([data[0] & 0x1F]) + data[1:7] and tag.encode()[11:] == data[11:]
    reader = flv.FlvReader(max_tag_size=4096)
    tags = []
    try:
        for piece in _harness.splits(data):
            tags += reader.feed(piece)
    except (FLVError, LimitExceeded):
        return
    whole = flv.FlvReader(max_tag_size=4096).feed(b"".join(_harness.splits(data)))
    assert whole == tags


if __name__ == "__main__":
    _harness.main(test_one)
