"""TLS contexts for RTMPS (publishers to the edge) and wss:// (the edge dialing the app).

Both are built from the standard library's defaults: certificate and host name
verification on, TLS 1.2 as the floor. A private CA is *added* to the system
trust store, never a replacement for verification.
"""

from __future__ import annotations

import ssl


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The context for the RTMPS listener: our certificate chain and its private key.

    Raises ``OSError``/``ssl.SSLError`` naming the file when either can't be
    loaded, so a bad deploy fails at start, not on the first publisher.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The context for dialing ``wss://``: system CAs plus ``ca_file``, verification on."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        ctx.load_verify_locations(ca_file)
    return ctx


class ServerTls:
    """Server-side TLS as bytes in, bytes out (``ssl.MemoryBIO``): the RTMPS layer of one connection.

    The edge counts an RTMPS connection at TCP accept and runs TLS inside it, in the same
    sans-I/O way as RTMP, rather than with ``loop.start_tls``: uvloop starts reading a server
    transport after ``connection_made`` whatever the protocol asked, so a ClientHello could reach
    the protocol before ``start_tls`` took over, and the handshake would then wait forever.
    Errors are :class:`ssl.SSLError` (the peer's: close that one connection).
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.handshake_done = False
        self.closed = False  # the peer sent close_notify

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the socket; return the application bytes they completed (maybe none)."""
        self._incoming.write(data)
        if not self.handshake_done:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.handshake_done = True
        chunks = []
        while True:
            try:
                chunk = self._tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            if not chunk:  # no data is SSLWantReadError: an empty read is the peer's close_notify
                self.closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, data: bytes) -> None:
        """Encrypt application bytes; collect them with :meth:`data_to_send`."""
        self._tls.write(data)

    def data_to_send(self) -> bytes:
        """TLS records due on the socket: handshake messages and encrypted application data."""
        return self._outgoing.read()
