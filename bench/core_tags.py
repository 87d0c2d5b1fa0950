"""CPU per tag of the edge's sans-I/O core alone: ``python -m bench.core_tags [STREAMS] [TAGS]``.

STREAMS publishers (default 500) send TAGS AAC tags each (default 200, 100-byte bodies) round-robin
into one :class:`~relay_edge.edgecore.EdgeCore`; one link pulls after every STREAMS tags (a batch)
and acks what it got. Prints one JSON line: the process CPU time per tag, in microseconds, for
Media in, SendFrames out and the acks. No sockets: the figure is the core's, not the pumps'.
"""

from __future__ import annotations

import json
import sys
import time

from relay_edge import flv, wire
from relay_edge.edgecore import (
    EdgeCore,
    FrameReceived,
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
    started = time.process_time()
    for t in range(tags):
        now = t * 0.023
        for i in range(streams):
            core.handle(Media(i, 1, flv.AUDIO, t * 23, body), now)
        core.outputs()
        core.handle(LinkWritable(1), now)
        for out in core.outputs():
            if isinstance(out, SendFrames):
                sent += sum(map(len, out.frames))
        for sid in range(1, streams + 1):  # the app acks everything it got
            core.handle(FrameReceived(1, wire.Ack(sid=sid, seq=t + 1)), now)
        core.outputs()
    cpu = time.process_time() - started
    return {
        "streams": streams,
        "tags": streams * tags,
        "bytes_sent": sent,
        "us_per_tag": cpu / (streams * tags) * 1e6,
    }


def main() -> None:
    streams = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    tags = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    print(json.dumps(run(streams, tags)))


if __name__ == "__main__":
    main()
