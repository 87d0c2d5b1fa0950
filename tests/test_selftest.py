"""``relay-client test`` (run_local): the first-frame figure counts from the publisher's first write."""

from __future__ import annotations

import pytest

from relay_client.selftest import run_local


async def test_first_frame_counts_from_the_first_media_write() -> None:
    """Issue 12 item 10: starting the PyAV child (~400 ms) is not the relay's first-frame time."""
    lines: list[str] = []
    report = await run_local(seconds=1.0, say=lines.append)
    assert report.ok, lines
    d = report.as_dict()
    # publisher_start_ms is the old figure (from spawning the publisher); first_frame_ms is from
    # its first media write, which comes after the spawn, the child's imports and the RTMP setup.
    assert d["publisher_start_ms"] == pytest.approx(report.publisher_start_ms, abs=0.1)
    assert 0 < d["first_frame_ms"] < d["publisher_start_ms"]
    assert report.first_write_ms is not None
    assert d["first_frame_ms"] == pytest.approx(d["publisher_start_ms"] - report.first_write_ms, abs=0.2)
    assert any("after the publisher's first write" in line for line in lines)
