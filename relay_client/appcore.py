"""The app's end of the link as a sans-I/O core: frames and ``now`` in, frames and events out.

Like websockets' ``Protocol``: no asyncio, sockets or clocks inside. A pump
(:class:`relay_client.receiver.ClientLink`, or a simulation) feeds inputs with
:meth:`AppCore.handle`, drains :meth:`AppCore.outputs`, sleeps until
:meth:`AppCore.next_deadline` and then calls :meth:`AppCore.tick`.

What the core owns (docs/CORE.md, "App core"):

- per link: sid -> stream uid, refused and closed sids, the next sequence number
  expected per sid, the highest one seen (an ack never goes above it), liveness;
- per stream uid: the highest sequence number handed to the app (``emitted``: a
  resumed link replays from the last ack, and what was handed over already is
  dropped here) and the highest one the app's pipeline finished (``delivered``:
  only that is acked, and it is the resume point of the next Hello);
- ended and refused uids (an edge that lost our last acks offers such a stream
  again: it is answered ``done``, never delivered twice);
- acks, coalesced per link to the latest sequence number per sid.

Within one core every tag goes out once, in order, in :class:`TagsToDeliver` or
inside a :class:`GapToDeliver`; an observer can check that from the outputs alone.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Union

from relay_edge import frames as wire
from relay_edge.limits import DEFAULT_LIMITS, Limits
from relay_edge.linkevents import FrameReceived, LinkDown  # the edge core's too, re-exported here

__all__ = [
    "Abandon",
    "AppCore",
    "CloseLink",
    "Delivered",
    "Drain",
    "FrameReceived",
    "GapToDeliver",
    "Input",
    "LinkDown",
    "LinkUp",
    "Output",
    "Refuse",
    "SendFrames",
    "StreamEnded",
    "StreamOpened",
    "TagsToDeliver",
]

GONE_REASON = "gone from the edge"
DONE_REASON = "stream already ended here"

# --- inputs ------------------------------------------------------------------------------


# Not shared with edgecore.LinkUp: the edge's also names the link for its logs (``remote``).
@dataclass(frozen=True, slots=True)
class LinkUp:
    """A link finished its Hello exchange; ``hello`` is the edge's."""

    link_id: int
    hello: wire.Hello


@dataclass(frozen=True, slots=True)
class Delivered:
    """The app's pipeline finished every tag of ``uid`` up to ``seq``: only now may it be acked.

    Also says what an earlier process already wrote (a files checkpoint): tags up to
    ``seq`` that arrive again are then dropped here.
    """

    uid: str
    seq: int


@dataclass(frozen=True, slots=True)
class Refuse:
    """The app refuses stream ``uid`` (its accept hook said no, or it needs no more)."""

    uid: str
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Abandon:
    """The app never took the new stream ``uid`` (the link died while its accept hook ran).

    Its state goes, with no Reject: the edge offers it again on the next link, as new.
    """

    uid: str


# Not shared with edgecore.Drain: the app has no tails to wait for (no ``grace``).
@dataclass(frozen=True, slots=True)
class Drain:
    """Graceful stop: take no new tags (the edge keeps them, unacked), keep acking what was taken."""


Input = Union[LinkUp, FrameReceived, Delivered, Refuse, Abandon, LinkDown, Drain]  # noqa: UP007

# --- outputs -----------------------------------------------------------------------------


# Not shared with edgecore.SendFrames: the app's pump encodes these frames itself.
@dataclass(frozen=True, slots=True)
class SendFrames:
    """Frames to send on ``link_id``, in order (Accept, Reject, Ack, Ping, Pong)."""

    link_id: int
    frames: tuple[wire.Frame, ...]


# Not shared with edgecore.CloseLink: only the app's says whether the peer closed (``by_peer``).
@dataclass(frozen=True, slots=True)
class CloseLink:
    """Link ``link_id`` must end: the edge closed it (``by_peer``), it broke the protocol, or it timed out.

    ``code`` is a :class:`~relay_edge.frames.Code` (``protocol``, ``timeout``, or the edge's own).
    The core already treats the link as down; the pump still reports :class:`LinkDown`.
    """

    link_id: int
    code: str
    reason: str
    by_peer: bool = False


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """Stream ``uid`` opened on ``link_id``.

    ``known``: the app already holds it (a resume in this process): keep the same
    stream object; otherwise make one (``open.seq``/``open.init`` tell where it starts) and
    answer with :class:`Refuse` if the app does not want it. ``follows``: an earlier stream of
    the same name from the same edge that has not finished yet; its tags go first.
    """

    link_id: int
    uid: str
    open: wire.Open
    known: bool
    follows: str | None = None


