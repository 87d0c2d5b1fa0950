"""The edge's end of the link as a sans-I/O core (docs/CORE.md, "Edge core").

:class:`EdgeCore` holds the stream registry, each stream's lifecycle
(``edgestream.TRANSITIONS``), the assignment of streams to consumers, each
link's send state (sids, closed sids, what is due), resume and rewind, credit,
acks, gaps, publisher takeover, and the reconnect-grace and tail-expiry timers.
It does no I/O and reads no clock, like websockets' ``Protocol``::

    core.handle(event, now)      # feed one input
    core.outputs()               # drain what is due, in order
    core.next_deadline()         # sleep until then, then core.tick(now)

Sending is pull-based: the core says :class:`LinkDue` once when a link gets
something to send; when its transport can take more the pump feeds
:class:`LinkWritable` and the core answers with one :class:`SendFrames` of
encoded frames (at most about :data:`MESSAGE_TARGET` bytes), and another
LinkDue if more waits. Log lines and metrics stay with the pump, fed by the
observation outputs (:class:`Log`, :class:`GapReported`, :class:`StreamEnded`,
:class:`LimitBreached`, :class:`Count`).

The key check stays in the pump (it needs secrets and the allow-list): the core
gets :class:`PublishVerified` with the name the key verified to.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from . import wire
from .assign import Candidate, pick
from .edgestream import (
    END,
    FINISH,
    FINISHING,
    LIVE,
    ORPHANED,
    PUBLISHER_LOST,
    TAKEOVER,
    EdgeStream,
    Publisher,
)
from .errors import LocalProtocolError
from .frames import Gap, Hello
from .limits import DEFAULT_LIMITS, Limits
from .linkevents import FrameReceived, LinkDown  # shared with appcore, re-exported here
from .outbox import Budget

# Frames gathered into one WebSocket message stop growing past this; the rest goes in the
# next message (the link's _MESSAGE_TARGET). Keeps one burst from delaying pings and acks.
MESSAGE_TARGET: Final = 256 * 1024
# An expired tail handed to a link that never acks: it gets this long to send the Gap and
# the Close before the stream is let go anyway (the period of the sweep this timer replaces).
TAIL_RECHECK = 1.0

EDGE_LOG = "relay_edge"
LINK_LOG = "relay_edge.link"


# --- inputs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishVerified:
    """A publish whose key verified to ``name`` (the pump checked it)."""

    conn_id: int
    rtmp_stream_id: int
    name: str
    app: str  # as the publish command named it (logged)
    publisher: Publisher
    key_expiry: int | None = None


class Media(NamedTuple):
    """One tag from a publisher (per tag: a NamedTuple, cheap to build)."""

    conn_id: int
    rtmp_stream_id: int
    tag_type: int
    timestamp: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Unpublished:
    """The publisher ended one stream (FCUnpublish, deleteStream, closeStream)."""

    conn_id: int
    rtmp_stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class PublisherGone:
    """A publisher's connection closed: its live streams wait ``reconnect_grace`` for it."""

    conn_id: int


# Not shared with appcore.LinkUp: only the edge names the link in its log lines (``remote``).
@dataclass(frozen=True, slots=True)
class LinkUp:
    """A link finished its Hello exchange; ``remote`` is how log lines name it."""

    link_id: int
    hello: Hello
    remote: str = ""


@dataclass(frozen=True, slots=True)
class LinkWritable:
    """The link's transport can take one more message."""

    link_id: int


# Not shared with appcore.Drain: the edge waits ``grace`` s for its tails' acks.
@dataclass(frozen=True, slots=True)
class Drain:
    """Graceful stop: end every stream, wait up to ``grace`` s for the tails' acks, then close links."""

    grace: float


Event = (
    PublishVerified
    | Media
    | Unpublished
    | PublisherGone
    | LinkUp
    | LinkDown
    | FrameReceived
    | LinkWritable
    | Drain
)


# --- outputs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AcceptPublish:
    conn_id: int
    rtmp_stream_id: int
    uid: str


