"""rtmp-relay's app side: receives the edge's link and decodes the streams.

    from relay_client import Receiver, AudioFormat

    receiver = Receiver(secret, audio_format=AudioFormat(16000, 1, "s16"), on_stream=handle)
    app.router.add_get("/relay", receiver.handler)          # push: the edge dials the app

Each :class:`Stream` offers ``audio()``, ``video()``, ``flv()`` and ``events()``
as async iterators, ``info`` (name, codecs, publisher) and ``wait_ended()``.
"""

from relay_edge.keys import mint_key, verify_key

from .decode import AudioChunk, AudioFormat
from .pcm_stream import MuteEvent, PcmStream
from .receiver import Receiver
from .stream import GapEvent, PublisherReconnected, Stream, StreamInfo, StreamStats

__version__ = "0.1.0"

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
    "verify_key",
]
