"""A FastAPI app under uvicorn receives and decodes a stream end to end (real server, real WebSocket)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import fastapi
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from relay_client import Receiver, Stream
from relay_client.asgi import RelayEndpoint
from relay_client.tone import dominant_frequency
from relay_edge import keys
from relay_edge.auth import PROOF_HEADER, make_proof
from relay_edge.edge import Edge, EdgeConfig
from tests.support import publishers
from tests.support.net import free_port
from tests.support.relay import SECRET, until


class UvicornApp:
    """A FastAPI app with the relay endpoint mounted at /relay, served by uvicorn on loopback."""

    def __init__(self, receiver: Receiver) -> None:
        app = fastapi.FastAPI()
        app.mount("/relay", RelayEndpoint(receiver))

        @app.get("/hello")
        def hello() -> dict[str, str]:  # the app's own routes keep working beside the mount
            return {"hello": "world"}

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> UvicornApp:
        self.task = asyncio.create_task(self.server.serve())
        await until(lambda: self.server.started, 10.0, "uvicorn did not start")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


async def test_fastapi_app_under_uvicorn_receives_and_decodes(tmp_path: Path) -> None:
    pcm: list[bytes] = []

    async def on_stream(stream: Stream) -> None:
        async for chunk in stream.audio():
            pcm.append(chunk.data)

    receiver = Receiver(SECRET, on_stream=on_stream, out_dir=str(tmp_path))
    async with UvicornApp(receiver) as app:
        edge = Edge(EdgeConfig(secret=SECRET, rtmp_listen=("127.0.0.1", 0), http_listen=None,
                               upstreams=(f"ws://127.0.0.1:{app.port}/relay/",)))  # fmt: skip
        await edge.start()
        try:
            await until(lambda: bool(receiver.links), 5.0, "no link from the edge")
            key = keys.mint_key(SECRET, "asgi", now=time.time())
            url = f"rtmp://127.0.0.1:{edge.rtmp_port}/live/{key}"
            async with await publishers.ffmpeg_tone(url, seconds=3, frequency=660) as pub:
                await pub.wait_ok(30)
            await until((tmp_path / "asgi.json").exists, 15.0, "stream did not end at the app")
        finally:
            await edge.stop()
    audio = b"".join(pcm)
    assert len(audio) / 2 / 16000 == pytest.approx(3.0, abs=0.1)
    assert dominant_frequency(audio, 16000, 1) == pytest.approx(660, abs=1.0)
    assert (tmp_path / "asgi.wav").read_bytes()[44:] == audio


async def test_asgi_endpoint_refuses_a_wrong_secret_before_upgrading() -> None:
    receiver = Receiver(SECRET)
    async with UvicornApp(receiver) as app:
        bad = make_proof("not-the-secret", "edge", time.time())
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{app.port}/relay/", additional_headers={PROOF_HEADER: bad}):
                pass
        assert info.value.response.status_code == 401
        assert b"bad signature" in info.value.response.body
        assert not receiver.links
