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
