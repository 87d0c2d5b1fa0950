"""What :class:`~relay_edge.rtmp.session.ServerSession` and
:class:`~relay_edge.rtmp.client.ClientSession` report: plain frozen dataclasses, and
:class:`Media` (one per tag) a NamedTuple with the same attribute names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# --- server side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """C2 arrived; ``digest`` tells whether the client used the digest (Flash 9+) handshake."""

    digest: bool = False


@dataclass(frozen=True, slots=True)
class Connect:
    """The peer's ``connect``; already answered with NetConnection.Connect.Success."""

    app: str
    tc_url: str
    flash_ver: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishRequested:
    """A ``publish``: answer with ``accept_publish`` or ``reject_publish``.

    ``name`` is exactly as sent, query string included (``"key?token=..."``).
    """

    stream_id: int
    name: str
    app: str
    publish_type: str = "live"


class Media(NamedTuple):
    """One audio, video or script message of a published (or, for a playing
    :class:`~relay_edge.rtmp.client.ClientSession`, played) stream: an FLV tag body, byte for byte.

    ``type`` is ``flv.AUDIO``/``VIDEO``/``SCRIPT``; ``timestamp`` is 32-bit ms.
    Script data has any leading ``@setDataFrame`` removed, so metadata starts
    with ``"onMetaData"`` as in an FLV file.

    A NamedTuple, not a frozen dataclass like the other events: one is made per tag, and
    a frozen dataclass's ``__init__`` (``object.__setattr__`` per field) costs 0.3 µs more.
    """

    stream_id: int
    type: int
    timestamp: int
    data: bytes

    def __repr__(self) -> str:  # never dump media bytes into logs
        return (
            f"Media(stream_id={self.stream_id}, type={self.type}, "
            f"timestamp={self.timestamp}, len={len(self.data)})"
        )


@dataclass(frozen=True, slots=True)
class Unpublished:
    """The publisher ended a stream: ``reason`` is "FCUnpublish", "deleteStream" or "closeStream"."""

    stream_id: int
    reason: str


# A Media's fields as call arguments (stream_id, type, timestamp, data): how the edge's pump
# takes tags straight from ServerSession.receive_data, one call per tag and no object.
TagSink = Callable[[int, int, int, bytes], None]

Event = HandshakeComplete | Connect | PublishRequested | Media | Unpublished


# --- client side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The server accepted ``connect``; ``information`` is its info object."""

    properties: dict[str, Any] = field(default_factory=dict)
    information: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishStarted:
    """NetStream.Publish.Start arrived: :meth:`ClientSession.send_media` may be used."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PlayStarted:
    """NetStream.Play.Start arrived on a playing session's stream: :class:`Media` events follow."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PublishRejected:
    """The server refused ``connect``, ``createStream`` or ``publish`` (``play``, for a player).

    Any onStatus at level "error" gives one, e.g. NetStream.Play.StreamNotFound.
    """

    code: str
    description: str


@dataclass(frozen=True, slots=True)
class Status:
    """Any ``onStatus`` (also reported for the ones that start or reject a publish)."""

    stream_id: int
    level: str
    code: str
    description: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AcknowledgementReceived:
    """The server acknowledged ``sequence`` bytes (mod 2**32)."""

    sequence: int


@dataclass(frozen=True, slots=True)
class PingResponse:
    """The server answered our ping request carrying ``timestamp``."""

    timestamp: int


ClientEvent = (
    Connected
    | PublishStarted
    | PlayStarted
    | Media
    | PublishRejected
    | Status
    | AcknowledgementReceived
    | PingResponse
)
