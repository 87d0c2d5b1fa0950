"""CPU per tag of the edge's sans-I/O core alone: ``python -m bench.core_tags [STREAMS] [TAGS]``.

STREAMS publishers (default 500) send TAGS AAC tags each (default 200, 100-byte bodies) round-robin
into one :class:`~relay_edge.edgecore.EdgeCore`; one link pulls after every STREAMS tags (a batch)
and acks what it got. Prints one JSON line: the process CPU time per tag, in microseconds, for
Media in, SendFrames out and the acks, then that time split (``media_us``: ``EdgeCore.media``;
``pull_us``: LinkWritable to SendFrames; ``ack_us``: the Acks through ``EdgeCore.acks``), and
``ack_decode_us``: ``wire.ack_pairs`` per Ack on one message of STREAMS Acks (what an app
sends per batch; the edge's pump decodes such a message so). No sockets: the figure is the
core's, not the pumps'.
"""

from __future__ import annotations

import json
import sys
import time

from relay_edge import flv, wire
from relay_edge.edgecore import (
    EdgeCore,
    LinkUp,
    LinkWritable,
    Media,
    PublishVerified,
    SendFrames,
)
from relay_edge.edgestream import Publisher


def run(streams: int, tags: int) -> dict[str, float]:
    """Feed ``streams * tags`` tags through one core; CPU seconds per tag."""
    core = EdgeCore("bench", "bench")
    publisher = Publisher("127.0.0.1:1", "live", "")
    for i in range(streams):
        core.handle(PublishVerified(i, 1, f"s{i}", "live", publisher), 0.0)
    core.handle(LinkUp(1, wire.Hello(version=1, role="client", instance="app")), 0.0)
    core.outputs()
    body = b"\xaf\x01" + bytes(98)
    sent = 0
    clock = time.process_time
    split = [0.0, 0.0, 0.0]  # media, pull, acks
    started = clock()
    for t in range(tags):
        now = t * 0.023
        a = clock()
        for i in range(streams):
            core.handle(Media(i, 1, flv.AUDIO, t * 23, body), now)
        core.outputs()
        b = clock()
        core.handle(LinkWritable(1), now)
        for out in core.outputs():
            if isinstance(out, SendFrames):
                sent += sum(map(len, out.frames))
        c = clock()
        # The app acks everything it got, in one message of Acks: the pump's direct entry.
        core.acks(1, [(sid, t + 1) for sid in range(1, streams + 1)])
        core.outputs()
        split[0] += b - a
        split[1] += c - b
        split[2] += clock() - c
    cpu = clock() - started
    n = streams * tags
    acks = wire.encode_many([wire.Ack(sid=sid, seq=tags + sid) for sid in range(1, streams + 1)])
    decode_started = clock()
    for _ in range(tags):
        wire.ack_pairs(acks)
    decode = clock() - decode_started
    return {
        "streams": streams,
        "tags": n,
        "bytes_sent": sent,
        "us_per_tag": cpu / n * 1e6,
        "media_us": split[0] / n * 1e6,
        "pull_us": split[1] / n * 1e6,
        "ack_us": split[2] / n * 1e6,
        "ack_decode_us": decode / n * 1e6,
    }


def main() -> None:
    streams = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    tags = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    print(json.dumps(run(streams, tags)))


if __name__ == "__main__":
    main()