@dataclass(frozen=True, slots=True, repr=False)
class TagsToDeliver:
    """Tags ``seq``, ``seq + 1``, ... of ``uid``, each handed out once; ``publisher`` as in ``Data``."""

    uid: str
    seq: int
    tags: tuple[bytes, ...]
    publisher: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"TagsToDeliver(uid={self.uid!r}, seq={self.seq}, tags={len(self.tags)})"


@dataclass(frozen=True, slots=True)
class GapToDeliver:
    """Tags ``[gap.seq - gap.tags, gap.seq)`` of ``uid`` were lost at the edge (a limit was hit)."""

    uid: str
    gap: wire.Gap


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """No more tags of ``uid`` will come; the app finishes what it holds."""

    uid: str
    reason: str
    code: str = ""


Output = Union[SendFrames, CloseLink, StreamOpened, TagsToDeliver, GapToDeliver, StreamEnded]  # noqa: UP007

# --- state -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Stream:
    """One stream uid the app holds (or held, until forgotten)."""

    uid: str
    name: str
    edge: str
    emitted: int  # highest seq handed out (tags or inside a gap)
    delivered: int  # highest seq the app's pipeline finished
    opened_at: int  # the core's link counter when it was last opened (see _sweep_gone)
    ended: bool = False
    sids: dict[int, int] = field(default_factory=dict)  # link_id -> sid, on links where it is open


@dataclass(slots=True)
class _Link:
    """One link: the edge's Hello, its sids, and what is due to go out on it."""

    link_id: int
    hello: wire.Hello
    index: int  # order of LinkUp: a Hello newer than a stream's last Open can declare it gone
    last_rx: float
    next_ping: float
    listed: frozenset[str]  # uids the edge's Hello held
    sids: dict[int, str] = field(default_factory=dict)  # open sid -> uid
    refused: set[int] = field(default_factory=set)  # sids we rejected: their tail is dropped
    max_sid: int = -1  # sids are a counter, never reused: any at or below this not open is closed
    next_seq: dict[int, int] = field(default_factory=dict)  # sid -> next seq expected (PROTOCOL.md)
    seen: dict[int, int] = field(default_factory=dict)  # sid -> highest seq received: acks stay below
    acked: dict[int, int] = field(default_factory=dict)  # sid -> highest seq acked on this link
    frames: list[wire.Frame] = field(default_factory=list)  # queued, in order
    acks: dict[int, int] = field(default_factory=dict)  # sid -> seq, coalesced until outputs()


