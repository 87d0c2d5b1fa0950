"""Helpers shared by the RTMP tests: splitting input, pumping sessions, building wire bytes."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from relay_edge.rtmp import ClientSession, PublishRequested, ServerSession
from relay_edge.rtmp import messages as m
from relay_edge.rtmp.chunk import ChunkWriter
from relay_edge.rtmp.handshake import PACKET_SIZE

SPLIT_MODES = ("whole", "bytes", "random")


def zero_random(n: int) -> bytes:
    """Deterministic 'random' bytes for handshakes in fixtures."""
    return bytes(n)


def pieces(data: bytes, mode: str, seed: int = 0) -> Iterator[bytes]:
    """``data`` whole, one byte at a time, or in seeded random splits (1..300 bytes)."""
    if mode == "whole":
        yield data
    elif mode == "bytes":
        for i in range(len(data)):
            yield data[i : i + 1]
    else:
        rng = random.Random(seed)
        pos = 0
        while pos < len(data):
            n = rng.randint(1, 300)
            yield data[pos : pos + n]
            pos += n


def feed_all(feed: Callable[[bytes], Iterable[Any]], data: bytes, mode: str, seed: int = 0) -> list[Any]:
    """Feed ``data`` to ``feed`` in ``mode`` pieces and collect every result."""
    out: list[Any] = []
    for piece in pieces(data, mode, seed):
        out.extend(feed(piece))
    return out


# --- wire bytes a client sends ------------------------------------------------------------


def client_handshake() -> bytes:
    """C0 + C1 + C2 of a simple handshake, all zeros."""
    return b"\x03" + bytes(PACKET_SIZE) + bytes(PACKET_SIZE)


class Wire:
    """Builds client -> server chunk bytes with header compression, like a publisher."""

    def __init__(self, chunk_size: int = 128) -> None:
        self.writer = ChunkWriter(chunk_size)

    def msg(self, csid: int, msg_type: int, stream_id: int, timestamp: int, body: bytes) -> bytes:
        return self.writer.write(csid, msg_type, stream_id, timestamp, body)

    def command(self, name: str, txn: float, obj: Any = None, *args: Any, stream_id: int = 0) -> bytes:
        csid = m.CSID_STREAM_COMMAND if stream_id else m.CSID_COMMAND
        return self.msg(csid, m.COMMAND_AMF0, stream_id, 0, m.encode_command(name, txn, obj, *args))

    def connect(self, app: str = "live") -> bytes:
        return self.command("connect", 1.0, {"app": app, "tcUrl": f"rtmp://host/{app}", "flashVer": "test"})

    def publish_flow(self, name: str = "key") -> bytes:
        """connect, createStream, publish on stream 1."""
        return (
            self.connect()
            + self.command("createStream", 2.0, None)
            + self.command("publish", 0.0, None, name, "live", stream_id=1)
        )


def pump(
    client: ClientSession, server: ServerSession, accept: bool = True, rounds: int = 20
) -> tuple[list, list]:
    """Move bytes both ways until quiet; accept every publish. Returns (server events, client events)."""
    server_events: list[Any] = []
    client_events: list[Any] = []
    for _ in range(rounds):
        moved = False
        data = client.data_to_send()
        if data:
            moved = True
            for event in server.receive_data(data):
                server_events.append(event)
                if accept and isinstance(event, PublishRequested):
                    server.accept_publish(event.stream_id)
        data = server.data_to_send()
        if data:
            moved = True
            client_events.extend(client.receive_data(data))
        if not moved:
            break
    return server_events, client_events


def connected_pair(
    server: ServerSession | None = None, chunk_size: int = 4096, **client_kwargs: Any
) -> tuple[ClientSession, ServerSession, list, list]:
    """A client and server pumped through handshake, connect and an accepted publish."""
    server = server or ServerSession()
    client = ClientSession("live", "key", "rtmp://host/live", chunk_size, **client_kwargs)
    client.initiate()
    server_events, client_events = pump(client, server)
    return client, server, server_events, client_events
