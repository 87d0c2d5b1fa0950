"""rtmp-relay's app side: receives the edge's link and decodes the streams.

    from relay_client import Receiver, AudioFormat

    receiver = Receiver(secret, audio_format=AudioFormat(16000, 1, "s16"), on_stream=handle)
    app.router.add_get("/relay", receiver.handler)          # push: the edge dials the app

Each :class:`Stream` offers ``audio()``, ``video()``, ``flv()`` and ``events()``
as async iterators, ``info`` (name, codecs, publisher) and ``wait_ended()``;
``audio(track=N)`` reads one track of an Enhanced RTMP multitrack stream (docs/CODECS.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Exported names and the module each lives in. Loaded on first use (PEP 562), so a
# child process that only needs relay_client.publish doesn't import aiohttp, the
# receiver and the decoders first: that cost ~320 ms on every publisher start.
_EXPORTS = {
    "AudioChunk": ".decode",
    "AudioFormat": ".decode",
    "GapEvent": ".stream",
    "MuteEvent": ".pcm_stream",
    "PcmStream": ".pcm_stream",
    "PublisherReconnected": ".stream",
    "Receiver": ".receiver",
    "Stream": ".stream",
    "StreamInfo": ".stream",
    "StreamStats": ".stream",
    "mint_key": "relay_edge.keys",
    "tune_allocator": ".allocator",
    "verify_key": "relay_edge.keys",
}

__all__ = [
    "AudioChunk",
    "AudioFormat",
    "GapEvent",
    "MuteEvent",
    "PcmStream",
    "PublisherReconnected",
    "Receiver",
    "Stream",
    "StreamInfo",
    "StreamStats",
    "mint_key",
    "tune_allocator",
    "verify_key",
]

if TYPE_CHECKING:
    from relay_edge.keys import mint_key, verify_key

    from .allocator import tune_allocator
    from .decode import AudioChunk, AudioFormat
    from .pcm_stream import MuteEvent, PcmStream
    from .receiver import Receiver
    from .stream import GapEvent, PublisherReconnected, Stream, StreamInfo, StreamStats


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'relay_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
