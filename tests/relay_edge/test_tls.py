"""relay_edge.tls.ServerTls: TLS as bytes in, bytes out, pumped against a client ``ssl.SSLObject``."""

from __future__ import annotations

import contextlib
import ssl

import pytest

from relay_edge import tls
from tests.test_auth_e2e import Certs, certs  # noqa: F401 - the module-scoped CA fixture


class Client:
    """The publisher's side of RTMPS, sans-I/O too."""

    def __init__(self, ca: Certs) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ca.client_context().wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def handshake(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True


def pump(client: Client, server: tls.ServerTls, piece: int) -> bytes:
    """Client bytes to the server in ``piece``-byte slices; returns what the server decrypted."""
    got = b""
    data = client.outgoing.read()
    for i in range(0, len(data), piece):
        got += server.receive(data[i : i + piece])
    client.incoming.write(server.data_to_send())
    return got


@pytest.mark.parametrize("piece", [1, 7, 65536], ids=["byte-by-byte", "split", "whole"])
def test_handshake_and_rtmp_bytes_both_ways(certs: Certs, piece: int) -> None:  # noqa: F811
    client, server = Client(certs), tls.ServerTls(tls.server_context(str(certs.cert), str(certs.key)))
    for _ in range(4):  # TLS 1.3: ClientHello, then Finished
        if client.handshake() and server.handshake_done:
            break
        assert pump(client, server, piece) == b""
    assert client.handshake() and server.handshake_done
    c0c1 = b"\x03" + bytes(range(256)) * 6
    client.tls.write(c0c1)
    assert pump(client, server, piece) == c0c1
    server.send(b"S0S1S2")
    client.incoming.write(server.data_to_send())
    assert client.tls.read(100) == b"S0S1S2"


def test_plain_rtmp_on_the_tls_port_is_an_ssl_error(certs: Certs) -> None:  # noqa: F811
    server = tls.ServerTls(tls.server_context(str(certs.cert), str(certs.key)))
    with pytest.raises(ssl.SSLError):
        server.receive(b"\x03" + bytes(1536))  # an RTMP C0+C1 where a ClientHello belongs


def test_close_notify_is_seen(certs: Certs) -> None:  # noqa: F811
    client, server = Client(certs), tls.ServerTls(tls.server_context(str(certs.cert), str(certs.key)))
    while not (client.handshake() and server.handshake_done):
        pump(client, server, 65536)
    with contextlib.suppress(ssl.SSLWantReadError):  # our close_notify is out; no wait for theirs
        client.tls.unwrap()
    pump(client, server, 65536)
    assert server.closed
