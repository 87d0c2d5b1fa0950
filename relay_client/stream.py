"""One received stream, as the app sees it: info, async iterators, and end of stream.

Tags arrive from the link core (:mod:`relay_client.appcore`) in sequence, each
once: it drops what a resumed link replays. A pipeline task takes them in batches,
writes the files, decodes in a worker thread, hands results to the app's
bounded queues, and only then acks: an ack means *delivered*. A slow app
therefore slows only its own stream, through the edge's credit window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from relay_edge import flv, tagbody, wire

from .channel import Channel
from .decode import AudioChunk, AudioDecoder, AudioFormat, VideoDecoder
from .output import StreamFiles, merge_stats
from .republish import LocalPublish

log = logging.getLogger("relay_client.stream")

_END = object()
# Items the app may leave unread per iterator before the stream waits for it.
QUEUE_ITEMS = 256
# Multitrack audio tags kept for tracks the app has not asked for yet (~5 s of AAC or Opus at
# 40-50 tags/s, a few hundred KB at most): a track asked for in on_stream, while the first
# batches are already being decoded, still starts at the beginning.
TRACK_BACKLOG_TAGS = 256
# Up to this many tags of audio are decoded on the event loop (~30 µs each, so under 1 ms);
# bigger batches (a replay after a resume) go to a worker thread.
INLINE_TAGS = 16


@dataclass(frozen=True)
class StreamInfo:
    """What is known about a stream when it opens."""

    name: str
    uid: str
    codecs: dict[str, str]
    publisher: dict[str, Any]
    edge: str
    resumed: bool = False
    resumed_from: int = 0


@dataclass(frozen=True)
class GapEvent:
    """Tags the edge had to drop before ``seq``: never silent."""

    seq: int
    tags: int
    bytes: int
    ms: int


# What the link (and the app's iterators) put in a stream's inbox for its pipeline.
@dataclass(frozen=True, slots=True)
class _Tags:
    seq: int
    tags: tuple[bytes, ...]
    publisher: dict[str, Any] | None  # set where a new publisher starts, at ``seq``


@dataclass(frozen=True, slots=True)
class _Init:
    tags: list[bytes]  # the init tags the edge replays on every Open


@dataclass(frozen=True, slots=True)
class _Track:
    track: int  # an audio track the app asked for: start its decoder between two batches


@dataclass(frozen=True, slots=True)
class _End:
    reason: str


_InboxItem = _Tags | _Init | _Track | _End | GapEvent


@dataclass(frozen=True)
class PublisherReconnected:
    """A new publisher took the stream over with the same key; its first tag is ``seq``.

    The stream goes on (same files, same iterators); its tags start with its own
    metadata and sequence headers, so decoding follows a codec configuration change.
    """

    seq: int
    publisher: dict[str, Any]


@dataclass
class StreamStats:
    tags: int = 0
    bytes: int = 0
    audio_tags: int = 0
    video_tags: int = 0
    gaps: int = 0
    gap_tags: int = 0
    gap_bytes: int = 0
    gap_ms: int = 0
    first_timestamp: int | None = None
    last_timestamp: int | None = None
    audio_frames: int = 0
    audio_samples: int = 0
    video_frames: int = 0
    decode_errors: int = 0
    links: int = 0
    resumes: int = 0
    publisher_reconnects: int = 0  # links this stream continued on, in this process or after a restart
    # RMS level of the last decoded chunk, floored at -120 dBFS; None before any audio.
    audio_level_dbfs: float | None = None
    started: float = field(default_factory=time.time)


def audio_level_dbfs(chunk: AudioChunk) -> float:
    """RMS level of one decoded chunk in dBFS, rounded, floored at -120 (JSON has no -inf)."""
    from .tone import rms_dbfs

    return round(max(-120.0, rms_dbfs(chunk.data, chunk.channels, chunk.format)), 1)


class StreamEvents:
    """What every stream kind shares: its events and its end (RTMP via the edge, or PCM)."""

    def __init__(self) -> None:
        self.ended = False
        self.end_reason = ""
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._ended = asyncio.Event()

    async def events(self) -> AsyncIterator[Any]:
        """Stream events (:class:`GapEvent`, :class:`PublisherReconnected`, ...) until the end."""
        while True:
            item = await self._events.get()
            if item is _END:
                return
            yield item

    async def wait_ended(self) -> str:
        """Wait for the end of the stream; returns the reason."""
        await self._ended.wait()
        return self.end_reason


class Stream(StreamEvents):
    """A live stream from the edge. Iterate :meth:`audio`, :meth:`video` or :meth:`flv`."""

    def __init__(
        self,
        open_frame: wire.Open,
        *,
        audio_format: AudioFormat,
        consume: frozenset[str],
        out_dir: str | None,
        ack: Callable[[Stream, int], None],
        republish: LocalPublish | None = None,
    ) -> None:
        super().__init__()
        self.republish = republish  # the app's own RTMP server gets every tag before it is acked
        self.info = StreamInfo(
            name=open_frame.name,
            uid=open_frame.uid,
            codecs=dict(open_frame.codecs),
            publisher=dict(open_frame.publisher),
            edge=open_frame.edge,
            resumed=open_frame.resumed,
            resumed_from=open_frame.seq,
        )
        self.header = open_frame.header
        self.stats = StreamStats()
        # The last decoded chunk: its level is computed when it is read (refresh_level), not on
        # every batch of every stream (an RMS in numpy, 23 µs: see bench/README.md).
        self._level_chunk: AudioChunk | None = None
        self._level_of: AudioChunk | None = None  # the chunk stats.audio_level_dbfs was computed from
        self.delivered = open_frame.seq - 1  # highest sequence handed to the app
        self._format = audio_format
        self._ack = ack
        self._inbox: Channel[_InboxItem] = Channel()
        self._queues = {kind: Channel[Any](QUEUE_ITEMS) for kind in consume}
        self._want_audio = "audio" in consume or out_dir is not None
        self._audio = AudioDecoder(audio_format) if self._want_audio else None
        self._video = VideoDecoder() if "video" in consume else None
        # Enhanced RTMP multitrack: decoders of the other audio tracks the app asked for, and the
        # latest SequenceStart of each such track (to start a decoder asked for later).
        self._tracks: dict[int, AudioDecoder] = {}
        self._new_tracks: list[int] = []
        self._track_configs: dict[int, bytes] = {}  # track -> its latest SequenceStart tag (<= 255)
        self._track_backlog: deque[bytes] = deque(maxlen=TRACK_BACKLOG_TAGS)
        self._late_feeds: set[asyncio.Future[None]] = set()
        self._files = StreamFiles(out_dir, open_frame.name, audio_format) if out_dir else None
        self._files_open = False
        # Video decoding and file I/O block: they run in a worker thread. Counting doesn't, nor does
        # decoding a few audio frames.
        self._blocking = self._video is not None or self._files is not None
        # Totals of earlier streams (or processes) in the same files, for NAME.json.
        self._base: dict[str, Any] = {}
        self._restored = False
        if self._files is not None:
            self._restore(self._files, open_frame)
        self._working = False  # a batch is between the inbox and its ack
        self._task: asyncio.Task[None] | None = None
        if open_frame.init:
            self._inbox.put_nowait(_Init(list(open_frame.init)))

    def _restore(self, files: StreamFiles, open_frame: wire.Open) -> None:
        """Continue from an earlier process's checkpoint of this very stream, if there is one."""
        state = files.restore(open_frame.uid)
        if state is None:
            self._base = files.previous()
            return
        self._base = state.get("base", {})
        self._restored = True
        known = StreamStats.__dataclass_fields__
        self.stats = StreamStats(**{k: v for k, v in state.get("stats", {}).items() if k in known})
        self.stats.resumes += 1
        # The files hold up to the checkpoint: skip that much of the replay (its acks were
        # lost with the old process, so the edge resends from its last ack).
        self.delivered = max(self.delivered, int(state.get("seq", 0)))
        log.info(
            "stream %s: files hold up to seq %d; continuing after a restart", open_frame.name, self.delivered
        )

    def refresh_level(self) -> StreamStats:
        """Bring ``stats.audio_level_dbfs`` up to the last decoded chunk (read it after); returns stats."""
        chunk = self._level_chunk  # read once: the worker thread may set a newer one meanwhile
        if chunk is not None and chunk is not self._level_of:
            self.stats.audio_level_dbfs = audio_level_dbfs(chunk)
            self._level_of = chunk
        return self.stats

    def start(self, after: StreamEvents | None = None) -> None:
        """Run the pipeline; ``after`` (an earlier stream of the same name, still finishing) goes first."""
        self._task = asyncio.create_task(self._pipeline(after), name=f"stream {self.info.name}")

    # --- the app's side -------------------------------------------------------------------

    async def audio(self, track: int = 0) -> AsyncIterator[AudioChunk]:
        """Decoded audio in the receiver's :class:`AudioFormat`, until the stream ends.

        ``track`` picks one track of an Enhanced RTMP multitrack stream (0, the default,
        is also the only track of every other stream). A track other than 0 starts with
        its latest SequenceStart and the last :data:`TRACK_BACKLOG_TAGS` multitrack tags
        before this call: from the beginning when asked for in ``on_stream``.
        """
        kind = "audio" if track == 0 else f"audio.{track}"
        if track and kind not in self._queues:
            if "audio" not in self._queues:
                raise RuntimeError("this receiver does not produce 'audio': add it to consume=")
            if not 0 < track < 256:  # a UI8 in the spec
                raise ValueError(f"audio track must be 0..255, got {track}")
            self._queues[kind] = Channel(QUEUE_ITEMS)
            if self.ended:
                self._late_track(track, self._queues[kind])
            else:  # through the inbox: the pipeline starts the decoder between two batches
                self._inbox.put_nowait(_Track(track))
        async for item in self._drain(kind):
            yield item

    async def video(self) -> AsyncIterator[Any]:
        """Decoded ``av.VideoFrame`` objects (receiver created with ``consume={"video"}``)."""
        async for item in self._drain("video"):
            yield item

    async def flv(self) -> AsyncIterator[bytes]:
        """The raw FLV: file header first, then each tag with its PreviousTagSize."""
        async for item in self._drain("flv"):
            yield item

    async def _drain(self, kind: str) -> AsyncIterator[Any]:
        queue = self._queues.get(kind)
        if queue is None:
            raise RuntimeError(f"this receiver does not produce {kind!r}: add it to consume=")
        while True:
            # No coroutine per item: only an empty queue is waited for (once per batch).
            item = await queue.get() if queue.empty() else queue.get_nowait()
            if item is _END:
                queue.put_nowait(_END)  # later iterators end too
                return
            yield item

    # --- the link's side ------------------------------------------------------------------

    def feed(self, seq: int, tags: tuple[bytes, ...], publisher: dict[str, Any] | None = None) -> None:
        """Tags ``seq``, ``seq + 1``, ...; ``publisher`` is set when a new publisher starts at ``seq``."""
        self._inbox.put_nowait(_Tags(seq, tags, publisher))

    def feed_gap(self, gap: GapEvent) -> None:
        self._inbox.put_nowait(gap)

    def reopen(self, open_frame: wire.Open) -> None:
        """The same stream on a new link (this process kept its state)."""
        self.stats.links += 1
        self.stats.resumes += 1

    def end(self, reason: str) -> None:
        if self.republish is not None:
            self.republish.stop_retrying()  # no more waiting for a local server that is down
        self._inbox.put_nowait(_End(reason))

    @property
    def queued(self) -> int:
        return self._inbox.qsize()

    @property
    def busy(self) -> bool:
        """Tags received and not yet handed over (and acked): what a graceful stop waits for."""
        return not self.ended and (self._working or not self._inbox.empty())

    # --- the pipeline ---------------------------------------------------------------------

    async def _pipeline(self, after: StreamEvents | None) -> None:
        loop = asyncio.get_running_loop()
        if after is not None:
            # Its tail goes into the same files first; then the totals it leaves are ours to add to.
            await after.wait_ended()
            if self._files is not None and not self._restored:
                self._base = self._files.previous()
        flv_q = self._queues.get("flv")
        if flv_q is not None:
            await flv_q.put(self.header)
        try:
            while True:
                self._working = False
                batch = [await self._inbox.get()]
                self._working = True
                while not self._inbox.empty():
                    batch.append(self._inbox.get_nowait())
                init, tags, last_seq, end, cuts = self._select(batch)
                if init or tags or end is not None or last_seq > self.delivered:
                    if self.republish is not None and (init or tags):
                        # Before files and the ack: the edge keeps what the local server did not take.
                        await self.republish.write(init + tags)
                    args = (init, tags, end is not None, last_seq, cuts)
                    if self._blocking or len(tags) > INLINE_TAGS:
                        chunks, frames, extra = await loop.run_in_executor(None, self._process, *args)
                    else:  # counting, or a few audio frames: a thread hop costs more than the work
                        chunks, frames, extra = self._process(*args)
                    await self._deliver(tags, chunks, frames, extra)
                if last_seq > self.delivered:
                    self.delivered = last_seq
                    self._ack(self, last_seq)
                if end is not None:
                    self._finish(end)
                    return
        except Exception:
            log.exception("stream %s: pipeline failed", self.info.name)
            self._finish("client error")
            raise

    def _select(self, batch: list[_InboxItem]) -> tuple[list[bytes], list[bytes], int, str | None, list[int]]:
        """Replayed init tags and the tags of a batch (each once: the link core dropped replays).

        The last item lists where in the new tags a new publisher starts: the decoders
        are flushed there, so the old publisher's last frames come out before the new ones.
        """
        init: list[bytes] = []
        tags: list[bytes] = []
        cuts: list[int] = []
        last = self.delivered
        end = None
        for item in batch:
            if isinstance(item, _Tags):
                seq = item.seq
                if item.publisher is not None:
                    self._note_publisher(seq, item.publisher)
                    cuts.append(len(tags))
                tags.extend(item.tags)
                last = max(last, seq + len(item.tags) - 1)
            elif isinstance(item, _Init):
                init = item.tags
            elif isinstance(item, GapEvent):
                self._note_gap(item)
                last = max(last, item.seq - 1)
            elif isinstance(item, _End):
                end = item.reason
            elif item.track not in self._tracks:
                self._tracks[item.track] = AudioDecoder(self._format, track=item.track)
                self._new_tracks.append(item.track)
        return init, tags, last, end, cuts

    def _note_publisher(self, seq: int, publisher: dict[str, Any]) -> None:
        self.stats.publisher_reconnects += 1
        self.info = replace(self.info, publisher=dict(publisher))
        log.info(
            "stream %s: publisher reconnected from %s at seq %d", self.info.name, publisher.get("addr"), seq
        )
        self._events.put_nowait(PublisherReconnected(seq, dict(publisher)))

    def _note_gap(self, gap: GapEvent) -> None:
        self.stats.gaps += 1
        self.stats.gap_tags += gap.tags
        self.stats.gap_bytes += gap.bytes
        self.stats.gap_ms += gap.ms
        if self.republish is not None:
            self.republish.note_gap(gap.ms)
        log.warning(
            "stream %s: gap of %d tags (%d ms) before seq %d", self.info.name, gap.tags, gap.ms, gap.seq
        )
        self._events.put_nowait(gap)

    def _process(
        self, init: list[bytes], tags: list[bytes], ending: bool, last_seq: int, cuts: list[int]
    ) -> tuple[list[AudioChunk], list[Any], dict[int, list[AudioChunk]]]:
        """Worker thread: files and decoding for one batch.

        ``init`` (metadata and codec configuration replayed on a resume) primes
        the decoders only: the files already hold them from before. At each index in
        ``cuts`` (a new publisher) and at the end of the stream the decoders are flushed.
        Returns track 0's audio, the video frames, and the audio of other tracks.
        """
        chunks: list[AudioChunk] = []
        frames: list[Any] = []
        extra: dict[int, list[AudioChunk]] = {n: [] for n in self._tracks}
        self._start_tracks(extra)
        for encoded in init:
            tag = flv.decode_tag(encoded)
            if tag.type == flv.AUDIO and self._audio is not None:
                chunks.extend(self._audio.decode(tag))
                if flv.is_multitrack(flv.AUDIO, tag.data):
                    self._note_track_tag(tag, extra, backlog=False)
            elif tag.type == flv.VIDEO and self._video is not None:
                frames.extend(self._video.decode(tag))
        stats = self.stats
        for index, encoded in enumerate(tags):
            if cuts and index in cuts:
                self._flush_decoders(chunks, frames, extra)
            # The header is enough for the stats; a Tag (a copy of the body) only for a decoder.
            tag_type, _, timestamp = flv.parse_tag_header(encoded)
            stats.tags += 1
            stats.bytes += len(encoded)
            if stats.first_timestamp is None:
                stats.first_timestamp = timestamp
            stats.last_timestamp = timestamp
            if tag_type == flv.AUDIO:
                stats.audio_tags += 1
                if self._audio is not None:
                    tag = flv.decode_tag(encoded)
                    chunks.extend(self._audio.decode(tag))
                    if flv.is_multitrack(flv.AUDIO, tag.data):
                        self._note_track_tag(tag, extra)
            elif tag_type == flv.VIDEO:
                stats.video_tags += 1
                if self._video is not None:
                    frames.extend(self._video.decode(flv.decode_tag(encoded)))
        if ending:  # every frame published comes out: decoders hold some back (reordering, priming)
            self._flush_decoders(chunks, frames, extra)
        if self._files is not None:
            if not self._files_open:
                self._files.open_flv(self.header, init)
                self._files_open = True
            self._files.write_tags(tags)
            for chunk in chunks:
                self._files.write_audio(chunk.data)
            self._files.flush()
            # Before the ack that follows: the files' state must never lag what the edge frees.
            self._files.checkpoint(
                {
                    "uid": self.info.uid,
                    "seq": max(last_seq, self.delivered),
                    "stats": asdict(self.refresh_level()),  # the level as of the batch before, as ever
                    "base": self._base,
                }
            )
        stats.audio_frames += len(chunks)
        stats.audio_samples += sum(c.samples for c in chunks)
        if chunks:
            self._level_chunk = chunks[-1]
        stats.video_frames += len(frames)
        return chunks, frames, extra

    def _start_tracks(self, extra: dict[int, list[AudioChunk]]) -> None:
        """Start the decoders the app just asked for: the track's configuration, then its backlog."""
        while self._new_tracks:
            n = self._new_tracks.pop()
            decoder = self._tracks[n]
            for encoded in (*self._track_configs.values(), *self._track_backlog):
                extra[n].extend(decoder.decode(flv.decode_tag(encoded)))

    def _late_track(self, track: int, queue: Channel[Any]) -> None:
        """A track asked for once the pipeline is done: what the backlog holds of it, then the end.

        Decoded here, on the loop: at most TRACK_BACKLOG_TAGS tags (a few ms), and only for a
        short stream whose every tag was handled before the app asked.
        """
        decoder = AudioDecoder(self._format, track=track)
        chunks: list[Any] = []
        for encoded in (*self._track_configs.values(), *self._track_backlog):
            chunks += decoder.decode(flv.decode_tag(encoded))
        chunks += [*decoder.flush(), _END]

        async def feed() -> None:
            for item in chunks:
                await queue.put(item)

        task = asyncio.ensure_future(feed())
        self._late_feeds.add(task)  # a reference until it is done, so it is not collected
        task.add_done_callback(self._late_feeds.discard)

    def _note_track_tag(self, tag: flv.Tag, extra: dict[int, list[AudioChunk]], backlog: bool = True) -> None:
        """A multitrack audio tag: keep it if it configures a track, decode it for the tracks asked for.

        Replayed init tags (``backlog=False``) only configure: they are not media to play again.
        """
        if flv.sequence_key(flv.AUDIO, tag.data) is not None:  # it parses (fuzz_flv checks that)
            encoded = tag.encode()
            for packet in tagbody.parse_audio(tag.data):
                if packet.track and packet.kind == tagbody.CONFIG:
                    self._track_configs[packet.track] = encoded
        for n, decoder in self._tracks.items():
            extra[n].extend(decoder.decode(tag))
        if backlog:
            self._track_backlog.append(tag.encode())

    def _flush_decoders(
        self, chunks: list[AudioChunk], frames: list[Any], extra: dict[int, list[AudioChunk]]
    ) -> None:
        if self._audio is not None:
            chunks.extend(self._audio.flush())
        if self._video is not None:
            frames.extend(self._video.flush())
        for n, decoder in self._tracks.items():
            extra[n].extend(decoder.flush())

    async def _deliver(
        self,
        tags: list[bytes],
        chunks: list[AudioChunk],
        frames: list[Any],
        extra: dict[int, list[AudioChunk]],
    ) -> None:
        queues = self._queues
        if "audio" in queues:
            await queues["audio"].put_all(chunks)
        for track, track_chunks in extra.items():
            await queues[f"audio.{track}"].put_all(track_chunks)
        if "video" in queues:
            await queues["video"].put_all(frames)
        if "flv" in queues:
            await queues["flv"].put_all(tag + flv.previous_tag_size(tag) for tag in tags)

    def _finish(self, reason: str) -> None:
        self.ended = True
        self.end_reason = reason
        decoders = [self._audio, self._video, *self._tracks.values()]
        self.stats.decode_errors += sum(d.errors for d in decoders if d is not None)
        if self._files is not None:
            self._files.close(self.summary())
        for kind, queue in self._queues.items():
            track = int(kind[6:]) if kind.startswith("audio.") else 0
            if track and track not in self._tracks:  # asked for while the last batch was decoded
                self._late_track(track, queue)
            else:
                queue.put_nowait(_END) if not queue.full() else asyncio.ensure_future(queue.put(_END))
        self._events.put_nowait(_END)
        self._ended.set()
        log.info("stream %s ended: %s", self.info.name, reason)

    def summary(self) -> dict[str, Any]:
        """The NAME.json document: stats at stream end. Holds no key and no secret.

        Counters add up every stream appended to the same files (earlier streams of
        this name, and this stream before a restart), so they describe the files.
        """
        s = self.refresh_level()
        return merge_stats(
            self._base,
            {
                "name": self.info.name,
                "uid": self.info.uid,
                "codecs": self.info.codecs,
                "publisher": self.info.publisher,
                "edge": self.info.edge,
                "tags": s.tags,
                "bytes": s.bytes,
                "audio_tags": s.audio_tags,
                "video_tags": s.video_tags,
                "gaps": s.gaps,
                "gap_tags": s.gap_tags,
                "gap_bytes": s.gap_bytes,
                "gap_ms": s.gap_ms,
                "resumes": s.resumes,
                "publisher_reconnects": s.publisher_reconnects,
                "streams": 1,
                "first_timestamp": s.first_timestamp,
                "last_timestamp": s.last_timestamp,
                "audio_samples": s.audio_samples,
                "audio_format": {
                    "sample_rate": self._format.sample_rate,
                    "channels": self._format.channels,
                    "format": self._format.format,
                },
                "decode_errors": s.decode_errors,
                "end_reason": self.end_reason,
                "started": s.started,
                "ended": time.time(),
            },
        )
