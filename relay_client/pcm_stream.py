"""A stream of raw PCM (LiveKit Track Egress over WebSocket) behind the same API as :class:`Stream`.

LiveKit's Track Egress with ``websocket_url`` sends one audio track as binary
WebSocket messages of interleaved S16LE PCM (48 kHz, stereo unless one channel
was selected) and text messages ``{"muted": true|false}``. :class:`PcmStream`
resamples that to the receiver's :class:`AudioFormat` with ``av.AudioResampler``
and offers what an RTMP :class:`~relay_client.stream.Stream` offers: ``info``,
``stats``, ``audio()``, ``events()``, ``wait_ended()``; so the app handles both
paths with one ``async for stream in receiver.streams()`` loop.

Timestamps are milliseconds since the first sample received, counted in samples
(PCM carries no clock of its own).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from .decode import AudioChunk, AudioFormat
from .output import StreamFiles
from .stream import _END, QUEUE_ITEMS, GapEvent, StreamEvents, StreamInfo, StreamStats

log = logging.getLogger("relay_client.pcm_stream")

PCM_CODEC = "pcm_s16le"


@dataclass(frozen=True)
class MuteEvent:
    """The publisher muted or unmuted the track (LiveKit's ``{"muted": ...}`` message)."""

    muted: bool
    timestamp: int  # ms on the stream's timeline where it happened


class PcmStream(StreamEvents):
    """Interleaved S16LE PCM in, :class:`AudioChunk` in the app's format out.

    Feed it with :meth:`feed_pcm` / :meth:`set_muted` and finish with :meth:`end`
    (the WebSocket endpoint does). Everything runs on the event loop: resampling
    20 ms of 48 kHz stereo costs microseconds.
    """

    def __init__(
        self,
        name: str,
        uid: str,
        *,
        audio_format: AudioFormat,
        publisher: dict[str, Any],
        input_rate: int = 48000,
        input_channels: int = 2,
        source: str = "livekit-track-egress",
        out_dir: str | None = None,
        deliver_audio: bool = True,
    ) -> None:
        if input_channels not in (1, 2):
            raise ValueError(f"input_channels must be 1 or 2, got {input_channels}")
        super().__init__()
        self.info = StreamInfo(
            name=name, uid=uid, codecs={"audio": PCM_CODEC}, publisher=dict(publisher), edge=source
        )
        self.stats = StreamStats()
        self.delivered = 0  # messages delivered, the analogue of Stream.delivered
        self.muted = False
        self.input_rate = input_rate
        self.input_channels = input_channels
        self._format = audio_format
        self._layout_in = "stereo" if input_channels == 2 else "mono"
        self._resampler = av.AudioResampler(
            format=audio_format.format, layout=audio_format.layout, rate=audio_format.sample_rate
        )
        self._in_samples = 0
        self._out_samples = 0
        self._torn = b""  # a partial sample frame carried to the next message
        # Without a reader (a receiver that only writes files), nothing is queued.
        self._audio: asyncio.Queue[Any] | None = asyncio.Queue(QUEUE_ITEMS) if deliver_audio else None
        self._files = StreamFiles(out_dir, name, audio_format) if out_dir else None
        self._tail: asyncio.Future[None] | None = None

    # --- the app's side (same as Stream) ---------------------------------------------------

    async def audio(self) -> AsyncIterator[AudioChunk]:
        """Resampled audio in the receiver's :class:`AudioFormat`, until the stream ends."""
        queue = self._audio
        if queue is None:
            raise RuntimeError("this receiver does not produce 'audio': add it to consume=")
        while True:
            item = await queue.get()
            if item is _END:
                queue.put_nowait(_END)  # later iterators end too
                return
            yield item

    async def video(self) -> AsyncIterator[Any]:
        """A PCM stream has no video: ends at once."""
        return
        yield  # pragma: no cover

    @property
    def queued(self) -> int:
        return self._audio.qsize() if self._audio is not None else 0

    # --- the feeding side ----------------------------------------------------------------

    @property
    def position_ms(self) -> int:
        """Milliseconds of input received so far."""
        return self._in_samples * 1000 // self.input_rate

    async def feed_pcm(self, data: bytes) -> None:
        """One binary message: interleaved S16LE at ``input_rate`` × ``input_channels``.

        Waits while the app has :data:`QUEUE_ITEMS` chunks unread (backpressure reaches
        the WebSocket, and through it LiveKit).
        """
        if self.ended:
            return
        frame_bytes = 2 * self.input_channels
        data = self._torn + data
        usable = len(data) - len(data) % frame_bytes
        self._torn = data[usable:]
        self.stats.bytes += len(data) - len(self._torn)
        self.stats.tags += 1
        if usable == 0:
            return
        samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16, copy=False)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=self._layout_in)
        frame.sample_rate = self.input_rate
        frame.pts = self._in_samples
        count = usable // frame_bytes
        if self.stats.first_timestamp is None:
            self.stats.first_timestamp = self.position_ms
        self._in_samples += count
        self.stats.last_timestamp = self.position_ms
        chunks = self._resample(frame)
        if self._audio is not None:
            for chunk in chunks:
                await self._audio.put(chunk)
        self.delivered += 1

    def gap(self, ms: int) -> None:
        """Audio lost for ``ms`` (the egress was restarted): counted and passed on as a :class:`GapEvent`."""
        self.stats.gaps += 1
        self._events.put_nowait(GapEvent(seq=self.stats.tags, tags=0, bytes=0, ms=ms))
        log.warning("stream %s: %d ms of audio lost while its track egress restarted", self.info.name, ms)

    def set_muted(self, muted: bool) -> None:
        """A ``{"muted": ...}`` message: recorded and passed on as a :class:`MuteEvent`."""
        if muted != self.muted:
            self.muted = muted
            log.info("stream %s %s", self.info.name, "muted" if muted else "unmuted")
        self._events.put_nowait(MuteEvent(muted, self.position_ms))

    def end(self, reason: str) -> None:
        """No more input: flush the resampler, end the iterators, write NAME.json if asked."""
        if self.ended:
            return
        tail = [*self._resample(None), _END]
        self.ended = True
        self.end_reason = reason
        queue = self._audio
        while queue is not None and tail and not queue.full():
            queue.put_nowait(tail.pop(0))
        if queue is not None and tail:  # the app is behind: hand the rest over as it reads
            self._tail = asyncio.ensure_future(self._put_all(tail))
        self._events.put_nowait(_END)
        if self._files is not None:
            self._files.close(self.summary())
        self._ended.set()
        log.info("stream %s ended: %s", self.info.name, reason)

    async def _put_all(self, items: list[Any]) -> None:
        assert self._audio is not None
        for item in items:
            await self._audio.put(item)

    def _resample(self, frame: av.AudioFrame | None) -> list[AudioChunk]:
        fmt = self._format
        chunks = []
        for out in self._resampler.resample(frame):
            data = out.to_ndarray().tobytes()
            chunk = AudioChunk(
                timestamp=self._out_samples * 1000 // fmt.sample_rate,
                sample_rate=fmt.sample_rate,
                channels=fmt.channels,
                format=fmt.format,
                data=data,
            )
            self._out_samples += chunk.samples
            chunks.append(chunk)
        self.stats.audio_frames += len(chunks)
        self.stats.audio_samples += sum(c.samples for c in chunks)
        if self._files is not None:
            for chunk in chunks:
                self._files.write_audio(chunk.data)
            self._files.flush()
        return chunks

    def summary(self) -> dict[str, Any]:
        """The NAME.json document, like :meth:`Stream.summary`. Holds no token and no secret."""
        s = self.stats
        return {
            "name": self.info.name,
            "uid": self.info.uid,
            "codecs": self.info.codecs,
            "publisher": self.info.publisher,
            "edge": self.info.edge,
            "messages": s.tags,
            "bytes": s.bytes,
            "input": {"sample_rate": self.input_rate, "channels": self.input_channels},
            "audio_samples": s.audio_samples,
            "audio_format": {
                "sample_rate": self._format.sample_rate,
                "channels": self._format.channels,
                "format": self._format.format,
            },
            "gaps": 0,
            "end_reason": self.end_reason,
            "started": s.started,
            "ended": time.time(),
        }
