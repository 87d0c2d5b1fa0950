"""Stream, the pump side of one stream: a new uid of a name waits for the earlier one's tail.

The link core says which stream a new one ``follows`` (tests/relay_client/test_appcore.py);
here two real Streams write the same ``--out`` files, the new one's tags arriving first.
"""

from __future__ import annotations

import json
from pathlib import Path

from relay_client.decode import AudioFormat
from relay_client.stream import Stream
from relay_edge import flv
from relay_edge import frames as wire

HEADER = flv.file_header(audio=True, video=False)


def script_tag(n: int) -> bytes:
    """A tag no decoder touches, whose body names it."""
    return flv.Tag(flv.SCRIPT, n, b"tag-%03d" % n).encode()


def make(uid: str, out: Path, acks: list[tuple[str, int]]) -> Stream:
    frame = wire.Open(
        sid=1, uid=uid, name="cam", publisher={}, codecs={}, seq=1, resumed=False, header=HEADER, edge="e1"
    )
    return Stream(
        frame,
        audio_format=AudioFormat(),
        consume=frozenset({"flv"}),
        out_dir=str(out),
        ack=lambda stream, seq: acks.append((stream.info.uid, seq)),
    )


async def test_a_stream_that_follows_writes_after_the_tail_of_the_one_before(tmp_path: Path) -> None:
    acks: list[tuple[str, int]] = []
    first, second = make("u1", tmp_path, acks), make("u2", tmp_path, acks)
    first.start()
    second.start(after=first)
    first.feed(1, (script_tag(1), script_tag(2)))
    second.feed(1, (script_tag(10), script_tag(11)))  # the new publisher's tags arrive first
    first.feed(3, (script_tag(3),))  # the old stream's tail
    first.end("unpublished")
    second.end("unpublished")
    await first.wait_ended()
    await second.wait_ended()

    expected = [script_tag(n) for n in (1, 2, 3, 10, 11)]
    assert (tmp_path / "cam.flv").read_bytes() == HEADER + b"".join(
        t + flv.previous_tag_size(t) for t in expected
    )
    uids = [uid for uid, _ in acks]
    assert dict(acks) == {"u1": 3, "u2": 2} and uids == sorted(uids)  # u2 acked only after u1's tail
    summary = json.loads((tmp_path / "cam.json").read_text())
    assert (summary["streams"], summary["tags"], summary["uid"]) == (2, 5, "u2")
