"""The edge half of contender (b): a TCP listener that carries each connection over a WebSocket.

    python -m bench.tunnel_client LISTEN_PORT ws://127.0.0.1:PORT/

This is what chisel's or ngrok's client does, and what websockify (the app half, a real Debian
program) expects: binary WebSocket messages holding the raw TCP bytes, subprotocol ``binary``.
Built on the websockets library, with its C speedups, like our own link.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import websockets


async def pump_in(reader: asyncio.StreamReader, ws: websockets.ClientConnection) -> None:
    while data := await reader.read(262144):
        await ws.send(data)
    await ws.close()


async def pump_out(ws: websockets.ClientConnection, writer: asyncio.StreamWriter) -> None:
    async for message in ws:
        writer.write(message if isinstance(message, bytes) else message.encode())
        await writer.drain()
    writer.close()


async def serve(port: int, url: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with websockets.connect(url, subprotocols=["binary"], max_size=None, compression=None) as ws:
            with contextlib.suppress(Exception):
                await asyncio.gather(pump_in(reader, ws), pump_out(ws, writer))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))
