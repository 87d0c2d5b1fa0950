"""One published stream on the edge: its buffer, codecs, timeline and lifecycle. Sans-I/O.

:class:`EdgeStream` lives across publisher reconnects and link changes. The edge
core (``edgecore.EdgeCore``) drives it along :data:`TRANSITIONS` and knows its
publisher and its link only by id, so nothing here refers to a socket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

from . import flv, wire
from .errors import LocalProtocolError
from .limits import Limits
from .outbox import Budget, Outbox


@dataclass(frozen=True, slots=True)
class Publisher:
    """Who publishes a stream: the app sees it as ``Open.publisher`` and on a takeover's Data."""

    addr: str
    app: str
    flash_ver: str

    def to_wire(self) -> dict[str, Any]:
        return {"addr": self.addr, "app": self.app, "flash_ver": self.flash_ver}


# --- lifecycle -------------------------------------------------------------------------
#
# One explicit table, as h11's ``_state.py``: (state, event) -> next state. Anything
# missing is a bug in the caller and raises LocalProtocolError naming all three.

LIVE: Final = "live"  # a publisher is sending
ORPHANED: Final = "orphaned"  # its publisher is gone; a takeover within reconnect_grace continues it
FINISHING: Final = "finishing"  # ended; the tail still waits for the app's ack (or buffer_seconds)
GONE: Final = "gone"  # forgotten: its buffer is freed and no link knows it

TAKEOVER: Final = "takeover"  # a publisher with the same key (a reconnect, or a second replacing the first)
PUBLISHER_LOST: Final = "publisher_lost"  # the publisher's connection closed without unpublishing
END: Final = "end"  # unpublished, reconnect grace over, refused by the app, or the edge draining
FINISH: Final = "finish"  # the tail is acked (or expired, or refused): let it go

TRANSITIONS: dict[tuple[str, str], str] = {
    (LIVE, TAKEOVER): LIVE,
    (LIVE, PUBLISHER_LOST): ORPHANED,
    (LIVE, END): FINISHING,
    (ORPHANED, TAKEOVER): LIVE,
    (ORPHANED, END): FINISHING,
    (FINISHING, FINISH): GONE,
}


def next_state(state: str, event: str) -> str:
    """The state after ``event``; a LocalProtocolError if the table has no such transition."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise LocalProtocolError(f"stream event {event!r} has no transition from state {state!r}") from None


class EdgeStream:
    """One published stream, alive across publisher reconnects and link changes."""

    def __init__(self, uid: str, name: str, limits: Limits, budget: Budget | None = None) -> None:
        self.uid = uid
        self.name = name
        self.outbox = Outbox(limits, budget)
        self.codecs: dict[str, str] = {}
        self.has_audio = False
        self.has_video = False
        self.ready = False  # FLV header decided: first media frame seen
        self.ended = False
        self.state = LIVE  # see TRANSITIONS; the edge core drives it (edgecore.py)
        self.end_reason = ""
        self.end_code = wire.Code.UNPUBLISHED
        self.conn_id: int | None = None  # the publisher's connection, while it is there
        self.current: Publisher | None = None  # who that publisher is
        self.rtmp_stream_id = 0
        self.link_id: int | None = None  # the link it is assigned to
        self.consumer = ""  # hello.instance of the app it was last given to
        self.started = time.time()
        self.orphaned_at: float | None = None
        self.key_expiry: int | None = None  # of the signed key it was published with (keys.verify_key)
        self.ended_at = 0.0
        self.publishers = 0
        self.tags_in = 0
        self.bytes_in = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.gaps = 0
        # The run of seqs the latest Gaps reported on the current link, first to last (the
        # core's tail expiry reports the rest). 0: none.
        self.reported_first = 0
        self.reported = 0
        # Sequence number of the first tag of each publisher that took over -> who it is;
        # the link flags the Data frame starting there. Pruned as acks pass them.
        self.publisher_marks: dict[int, Publisher] = {}
        # A publisher that takes over restarts its clock (usually at 0). Its timestamps are
        # shifted so the stream's timeline goes on from the last frame shown plus the time between.
        self.ts_offset = 0
        # Latest presentation time (timestamp + composition time): with B-frames, a frame sent
        # before the last tag may show after it, and the next publisher must start later still.
        self.last_shown: int | None = None
        self.rebase_next = False
        self.last_tag_at = 0.0  # when the last tag arrived (EdgeCore.media keeps it)
        self._rate: list[tuple[float, int]] = []  # (time, bytes_in) samples for bitrate

    def transition(self, event: str) -> None:
        """Move along the lifecycle table (LocalProtocolError if ``event`` is not allowed now)."""
        self.state = next_state(self.state, event)
        self.ended = self.state in (FINISHING, GONE)

    @property
    def header(self) -> bytes:
        return flv.file_header(self.has_audio, self.has_video)

    def note(self, tag_type: int, timestamp: int, data: bytes) -> None:
        """Track codecs and decide the FLV header on the first real media frame."""
        self.tags_in += 1
        self.bytes_in += len(data)
        if self.first_ts is None:
            self.first_ts = timestamp
        self.last_ts = timestamp
        if tag_type == flv.AUDIO:
            if self.last_shown is None or timestamp > self.last_shown:
                self.last_shown = timestamp
            self.has_audio = True
            if "audio" not in self.codecs:  # once per stream, not per tag
                self.codecs["audio"] = flv.audio_codec(data)
        elif tag_type == flv.VIDEO:
            shown = timestamp + max(0, flv.composition_time(data))
            if self.last_shown is None or shown > self.last_shown:
                self.last_shown = shown
            self.has_video = True
            if "video" not in self.codecs:
                self.codecs["video"] = flv.video_codec(data)
        else:
            if self.last_shown is None or timestamp > self.last_shown:
                self.last_shown = timestamp
            return
        if flv.is_multitrack(tag_type, data) and flv.sequence_key(tag_type, data):
            # Enhanced RTMP v2: a track's SequenceStart names its codec ("audio.1": "aac").
            for key, codec in flv.track_codecs(tag_type, data).items():
                self.codecs.setdefault(key, codec)
        if not self.ready and not flv.is_sequence_header(tag_type, data):
            self.ready = True

    def rebase(self, timestamp: int, now: float) -> int:
        """The tag's timestamp on the stream's timeline (shifted after a publisher takeover)."""
        if self.rebase_next:
            self.rebase_next = False
            if self.last_shown is not None:
                # At least 1 ms: every frame of the new publisher shows after the old one's last.
                elapsed_ms = max(1, round((now - self.last_tag_at) * 1000))
                self.ts_offset = self.last_shown + elapsed_ms - timestamp
        self.last_tag_at = now
        return max(0, timestamp + self.ts_offset)

    def publisher_info(self) -> dict[str, Any]:
        """The current publisher as the wire and the dashboard show it; ``{}`` between publishers."""
        publisher = self.publisher()
        return publisher.to_wire() if publisher else {}

    def publisher(self) -> Publisher | None:
        return self.current

    def bitrate(self, now: float) -> float:
        """Bits per second over the last ~5 s."""
        samples = self._rate
        samples.append((now, self.bytes_in))
        while len(samples) > 2 and now - samples[0][0] > 5:
            samples.pop(0)
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        return (b1 - b0) * 8 / (t1 - t0) if t1 > t0 else 0.0
