"""The app side of each contender, run as its own process (PyAV holds the GIL while it connects).

    python -m bench.consumer KIND [--mode frames|count|load] ...

KIND is what the app runs:

- ``floor``:  an in-process RTMP server (our sans-I/O ServerSession) and decoder: no hop at all.
- ``relay``:  relay_client's Receiver, accepting the edge's WebSocket (``--port``) or dialing
  the edge's /link (``--url``).
- ``pyav``:   PyAV opening ``--url``: pulling from nginx-rtmp, or with ``--listen`` as the RTMP
  server itself (behind the websockify tunnel); ``--tuned`` uses MEASURED.md's probe options.
- ``players``: lightweight RTMP players (ClientSession in play mode) on nginx-rtmp, ``--names``.

It prints JSON lines on stdout: ``{"ready": true}`` once it can take a publisher, then per mode:

- ``frames``: ``{"f": [arrival, pts_ms, duration_ms]}`` per decoded audio unit (one stream);
- ``count``:  ``{"bytes": total, "t": now}`` every 0.2 s (media bytes received, nothing decoded);
- ``load``:   on SIGTERM, ``{"latency_ms": [...], "tags": n, "chunks": n}``: per audio tag, arrival
  minus when the publisher's schedule (carried in the stream name) wrote it;
- ``decode``: as ``load``, and the app decodes every stream to 16 kHz mono s16 as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from typing import Any

from relay_client.allocator import tune_allocator
from relay_edge import flv
from relay_edge.loop import run
from relay_edge.rtmp.events import Media, PublishRequested

from .publisher import schedule_of, sent_time

COUNT_EVERY = 0.2


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Sink:
    """Where a consumer puts what it got, shaped by the mode."""

    def __init__(self, mode: str, window: tuple[float, float] = (0.0, float("inf"))) -> None:
        self.mode = mode
        self.bytes = 0
        self.tags = 0
        self.chunks = 0
        self.latency: list[float] = []
        self.window = window  # load: only tags arriving inside the measured window count

    def frame(self, pts_ms: float, duration_ms: float) -> None:
        self.chunks += 1
        if self.mode == "frames":
            emit({"f": [time.monotonic(), pts_ms, duration_ms]})

    def media(self, name: str, tag_type: int, timestamp: int, size: int) -> None:
        self.bytes += size
        self.tags += 1
        if self.mode in ("load", "decode") and tag_type == flv.AUDIO and timestamp > 0:
            now = time.monotonic()
            if self.window[0] <= now <= self.window[1]:
                self.latency.append((now - sent_time(schedule_of(name), timestamp)) * 1000)

    def report_counts(self) -> None:
        """Forever, in a thread: PyAV's demux loop blocks, and an event loop may be busy."""
        while True:
            emit({"bytes": self.bytes, "t": time.monotonic()})
            time.sleep(COUNT_EVERY)

    def summary(self) -> dict[str, Any]:
        return {"latency_ms": [round(x, 3) for x in self.latency], "tags": self.tags, "chunks": self.chunks}


# --- floor: RTMP straight into the app's decoder ---------------------------------------------------


async def floor(args: argparse.Namespace, sink: Sink) -> None:
    from relay_client.decode import AudioDecoder
    from relay_edge.rtmp.session import ServerSession

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ServerSession()
        decoder = AudioDecoder() if sink.mode != "count" else None
        while data := await reader.read(262144):
            for event in session.receive_data(data):
                if isinstance(event, PublishRequested):
                    session.accept_publish(event.stream_id)
                elif isinstance(event, Media):
                    sink.media("", event.type, event.timestamp, len(event.data))
                    if decoder is not None and event.type == flv.AUDIO:
                        for c in decoder.decode(flv.Tag(event.type, event.timestamp, event.data)):
                            sink.frame(c.timestamp, c.duration_ms)
            writer.write(session.data_to_send())
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", args.port)
    async with server:
        emit({"ready": True})
        await asyncio.Future()


# --- relay: relay_client's Receiver ----------------------------------------------------------------


