"""One stream's sequenced, bounded buffer of FLV tags awaiting the app's ack. Sans-I/O.

Every tag the publisher sends gets the next sequence number and waits here until
the client acknowledges it (acks mean *delivered to the app*). The link takes
tags out within a credit window of unacked bytes, so one slow stream can't fill
the shared WebSocket. When the link drops, :meth:`Outbox.rewind` makes the next
link start again after the last ack: nothing within the buffer is lost.

Past ``buffer_bytes`` or ``buffer_seconds`` the oldest whole tags are dropped
and recorded; the link reports them as a :class:`Gap` right where they would
have been sent, so a loss is never silent. Codec sequence headers and metadata
are kept aside (:attr:`Outbox.init`) so a fresh decoder can start mid-stream.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Final

from . import flv
from .frames import Gap
from .limits import DEFAULT_LIMITS, Limits

log = logging.getLogger("relay_edge.outbox")

# What one buffered tag costs beyond its encoded bytes (header + body): its _Entry, the
# bytes object's own header, the arrival float, the seq and timestamp ints and its deque
# slot. Measured with tracemalloc over 20,000 pushed tags of 10, 370 and 4000 bytes:
# 192.7 bytes each, whatever the size (tests/relay_edge/test_memory_budget.py checks it).
TAG_OVERHEAD: Final = 193  # Final: the compiled core inlines it


class Budget:
    """Bytes held by every outbox sharing it (encoded tags plus TAG_OVERHEAD each).

    The edge bounds the sum by ``Limits.max_buffered_total`` (see ``Edge.media``).
    """

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0


class _Entry:
    """One buffered tag. A plain class, not a dataclass: mypyc builds it natively (one per tag)."""

    __slots__ = ("arrival", "data", "seq", "timestamp")

    def __init__(self, seq: int, data: bytes, timestamp: int, arrival: float) -> None:
        self.seq = seq
        self.data = data  # encoded tag: 11-byte header + body
        self.timestamp = timestamp
        self.arrival = arrival


@dataclass(slots=True)
class _Drop:
    """A run of consecutive dropped tags, summed so a long outage costs one entry."""

    first: int
    last: int
    bytes: int
    first_ts: int
    last_ts: int
    # Sent on some link before it was dropped: the client may have it and ack it (or
    # name it in a resume point), so it is a run of its own and is freed whole.
    sent: bool = False


class Outbox:
    """Tags of one stream from publisher to link, with seq/ack/credit bookkeeping."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS, budget: Budget | None = None) -> None:
        self.limits = limits
        self.budget = budget if budget is not None else Budget()
        # Tags are numbered from 1, so 0 means "nothing yet" on the wire.
        self.next_seq = 1  # sequence number the next pushed tag gets
        self.acked = 0  # highest sequence the app has acknowledged
        self.sent = 0  # highest sequence handed to the current link
        self.sent_max = 0  # highest sequence ever handed to any link
        self.buffered_bytes = 0
        self.inflight_bytes = 0  # sent but not yet acked, on the current link
        # The credit window: credit_bytes, grown toward credit_max_bytes while full (see ack).
        self.credit = limits.credit_bytes
        self.credit_full = False  # the last take stopped at the window with tags left to send
        self._credit_cap = max(limits.credit_max_bytes, limits.credit_bytes)
        # The bounds read per tag, copied: Limits is not compiled, so each read of it from the
        # compiled core is a generic attribute lookup.
        self._buffer_bytes = limits.buffer_bytes
        self._buffer_seconds = limits.buffer_seconds
        self.dropped_tags = 0
        self.dropped_bytes = 0
        # Latest metadata and codec configuration, replayed to a fresh decoder.
        self.init: dict[str, bytes] = {}
        self.replay_tracks_full = False  # max_replay_tracks reached (logged once)
        self._tags: deque[_Entry] = deque()
        self._drops: deque[_Drop] = deque()

    # --- publisher side --------------------------------------------------------------

    def push(self, tag_type: int, timestamp: int, data: bytes, now: float) -> int:
        """Append one tag (``data`` is its body); returns its sequence number."""
        encoded = flv.tag_header(tag_type, timestamp, len(data)) + data
        size = len(encoded)
        seq = self.next_seq
        self.next_seq = seq + 1
        tags = self._tags
        tags.append(_Entry(seq, encoded, timestamp, now))
        self.buffered_bytes += size
        self.budget.used += size + TAG_OVERHEAD
        if tag_type == flv.SCRIPT or flv.sequence_key(tag_type, data):  # rare: most tags are neither
            self._remember_init(tag_type, data, encoded)
        # _trim's test, inlined: it drops nothing on almost every push
        if len(tags) > 1 and (
            self.buffered_bytes > self._buffer_bytes or tags[0].arrival < now - self._buffer_seconds
        ):
            self._trim(now)
        return seq

    def _remember_init(self, tag_type: int, data: bytes, encoded: bytes) -> None:
        if tag_type == flv.SCRIPT and data[3:13] == b"onMetaData":
            self.init["metadata"] = encoded
        elif key := flv.sequence_key(tag_type, data):  # one per track: "audio", "audio.1", "video"
            tracks = len(self.init) - ("metadata" in self.init)
            if key in self.init or tracks < self.limits.max_replay_tracks:
                self.init[key] = encoded
            elif not self.replay_tracks_full:
                self.replay_tracks_full = True
                log.warning(
                    "max_replay_tracks: %d tracks' sequence starts kept; %s not kept for a resume",
                    self.limits.max_replay_tracks,
                    key,
                )

    def _trim(self, now: float) -> None:
        """Drop the oldest whole tags while the buffer is over its bounds."""
        oldest_allowed = now - self._buffer_seconds
        tags = self._tags
        while len(tags) > 1 and (
            self.buffered_bytes > self._buffer_bytes or tags[0].arrival < oldest_allowed
        ):
            self._drop(tags.popleft())

    def drop_oldest(self) -> int:
        """Drop the oldest tag, acked or not (the edge's memory budget); returns what it freed.

        The link reports it as a Gap like any other drop. 0 if only one tag is left: the
        newest stays, as in :meth:`_trim`.
        """
        if len(self._tags) <= 1:
            return 0
        entry = self._tags.popleft()
        self._drop(entry)
        return len(entry.data) + TAG_OVERHEAD

    def drop_all(self) -> None:
        """Drop every buffered tag: an ended stream's tail the app did not take in time.

        The link reports what was never sent as a Gap, then sends the stream's Close.
        """
        while self._tags:
            self._drop(self._tags.popleft())

    def oldest_arrival(self) -> float:
        """When the oldest buffered tag arrived (inf if none)."""
        return self._tags[0].arrival if self._tags else float("inf")

    @property
    def held_bytes(self) -> int:
        """What this stream's buffer really holds: encoded tags plus TAG_OVERHEAD each."""
        return self.buffered_bytes + TAG_OVERHEAD * len(self._tags)

    def discard(self) -> None:
        """Forget every tag (the stream is gone); returns their bytes to the budget."""
        self.budget.used -= self.held_bytes
        self.buffered_bytes = 0
        self._tags.clear()

    def _drop(self, entry: _Entry) -> None:
        size = len(entry.data)
        self.buffered_bytes -= size
        self.budget.used -= size + TAG_OVERHEAD
        if entry.seq <= self.sent:
            self.inflight_bytes -= size
        sent = entry.seq <= self.sent_max
        self.dropped_tags += 1
        self.dropped_bytes += size
        last = self._drops[-1] if self._drops else None
        if last is not None and not sent and not last.sent and last.last + 1 == entry.seq:
            last.last = entry.seq
            last.bytes += size
            last.last_ts = entry.timestamp
        else:
            self._drops.append(_Drop(entry.seq, entry.seq, size, entry.timestamp, entry.timestamp, sent))

    def behind(self, threshold: int) -> bool:
        """More than ``threshold`` bytes wait to be sent while the credit window has room.

        That is the link not keeping up (edge CPU, network), as opposed to the app withholding acks.
        """
        inflight = self.inflight_bytes
        return self.buffered_bytes - inflight > threshold and inflight < self.credit

    # --- link side --------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Whether there is something to send (tags or a gap report)."""
        return self.next_seq - 1 > self.sent

    def take(self, sid: int) -> tuple[Gap | None, int, list[bytes]]:
        """Next tags for the link within the credit window.

        Returns ``(gap, first_seq, tags)``: ``gap`` is the Gap frame (for the
        stream's ``sid`` on this link) reporting tags dropped before ``first_seq``
        since the last take. At least one tag is taken when nothing
        is in flight, so a tag larger than the window still moves.
        """
        tags = self._tags
        head = tags[0].seq if tags else self.next_seq
        # _gap_before_next's test, inlined: most takes follow the last one with nothing dropped.
        gap = self._gap_before_next(sid) if self.sent + 1 < head else None
        out: list[bytes] = []
        if not tags:
            return gap, self.sent + 1, out
        first_seq = self.sent + 1
        inflight = self.inflight_bytes
        credit = self.credit - inflight
        taken = 0
        for i in range(max(first_seq - head, 0), len(tags)):
            data = tags[i].data
            size = len(data)
            if size > credit and (out or inflight):
                self.credit_full = True
                break
            out.append(data)
            credit -= size
            taken += size
        self.sent += len(out)
        if self.sent > self.sent_max:
            self.sent_max = self.sent
        self.inflight_bytes = inflight + taken
        return gap, first_seq, out

    def _gap_before_next(self, sid: int) -> Gap | None:
        """Account for dropped tags between what was last sent and the buffer's head."""
        head = self._tags[0].seq if self._tags else self.next_seq
        if self.sent + 1 >= head:
            return None
        first = self.sent + 1
        tags = head - first
        size = 0
        first_ts = last_ts = None
        for drop in self._drops:
            if drop.last < first or drop.first >= head:
                continue
            size += drop.bytes
            first_ts = drop.first_ts if first_ts is None else first_ts
            last_ts = drop.last_ts
        self.sent = head - 1
        ms = (last_ts - first_ts) if first_ts is not None and last_ts is not None else 0
        return Gap(sid=sid, seq=head, tags=tags, bytes=size, ms=ms)

    def ack(self, seq: int) -> None:
        """The app has everything up to ``seq``: free it and return its credit."""
        seq = min(seq, self.sent)
        if seq > self.acked:
            freed = self._release(seq)
            self.inflight_bytes -= freed
            if self.credit_full:  # the window held tags back and the app keeps up: widen it
                self.credit_full = False
                self.credit = min(self.credit + freed, self._credit_cap)

    def rewind(self) -> None:
        """A new link: resend everything after the last ack."""
        self.sent = self.acked
        self.inflight_bytes = 0
        self.credit = self.limits.credit_bytes  # a new link: its round trip is unknown again
        self.credit_full = False

    def resume_from(self, seq: int) -> None:
        """A new link whose client already delivered up to ``seq`` (its ack was lost)."""
        self.rewind()
        seq = min(seq, self.next_seq - 1)
        if seq > self.acked:
            self._release(seq)
            self.sent = seq

    def _release(self, seq: int) -> int:
        """Forget tags up to ``seq`` as delivered; returns their size."""
        tags = self._tags
        freed = 0
        count = len(tags)
        while tags and tags[0].seq <= seq:
            freed += len(tags.popleft().data)
        self.buffered_bytes -= freed
        self.budget.used -= freed + TAG_OVERHEAD * (count - len(tags))
        self.acked = seq
        while self._drops and self._drops[0].last <= seq:
            self._drops.popleft()
        return freed

    @property
    def buffered_tags(self) -> int:
        return len(self._tags)
