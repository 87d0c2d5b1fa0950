"""Fuzz the AMF0 decoder; decoded values must re-encode to bytes that decode to the same encoding."""

from __future__ import annotations

import _harness

from relay_edge.errors import AMFError, LimitExceeded
from relay_edge.rtmp import amf0

LIMITS = _harness.FUZZ_LIMITS


def test_one(data: bytes) -> None:
    try:
        values = amf0.decode(data, LIMITS)
    except (AMFError, LimitExceeded):
        return
    # Not byte-identical (ECMA array counts, references are not kept), but stable after one pass.
    encoded = amf0.encode(*values)
    assert amf0.encode(*amf0.decode(encoded, LIMITS)) == encoded


if __name__ == "__main__":
    _harness.main(test_one)
