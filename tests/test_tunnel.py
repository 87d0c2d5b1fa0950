"""Raw TCP mode: ``--tcp ADDR=NAME`` at the edge, ``--forward NAME=ADDR`` at the app, over the same link."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from relay_edge import flv
from relay_edge.tunnel import parse_tunnels
from tests.support import media, publishers
from tests.support.net import free_port
from tests.support.nginx import NginxRtmp, require_nginx_rtmp
from tests.support.relay import Relay, until

pytestmark = pytest.mark.slow


@pytest.fixture(params=["push", "pull"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


class EchoServer:
    """Echoes every byte back and half-closes after the client does; counts and hashes what it saw."""

    def __init__(self) -> None:
        self.received = 0
        self.digest = hashlib.sha256()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def __aenter__(self) -> EchoServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            self.received += len(data)
            self.digest.update(data)
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
        writer.close()


async def test_bulk_transfer_is_byte_identical_both_ways(mode: str, tmp_path: Path) -> None:
    payload = os.urandom(24 * 1024 * 1024 + 12345)  # not a multiple of any buffer size
    tunnel_port = free_port()
    async with (
        EchoServer() as echo,
        Relay(
            tmp_path,
            mode=mode,
            edge_options={"tcp_tunnels": {"bulk": ("127.0.0.1", tunnel_port)}},
            receiver_options={"forwards": {"bulk": ("127.0.0.1", echo.port)}},
        ),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", tunnel_port)

        async def send() -> None:
            for i in range(0, len(payload), 100_000):
                writer.write(payload[i : i + 100_000])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        back = bytearray()
        while data := await asyncio.wait_for(reader.read(1 << 20), 30):
            back += data
        await sender
        writer.close()
    assert echo.received == len(payload)
    assert echo.digest.digest() == hashlib.sha256(payload).digest()  # edge -> app, byte for byte
    assert bytes(back) == payload  # and back again


async def test_rtmp_session_through_the_tunnel_to_nginx_rtmp(mode: str, tmp_path: Path) -> None:
    """The drop-in for ``ngrok tcp 1935``: the app runs its own RTMP server (nginx-rtmp here)."""
    require_nginx_rtmp()
    tunnel_port = free_port()
    with NginxRtmp(tmp_path / "nginx", record=True) as nginx:
        async with Relay(
            tmp_path / "relay",
            mode=mode,
            edge_options={"tcp_tunnels": {"rtmp": ("127.0.0.1", tunnel_port)}},
            receiver_options={"forwards": {"rtmp": ("127.0.0.1", nginx.port)}},
        ):
            url = f"rtmp://127.0.0.1:{tunnel_port}/live/tunneled"
            async with await publishers.ffmpeg_tone(url, seconds=3, frequency=550) as pub:
                await pub.wait_ok(30)
        tags = await nginx.recorded_tags("tunneled")
    audio = [t for t in tags if t.type == flv.AUDIO]
    assert len(audio) == pytest.approx(3 * 44100 / 1024, abs=5)
    samples, rate = media.decode_aac(audio)
    assert media.dominant_frequency(samples, rate) == pytest.approx(550, abs=1.0)


async def test_a_link_drop_closes_tunneled_connections(tmp_path: Path) -> None:
    """The honest limit: a tunnel carries bytes, not a session, so it can't resume."""
    tunnel_port = free_port()
    async with (
        EchoServer() as echo,
        Relay(
            tmp_path,
            edge_options={"tcp_tunnels": {"bulk": ("127.0.0.1", tunnel_port)}},
            receiver_options={"forwards": {"bulk": ("127.0.0.1", echo.port)}},
        ) as relay,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", tunnel_port)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"hello"
        assert relay.edge is not None
        await relay.edge.links[0].transport.close(1011, "cut")
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, not hanging
        await until(lambda: bool(relay.edge and relay.edge.links), 10, "link did not come back")
        # New connections work again on the new link.
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", tunnel_port)
        writer2.write(b"again")
        assert await asyncio.wait_for(reader2.readexactly(5), 10) == b"again"
        writer.close()
        writer2.close()


def test_tunnel_specs_parse_both_ways() -> None:
    assert parse_tunnels(["0.0.0.0:1935=rtmp", "db=127.0.0.1:5432"]) == {
        "rtmp": ("0.0.0.0", 1935),
        "db": ("127.0.0.1", 5432),
    }
    for bad in ("1935", "rtmp=", "=127.0.0.1:1935", "rtmp=host:port"):
        with pytest.raises(ValueError):
            parse_tunnels([bad])
