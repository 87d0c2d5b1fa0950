"""A publisher takes a stream over: the new one's timeline goes on after everything the old one showed.

Sans-I/O, on :class:`~relay_edge.edgestream.EdgeStream`: tags go through ``rebase`` then ``note`` in the
order ``Edge.media`` uses. With B-frames a frame sent before the old publisher's last tag shows
after it (timestamp + composition time); the new publisher's frames must show later still.
"""

from __future__ import annotations

from relay_edge import flv
from relay_edge.edge import EdgeStream
from relay_edge.limits import DEFAULT_LIMITS

HEVC_CONFIG = b"\x90hvc1\x01"


def hevc_frame(cts: int) -> bytes:
    """Enhanced RTMP CodedFrames of hvc1 with composition time ``cts`` ms."""
    return b"\x91hvc1" + cts.to_bytes(3, "big", signed=True) + b"nal"


def feed(stream: EdgeStream, tags: list[tuple[int, int, bytes]], start: float) -> list[tuple[int, int]]:
    """(type, timestamp, body) tags 1 ms of wall clock apart; their (dts, pts) on the stream's timeline."""
    out = []
    for i, (tag_type, ts, body) in enumerate(tags):
        dts = stream.rebase(ts, start + i / 1000)
        stream.note(tag_type, dts, body)
        out.append((dts, dts + (flv.composition_time(body) if tag_type == flv.VIDEO else 0)))
    return out


def gop(first_ts: int) -> list[tuple[int, int, bytes]]:
    """Decode order I P B B at 25 fps, as x265 sends it: P shows 120 ms after it is sent."""
    return [
        (flv.VIDEO, first_ts, hevc_frame(40)),
        (flv.VIDEO, first_ts + 40, hevc_frame(120)),
        (flv.AUDIO, first_ts + 60, b"\xaf\x01aac"),
        (flv.VIDEO, first_ts + 80, hevc_frame(0)),
        (flv.VIDEO, first_ts + 120, hevc_frame(0)),
    ]


def test_the_new_publishers_frames_show_after_the_old_ones() -> None:
    stream = EdgeStream("uid", "name", DEFAULT_LIMITS)
    # The old publisher is cut right after a P-frame: it shows after the last tag's timestamp.
    old = feed(stream, [(flv.VIDEO, 0, HEVC_CONFIG), *gop(0), *gop(160)[:2]], start=100.0)
    assert old[-1] == (200, 320) and max(pts for _, pts in old) == 320
    stream.rebase_next = True  # what Edge.publish does at a takeover
    new = feed(stream, [(flv.VIDEO, 0, HEVC_CONFIG), *gop(0)], start=100.008)  # 1 ms later
    old_frames, new_frames = old[1:], new[1:]
    assert min(pts for _, pts in new_frames) > max(pts for _, pts in old_frames)
    dts = [d for d, _ in old + new]
    assert dts == sorted(dts)
    assert new[0][0] == 320 + 1


def audio(timestamps: range) -> list[tuple[int, int, bytes]]:
    return [(flv.AUDIO, ts, b"\xaf\x01aac") for ts in timestamps]


def test_without_b_frames_the_timeline_goes_on_from_the_last_tag_plus_the_time_between() -> None:
    stream = EdgeStream("uid", "name", DEFAULT_LIMITS)
    old = feed(stream, audio(range(0, 1000, 23)), start=5.0)  # last tag at 5.043
    stream.rebase_next = True
    new = feed(stream, audio(range(0, 100, 23)), start=5.543)
    assert new[0][0] == old[-1][0] + 500
    assert [d for d, _ in new] == [new[0][0] + ts for ts in range(0, 100, 23)]
    stream.rebase_next = True  # a third publisher at the very instant of the second's last tag
    third = feed(stream, audio(range(0, 50, 23)), start=5.543 + (len(new) - 1) / 1000)
    assert third[0][0] == new[-1][0] + 1  # the next millisecond, never the same one