@dataclass(frozen=True, slots=True)
class RejectPublish:
    """Answer the publish with this status, then close that connection."""

    conn_id: int
    rtmp_stream_id: int
    code: str
    description: str


@dataclass(frozen=True, slots=True)
class ClosePublisher:
    """Close a publisher's connection (replaced by a takeover, or the edge draining)."""

    conn_id: int


@dataclass(frozen=True, slots=True)
class LinkDue:
    """``link_id`` has something to send: feed LinkWritable when its transport can take it."""

    link_id: int


# Not shared with appcore.SendFrames: the edge core hands out frames already encoded.
@dataclass(frozen=True, slots=True, repr=False)
class SendFrames:
    """Encoded frames for one WebSocket message on ``link_id``."""

    link_id: int
    frames: tuple[bytes, ...]

    def __repr__(self) -> str:
        size = sum(map(len, self.frames))
        return f"SendFrames(link_id={self.link_id}, frames={len(self.frames)}, bytes={size})"


# Not shared with appcore.CloseLink: the app's also says whether the peer closed (``by_peer``).
@dataclass(frozen=True, slots=True)
class CloseLink:
    """Close the link: ``Close(sid=None, code, reason)`` then a 1001 close."""

    link_id: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Drained:
    """A Drain is over (tails acked or its grace ran out); ``unacked`` tags were never acked."""

    unacked: int


@dataclass(frozen=True, slots=True)
class Log:
    """A log line, exactly as users know it (docs, runbooks): the pump logs ``msg % args``.

    The arguments stay separate, as in a ``logging`` call: formatted only if the level is on,
    and log handlers (and tests) see the record's ``args``.
    """

    logger: str
    level: int
    msg: str
    args: tuple[Any, ...] = ()

    @property
    def message(self) -> str:
        return self.msg % self.args if self.args else self.msg


@dataclass(frozen=True, slots=True)
class GapReported:
    uid: str
    name: str
    gap: Gap


@dataclass(frozen=True, slots=True)
class StreamEnded:
    uid: str
    name: str
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class LimitBreached:
    limit: str


@dataclass(frozen=True, slots=True)
class Count:
    """Count ``n`` on the counter ``metric`` (``streams``, ``publisher_reconnects``, ``resumes``)."""

    metric: str
    n: int = 1


Output = (
    AcceptPublish
    | RejectPublish
    | ClosePublisher
    | LinkDue
    | SendFrames
    | CloseLink
    | Drained
    | Log
    | GapReported
    | StreamEnded
    | LimitBreached
    | Count
)


# --- state ----------------------------------------------------------------------------


@dataclass(eq=False)
class CoreLink:
    """One link's send state: sids both ways, closed sids, streams with something due."""

    link_id: int
    hello: Hello
    remote: str
    resume_points: dict[str, int]
    load: int = 0  # streams assigned to it
    next_sid: int = 1
    sids: dict[str, int] = field(default_factory=dict)  # stream uid -> sid
    streams: dict[int, EdgeStream] = field(default_factory=dict)  # sid -> stream
    closed_sids: set[int] = field(default_factory=set)
    dirty: dict[EdgeStream, None] = field(default_factory=dict)  # an ordered set
    due: bool = False  # LinkDue said and no LinkWritable since

    def wants(self, name: str) -> bool:
        """Whether this consumer asked for ``name`` (its hello patterns; none means all)."""
        patterns = self.hello.patterns
        return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)

    def close_sent(self, stream: EdgeStream) -> bool:
        sid = self.sids.get(stream.uid)
        return sid is not None and sid in self.closed_sids


def pick_link(stream: EdgeStream, links: Sequence[CoreLink]) -> CoreLink | None:
    """The consumer ``stream`` goes to by :func:`assign.pick` (docs/TOPOLOGY.md); None if no
    link wants it. Load counts per app instance first, so N links to one instance are one."""
    candidates = [
        Candidate(ln.hello.instance, bool(ln.hello.patterns), ln.wants(stream.name), ln.load) for ln in links
    ]
    index = pick(candidates, stream.consumer)
    return None if index is None else links[index]