async def relay(args: argparse.Namespace, sink: Sink) -> None:
    from aiohttp import web

    from relay_client.receiver import Receiver
    from relay_client.stream import Stream

    consume = {"frames": {"audio"}, "count": {"flv"}, "load": {"flv"}, "decode": {"flv", "audio"}}[sink.mode]
    tasks: set[asyncio.Task[None]] = set()

    async def tags(stream: Stream) -> None:
        name = stream.info.name
        async for item in stream.flv():
            if len(item) > flv.FILE_HEADER_SIZE or item[:3] != b"FLV":
                tag_type, size, ts = flv.parse_tag_header(item)
                sink.media(name, tag_type, ts, size)

    async def audio(stream: Stream) -> None:
        async for chunk in stream.audio():
            sink.frame(chunk.timestamp, chunk.duration_ms)

    async def on_stream(stream: Stream) -> None:
        for kind, reader in (("flv", tags), ("audio", audio)):
            if kind in consume:
                task = asyncio.create_task(reader(stream))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    receiver = Receiver(args.secret, consume=consume, on_stream=on_stream)
    if args.url:
        link = asyncio.create_task(receiver.connect(args.url))
        emit({"ready": True})
        await link
        return
    app = web.Application()
    app.router.add_get("/relay", receiver.handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    emit({"ready": True})
    await asyncio.Future()


# --- players: lightweight RTMP players on nginx-rtmp ------------------------------------------------


async def players(args: argparse.Namespace, sink: Sink) -> None:
    from relay_edge.rtmp.client import ClientSession

    async def play(name: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
        session = ClientSession("live", name, f"rtmp://127.0.0.1:{args.port}/live", play=True)
        session.initiate()
        writer.write(session.data_to_send())
        while data := await reader.read(262144):
            for event in session.receive_data(data):
                if isinstance(event, Media):
                    sink.media(name, event.type, event.timestamp, len(event.data))
            writer.write(session.data_to_send())

    emit({"ready": True})  # bench.contenders then waits for nginx to log every play
    await asyncio.gather(*(play(n) for n in args.names.split(",")))


# --- pyav: what an app without rtmp-relay writes ----------------------------------------------------


TUNED = {"analyzeduration": "1", "tcp_nodelay": "1"}  # MEASURED.md: no 5-second probe


def pyav(args: argparse.Namespace, sink: Sink) -> None:
    import av

    options = dict(TUNED) if args.tuned else {}
    if args.listen:
        options["listen"] = "1"
    emit({"ready": True})
    with av.open(args.url, format="flv" if args.tuned else None, options=options) as container:
        if sink.mode == "count":
            for packet in container.demux():
                sink.media("", 0, 0, packet.size)
            return
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        for packet in container.demux(stream):
            for frame in packet.decode():
                pts_ms = float(frame.pts * frame.time_base * 1000) if frame.pts is not None else 0.0
                sink.frame(pts_ms, 1000 * frame.samples / frame.sample_rate)
                resampler.resample(frame)


# --- entry -----------------------------------------------------------------------------------------


async def run_async(kind: Any, args: argparse.Namespace, sink: Sink) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    main = asyncio.create_task(kind(args, sink))
    stop = asyncio.create_task(done.wait())
    finished, _ = await asyncio.wait([main, stop], return_when=asyncio.FIRST_COMPLETED)
    for task in (main, stop):
        task.cancel()
    if main in finished and main.exception() is not None:
        raise main.exception()  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description="one contender's app side")
    parser.add_argument("kind", choices=["floor", "relay", "pyav", "players"])
    parser.add_argument("--mode", choices=["frames", "count", "load", "decode"], default="frames")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--url", default="")
    parser.add_argument("--secret", default="")
    parser.add_argument("--names", default="")
    parser.add_argument("--tuned", action="store_true")
    parser.add_argument("--listen", action="store_true")
    parser.add_argument("--window", default="0,inf", help="load: W0,W1 on CLOCK_MONOTONIC")
    args = parser.parse_args()
    # Every contender's app alike, as relay-client runs (relay_client/allocator.py).
    tune_allocator()
    w0, w1 = (float(x) for x in args.window.split(","))
    sink = Sink(args.mode, (w0, w1))
    if sink.mode == "count":
        threading.Thread(target=sink.report_counts, daemon=True).start()
    if args.kind == "pyav":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        pyav(args, sink)
    else:
        run(run_async(globals()[args.kind], args, sink))  # uvloop where installed, as the CLIs
    if sink.mode in ("load", "decode"):
        emit(sink.summary())


if __name__ == "__main__":
    main()
