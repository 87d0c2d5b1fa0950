"""Checks on the URLs a link is dialed to."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from .web import is_loopback


def plaintext_warning(url: str) -> str | None:
    """A warning if ``url`` is ``ws://`` to a host that is not loopback, else None.

    Media and the link's frames would cross the network unencrypted and unauthenticated
    against a man in the middle (the proof only shows the dialer holds the secret).
    """
    parts = urlsplit(url)
    if parts.scheme != "ws" or is_loopback(parts.hostname or ""):
        return None
    return (
        f"link to {parts.hostname!r} uses ws:// (no TLS): streams cross the network in clear; "
        "use wss:// unless a TLS-terminating proxy on this machine carries it"
    )


def warn_if_plaintext(url: str, log: logging.Logger) -> None:
    """Log :func:`plaintext_warning` for ``url``, if any."""
    warning = plaintext_warning(url)
    if warning:
        log.warning("%s", warning)


def parse_hostport(value: str, default_port: int) -> tuple[str, int]:
    """``"0.0.0.0:1935"`` → ``("0.0.0.0", 1935)``; ``"[::1]:80"`` and ``":80"`` work too."""
    host, sep, port = value.rpartition(":")
    if not sep:
        return value or "0.0.0.0", default_port
    return (host.strip("[]") or "0.0.0.0"), int(port)
