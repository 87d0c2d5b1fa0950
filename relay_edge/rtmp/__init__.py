"""RTMP as sans-I/O state machines: no sockets, no asyncio; bytes in, events and bytes out.

One module per wire layer: :mod:`.handshake`, :mod:`.chunk`, :mod:`.amf0`,
:mod:`.messages`; :mod:`.session` is the server (one publisher connection) and
:mod:`.client` a publisher or player, both built from those layers.
"""

from __future__ import annotations

from ..accel import use_compiled

use_compiled(__path__, "rtmp")  # before any of its modules is imported

from .client import ClientSession  # noqa: E402
from .events import (  # noqa: E402
    AcknowledgementReceived,
    ClientEvent,
    Connect,
    Connected,
    Event,
    HandshakeComplete,
    Media,
    PingResponse,
    PlayStarted,
    PublishRejected,
    PublishRequested,
    PublishStarted,
    Status,
    Unpublished,
)
from .session import ServerSession, StreamState  # noqa: E402

__all__ = [
    "AcknowledgementReceived",
    "ClientEvent",
    "ClientSession",
    "Connect",
    "Connected",
    "Event",
    "HandshakeComplete",
    "Media",
    "PingResponse",
    "PlayStarted",
    "PublishRejected",
    "PublishRequested",
    "PublishStarted",
    "ServerSession",
    "Status",
    "StreamState",
    "Unpublished",
]
