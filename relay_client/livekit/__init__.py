"""LiveKit helpers: from a room to transcribable audio in the app.

- :class:`EgressManager` starts an audio-only Room Composite Egress toward the
  edge (``rtmp://RTMP_HOST:RTMP_PORT/live/<signed key>``), or, with no edge
  configured, one Track Egress per audio track back to the app's
  :class:`TrackAudioEndpoint` (WebSocket PCM). Either way the app gets streams
  from the same ``Receiver.streams()`` / ``on_stream``.
- :class:`WebhookHandler` verifies LiveKit's signed webhooks and ties egress
  events to the streams.

See docs/LIVEKIT.md.
"""

from .egress import (
    ConfigError,
    EgressManager,
    EgressSession,
    LiveKitConfig,
    RoomNotFound,
    safe_url,
    stream_name,
)
from .track_ws import TrackAudioEndpoint, track_token
from .webhook import WebhookHandler

__all__ = [
    "ConfigError",
    "EgressManager",
    "EgressSession",
    "LiveKitConfig",
    "RoomNotFound",
    "TrackAudioEndpoint",
    "WebhookHandler",
    "safe_url",
    "stream_name",
    "track_token",
]
