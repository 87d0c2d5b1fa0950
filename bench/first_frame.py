"""Time to the first decoded audio frame and added latency: rtmp-relay vs a direct local decode.

Both contenders get the same publisher (PyAV's native RTMP output in its own
process, a 44.1 kHz stereo 128 kbit/s AAC tone, paced in real time) and the same
decoder (relay_client.decode, 16 kHz mono s16):

- direct: the publisher's RTMP goes straight into an in-process RTMP server and
  decoder: no edge, no WebSocket, no second hop. The floor.
- relay:  publisher → relay-edge → WebSocket (push) → relay_client, as
  ``relay-client test`` runs it on loopback.

First frame: from spawning the publisher to the first decoded chunk.
Latency: per chunk, arrival minus the moment the publisher wrote the packet
holding the chunk's last sample (both on CLOCK_MONOTONIC). Medians of --runs.

    .venv/bin/python bench/first_frame.py --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay_client.decode import AudioChunk, AudioDecoder, AudioFormat
from relay_client.publish import publish_tone
from relay_client.selftest import _latency, run_local
from relay_edge import flv
from relay_edge.rtmp.events import Media, PublishRequested
from relay_edge.rtmp.session import ServerSession

FORMAT = AudioFormat(16000, 1, "s16")


async def direct_run(seconds: float) -> dict[str, Any]:
    """Publisher → in-process RTMP server → decoder; no relay in between."""
    chunks: list[tuple[float, AudioChunk]] = []
    decoder = AudioDecoder(FORMAT)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ServerSession()
        while data := await reader.read(65536):
            for event in session.receive_data(data):
                if isinstance(event, PublishRequested):
                    session.accept_publish(event.stream_id)
                elif isinstance(event, Media) and event.type == flv.AUDIO:
                    now = time.monotonic()
                    chunks.extend(
                        (now, c) for c in decoder.decode(flv.Tag(event.type, event.timestamp, event.data))
                    )
            writer.write(session.data_to_send())
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t0 = time.monotonic()
    result = await publish_tone(f"rtmp://127.0.0.1:{port}/live/direct", seconds=seconds)
    server.close()
    first = (chunks[0][0] - t0) * 1000 if chunks else None
    return {"first_frame_ms": first, "latency_ms": _latency(chunks, result.written_at)}


async def relay_run(seconds: float) -> dict[str, Any]:
    report = await run_local(seconds=seconds, say=lambda _: None)
    if not report.ok:
        failed = next(s for s in report.steps if not s.ok)
        raise RuntimeError(f"relay run failed at {failed.name}: {failed.detail}")
    return {"first_frame_ms": report.first_frame_ms, "latency_ms": report.latency_ms}


def median(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> float:
    values = [r[key][sub] if sub else r[key] for r in runs]
    return statistics.median(v for v in values if v is not None)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {"direct": [], "relay": []}
    for i in range(args.runs):
        # Alternate so drift on the machine hits both contenders alike.
        for name, run in (("direct", direct_run), ("relay", relay_run)):
            results[name].append(await run(args.seconds))
            print(f"run {i + 1}/{args.runs} {name}: {json.dumps(results[name][-1])}", file=sys.stderr)
    table = {}
    for name, runs in results.items():
        table[name] = {
            "first_frame_ms": median(runs, "first_frame_ms"),
            "latency_p50_ms": median(runs, "latency_ms", "p50"),
            "latency_p99_ms": median(runs, "latency_ms", "p99"),
        }
    base = table["direct"]
    added = {k: table["relay"][k] - base[k] for k in base}
    # Latency is shown as milliseconds added over direct, not as a ratio: the floor is ~0 ms
    # (the publisher stamps a packet after its write returns; the direct decoder may beat that).
    print(f"\nmedians of {args.runs} runs, {args.seconds:g} s AAC tone each")
    print(f"{'contender':<10} {'first frame ms':>22} {'latency p50 ms':>22} {'latency p99 ms':>22}")
    for name, row in table.items():
        first = f"{row['first_frame_ms']:.1f} ({row['first_frame_ms'] / base['first_frame_ms']:.2f}x)"
        p50 = f"{row['latency_p50_ms']:.2f} ({row['latency_p50_ms'] - base['latency_p50_ms']:+.2f})"
        p99 = f"{row['latency_p99_ms']:.2f} ({row['latency_p99_ms'] - base['latency_p99_ms']:+.2f})"
        print(f"{name:<10} {first:>22} {p50:>22} {p99:>22}")
    print(
        f"relay adds: first frame {added['first_frame_ms']:+.1f} ms, "
        f"latency p50 {added['latency_p50_ms']:+.2f} ms, p99 {added['latency_p99_ms']:+.2f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "medians": table, "added": added}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
