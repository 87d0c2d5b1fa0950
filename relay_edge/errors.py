"""One exception tree for rtmp-relay.

Peer errors (:class:`ProtocolError` and subclasses) mean the other side sent
something we refuse; the I/O layer turns them into a close of that one
connection, with the message as the logged reason. :class:`LocalProtocolError`
means our own code misused an API and is a bug.

Messages carry the numbers: "message of 20971520 bytes exceeds limit of
10485760 bytes", never just "too big".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self


class RelayError(Exception):
    """Root of every exception rtmp-relay raises on purpose."""


class ProtocolError(RelayError):
    """The peer broke a protocol; close that connection with this reason.

    ``events`` holds what the same input completed before the error (e.g. the
    last audio frames before a malformed command): the I/O layer may deliver
    them before it closes.
    """

    def __init__(self, *args: object, events: Iterable[Any] = ()) -> None:
        super().__init__(*args)
        self.events: list[Any] = list(events)

    def with_events(self, events: Iterable[Any]) -> Self:
        """The same error, carrying ``events`` (a parser raises before the session knows them)."""
        return type(self)(*self.args, events=events)


class HandshakeError(ProtocolError):
    """Invalid RTMP handshake bytes."""


class ChunkError(ProtocolError):
    """Invalid RTMP chunk stream."""


class AMFError(ProtocolError):
    """Invalid or too deeply nested AMF0/AMF3 data."""


class MessageError(ProtocolError):
    """A well-formed chunk stream carrying an invalid RTMP message or command."""


class FLVError(ProtocolError):
    """Invalid FLV header or tag."""


class WireError(ProtocolError):
    """Invalid frame on the edge <-> client link."""


class LimitExceeded(ProtocolError):
    """A declared or accumulated size, count or rate passed its configured limit.

    ``what`` names the limit (the :class:`~relay_edge.limits.Limits` field),
    ``value`` is what the peer asked for and ``limit`` the configured bound.
    """

    def __init__(
        self,
        what: str,
        value: int | float,
        limit: int | float,
        unit: str = "bytes",
        *,
        events: Iterable[Any] = (),
    ) -> None:
        self.what = what
        self.value = value
        self.limit = limit
        self.unit = unit
        super().__init__(f"{what}: {value} {unit} exceeds limit of {limit} {unit}", events=events)

    def with_events(self, events: Iterable[Any]) -> Self:
        """The same limit breach, carrying ``events``."""
        return type(self)(self.what, self.value, self.limit, self.unit, events=events)


class AuthError(RelayError):
    """A stream key or link proof did not verify. The message never holds a secret."""


class TransportClosed(RelayError):
    """The WebSocket is gone; ``code`` and ``reason`` say how, when known."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"link closed ({code}: {reason})" if code else "link closed")


class LocalProtocolError(RelayError):
    """Our own code called a protocol object in a state where that is not allowed."""
