"""Push-mode masking and the edge's outbound WebSocket client: ``python -m bench.masking``.

The dialing side of a WebSocket must mask every frame it sends (RFC 6455, 5.3), so in push
mode the edge XORs every byte of media it forwards. Two figures:

1. **Masking alone**: websockets' ``apply_mask`` as the library uses it (``websockets.frames``
   imports the C one from ``websockets.speedups`` when it is built) against its pure-Python
   fallback (``websockets.utils``), and aiohttp's (Cython, and its pure fallback), in MB/s.
2. **The client in use**: one connection sending ``--message`` byte binary messages for
   ``--seconds`` to a server in another process (aiohttp's, as the app in push mode runs),
   from a websockets client (what ``relay_edge.dial`` uses, compression off) and from an
   aiohttp client. MB/s reaching the server, and the client's CPU seconds per 100 MB.

Prints medians of ``--runs`` runs, the two clients alternating inside each run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.synchronize
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
import websockets.frames
import websockets.utils
from aiohttp import web
from aiohttp._websocket import helpers as aiohttp_ws
from websockets.asyncio.client import connect

MB = 1_000_000


# --- 1. masking alone ---------------------------------------------------------------------------


def mask_rate(apply: Callable[[bytes, bytes], object], size: int, budget: float = 0.5) -> float:
    """MB/s of ``apply(data, mask)`` on ``size``-byte buffers, over ``budget`` CPU seconds."""
    data, mask = os.urandom(size), b"\x12\x34\x56\x78"
    done, start = 0, time.process_time()
    while time.process_time() - start < budget:
        apply(data, mask)
        done += size
    return done / (time.process_time() - start) / MB


def aiohttp_apply(python: bool) -> Callable[[bytes, bytes], object]:
    """aiohttp's mask (in place, on a bytearray copy, as its writer does)."""
    fn = aiohttp_ws._websocket_mask_python if python else aiohttp_ws.websocket_mask

    def apply(data: bytes, mask: bytes) -> object:
        buf = bytearray(data)
        fn(mask, buf)
        return buf

    return apply


def masking(sizes: list[int]) -> None:
    in_use = websockets.frames.apply_mask
    c_in_use = in_use is not websockets.utils.apply_mask
    print(f"websockets {websockets.__version__}: frames.apply_mask is {in_use.__module__}.{in_use.__name__}")
    print(f"  C speedup in use: {c_in_use}")
    print(f"aiohttp {aiohttp.__version__}: websocket_mask is {aiohttp_ws.websocket_mask.__name__}")
    contenders = {
        "websockets in use": in_use,
        "websockets pure": websockets.utils.apply_mask,
        "aiohttp in use": aiohttp_apply(python=False),
        "aiohttp pure": aiohttp_apply(python=True),
    }
    for size in sizes:
        rates = {name: mask_rate(fn, size) for name, fn in contenders.items()}
        print(f"  mask {size:>8} B: " + ", ".join(f"{n} {r:,.0f} MB/s" for n, r in rates.items()))


# --- 2. the client in use ---------------------------------------------------------------------


def serve(port: int, ready: multiprocessing.synchronize.Event) -> None:
    """An aiohttp WebSocket server that counts what it receives and echoes the count on "end"."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        received = 0
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                received += len(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(str(received))
                received = 0
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/relay", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


async def send_websockets(url: str, payload: bytes, seconds: float) -> tuple[int, float, float]:
    async with connect(url, compression=None, max_size=None) as ws:
        return await _flood(ws.send, ws.send, ws.recv, payload, seconds)


async def send_aiohttp(url: str, payload: bytes, seconds: float) -> tuple[int, float, float]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:

        async def recv() -> str:
            return (await ws.receive()).data

        return await _flood(ws.send_bytes, ws.send_str, recv, payload, seconds)


async def _flood(
    send: Callable[[bytes], Awaitable[None]],
    send_text: Callable[[str], Awaitable[None]],
    recv: Callable[[], Awaitable[object]],
    payload: bytes,
    seconds: float,
) -> tuple[int, float, float]:
    """Send for ``seconds``, then ask the server what arrived: (bytes, wall s, client CPU s)."""
    wall, cpu = time.monotonic(), time.process_time()
    while time.monotonic() - wall < seconds:
        await send(payload)
    await send_text("end")
    received = int(str(await recv()))
    return received, time.monotonic() - wall, time.process_time() - cpu


def clients(port: int, message: int, seconds: float, runs: int) -> None:
    url = f"ws://127.0.0.1:{port}/relay"
    payload = os.urandom(message)
    results: dict[str, list[tuple[float, float]]] = {"websockets": [], "aiohttp": []}
    for _ in range(runs):
        for name, fn in (("websockets", send_websockets), ("aiohttp", send_aiohttp)):
            received, wall, cpu = asyncio.run(fn(url, payload, seconds))
            results[name].append((received / wall / MB, cpu / (received / 100 / MB)))
    for name, runs_ in results.items():
        rate = statistics.median(r for r, _ in runs_)
        cost = statistics.median(c for _, c in runs_)
        print(f"  {name:>10} client, {message} B messages: {rate:,.1f} MB/s, {cost:.3f} CPU s per 100 MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 65536, 1 << 20])
    parser.add_argument("--message", type=int, default=65536, help="bytes per WebSocket message")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args(argv)
    masking(args.sizes)
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(args.port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise SystemExit("the server did not start")
        print(f"one connection to an aiohttp server in another process, {args.seconds:g} s a run:")
        clients(args.port, args.message, args.seconds, args.runs)
    finally:
        server.terminate()
        server.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
