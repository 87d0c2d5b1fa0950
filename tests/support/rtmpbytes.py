"""A publisher's bytes without a socket: our ClientSession answered by a ServerSession in memory."""

from __future__ import annotations

from relay_edge.rtmp.client import ClientSession
from relay_edge.rtmp.events import PublishRequested
from relay_edge.rtmp.session import ServerSession

MAX_ROUNDS = 20  # handshake, connect, createStream, publish: a handful of round trips


def publish_setup(client: ClientSession, server: ServerSession | None = None) -> bytes:
    """Every byte ``client`` sends from its handshake to its publish being accepted.

    ``server`` (a fresh one with zero random bytes if None) answers, accepting the publish.
    ``client`` must have been ``initiate()``d; it is publishing when this returns.
    """
    server = server if server is not None else ServerSession(random_bytes=bytes)
    sent = bytearray()
    for _ in range(MAX_ROUNDS):
        data = client.data_to_send()
        sent += data
        for event in server.receive_data(data):
            if isinstance(event, PublishRequested):
                server.accept_publish(event.stream_id)
        client.receive_data(server.data_to_send())
        if client.publishing:
            return bytes(sent + client.data_to_send())
    raise AssertionError(f"not publishing after {MAX_ROUNDS} round trips")
