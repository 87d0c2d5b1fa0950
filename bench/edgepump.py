"""In-process bench of the edge's whole Python path per tag: ``python -m bench.edgepump``.

What ``bench/run``'s load section spends in the edge, minus the sockets and the WebSocket
framing: a real :class:`~relay_edge.edge.Edge` (not started), one real
:class:`~relay_edge.ingest.RtmpConnection` per publisher fed its bytes by ``data_received``
(chunks, session, key check, the core, the outboxes), and one real
:class:`~relay_edge.link.EdgeLink` that pulls a message after every ``--per-message``
reads (the edge's batching: about 9 reads to a message at 200 streams) and gets a message of
Acks back for it, through the pump's entries (``Edge.pull``, ``Edge.acks``).

The publishers' bytes are made before timing (``bench.ingest.publisher_bytes``: our
``ClientSession`` publishing a real 44.1 kHz stereo 128 kbit/s AAC file, 100 ms a read).
Prints CPU time (``time.process_time``) per tag in µs: the median and min over ``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.ingest import Stream, publisher_bytes
from relay_edge import keys, wire
from relay_edge.edge import Edge, EdgeConfig
from relay_edge.edgecore import LinkUp
from relay_edge.ingest import RtmpConnection
from relay_edge.limits import DEFAULT_LIMITS
from relay_edge.link import EdgeLink

SECRET = "bench-secret-bench-secret-bench-secret"


class _Socket:
    """A publisher's transport: its peer address; what the edge writes back is dropped."""

    def __init__(self, index: int) -> None:
        self.peer = (f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 40000)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class _Link:
    """The link's transport: never used here (the bench pulls and acks by hand)."""

    remote = "bench"

    async def send(self, data: bytes) -> None:
        raise AssertionError("the bench pulls by hand")

    async def send_parts(self, parts: Sequence[bytes]) -> None:
        raise AssertionError("the bench pulls by hand")


def run_once(streams: list[Stream], per_message: int, keep: list[bytes] | None = None) -> tuple[float, int]:
    """Every stream's bytes through one fresh edge; (CPU seconds, tags). ``keep``: link messages."""
    limits = replace(DEFAULT_LIMITS, max_connections_per_ip=1 << 20, max_streams=1 << 20)
    edge = Edge(EdgeConfig(secret=SECRET, http_listen=None, limits=limits))
    peer = wire.Hello(version=wire.PROTOCOL_VERSION, role="client", instance="app")
    link = EdgeLink(edge, _Link(), peer, 1)  # type: ignore[arg-type]
    edge.links.append(link)
    edge._links_by_id[1] = link
    edge._feed(LinkUp(1, peer, "bench"))
    conns = []
    for i, stream in enumerate(streams):
        conn = RtmpConnection(edge)
        conn.connection_made(_Socket(i))  # type: ignore[arg-type]
        conn.data_received(stream.setup)
        conns.append(conn)
    acked: dict[int, int] = {}
    start = time.process_time()
    for tick in range(max(len(s.reads) for s in streams)):
        for i, (conn, stream) in enumerate(zip(conns, streams, strict=True)):
            if tick < len(stream.reads):
                conn.data_received(stream.reads[tick])
            if (i + 1) % per_message == 0 or i == len(conns) - 1:
                _exchange(edge, link, acked, keep)
    cpu = time.process_time() - start
    return cpu, edge.metrics.tags_total


def _exchange(edge: Edge, link: EdgeLink, acked: dict[int, int], keep: list[bytes] | None) -> None:
    """What the link's loops do for one batch: pull its messages, then take the app's Acks."""
    more = True
    seen: dict[int, int] = {}
    while more:
        parts, more = edge.pull(link)
        if not parts:
            continue
        message = b"".join(parts)
        if keep is not None:
            keep.append(message)
        for frame in wire.decode_message(message):  # the app's side: not timed in a real edge
            if isinstance(frame, wire.Data):
                seen[frame.sid] = frame.seq + len(frame.tags) - 1
    if seen:
        acked.update(seen)
        edge.acks(link, wire.ack_pairs(wire.encode_many([wire.Ack(sid=s, seq=q) for s, q in seen.items()])))


def streams_for(count: int, seconds: float, chunk: int) -> list[Stream]:
    from tests.support.media import read_tags, tone_flv  # PyAV: only where the bench runs

    with tempfile.TemporaryDirectory() as tmp:
        tags = read_tags(tone_flv(Path(tmp) / "tone.flv", seconds=2))
    now = time.time()
    return [
        publisher_bytes(tags, seconds, chunk, keys.mint_key(SECRET, f"s{i}", now=now)) for i in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200, help="concurrent AAC publishers")
    parser.add_argument("--seconds", type=float, default=5, help="of audio per publisher")
    parser.add_argument("--chunk", type=int, default=4096, help="the publishers' RTMP chunk size")
    parser.add_argument("--per-message", type=int, default=9, help="publisher reads per link message")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    streams = streams_for(args.streams, args.seconds, args.chunk)
    per_tag: list[float] = []
    for _ in range(args.runs):
        seconds, count = asyncio.run(_timed(streams, args.per_message))
        per_tag.append(seconds / count * 1e6)
    print(
        f"edgepump: {args.streams} AAC streams x {args.seconds:g} s, chunk {args.chunk}, "
        f"{args.per_message} reads a message: {count} tags a run; µs per tag median "
        f"{statistics.median(per_tag):.2f}, min {min(per_tag):.2f} "
        f"(runs: {', '.join(f'{x:.2f}' for x in per_tag)})"
    )
    return 0


async def _timed(streams: list[Stream], per_message: int) -> tuple[float, int]:
    return run_once(streams, per_message)  # in a loop: the edge's connections expect one


if __name__ == "__main__":
    raise SystemExit(main())
