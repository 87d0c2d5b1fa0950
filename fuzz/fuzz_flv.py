"""Fuzz the FLV file reader, the link-tag decoder and the tag-body parser.

Tags must re-encode to the bytes they came from; a body parses to packets or raises FLVError,
and the edge's quick sequence-start check agrees with the full parse.
"""

from __future__ import annotations

import _harness

from relay_edge import flv, tagbody
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
    for body in (data, *(t.data for t in tags)):
        check_body(flv.AUDIO, body)
        check_body(flv.VIDEO, body)


def check_body(tag_type: int, body: bytes) -> None:
    """Legacy or Enhanced RTMP body: packets or FLVError; a sequence key means a config packet."""
    parse = tagbody.parse_audio if tag_type == flv.AUDIO else tagbody.parse_video
    try:
        packets = parse(body)
    except FLVError:
        packets = []
    key = flv.sequence_key(tag_type, body)
    if key is not None:
        tracks = {p.track for p in packets if p.kind == tagbody.CONFIG}
        assert tracks, f"sequence key {key} without a config packet"


if __name__ == "__main__":
    _harness.main(test_one)