_GRACE: Final = "grace"
_TAIL: Final = "tail"
_DRAIN: Final = "drain"


class EdgeCore:
    """Registry, lifecycle, assignment and send state of one edge; no I/O (see the module doc)."""

    def __init__(self, instance: str, edge_name: str = "", limits: Limits = DEFAULT_LIMITS) -> None:
        self.instance = instance
        self.edge_name = edge_name
        self.limits = limits
        self._max_buffered_total = limits.max_buffered_total  # read per tag: a plain attribute
        self.budget = Budget()  # bytes all streams' buffers hold (Limits.max_buffered_total)
        self.streams: dict[str, EdgeStream] = {}  # live and orphaned, by name
        # Ended, tail not yet acked. An ordered set: a set of objects iterates in address
        # order, and LinkUp/LinkDown assign in this order, so outputs would vary run to run.
        self.finishing: dict[EdgeStream, None] = {}
        self.links: dict[int, CoreLink] = {}  # in the order they came up
        self._by_conn: dict[int, dict[int, EdgeStream]] = {}  # conn -> RTMP stream id -> stream
        self._uids = itertools.count(1)
        self._out: list[Output] = []
        self._timers: list[tuple[float, int, str, EdgeStream | None, float]] = []
        self._timer_seq = itertools.count()
        self.draining = False
        self._drain_done = False

    # --- the sans-I/O interface ----------------------------------------------------------

    def handle(self, event: Event, now: float) -> None:
        """Feed one input at time ``now`` (seconds, any monotonic clock)."""
        if type(event) is Media:  # the hot path first, without a dispatch table
            conn_id, rtmp_stream_id, tag_type, timestamp, data = event  # not *event: a generic call compiled
            self.media(conn_id, rtmp_stream_id, tag_type, timestamp, data, now)
        elif isinstance(event, LinkWritable):
            self._writable(event.link_id)
        elif isinstance(event, FrameReceived):
            self._frame(event.link_id, event.frame, now)
        elif isinstance(event, PublishVerified):
            self._publish(event, now)
        elif isinstance(event, Unpublished):
            self._unpublish(event, now)
        elif isinstance(event, PublisherGone):
            self._publisher_gone(event.conn_id, now)
        elif isinstance(event, LinkUp):
            self._link_up(event)
        elif isinstance(event, LinkDown):
            self._link_down(event.link_id)
        elif isinstance(event, Drain):
            self._drain(event.grace, now)
        else:
            raise LocalProtocolError(f"EdgeCore cannot handle {event!r}")

    def acks(self, link_id: int, pairs: Iterable[tuple[int, int]]) -> None:
        """``handle(FrameReceived(link_id, Ack(sid=sid, seq=seq)), now)`` for each ``(sid, seq)``.

        The same, without an event and a frame per ack: the app's most frequent message
        (``wire.ack_pairs``) goes straight here. An ack reads no clock.
        """
        link = self.links.get(link_id)
        if link is not None:
            for sid, seq in pairs:
                self._ack(link, sid, seq)

    def outputs(self) -> list[Output]:
        """What is due, in order; each output is returned once."""
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do (None: no timer)."""
        timers = self._timers
        while timers and not self._valid(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def tick(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            if self._valid(entry):
                _, _, kind, stream, _ = entry
                if kind == _GRACE and stream is not None:
                    self._end(stream, "publisher: gone", wire.Code.PUBLISHER_LOST, now)
                elif kind == _TAIL and stream is not None:
                    self._expire(stream, now)
                elif kind == _DRAIN:
                    self._drained()

    # --- queries for the pump -------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Whether :meth:`outputs` has something (the per-tag path skips the call when not)."""
        return bool(self._out)

    def stream_for(self, conn_id: int, rtmp_stream_id: int) -> EdgeStream | None:
        """The stream ``conn_id`` publishes as RTMP stream ``rtmp_stream_id``."""
        streams = self._by_conn.get(conn_id)
        return streams.get(rtmp_stream_id) if streams else None

    def resume_points(self) -> tuple[wire.ResumePoint, ...]:
        """Every stream held, for the edge's Hello: a client can finish the ones we no longer have."""
        held = [*self.streams.values(), *self.finishing]
        return tuple(wire.ResumePoint(uid=s.uid, seq=s.outbox.next_seq - 1) for s in held)

    def live_key_expiry(self, name: str) -> int | None:
        """EXPIRY of the key ``name``'s live (or orphaned) stream came with (keys.verify_key)."""
        stream = self.streams.get(name)
        return stream.key_expiry if stream is not None else None

    def unacked(self) -> int:
        """Tags of ended streams the app has not acked."""
        return sum(s.outbox.next_seq - 1 - s.outbox.acked for s in self.finishing)

    # --- timers ---------------------------------------------------------------------------

    def _timer(self, when: float, kind: str, stream: EdgeStream | None, stamp: float) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_seq), kind, stream, stamp))

    def _valid(self, entry: tuple[float, int, str, EdgeStream | None, float]) -> bool:
        """Lazy deletion: a timer is stale once its stream left the state it was set in."""
        _, _, kind, stream, stamp = entry
        if kind == _GRACE:
            return stream is not None and stream.state == ORPHANED and stream.orphaned_at == stamp
        if kind == _TAIL:
            return stream is not None and stream.state == FINISHING and stream in self.finishing
        return not self._drain_done

    # --- publishers -----------------------------------------------------------------------

    def _publish(self, event: PublishVerified, now: float) -> None:
        name = event.name
        addr = event.publisher.addr
        if self.draining:
            self._out.append(
                RejectPublish(
                    event.conn_id, event.rtmp_stream_id, "NetStream.Publish.BadName", "edge shutting down"
                )
            )
            return
        stream = self.streams.get(name)
        if stream is not None:
            self._take_over(stream, event)
        elif refusal := self._stream_limit(name):
            self._out.append(LimitBreached(refusal))
            self._log(logging.WARNING, "refused publish of %r from %s: %s reached", name, addr, refusal)
            self._out.append(
                RejectPublish(
                    event.conn_id, event.rtmp_stream_id, "NetStream.Publish.BadName", f"{refusal} reached"
                )
            )
            return
        else:
            stream = EdgeStream(f"{self.instance}-{next(self._uids)}", name, self.limits, self.budget)
            self.streams[name] = stream
            self._out.append(Count("streams"))
        stream.conn_id = event.conn_id
        stream.current = event.publisher
        stream.key_expiry = event.key_expiry
        stream.rtmp_stream_id = event.rtmp_stream_id
        stream.orphaned_at = None
        stream.publishers += 1
        self._by_conn.setdefault(event.conn_id, {})[event.rtmp_stream_id] = stream
        self._out.append(AcceptPublish(event.conn_id, event.rtmp_stream_id, stream.uid))
        self._log(logging.INFO, "publish %s from %s (app %r)", name, addr, event.app)
        self._assign(stream)

    def _take_over(self, stream: EdgeStream, event: PublishVerified) -> None:
        """The same key again: the new publisher continues the same logical stream."""
        old = stream.conn_id
        if old is not None and old != event.conn_id:
            held = self._by_conn.get(old, {})
            held.pop(stream.rtmp_stream_id, None)
            if not held:  # nothing left on it: a Drain must not close it a second time
                self._by_conn.pop(old, None)
            self._out.append(ClosePublisher(old))
        stream.transition(TAKEOVER)
        stream.publisher_marks[stream.outbox.next_seq] = event.publisher
        stream.rebase_next = True
        self._out.append(Count("publisher_reconnects"))
        self._log(logging.INFO, "publisher of %s reconnected from %s", stream.name, event.publisher.addr)

    def _stream_limit(self, name: str) -> str | None:
        """The limit a new stream called ``name`` would breach, if any.

        Ended streams still flushing their tail hold memory too, so they count: otherwise
        publishing and unpublishing in a loop (one valid key) would pile them up.
        """
        if len(self.streams) + len(self.finishing) >= self.limits.max_streams:
            return "max_streams"
        if sum(s.name == name for s in self.finishing) >= self.limits.max_streams_per_key:
            return "max_streams_per_key"
        return None

    def media(
        self, conn_id: int, rtmp_stream_id: int, tag_type: int, timestamp: int, data: bytes, now: float
    ) -> None:
        """``handle(Media(...), now)`` without building the Media: the per-tag path of a pump."""
        streams = self._by_conn.get(conn_id)
        stream = streams.get(rtmp_stream_id) if streams else None
        if stream is None or stream.state != LIVE:
            return
        if stream.rebase_next:  # a takeover's first tag (EdgeStream.rebase, inlined otherwise)
            timestamp = stream.rebase(timestamp, now)
        else:
            stream.last_tag_at = now
            timestamp += stream.ts_offset
            if timestamp < 0:
                timestamp = 0
        stream.note(tag_type, timestamp, data)
        stream.outbox.push(tag_type, timestamp, data, now)
        if self.budget.used > self._max_buffered_total:
            self._over_budget()
        link_id = stream.link_id
        if link_id is not None and stream.ready:  # _mark, inlined: this runs once per tag
            link = self.links[link_id]
            link.dirty[stream] = None
            if not link.due:
                link.due = True
                self._out.append(LinkDue(link_id))

    def _over_budget(self) -> None:
        """All buffers together passed max_buffered_total: drop the oldest tags across streams.

        Oldest by arrival, acked or not, each stream reporting a Gap, down to 31/32 of the
        limit at once (so this runs once per 3 MiB pushed, not per tag), through a heap of
        the streams' oldest tags: O(log streams) a tag, no scan per tag.
        """
        limit = self.limits.max_buffered_total
        target = limit - limit // 32
        held = [s.outbox for s in [*self.streams.values(), *self.finishing]]
        heap = [(o.oldest_arrival(), i, o) for i, o in enumerate(held) if o.buffered_tags > 1]
        heapq.heapify(heap)
        dropped = 0
        while self.budget.used > target and heap:
            _, i, outbox = heap[0]
            dropped += outbox.drop_oldest()
            if outbox.buffered_tags > 1:
                heapq.heapreplace(heap, (outbox.oldest_arrival(), i, outbox))
            else:
                heapq.heappop(heap)
        if not dropped:
            return  # each stream down to its newest tag: nothing older to give up
        self._out.append(LimitBreached("max_buffered_total"))
        self._log(
            logging.WARNING,
            "max_buffered_total: %d bytes held by %d streams; dropped the oldest %d bytes",
            self.budget.used + dropped,
            len(held),
            dropped,
        )

    def _unpublish(self, event: Unpublished, now: float) -> None:
        stream = self._by_conn.get(event.conn_id, {}).pop(event.rtmp_stream_id, None)
        if stream is None or stream.ended:
            return
        self._log(logging.INFO, "unpublish %s (%s)", stream.name, event.reason)
        self._end(stream, f"publisher: {event.reason}", wire.Code.UNPUBLISHED, now)

    def _publisher_gone(self, conn_id: int, now: float) -> None:
        for stream in self._by_conn.pop(conn_id, {}).values():
            if stream.conn_id != conn_id or stream.state != LIVE:
                continue
            stream.conn_id = None
            stream.current = None
            stream.transition(PUBLISHER_LOST)
            stream.orphaned_at = now
            self._timer(now + self.limits.reconnect_grace, _GRACE, stream, now)
            self._log(
                logging.INFO,
                "publisher of %s disconnected; waiting %g s for it",
                stream.name,
                self.limits.reconnect_grace,
            )

    # --- lifecycle ------------------------------------------------------------------------

    def _end(self, stream: EdgeStream, reason: str, code: str, now: float) -> None:
        """Live or orphaned -> finishing: the tail goes out, then the Close."""
        stream.transition(END)
        stream.end_code = code
        stream.end_reason = reason
        stream.ended_at = now
        stream.ready = True  # even a stream with no media gets its Open and Close
        if self.streams.get(stream.name) is stream:
            del self.streams[stream.name]
        self.finishing[stream] = None
        self._out.append(StreamEnded(stream.uid, stream.name, code, reason))
        self._timer(now + self.limits.buffer_seconds, _TAIL, stream, now)
        if stream.link_id is not None:
            self._mark(self.links[stream.link_id], stream)
        self._check_drained()

    def _expire(self, stream: EdgeStream, now: float) -> None:
        """An ended stream's tail outlived ``buffer_seconds``: let it go, never silently.

        With a link up that has not sent the Close yet (the app stopped taking this stream),
        the tail is dropped first, so the link reports it as a Gap and then closes the stream;
        TAIL_RECHECK later it is finished whatever the app did.
        """
        outbox = stream.outbox
        if outbox.buffered_tags:
            self._log(
                logging.WARNING,
                "%s ended %g s ago; dropping its %d unacked tags",
                stream.name,
                self.limits.buffer_seconds,
                outbox.buffered_tags,
            )
        link = self.links.get(stream.link_id) if stream.link_id is not None else None
        if link is not None and not link.close_sent(stream):
            outbox.drop_all()
            self._mark(link, stream)
            self._timer(now + TAIL_RECHECK, _TAIL, stream, now)
            return
        # Never acked and not in the last Gap reported on a live link (no link is up, or
        # what was sent on it died unacked): reported here, or the loss would be silent.
        last = outbox.next_seq - 1
        done = outbox.acked
        if stream.reported > done:
            self._report_lost(stream, done, stream.reported_first - 1)
            done = stream.reported
        self._report_lost(stream, done, last)
        self._finish(stream)

    def _report_lost(self, stream: EdgeStream, after: int, last: int) -> None:
        """GapReported for seqs ``after + 1`` to ``last`` of a stream being let go (if any)."""
        if last > after:
            self._gap(stream, Gap(sid=0, seq=last + 1, tags=last - after, bytes=0, ms=0))

    def _finish(self, stream: EdgeStream) -> None:
        """Finishing -> gone: free its buffer and its per-link state."""
        stream.transition(FINISH)
        self.finishing.pop(stream, None)
        if stream.link_id is not None:
            link = self.links[stream.link_id]
            sid = link.sids.pop(stream.uid, None)
            if sid is not None:
                link.streams.pop(sid, None)
                link.closed_sids.discard(sid)
            link.dirty.pop(stream, None)
            link.load -= 1
            stream.link_id = None
        stream.outbox.discard()
        self._check_drained()

    def _refused(self, stream: EdgeStream, code: str, reason: str, now: float) -> None:
        """The app refused or closed the stream: tell the publisher, end it, let it go."""
        self._log(logging.WARNING, "app refused %s: %s %s", stream.name, code, reason)
        if stream.conn_id is not None:
            self._out.append(
                RejectPublish(
                    stream.conn_id, stream.rtmp_stream_id, "NetStream.Publish.BadName", reason or code
                )
            )
            self._by_conn.get(stream.conn_id, {}).pop(stream.rtmp_stream_id, None)
            stream.conn_id = None
        if not stream.ended:
            self._end(stream, f"app: {reason or code}", code, now)
        self._finish(stream)

    def _acked(self, stream: EdgeStream, link: CoreLink | None) -> None:
        marks = stream.publisher_marks
        outbox = stream.outbox
        if marks:
            for seq in [s for s in marks if s <= outbox.acked]:
                del marks[seq]
        # Finished only once its Close is on the wire too, or the app would never hear the end.
        # The state first: a live stream's ack (nearly every ack) asks nothing more.
        if (
            stream.state == FINISHING
            and (link is None or link.close_sent(stream))
            and not outbox.pending
            and outbox.acked >= outbox.next_seq - 1
        ):
            self._finish(stream)

    # --- links ----------------------------------------------------------------------------

    def _link_up(self, event: LinkUp) -> None:
        if event.link_id in self.links:
            raise LocalProtocolError(f"link {event.link_id} is already up")
        hello = event.hello
        link = CoreLink(event.link_id, hello, event.remote, {p.uid: p.seq for p in hello.streams})
        self.links[event.link_id] = link
        for stream in [*self.streams.values(), *self.finishing]:
            resumable = stream.uid in link.resume_points or stream.outbox.acked > 0
            # _assign's answer, not stream.link_id: a compiled core keeps this `is None` test's narrowing.
            if stream.link_id is None and self._assign(stream) == link.link_id and resumable:
                self._out.append(Count("resumes"))

    def _link_down(self, link_id: int) -> None:
        link = self.links.pop(link_id, None)
        if link is None:
            return
        for stream in [*self.streams.values(), *self.finishing]:
            if stream.link_id == link_id:
                stream.link_id = None
                stream.outbox.rewind()
                stream.reported = 0  # a Gap sent on the lost link may never have arrived
                if self.links:
                    self._assign(stream)
        self._check_drained()

    def _assign(self, stream: EdgeStream) -> int | None:
        """Give an unassigned stream to one consumer; the id of its link, or None if none."""
        link_id = stream.link_id
        if link_id is None:
            link = pick_link(stream, list(self.links.values()))
            if link is None:
                return None
            link_id = stream.link_id = link.link_id
            stream.consumer = link.hello.instance
            link.load += 1
        self._mark(self.links[link_id], stream)
        return link_id

    def _mark(self, link: CoreLink, stream: EdgeStream) -> None:
        """``stream`` may have something due on ``link``: say LinkDue once until the link pulls."""
        link.dirty[stream] = None
        if not link.due:
            link.due = True
            self._out.append(LinkDue(link.link_id))

    def _writable(self, link_id: int) -> None:
        link = self.links.get(link_id)
        if link is None:
            return
        link.due = False
        mark = len(self._out)
        parts, more = self._collect(link)
        if parts:
            # Ahead of what collecting caused: a stream finished on its Close can complete a
            # Drain, and the CloseLink that follows must not overtake that Close.
            self._out.insert(mark, SendFrames(link_id, tuple(parts)))
        if more:
            link.due = True
            self._out.append(LinkDue(link_id))

    def _collect(self, link: CoreLink) -> tuple[list[bytes], bool]:
        """Encoded frames due now across the link's streams; ``more`` if the target size was hit."""
        parts: list[bytes] = []
        size = 0
        dirty = link.dirty
        for stream in list(dirty):
            del dirty[stream]
            if stream.link_id != link.link_id:
                continue
            sid = link.sids.get(stream.uid)
            if sid is None:
                if not stream.ready:
                    continue
                sid = self._open(link, stream, parts)
            if sid in link.closed_sids:
                continue
            size += self._take(link, stream, sid, parts)
            if stream.ended and not stream.outbox.pending:
                parts.append(wire.encode(wire.Close(sid=sid, reason=stream.end_reason, code=stream.end_code)))
                link.closed_sids.add(sid)
                self._acked(stream, link)  # a tail acked before the end: finished now
            # Anything left now waits for credit, and its ack marks it again.
            if size >= MESSAGE_TARGET:
                return parts, bool(dirty)
        return parts, False

    def _open(self, link: CoreLink, stream: EdgeStream, parts: list[bytes]) -> int:
        sid = link.next_sid
        link.next_sid += 1
        link.sids[stream.uid] = sid
        link.streams[sid] = stream
        outbox = stream.outbox
        resumed = stream.uid in link.resume_points or outbox.acked > 0
        if stream.uid in link.resume_points:
            outbox.resume_from(link.resume_points.pop(stream.uid))
        else:
            outbox.rewind()
        init = tuple(outbox.init.values()) if outbox.acked > 0 else ()
        frame = wire.Open(
            sid=sid,
            uid=stream.uid,
            name=stream.name,
            publisher=stream.publisher_info(),
            codecs=dict(stream.codecs),
            seq=outbox.sent + 1,
            resumed=resumed,
            header=stream.header,
            init=init,
            edge=self.edge_name,
        )
        parts.append(wire.encode(frame))
        self._out.append(
            Log(
                LINK_LOG,
                logging.INFO,
                "link %s: open %s (sid %d, from seq %d)",
                (link.remote, stream.name, sid, frame.seq),
            )
        )
        return sid

    def _take(self, link: CoreLink, stream: EdgeStream, sid: int, parts: list[bytes]) -> int:
        outbox = stream.outbox
        if not outbox.pending:
            return 0
        inflight = outbox.inflight_bytes
        gap, seq, tags = outbox.take(sid)
        if gap is not None:
            parts.append(wire.encode(gap))
            self._gap(stream, gap)
        marks = stream.publisher_marks
        if tags and not marks:  # the common case: one Data frame, no publisher flag
            wire.append_data(parts, sid, seq, tags)
        elif tags:
            cuts = sorted(s for s in marks if seq < s < seq + len(tags))
            # A new publisher's first tag starts its own Data frame, flagged with who it is.
            for start, end in zip([seq, *cuts], [*cuts, seq + len(tags)], strict=False):
                who = marks.get(start)
                publisher = who.to_wire() if who else None
                wire.append_data(parts, sid, start, tags[start - seq : end - seq], publisher)
        return outbox.inflight_bytes - inflight  # the bytes taken (take adds them to inflight_bytes)

    def _gap(self, stream: EdgeStream, gap: Gap) -> None:
        stream.gaps += 1
        first = gap.seq - gap.tags
        if first > stream.reported + 1 or not stream.reported:  # a new run of reported seqs
            stream.reported_first = first
        stream.reported = max(stream.reported, gap.seq - 1)
        self._out.append(GapReported(stream.uid, stream.name, gap))
        self._log(
            logging.WARNING,
            "gap in %s: dropped %d tags (%d bytes, %d ms) before seq %d",
            stream.name,
            gap.tags,
            gap.bytes,
            gap.ms,
            gap.seq,
        )

    def _frame(self, link_id: int, frame: wire.Frame, now: float) -> None:
        link = self.links.get(link_id)
        if link is None:
            return
        # Accept needs no action: the publisher was accepted when its key verified.
        if type(frame) is wire.Ack:  # nearly every frame from an app
            self._ack(link, frame.sid, frame.seq)
        elif isinstance(frame, wire.Reject):
            stream = link.streams.get(frame.sid)
            if stream is not None:
                self._refused(stream, frame.code, frame.reason, now)
        elif isinstance(frame, wire.Close) and frame.sid is not None:
            stream = link.streams.get(frame.sid)
            if stream is not None:
                self._refused(stream, frame.code or "closed", frame.reason, now)

    def _ack(self, link: CoreLink, sid: int, seq: int) -> None:
        stream = link.streams.get(sid)
        if stream is not None:
            stream.outbox.ack(seq)
            if stream.publisher_marks or stream.state == FINISHING:
                self._acked(stream, link)  # nothing to do for a live stream with no takeover mark
            if stream.link_id == link.link_id:
                self._mark(link, stream)  # credit came back

    # --- drain ----------------------------------------------------------------------------

    def _drain(self, grace: float, now: float) -> None:
        """Stop: close the publishers, end every stream, then wait for the tails (or ``grace``)."""
        if self.draining:
            return
        self.draining = True
        for conn_id in list(self._by_conn):
            self._out.append(ClosePublisher(conn_id))
        for stream in list(self.streams.values()):
            self._end(stream, "edge shutting down", wire.Code.PUBLISHER_LOST, now)
        self._by_conn.clear()
        self._timer(now + grace, _DRAIN, None, now)
        self._check_drained()

    def _check_drained(self) -> None:
        if not self.draining or self._drain_done:
            return
        if self.streams:  # _drain is still ending them one by one
            return
        if self.links and any(s.link_id is not None for s in self.finishing):
            return
        self._drained()

    def _drained(self) -> None:
        self._drain_done = True
        unacked = self.unacked()
        if unacked:
            self._log(logging.WARNING, "shutting down with %d tags not acked by the app", unacked)
        self._out.append(Drained(unacked))
        for link_id in self.links:
            self._out.append(CloseLink(link_id, wire.Code.SHUTDOWN, "edge shutting down"))

    def _log(self, level: int, msg: str, *args: Any) -> None:
        self._out.append(Log(EDGE_LOG, level, msg, args))
