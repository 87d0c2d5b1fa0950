"""In-process micro-bench of the app's receive path: ``python -m bench.appreceive``.

What ``bench/run``'s decode section measures, without the edge, the publishers and the sockets
(on a shared machine an app short of CPU falls behind there, and its CPU share then says more
about the machine than about the app). One process, one event loop (uvloop where installed,
as the CLIs), a real :class:`relay_client.receiver.Receiver` on one link:

1. an in-memory transport hands the Receiver the edge's messages: a Hello, an Open per stream
   (its AAC sequence header as ``init``), then every 100 ms tick of audio of every stream as
   ``Data`` frames, ``--per-message`` streams to a WebSocket message (the edge's batching);
2. the Receiver does all it does for a link: frames through ``AppCore``, tags to each
   ``Stream``'s pipeline, AAC decoded to 16 kHz mono s16, chunks to the app's ``audio()``
   iterator (and the raw tags to ``flv()`` with ``--flv``, as ``bench/run``'s consumer does),
   acks encoded and sent back;
3. a tick's messages go in once every stream acked the tick before (the app keeping up, as in
   real time), so each stream's pipeline takes each tick as one batch.

The tags are a real 44.1 kHz stereo 128 kbit/s AAC file (``tests.support.media.tone_flv``).
It reports CPU time (``time.process_time``: other processes on the machine count less) per
stream-second of audio as % of one core, the figure ``bench/run``'s "per decoded stream" and
issue #15's target (<= 0.3% at 200 streams) are in. Prints the min and median over ``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from relay_client.receiver import Receiver
from relay_client.stream import Stream
from relay_edge import flv, wire
from relay_edge.loop import run
from tests.support.media import read_tags, tone_flv

TICK_MS = 100  # bench/publisher.py's TICK: what is due is written every 100 ms
SECRET = "bench-secret-bench-secret-bench-secret"


class MemoryTransport:
    """The edge's end of one link, in memory: messages queued in, acks counted out."""

    remote = "memory"

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.target = 0  # the seq every stream must ack
        self.behind: set[int] = set()  # sids not acked up to target yet
        self.caught_up = asyncio.Event()

    def expect(self, sids: range, seq: int) -> None:
        """Wait (with :attr:`caught_up`) for every sid in ``sids`` to ack ``seq``."""
        self.target, self.behind = seq, set(sids)
        self.caught_up.clear()

    async def send_parts(self, parts: Sequence[bytes]) -> None:
        await self.send(b"".join(parts))

    async def send(self, data: bytes) -> None:
        for frame in wire.decode_message(data):
            if isinstance(frame, wire.Ack) and frame.seq >= self.target:
                self.behind.discard(frame.sid)
        if not self.behind:
            self.caught_up.set()

    async def recv(self) -> bytes:
        return await self.inbox.get()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.inbox.put_nowait(b"")  # ends the link: an empty message is a wire error


def ticks(tags: list[flv.Tag], seconds: float) -> list[list[bytes]]:
    """The encoded AAC tags due in each 100 ms tick of ``seconds`` (the file loops)."""
    frames = [t for t in tags if t.type == flv.AUDIO][1:]
    span = frames[-1].timestamp - frames[0].timestamp + 23  # one AAC frame: loops seamlessly
    out: list[list[bytes]] = []
    i = 0
    for tick_end in range(TICK_MS, int(seconds * 1000) + TICK_MS, TICK_MS):
        due: list[bytes] = []
        while (ts := (i // len(frames)) * span + frames[i % len(frames)].timestamp) < tick_end:
            frame = frames[i % len(frames)]
            due.append(flv.Tag(flv.AUDIO, ts, frame.data).encode())
            i += 1
        out.append(due)
    return out


async def once(
    streams: int, per_message: int, schedule: list[list[bytes]], header: bytes, flv_too: bool
) -> float:
    """CPU seconds for every tick of ``schedule`` on ``streams`` streams (set-up not counted)."""
    consume = {"audio", "flv"} if flv_too else {"audio"}
    counted = {"chunks": 0, "tags": 0}

    async def on_stream(stream: Stream) -> None:
        async def drain(kind: str) -> None:
            async for _ in getattr(stream, kind)():
                counted["chunks" if kind == "audio" else "tags"] += 1

        await asyncio.gather(*(drain(kind) for kind in consume))

    receiver = Receiver(SECRET, consume=consume, on_stream=on_stream)
    transport = MemoryTransport()
    edge = wire.Hello(version=wire.PROTOCOL_VERSION, role="edge", instance="bench", name="bench")
    transport.inbox.put_nowait(wire.encode(edge))
    opens = [
        wire.Open(
            sid=sid,
            uid=f"u{sid}",
            name=f"s{sid}",
            publisher={},
            codecs={"audio": "aac"},
            seq=1,
            resumed=False,
            header=flv.file_header(True, False),
            edge="bench",
            init=(header,),
        )
        for sid in range(streams)
    ]
    transport.inbox.put_nowait(wire.encode_many(opens))
    link = asyncio.create_task(receiver.run_link(transport, dialer_proof="", dialed=False))
    while len(receiver.live) < streams:
        await asyncio.sleep(0.01)
    # The edge's messages are made before the clock starts: encoding them is the edge's work.
    ticks_out: list[tuple[int, list[bytes]]] = []
    seq = 1
    for due in schedule:
        frames = [wire.Data(sid=sid, seq=seq, tags=tuple(due)) for sid in range(streams)]
        seq += len(due)
        messages = [wire.encode_many(frames[at : at + per_message]) for at in range(0, streams, per_message)]
        ticks_out.append((seq - 1, messages))
    started = None
    warmup = 5  # ticks: decoders and queues warm
    for index, (last, messages) in enumerate(ticks_out):
        if index == warmup:
            started = time.process_time()
        transport.expect(range(streams), last)
        for message in messages:
            transport.inbox.put_nowait(message)
        await transport.caught_up.wait()
    assert started is not None
    spent = time.process_time() - started
    await transport.close()
    link.cancel()
    await asyncio.gather(link, return_exceptions=True)
    assert counted["chunks"] > 0
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.appreceive", description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0, help="audio per stream, per run")
    parser.add_argument("--per-message", type=int, default=20, help="streams' Data frames per message")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--flv", action="store_true", help="also iterate flv(), as bench/run's consumer")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tags = read_tags(tone_flv(Path(tmp) / "tone.flv", seconds=10))
    header = next(t for t in tags if t.type == flv.AUDIO).encode()
    schedule = ticks(tags, args.seconds + 0.5)  # 5 warm-up ticks, then ``seconds`` measured
    measured = (len(schedule) - 5) * TICK_MS / 1000
    results = []
    for _ in range(args.runs):
        spent = run(once(args.streams, args.per_message, schedule, header, args.flv))
        results.append(100 * spent / measured / args.streams)
        print(
            f"run: {spent:.2f} CPU s, {args.streams} streams x {measured:g} s: {results[-1]:.3f}% per stream"
        )
    print(
        f"{args.streams} streams, per-message {args.per_message}, flv {args.flv}: "
        f"% of a core per stream min {min(results):.3f}, median {statistics.median(results):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
