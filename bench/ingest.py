"""In-process micro-bench of the edge's ingest path: ``python -m bench.ingest``.

No sockets and no event loop: what is timed is the per-tag Python path the edge runs for
a publisher's bytes, in the order the edge runs it:

1. ``ServerSession.receive_data`` on one read's bytes (chunks parsed into Media events);
2. per Media event, what ``Edge.media`` does with it: ``Outbox.push`` (FLV tag header + body);
3. per tick, what the link does: ``Outbox.take`` and ``wire.encode_data`` for every busy
   stream, joined into one WebSocket message, then every stream acked (the app keeping up).

Not included: ``EdgeStream.rebase``/``note`` and the metrics counters (``Edge.media``), the
socket reads and the WebSocket send (masking: see ``bench/masking.py``).

The publishers' bytes are made once, before timing, by our ``ClientSession`` publishing a
real AAC file (44.1 kHz stereo 128 kbit/s, ``tests.support.media.tone_flv``) through a
handshake, connect and publish answered by a ``ServerSession``. Each tick hands every stream
the bytes of 100 ms of audio (``bench/publisher.py``'s TICK), as one read.

Prints µs per tag: the median over ``--runs`` runs, each over every tick of every stream.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from relay_edge import flv, wire
from relay_edge.limits import DEFAULT_LIMITS
from relay_edge.outbox import Budget, Outbox
from relay_edge.rtmp.chunk import ChunkReader
from relay_edge.rtmp.client import ClientSession
from relay_edge.rtmp.events import Media, PublishRequested
from relay_edge.rtmp.session import ServerSession
from tests.support.rtmpbytes import publish_setup

HANDSHAKE_BYTES = 1 + 1536 + 1536  # C0, C1, C2: what precedes the first chunk
TICK_MS = 100  # bench/publisher.py's TICK: what is due is written every 100 ms


@dataclass
class Stream:
    """One publisher's pre-made bytes: the connection set-up, then one read per tick."""

    setup: bytes
    reads: list[bytes]
    tags: int


def publisher_bytes(tags: list[flv.Tag], seconds: float, chunk_size: int, key: str) -> Stream:
    """The bytes one publisher sends: set-up (handshake to publish) and ``seconds`` of media per tick."""
    client = ClientSession("live", key, "rtmp://127.0.0.1/live", chunk_size=chunk_size)
    client.initiate()
    setup = publish_setup(client)
    media = [t for t in tags if t.type == flv.AUDIO]
    header, frames = media[0], media[1:]
    client.send_media(header.type, 0, header.data)
    span = frames[-1].timestamp - frames[0].timestamp + 23  # one AAC frame: the file loops seamlessly
    end_ms = int(seconds * 1000)
    reads: list[bytes] = []
    count, i = 1, 0
    for tick_end in range(TICK_MS, end_ms + TICK_MS, TICK_MS):
        while (ts := (i // len(frames)) * span + frames[i % len(frames)].timestamp) < min(tick_end, end_ms):
            client.send_media(flv.AUDIO, ts, frames[i % len(frames)].data)
            i += 1
        count = i + 1
        reads.append(client.data_to_send())
    return Stream(bytes(setup), reads, count)


def run_once(streams: list[Stream], keep: list[bytes] | None = None) -> tuple[float, int, int]:
    """Push every stream's bytes through the path; (seconds, tags, link bytes).

    ``keep`` gets every link message (tests check what the path carried).
    """
    budget = Budget()
    sessions = [ServerSession(random_bytes=lambda n: bytes(n)) for _ in streams]
    outboxes = [Outbox(DEFAULT_LIMITS, budget) for _ in streams]
    for session, stream in zip(sessions, streams, strict=True):
        for event in session.receive_data(stream.setup):
            if isinstance(event, PublishRequested):
                session.accept_publish(event.stream_id)
        session.data_to_send()
    ticks = max(len(s.reads) for s in streams)
    tags = link_bytes = 0
    start = time.process_time()
    for tick in range(ticks):
        now = tick * TICK_MS / 1000
        for session, outbox, stream in zip(sessions, outboxes, streams, strict=True):
            if tick >= len(stream.reads):
                continue
            for event in session.receive_data(stream.reads[tick]):
                if type(event) is Media:
                    outbox.push(event.type, event.timestamp, event.data, now)
                    tags += 1
            session.data_to_send()
        parts: list[bytes] = []
        for sid, outbox in enumerate(outboxes, 1):
            if not outbox.pending:
                continue
            _, seq, taken = outbox.take(sid)
            parts.append(wire.encode_data(sid, seq, taken))
        message = b"".join(parts)
        link_bytes += len(message)
        if keep is not None:
            keep.append(message)
        for outbox in outboxes:
            outbox.ack(outbox.sent)
    return time.process_time() - start, tags, link_bytes


def reader_once(streams: list[Stream]) -> tuple[float, int]:
    """The chunk reader alone on the same reads (after the set-up); (seconds, messages)."""
    readers = []
    for stream in streams:
        reader = ChunkReader()
        reader.feed(stream.setup[HANDSHAKE_BYTES:])
        readers.append(reader)
    count = 0
    start = time.process_time()
    for tick in range(max(len(s.reads) for s in streams)):
        for reader, stream in zip(readers, streams, strict=True):
            if tick < len(stream.reads):
                for _ in reader.messages(stream.reads[tick]):
                    count += 1
    return time.process_time() - start, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200, help="concurrent AAC publishers")
    parser.add_argument("--seconds", type=float, default=5, help="of audio per publisher")
    parser.add_argument("--chunk", type=int, default=4096, help="the publishers' RTMP chunk size")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    from tests.support.media import read_tags, tone_flv  # PyAV: only where the bench runs

    with tempfile.TemporaryDirectory() as tmp:
        tags = read_tags(tone_flv(Path(tmp) / "tone.flv", seconds=2))
    streams = [publisher_bytes(tags, args.seconds, args.chunk, f"s{i}") for i in range(args.streams)]
    per_tag: list[float] = []
    per_msg: list[float] = []
    for _ in range(args.runs):
        seconds, count, link = run_once(streams)
        per_tag.append(seconds / count * 1e6)
        seconds, messages = reader_once(streams)
        per_msg.append(seconds / messages * 1e6)
    print(
        f"ingest: {args.streams} AAC streams x {args.seconds:g} s, chunk {args.chunk}: {count} tags, "
        f"{link} link bytes a run; µs per tag median {statistics.median(per_tag):.2f}, "
        f"min {min(per_tag):.2f} "
        f"(runs: {', '.join(f'{x:.2f}' for x in per_tag)})"
    )
    print(
        f"reader alone: µs per message median {statistics.median(per_msg):.2f}, min {min(per_msg):.2f} "
        f"(runs: {', '.join(f'{x:.2f}' for x in per_msg)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
