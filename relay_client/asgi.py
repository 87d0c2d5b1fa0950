"""The push endpoint for ASGI apps (FastAPI, Starlette) — beside the aiohttp one, same logic.

    from fastapi import FastAPI
    from relay_client import Receiver
    from relay_client.asgi import RelayEndpoint

    receiver = Receiver(secret=os.environ["RELAY_SECRET"], on_stream=handle)
    app = FastAPI()
    app.mount("/relay", RelayEndpoint(receiver))

Only the transport differs: the proof is checked before the upgrade (a refusal
is an HTTP 401 where the server supports the ASGI denial-response extension,
as uvicorn does, else a close before accept, which servers turn into 403), then
:meth:`Receiver.run_link` pumps the link exactly as for aiohttp.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from relay_edge.auth import PROOF_HEADER
from relay_edge.errors import AuthError, TransportClosed
from relay_edge.transport import SUBPROTOCOL
from relay_edge.web import acceptor_target

from .receiver import Receiver

log = logging.getLogger("relay_client.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiTransport:
    """A :class:`~relay_edge.transport.Transport` over an accepted ASGI WebSocket."""

    def __init__(self, receive: Receive, send: Send, remote: str) -> None:
        self._receive = receive
        self._send = send
        self.remote = remote
        self._closed = False

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise TransportClosed(1006, "closed")
        try:
            await self._send({"type": "websocket.send", "bytes": data})
        except (OSError, RuntimeError) as exc:  # servers raise these once the peer is gone
            self._closed = True
            raise TransportClosed(1006, str(exc)) from None

    async def send_parts(self, parts: Sequence[bytes]) -> None:
        await self.send(b"".join(parts))  # ASGI takes one bytes object a message

    async def recv(self) -> bytes:
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            if message.get("bytes") is not None:
                return message["bytes"]
            raise TransportClosed(1003, "text message on a binary link")
        self._closed = True
        raise TransportClosed(message.get("code", 1006), message.get("reason") or "")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._closed:
            self._closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})


class RelayEndpoint:
    """An ASGI app that takes the edge's pushed link; mount it at any path."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await _plain(send, 426, b"rtmp-relay link: WebSocket upgrade required\n")
            return
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client") or ("?", 0)
        remote = f"{client[0]} (push, asgi)"
        proof = headers.get(PROOF_HEADER.lower(), "")
        try:
            self.receiver.verify_proof(proof, acceptor_target(headers.get("host", ""), scope.get("path", "")))
        except AuthError as exc:
            log.warning("refused link from %s: %s", client[0], exc)
            self.receiver.metrics.auth_failures.labels("link_proof").inc()
            await self._deny(scope, send, f"link refused: {exc}\n")
            return
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
        accept: Message = {"type": "websocket.accept"}
        if SUBPROTOCOL in offered:
            accept["subprotocol"] = SUBPROTOCOL
        await send(accept)
        transport = AsgiTransport(receive, send, remote)
        await self.receiver.run_link(transport, dialer_proof=proof, dialed=False)
        await transport.close(1000, "")

    @staticmethod
    async def _deny(scope: Scope, send: Send, text: str) -> None:
        if "websocket.http.response" in scope.get("extensions", {}):
            body = text.encode()
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"text/plain"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
    )
    await send({"type": "http.response.body", "body": body})