class AppCore:
    """The app side of every link this process has: no I/O, deterministic, clock passed in.

    ``limits`` supplies ``ping_interval``/``ping_timeout`` (liveness) and
    ``max_streams`` (how many ended uids are remembered, as an edge holds at most
    that many streams to offer again).
    """

    def __init__(
        self,
        instance: str,
        limits: Limits = DEFAULT_LIMITS,
        *,
        name: str = "",
        patterns: tuple[str, ...] = (),
    ) -> None:
        self.instance = instance
        self.limits = limits
        self.name = name or instance
        self.patterns = tuple(patterns)
        self._links: dict[int, _Link] = {}
        self._streams: dict[str, _Stream] = {}  # uid -> held (live, or ended with its tail unacked)
        # Ended or refused uids, oldest first, with the code to answer a new Open with.
        self._done: OrderedDict[str, str] = OrderedDict()
        self._latest: dict[tuple[str, str], str] = {}  # (edge, name) -> latest uid opened
        self._out: list[Output] = []
        # Links that may have frames or acks queued: outputs() costs what is due, not one look per link.
        self._dirty: dict[int, _Link] = {}
        self._link_count = 0
        self._draining = False

    # --- queries -----------------------------------------------------------------------

    def hello(self) -> wire.Hello:
        """The Hello for the next link: every stream held, with the highest seq delivered."""
        return wire.Hello(
            version=wire.PROTOCOL_VERSION,
            role="client",
            instance=self.instance,
            name=self.name,
            streams=self.resume_points(),
            patterns=self.patterns,
        )

    def resume_points(self) -> tuple[wire.ResumePoint, ...]:
        """Streams held (opened, no Close yet): where each resumes, the last seq delivered."""
        return tuple(wire.ResumePoint(s.uid, s.delivered) for s in self._streams.values() if not s.ended)

    def delivered(self, uid: str) -> int:
        """The highest seq of ``uid`` the app finished (0 when unknown)."""
        held = self._streams.get(uid)
        return held.delivered if held is not None else 0

    def attached(self, uid: str) -> bool:
        """Whether ``uid`` is open on a link that is up."""
        held = self._streams.get(uid)
        return held is not None and bool(held.sids)

    @property
    def draining(self) -> bool:
        return self._draining

    # --- the API -----------------------------------------------------------------------

    def handle(self, event: Input, now: float) -> None:
        """Feed one input; what it causes is queued for :meth:`outputs`."""
        if isinstance(event, FrameReceived):
            self._frame(event.link_id, event.frame, now)
        elif isinstance(event, Delivered):
            self._delivered(event.uid, event.seq)
        elif isinstance(event, LinkUp):
            self._link_up(event.link_id, event.hello, now)
        elif isinstance(event, LinkDown):
            self._link_down(event.link_id)
        elif isinstance(event, Refuse):
            self._refuse(event.uid, event.code, event.reason)
        elif isinstance(event, Abandon):
            held = self._streams.get(event.uid)
            if held is not None and not held.ended:
                self._forget(held)
        elif isinstance(event, Drain):
            self._draining = True
        else:
            raise TypeError(f"AppCore cannot handle {event!r}")

    def outputs(self) -> list[Output]:
        """Everything due, in order; frames queued per link go out as one SendFrames each, acks last."""
        out, self._out = self._out, []
        if not self._dirty:
            return out
        dirty, self._dirty = self._dirty, {}
        # In the order the links came up, as the links themselves are kept.
        links = sorted(dirty.values(), key=_by_index) if len(dirty) > 1 else dirty.values()
        for link in links:
            if self._links.get(link.link_id) is not link:
                continue  # down since: what it had queued went with it
            frames = link.frames + [wire.Ack(sid=sid, seq=seq) for sid, seq in link.acks.items()]
            if frames:
                out.append(SendFrames(link.link_id, tuple(frames)))
                link.frames, link.acks = [], {}
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must run next (a Ping is due, or a silent link times out); None: never."""
        times = [min(ln.next_ping, ln.last_rx + self.limits.ping_timeout) for ln in self._links.values()]
        return min(times) if times else None

    def tick(self, now: float) -> None:
        """Timers: end a link silent for ``ping_timeout`` (a half-open one), ping when due."""
        for link in list(self._links.values()):
            if now - link.last_rx >= self.limits.ping_timeout:
                reason = f"ping_timeout: nothing from the edge for {self.limits.ping_timeout:g} s"
                self._close_link(link, wire.Code.TIMEOUT, reason)
            elif now >= link.next_ping:
                link.next_ping = now + self.limits.ping_interval
                self._queue(link, wire.Ping(t=now))

    # --- links -------------------------------------------------------------------------

    def _queue(self, link: _Link, frame: wire.Frame) -> None:
        """A frame to send on ``link`` at the next :meth:`outputs`."""
        link.frames.append(frame)
        self._dirty[link.link_id] = link

    def _link_up(self, link_id: int, hello: wire.Hello, now: float) -> None:
        if link_id in self._links:
            raise ValueError(f"link {link_id} is already up")
        self._link_count += 1
        self._links[link_id] = _Link(
            link_id=link_id,
            hello=hello,
            index=self._link_count,
            last_rx=now,
            next_ping=now + self.limits.ping_interval,
            listed=frozenset(p.uid for p in hello.streams),
        )
        self._sweep_gone()

    def _link_down(self, link_id: int) -> None:
        link = self._links.pop(link_id, None)
        if link is None:
            return
        for uid in link.sids.values():
            held = self._streams.get(uid)
            if held is not None:
                held.sids.pop(link_id, None)
        self._sweep_gone()

    def _close_link(self, link: _Link, code: str, reason: str, by_peer: bool = False) -> None:
        self._out.append(CloseLink(link.link_id, code, reason, by_peer))
        self._link_down(link.link_id)

    def _sweep_gone(self) -> None:
        """End streams their edge no longer has (it restarted, or they ended while no link was up).

        A stream is gone when a link from its edge (by name) whose Hello is newer than the
        stream's last Open does not list it, and no link that is up has it open: one still
        open on an older link (the old edge process draining) gets its tail and Close there.
        """
        for held in list(self._streams.values()):
            if held.ended or held.sids:
                continue
            for link in self._links.values():
                newer = link.index > held.opened_at
                if newer and link.hello.name == held.edge and held.uid not in link.listed:
                    self._end(held, GONE_REASON, "")
                    break

    # --- frames ------------------------------------------------------------------------

    def _frame(self, link_id: int, frame: wire.Frame, now: float) -> None:
        link = self._links.get(link_id)
        if link is None:
            return  # a late frame of a link already down (or closed by us): nothing to do
        link.last_rx = now
        if isinstance(frame, wire.Data):
            self._data(link, frame)
        elif isinstance(frame, wire.Open):
            self._open(link, frame)
        elif isinstance(frame, wire.Gap):
            self._gap(link, frame)
        elif isinstance(frame, wire.Close):
            self._close(link, frame)
        elif isinstance(frame, wire.Ping):
            self._queue(link, wire.Pong(t=frame.t))
        elif isinstance(frame, wire.Hello):
            self._close_link(link, wire.Code.PROTOCOL, "a second hello on the link")
        # Pong and the tunnel frames (the pump's TunnelMux) only show the link is alive.

    def _protocol_error(self, link: _Link, reason: str) -> None:
        self._close_link(link, wire.Code.PROTOCOL, reason)

    def _open(self, link: _Link, frame: wire.Open) -> None:
        sid = frame.sid
        if sid <= link.max_sid:
            self._protocol_error(link, f"open for sid {sid}, which is already used on this link")
            return
        link.max_sid = sid
        link.next_seq[sid] = frame.seq
        link.acked[sid] = frame.seq - 1  # the edge resumes after what it counts as acked
        code = self._done.get(frame.uid)
        held = self._streams.get(frame.uid)
        # Ended (or refused) and forgotten here; the edge missed our last acks. One still
        # held is ended with its tail not yet delivered: taken again, so the acks the edge
        # waits for have a sid to go on (a "done" would let it free a tail we may still lose).
        if code is not None and held is None:
            link.refused.add(sid)
            reason = DONE_REASON if code == wire.Code.DONE else "stream refused here"
            self._queue(link, wire.Reject(sid=sid, code=code, reason=reason))
            return
        known = held is not None
        follows = None
        if held is None:
            key = (frame.edge, frame.name)
            previous = self._streams.get(self._latest.get(key, ""))
            follows = previous.uid if previous is not None else None
            self._latest[key] = frame.uid
            held = _Stream(frame.uid, frame.name, frame.edge, frame.seq - 1, frame.seq - 1, self._link_count)
            self._streams[frame.uid] = held
        held.opened_at = self._link_count
        held.sids[link.link_id] = sid
        link.sids[sid] = frame.uid
        self._queue(link, wire.Accept(sid=sid))
        if not held.ended:  # an ended one is back for its acks only: the app has nothing to open
            self._out.append(StreamOpened(link.link_id, frame.uid, frame, known, follows))

    def _target(self, link: _Link, sid: int, what: str) -> _Stream | None:
        """The held stream ``sid`` names on ``link``; None for a refused or closed sid (ignored)."""
        uid = link.sids.get(sid)
        if uid is None:
            if sid not in link.refused and sid > link.max_sid:
                self._protocol_error(link, f"{what} for sid {sid}, which is not open")
            return None
        return self._streams.get(uid)

    def _data(self, link: _Link, frame: wire.Data) -> None:
        held = self._target(link, frame.sid, "data")
        if held is None:
            return
        sid, seq, tags = frame.sid, frame.seq, frame.tags
        expected = link.next_seq[sid]
        if seq > expected:  # PROTOCOL.md, Sequence numbers: a jump without a Gap is silent loss
            self._protocol_error(link, f"data for sid {sid} starts at seq {seq}, expected {expected}")
            return
        end = seq + len(tags) - 1
        link.next_seq[sid] = max(expected, end + 1)
        self._seen(link, sid, held, end)
        if held.ended or self._draining or end <= held.emitted:
            return  # after the end, draining (the edge keeps it unacked), or a replay
        skip = held.emitted + 1 - seq
        if skip > 0:  # overlaps what was handed out: the rest only, and its publisher was announced
            self._out.append(TagsToDeliver(held.uid, seq + skip, tags[skip:]))
        else:
            self._out.append(TagsToDeliver(held.uid, seq, tags, frame.publisher))
        held.emitted = end

    def _gap(self, link: _Link, frame: wire.Gap) -> None:
        held = self._target(link, frame.sid, "gap")
        if held is None:
            return
        sid = frame.sid
        first = frame.seq - frame.tags
        if first != link.next_seq[sid]:
            reason = f"gap for sid {sid} covers from seq {first}, expected {link.next_seq[sid]}"
            self._protocol_error(link, reason)
            return
        link.next_seq[sid] = frame.seq
        self._seen(link, sid, held, frame.seq - 1)
        if held.ended or self._draining or frame.seq - 1 <= held.emitted:
            return
        start = max(first, held.emitted + 1)
        gap = frame
        if start > first:  # part of it was handed out before (on an older link): report the rest
            lost = frame.seq - start
            gap = wire.Gap(
                sid=sid,
                seq=frame.seq,
                tags=lost,
                # The edge counts bytes and ms for the whole run only: prorated by tags.
                bytes=frame.bytes * lost // frame.tags,
                ms=frame.ms * lost // frame.tags,
            )
        self._out.append(GapToDeliver(held.uid, gap))
        held.emitted = frame.seq - 1

    def _close(self, link: _Link, frame: wire.Close) -> None:
        if frame.sid is None:
            self._close_link(link, frame.code, f"edge closed the link: {frame.reason}", by_peer=True)
            return
        sid = frame.sid
        if sid in link.refused:
            link.refused.discard(sid)  # its tail is over: later frames about it are "closed"
            _drop_sid(link, sid)
            return
        held = self._target(link, sid, "close")
        if held is None:
            return
        # The sid's acks stay valid after the Close (the edge frees the tail on them): the
        # stream keeps it until its tail is delivered (see _delivered) or the link goes.
        self._end(held, frame.reason, frame.code)

    def _seen(self, link: _Link, sid: int, held: _Stream, seq: int) -> None:
        if seq > link.seen.get(sid, 0):
            link.seen[sid] = seq
            self._ack(link, sid, held)
            self._dirty[link.link_id] = link  # maybe an ack: marked here, so _ack stays all it does

    # --- streams -----------------------------------------------------------------------

    def _end(self, held: _Stream, reason: str, code: str) -> None:
        if held.ended:
            return
        held.ended = True
        self._remember_done(held.uid, wire.Code.DONE)
        self._out.append(StreamEnded(held.uid, reason, code))
        self._forget_if_finished(held)

    def _remember_done(self, uid: str, code: str) -> None:
        self._done[uid] = code
        self._done.move_to_end(uid)
        while len(self._done) > self.limits.max_streams:
            old, _ = self._done.popitem(last=False)
            held = self._streams.get(old)
            if held is not None and held.ended:
                self._forget(held)

    def _delivered(self, uid: str, seq: int) -> None:
        held = self._streams.get(uid)
        if held is None or seq <= held.delivered:
            return
        held.delivered = seq
        held.emitted = max(held.emitted, seq)  # a checkpoint: what the files hold is not handed out again
        for link_id, sid in held.sids.items():
            link = self._links[link_id]
            self._ack(link, sid, held)
            self._dirty[link_id] = link
        self._forget_if_finished(held)

    def _ack(self, link: _Link, sid: int, held: _Stream) -> None:
        """Queue an ack for ``sid``: what the app finished, never above what this link carried."""
        seq = min(held.delivered, link.seen.get(sid, 0))
        if seq > link.acked.get(sid, 0):
            link.acked[sid] = seq
            link.acks[sid] = seq

    def _refuse(self, uid: str, code: str, reason: str) -> None:
        held = self._streams.get(uid)
        if held is None or held.ended:
            return
        for link_id, sid in held.sids.items():
            link = self._links[link_id]
            self._queue(link, wire.Reject(sid=sid, code=code, reason=reason))
            link.sids.pop(sid, None)
            link.refused.add(sid)
        held.sids.clear()
        held.ended = True
        self._remember_done(uid, code)
        self._forget(held)

    def _forget_if_finished(self, held: _Stream) -> None:
        """An ended stream whose tail is delivered needs no more state (its last acks are queued)."""
        if held.ended and held.delivered >= held.emitted:
            self._forget(held)

    def _forget(self, held: _Stream) -> None:
        self._streams.pop(held.uid, None)
        for link_id, sid in held.sids.items():
            _drop_sid(self._links[link_id], sid)
        key = (held.edge, held.name)
        if self._latest.get(key) == held.uid:
            del self._latest[key]


def _by_index(link: _Link) -> int:
    return link.index


def _drop_sid(link: _Link, sid: int) -> None:
    """Forget a finished sid's per-link state; queued acks for it still go out."""
    link.sids.pop(sid, None)
    link.next_seq.pop(sid, None)
    link.seen.pop(sid, None)
    link.acked.pop(sid, None)
