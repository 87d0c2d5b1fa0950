"""Reference cores with the docs/CORE.md interface, built on the real :class:`Outbox`.

They stand in for ``relay_edge.edgecore`` / ``relay_client.appcore`` where those are
not importable, so the simulator, its invariants and its mutants have something to
drive. Seq numbering, acks, credit, rewind/resume and gaps are the real Outbox's.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from relay_edge import flv
from relay_edge.frames import PROTOCOL_VERSION, Accept, Ack, Close, Code, Data, Gap, Hello, Open, ResumePoint
from relay_edge.limits import Limits
from relay_edge.outbox import Budget, Outbox

from .events import (
    AcceptPublish,
    CloseLink,
    ClosePublisher,
    Delivered,
    Drain,
    FrameReceived,
    GapReported,
    GapToDeliver,
    LimitBreached,
    LinkDown,
    LinkUp,
    Media,
    PublisherGone,
    PublishVerified,
    RejectPublish,
    SendFrames,
    StreamEnded,
    StreamOpened,
    TagsToDeliver,
    Unpublished,
)

_HEADER = flv.file_header(audio=True, video=False)


@dataclass(slots=True)
class _Stream:
    uid: str
    name: str
    outbox: Outbox
    publisher: dict[str, Any]
    state: str = "live"  # live -> orphaned -> live | ended -> gone
    conn: int | None = None
    link: int | None = None
    sid: int = 0
    consumer: str = ""  # instance of the last link it was on
    since: float = 0.0  # orphaned_at or ended_at
    code: str = ""
    close_sent: bool = False
    expired: bool = False  # ended, and its tail outlived buffer_seconds


@dataclass(slots=True)
class _EdgeLink:
    hello: Hello
    sids: dict[int, str] = field(default_factory=dict)
    resume: dict[str, int] = field(default_factory=dict)
    next_sid: int = 1


class ModelEdgeCore:
    """Registry, assignment, lifecycle timers and per-link send state of one edge."""

    def __init__(self, instance: str, edge_name: str, limits: Limits) -> None:
        self.name = instance
        self.edge_name = edge_name
        self.limits = limits
        self.budget = Budget()
        self.streams: dict[str, _Stream] = {}
        self._by_conn: dict[int, str] = {}
        self._links: dict[int, _EdgeLink] = {}
        self._dirty: dict[str, None] = {}
        self._timed: dict[str, None] = {}
        self._out: list[Any] = []
        self._count = 0
        self._draining = False

    # --- the interface ---------------------------------------------------------------

    def handle(self, event: Any, now: float) -> None:
        """Feed one input."""
        getattr(self, "_on_" + type(event).__name__)(event, now)
        self._flush(now)
        self._check_drained()

    def tick(self, now: float) -> None:
        """Run the timers due at ``now``."""
        for uid in list(self._timed):
            s = self.streams.get(uid)
            if s is None:
                del self._timed[uid]
            elif s.state == "orphaned" and now >= s.since + self.limits.reconnect_grace:
                self._end(s, Code.PUBLISHER_LOST, now)
            elif s.state == "ended" and now >= s.since + self.limits.buffer_seconds:
                s.outbox.drop_all()  # the tail outlived buffer_seconds: reported as a Gap
                s.expired = True
                self._dirty[uid] = None
        self._flush(now)
        self._check_drained()

    def outputs(self) -> list[Any]:
        """Drain what is due, in order."""
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must run next."""
        best = None
        for uid in self._timed:
            s = self.streams[uid]
            wait = self.limits.reconnect_grace if s.state == "orphaned" else self.limits.buffer_seconds
            if best is None or s.since + wait < best:
                best = s.since + wait
        return best

    def resume_points(self) -> tuple[ResumePoint, ...]:
        """Every stream held, for the edge's Hello."""
        return tuple(ResumePoint(s.uid, s.outbox.next_seq - 1) for s in self.streams.values())

    def memory(self) -> tuple[int, int]:
        """(largest stream buffer, all buffers) in bytes, for the limits invariant."""
        largest = max((s.outbox.buffered_bytes for s in self.streams.values()), default=0)
        return largest, self.budget.used

    # --- publisher events ------------------------------------------------------------

    def _on_PublishVerified(self, ev: PublishVerified, now: float) -> None:
        if self._draining:
            self._out.append(RejectPublish(ev.conn_id, Code.SHUTDOWN, "edge is stopping"))
            return
        s = next((s for s in self.streams.values() if s.name == ev.name and s.state != "ended"), None)
        if s is not None:  # same-key takeover: the stream goes on with the new publisher
            if s.conn is not None:
                self._out.append(ClosePublisher(s.conn, "replaced"))
                del self._by_conn[s.conn]
            self._timed.pop(s.uid, None)
        else:
            self._count += 1
            uid = f"{self.name}.{self._count}"
            s = _Stream(uid, ev.name, Outbox(self.limits, self.budget), ev.publisher)
            self.streams[uid] = s
        s.state, s.conn, s.publisher = "live", ev.conn_id, ev.publisher
        self._by_conn[ev.conn_id] = s.uid
        self._out.append(AcceptPublish(ev.conn_id, s.uid))
        if s.link is None:
            self._assign(s)

    def _on_Media(self, ev: Media, now: float) -> None:
        uid = self._by_conn.get(ev.conn_id)
        if uid is None:
            return
        self.streams[uid].outbox.push(ev.tag_type, ev.timestamp, ev.data, now)
        self._dirty[uid] = None
        breached = False
        while self.budget.used > self.limits.max_buffered_total:  # the oldest tag of any stream goes
            held = [s for s in self.streams.values() if s.outbox.buffered_tags > 1]
            if not held:
                break
            if not breached:
                breached = True
                self._out.append(LimitBreached("max_buffered_total"))
            oldest = min(held, key=lambda s: s.outbox.oldest_arrival())
            oldest.outbox.drop_oldest()
            self._dirty[oldest.uid] = None

    def _on_Unpublished(self, ev: Unpublished, now: float) -> None:
        uid = self._by_conn.pop(ev.conn_id, None)
        if uid is not None:
            self._end(self.streams[uid], Code.UNPUBLISHED, now)

    def _on_PublisherGone(self, ev: PublisherGone, now: float) -> None:
        uid = self._by_conn.pop(ev.conn_id, None)
        if uid is not None:
            s = self.streams[uid]
            s.state, s.conn, s.since = "orphaned", None, now
            self._timed[uid] = None

    def _on_Drain(self, ev: Drain, now: float) -> None:
        self._draining = True
        for s in list(self.streams.values()):
            if s.conn is not None:
                self._out.append(ClosePublisher(s.conn, "edge shutdown"))
                del self._by_conn[s.conn]
            if s.state != "ended":
                self._end(s, Code.UNPUBLISHED, now)

    def _end(self, s: _Stream, code: str, now: float) -> None:
        s.state, s.conn, s.code, s.since = "ended", None, code, now
        self._timed[s.uid] = None
        self._dirty[s.uid] = None

    # --- link events -----------------------------------------------------------------

    def _on_LinkUp(self, ev: LinkUp, now: float) -> None:
        resume = {p.uid: p.seq for p in ev.hello.streams}
        self._links[ev.link_id] = _EdgeLink(ev.hello, resume=resume)
        for s in list(self.streams.values()):
            if s.link is None:
                self._assign(s)

    def _on_LinkDown(self, ev: LinkDown, now: float) -> None:
        link = self._links.pop(ev.link_id, None)
        if link is None:
            return
        for uid in link.sids.values():
            s = self.streams.get(uid)
            if s is not None and s.link == ev.link_id:
                s.link = None
                s.outbox.rewind()
        for s in list(self.streams.values()):
            if s.link is None:
                self._assign(s)

    def _on_FrameReceived(self, ev: FrameReceived, now: float) -> None:
        link = self._links.get(ev.link_id)
        frame = ev.frame
        if link is None:
            return
        uid = link.sids.get(getattr(frame, "sid", -1))
        s = self.streams.get(uid) if uid is not None else None
        if s is None or s.link != ev.link_id:
            return
        if isinstance(frame, Ack):
            s.outbox.ack(frame.seq)
            self._dirty[s.uid] = None
        elif isinstance(frame, Close):  # the app needs no more of it
            self._gone(s)

    # --- assignment and sending ------------------------------------------------------

    def _assign(self, s: _Stream) -> None:
        """Previous consumer first, pattern subscribers before catch-alls, then least loaded."""
        best: tuple[Any, ...] | None = None
        for link_id, link in self._links.items():
            patterns = link.hello.patterns
            if patterns and not any(fnmatch.fnmatchcase(s.name, p) for p in patterns):
                continue
            key = (link.hello.instance != s.consumer, not patterns, len(link.sids), link_id)
            if best is None or key < best:
                best = key
        if best is None:
            return
        link_id = best[-1]
        link = self._links[link_id]
        sid = link.next_sid
        link.next_sid += 1
        link.sids[sid] = s.uid
        s.link, s.sid, s.consumer, s.close_sent = link_id, sid, link.hello.instance, False
        box = s.outbox
        point = link.resume.pop(s.uid, None)
        if point is None:
            box.rewind()
        else:
            box.resume_from(point)
        self._send(
            link_id,
            [self._open_frame(s, sid, box.sent + 1, box.sent_max > 0)],
        )
        self._dirty[s.uid] = None

    def _open_frame(self, s: _Stream, sid: int, seq: int, resumed: bool) -> Open:
        return Open(
            sid,
            s.uid,
            s.name,
            s.publisher,
            {},
            seq,
            resumed,
            _HEADER,
            self.name,
            tuple(s.outbox.init.values()),
        )

    def _send(self, link_id: int, frames: list[Any]) -> None:
        if frames:
            self._out.append(SendFrames(link_id, tuple(frames)))

    def _flush(self, now: float) -> None:
        per_link: dict[int, list[Any]] = {}
        for uid in self._dirty:
            s = self.streams.get(uid)
            if s is not None:
                self._flush_stream(s, per_link)
        self._dirty.clear()
        for link_id, frames in per_link.items():
            self._send(link_id, frames)

    def _flush_stream(self, s: _Stream, per_link: dict[int, list[Any]]) -> None:
        box = s.outbox
        expired = s.expired
        if s.link is None:
            if s.state == "ended" and (box.acked >= box.next_seq - 1 or expired):
                gap, _, _ = box.take(-1)
                if gap is not None:
                    self._out.append(GapReported(s.uid, gap))
                self._gone(s)
            return
        frames = per_link.setdefault(s.link, [])
        if box.pending:
            gap, first, tags = box.take(s.sid)
            if gap is not None:
                frames.append(gap)
            step = self.limits.wire_max_items
            for i in range(0, len(tags), step):
                frames.append(Data(s.sid, first + i, tuple(tags[i : i + step])))
        if s.state == "ended" and not box.pending and not s.close_sent:
            s.close_sent = True
            frames.append(Close(s.sid, "stream ended", s.code))
        if s.close_sent and (box.acked >= box.next_seq - 1 or expired):
            self._gone(s)

    def _check_drained(self) -> None:
        if self._draining and not self.streams:
            for link_id in list(self._links):
                self._out.append(CloseLink(link_id, Code.SHUTDOWN, "edge shutting down"))
                del self._links[link_id]

    def _gone(self, s: _Stream) -> None:
        box = s.outbox
        if box.acked < box.next_seq - 1:  # sent, never acked, now dropped: never silent
            lost = box.next_seq - 1 - box.acked
            self._out.append(GapReported(s.uid, Gap(s.sid, box.next_seq, lost, 0, 0)))
        if s.conn is not None:
            self._out.append(ClosePublisher(s.conn, "app closed the stream"))
            self._by_conn.pop(s.conn, None)
        s.outbox.discard()
        del self.streams[s.uid]
        self._timed.pop(s.uid, None)
        self._out.append(StreamEnded(s.uid, s.code or Code.DONE))


