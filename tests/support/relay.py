"""An edge and an app on loopback, in this process, for end-to-end tests.

The edge listens for RTMP on a free port and dials the app's ``/relay`` (push
mode), exactly as ``relay-edge serve --upstream`` would; the app is a real aiohttp
server with a :class:`~relay_client.receiver.Receiver` writing ``--out`` files.
Publishers are real processes (ffmpeg, GStreamer, PyAV in a subprocess).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from relay_client.decode import AudioChunk, AudioFormat
from relay_client.receiver import Receiver
from relay_client.stream import Stream
from relay_edge import keys
from relay_edge.edge import Edge, EdgeConfig
from relay_edge.limits import DEFAULT_LIMITS, Limits
from relay_edge.web import common_routes
from tests.support.net import TcpProxy
from tests.support.wait import until

__all__ = ["SECRET", "TEST_LIMITS", "Relay", "until", "with_limits"]

SECRET = "test-secret-5f0c2a9e81d4-3b7e6a1c90d2f4"  # at least 32 characters, as the CLIs require
# A publisher that bursts a file and closes (ffmpeg without -re) may close with the edge's last
# Acknowledgement unread: its kernel then resets the connection and throws away the FCUnpublish
# still in its send queue (docs/LIMITS.md, ack_window), so the stream ends only after
# reconnect_grace. 5 s, not the field's 30, keeps such a test inside Relay.ended()'s 20 s; every
# publisher a test brings back with the same key comes back at once, well within it.
TEST_LIMITS = replace(DEFAULT_LIMITS, reconnect_grace=5.0)


class Relay:
    """``async with Relay(tmp_path) as relay``: edge + app up, link established."""

    def __init__(
        self,
        out_dir: Path,
        *,
        consume: frozenset[str] = frozenset({"audio"}),
        audio_format: AudioFormat | None = None,
        limits: Limits = TEST_LIMITS,
        secret: str = SECRET,
        accept: Any = None,
        mode: str = "push",
        edge_options: dict[str, Any] | None = None,
        receiver_options: dict[str, Any] | None = None,
        app_proxy: TcpProxy | None = None,
    ) -> None:
        assert mode in ("push", "pull")
        self.mode = mode
        self.edge_options = edge_options or {}  # extra EdgeConfig fields (allow_keys, rtmps_listen, ...)
        self.out_dir = Path(out_dir)
        self.secret = secret
        self.limits = limits
        self.chunks: dict[str, list[tuple[float, AudioChunk]]] = {}
        self.streams: dict[str, Stream] = {}
        self.receiver = Receiver(
            secret,
            audio_format=audio_format,
            consume=consume,
            out_dir=str(out_dir),
            on_stream=self._on_stream,
            limits=limits,
            name="test-app",
            accept=accept,
            **(receiver_options or {}),  # extra Receiver arguments (forwards, ...)
        )
        self._consume = consume
        self._runner: web.AppRunner | None = None
        self.edge: Edge | None = None
        self._dialer: asyncio.Task[None] | None = None
        self.app_proxy = app_proxy  # push mode: the edge dials the app through it (started here)
        self.app_port = 0

    async def __aenter__(self) -> Relay:
        app = web.Application()
        app.router.add_get("/relay", self.receiver.handler)
        common_routes(app, self.receiver.status, self.receiver.metrics.render, health=self.receiver.unhealthy)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.app_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        app_port = self.app_port
        if self.app_proxy is not None:
            self.app_proxy.target = ("127.0.0.1", self.app_port)
            app_port = (await self.app_proxy.start()).port
        push = (f"ws://127.0.0.1:{app_port}/relay",) if self.mode == "push" else ()
        config = EdgeConfig(
            secret=self.secret,
            rtmp_listen=("127.0.0.1", 0),
            http_listen=("127.0.0.1", 0),
            upstreams=push,
            name="test-edge",
            limits=self.limits,
        )
        self.edge = Edge(replace(config, **self.edge_options))
        await self.edge.start()
        if self.mode == "pull":
            link = f"ws://127.0.0.1:{self.edge.http_port}/link"
            self._dialer = asyncio.create_task(self.receiver.connect(link))
        await until(lambda: bool(self.edge and self.edge.links and self.receiver.links), 5.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._dialer is not None:
            self._dialer.cancel()
            await asyncio.gather(self._dialer, return_exceptions=True)
        if self.app_proxy is not None:
            self.app_proxy.release()  # a held link would hold up the edge's goodbye
        if self.edge is not None:
            await self.edge.stop()
        if self.app_proxy is not None:
            await self.app_proxy.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _on_stream(self, stream: Stream) -> None:
        self.streams[stream.info.name] = stream
        if "audio" in self._consume:
            chunks = self.chunks.setdefault(stream.info.name, [])
            async for chunk in stream.audio():
                chunks.append((time.monotonic(), chunk))

    def url(self, name: str, ttl: float = 600) -> str:
        """An RTMP URL with a freshly minted key for ``name``."""
        assert self.edge is not None
        key = keys.mint_key(self.secret, name, ttl=ttl, now=time.time())
        return f"rtmp://127.0.0.1:{self.edge.rtmp_port}/live/{key}"

    async def ended(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        """Wait for the app to finish ``name`` (NAME.json written); return the stats."""
        path = self.out_dir / f"{name}.json"
        await until(path.exists, timeout, f"stream {name} to end at the app ({path.name} written)")
        return json.loads(path.read_text())

    def pcm(self, name: str) -> bytes:
        return b"".join(c.data for _, c in self.chunks.get(name, []))


def with_limits(**changes: Any) -> Limits:
    """:data:`TEST_LIMITS` with ``changes``: a test that tunes one limit keeps the test grace."""
    return replace(TEST_LIMITS, **changes)