# --- app side ----------------------------------------------------------------------------


@dataclass(slots=True)
class _AppStream:
    handed: int = 0  # highest seq handed to the pipeline (dedupe of replays)
    delivered: int = 0  # highest seq the pipeline finished (what may be acked)
    where: tuple[int, int] | None = None  # (link, sid) it is on now
    final: int | None = None  # the edge closed it after this seq: forgotten once it is delivered


class ModelAppCore:
    """Sids, delivered-seq dedupe, ack coalescing and end of stream for one app instance."""

    def __init__(self, instance: str, patterns: tuple[str, ...] = ()) -> None:
        self.instance = instance
        self.patterns = patterns
        self._links: dict[int, dict[int, str]] = {}
        self.streams: dict[str, _AppStream] = {}
        self._acks: dict[tuple[int, int], int] = {}
        self._out: list[Any] = []
        self.draining = False

    def hello(self) -> Hello:
        """This instance's Hello, with the streams it can resume."""
        points = tuple(ResumePoint(uid, st.delivered) for uid, st in self.streams.items() if st.delivered)
        return Hello(PROTOCOL_VERSION, "client", self.instance, points, patterns=self.patterns)

    def handle(self, event: Any, now: float) -> None:
        getattr(self, "_on_" + type(event).__name__)(event, now)

    def tick(self, now: float) -> None:
        return None

    def next_deadline(self) -> float | None:
        return None

    def outputs(self) -> list[Any]:
        self._flush_acks()
        out, self._out = self._out, []
        return out

    def _flush_acks(self) -> None:
        per_link: dict[int, list[Any]] = {}
        for (link_id, sid), seq in self._acks.items():
            per_link.setdefault(link_id, []).append(Ack(sid, seq))
        self._acks.clear()
        for link_id, frames in per_link.items():
            self._out.append(SendFrames(link_id, tuple(frames)))

    def _on_LinkUp(self, ev: LinkUp, now: float) -> None:
        self._links[ev.link_id] = {}

    def _on_LinkDown(self, ev: LinkDown, now: float) -> None:
        for sid, uid in self._links.pop(ev.link_id, {}).items():
            st = self.streams.get(uid)
            if st is not None and st.where == (ev.link_id, sid):
                st.where = None
        for key in [k for k in self._acks if k[0] == ev.link_id]:
            del self._acks[key]

    def _on_Delivered(self, ev: Delivered, now: float) -> None:
        st = self.streams.get(ev.uid)
        if st is None or ev.seq <= st.delivered:
            return
        st.delivered = ev.seq
        if st.where is not None:
            self._acks[st.where] = ev.seq
        if st.final is not None and st.delivered >= st.final:
            self._forget(ev.uid, st)

    def _forget(self, uid: str, st: _AppStream) -> None:
        del self.streams[uid]
        if st.where is not None:
            self._links[st.where[0]].pop(st.where[1], None)

    def _on_Drain(self, ev: Drain, now: float) -> None:
        self.draining = True  # take no new tags (the edge keeps them unacked); acks go on

    def _on_FrameReceived(self, ev: FrameReceived, now: float) -> None:
        sids = self._links.get(ev.link_id)
        if sids is None:
            return
        frame = ev.frame
        if isinstance(frame, Open):
            sids[frame.sid] = frame.uid
            st = self.streams.setdefault(frame.uid, _AppStream())
            st.where, st.final = (ev.link_id, frame.sid), None
            self._out.append(StreamOpened(frame.uid, frame.name, frame.seq, frame.resumed, frame.init))
            self._out.append(SendFrames(ev.link_id, (Accept(frame.sid),)))
            return
        uid = sids.get(getattr(frame, "sid", -1))
        st = self.streams.get(uid) if uid is not None else None
        if st is None or uid is None:
            return
        if self.draining and isinstance(frame, (Data, Gap)):
            return
        if isinstance(frame, Data):
            skip = max(0, st.handed - frame.seq + 1)
            if skip < len(frame.tags):
                self._out.append(TagsToDeliver(uid, frame.seq + skip, frame.tags[skip:]))
                st.handed = frame.seq + len(frame.tags) - 1
        elif isinstance(frame, Gap):
            if frame.seq - 1 > st.handed:
                self._out.append(GapToDeliver(uid, frame))
                st.handed = frame.seq - 1
        elif isinstance(frame, Close):  # acks go on until the pipeline has the tail
            st.final = st.handed
            self._out.append(StreamEnded(uid, frame.code))
            if st.delivered >= st.final:
                self._forget(uid, st)
