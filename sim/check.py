"""The invariants, derived from the cores' outputs (and the tags the publishers sent).

Edge outputs tell which stream (uid) a publisher's tags join (AcceptPublish), which
link a stream is on (Open), what was sent (Data, Gap, Close) and when a stream ended
(StreamEnded); app outputs tell what each consumer delivered. A consumer is one app
core incarnation (its Hello ``instance``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from relay_edge import flv
from relay_edge.frames import Ack, Data, Gap, Open
from relay_edge.limits import Limits
from relay_edge.outbox import TAG_OVERHEAD

# Seconds a stream may stay on no link while its edge has a live link: the edge assigns
# at once (LinkUp, LinkDown, publish), so one second is slack for nothing but bugs.
ASSIGN_GRACE = 1.0
# Seconds past reconnect_grace + buffer_seconds by which a stream whose publisher left
# must have ended at its edge (timer granularity and the last acks' round trip).
END_SLACK = 5.0
_TAG_HEADER = 11


class Violation(Exception):
    """An invariant failed: ``invariant`` names it, the message says where and with what numbers."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant


@dataclass(slots=True)
class _Ledger:
    """What one stream (uid) was sent by its publishers, and what became of it."""

    uid: str
    edge: str
    name: str
    bodies: list[bytes] = field(default_factory=list)  # seq s is bodies[s - 1]
    times: list[float] = field(default_factory=list)  # push time, edge clock
    prefix: list[int] = field(default_factory=lambda: [0])  # encoded bytes of seqs 1..s
    delivered: bytearray = field(default_factory=bytearray)  # consumers that delivered seq s (capped)
    gapped: list[tuple[int, int]] = field(default_factory=list)  # reported [first, last]
    acked: int = 0  # highest ack the edge received, or an Open's seq - 1 (a resume point)
    first_init: int = 0  # seq of the first sequence header (0: none yet)
    media: bool = False  # a tag that is not a sequence header came: the FLV header is decided
    at_risk: int = 0  # highest seq a limit was exceeded for
    open_on: tuple[int, int] | None = None  # (link, sid) at the edge
    unassigned_since: float | None = None
    end_by: float | None = None  # global time its edge must have ended it by
    ended: bool = False
    exempt: bool = False  # its edge crashed: buffered tags were lost with the process


class Checker:
    """Checks every output as it comes out; :meth:`periodic` and :meth:`final` the timed ones."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.streams: dict[str, _Ledger] = {}
        self.conn_uid: dict[int, str] = {}
        self.link_sids: dict[int, dict[int, str]] = {}
        self.edge_links: dict[str, dict[int, None]] = {}  # edge -> links up at the edge
        self.edge_live: dict[str, dict[str, None]] = {}  # edge -> uids not ended yet
        self.edge_all: dict[str, list[str]] = {}  # edge -> every uid it had
        self.expect: dict[tuple[str, str], int] = {}  # (consumer, uid) -> next seq
        self.reopened: dict[tuple[str, str], None] = {}  # opened again since its last tags
        self.fresh: dict[tuple[str, str], bool] = {}  # first Open at a consumer carried a header
        self.replayed = 0  # tags delivered by a second consumer
        self.replays: dict[tuple[str, str], int] = {}  # (consumer, uid) -> tags it got again
        self.max_replay = 0  # the most of them one consumer got of one stream
        self.tags = 0
        self.max_tag = 0

    # --- publishers and edges ---------------------------------------------------------

    def accepted(self, edge: str, conn: int, uid: str, name: str) -> None:
        self.conn_uid[conn] = uid
        ledger = self.streams.get(uid)
        if ledger is None:
            ledger = self.streams[uid] = _Ledger(uid, edge, name)
            self.edge_live.setdefault(edge, {})[uid] = None
            self.edge_all.setdefault(edge, []).append(uid)
        ledger.end_by = None

    def detached(self, conn: int, now: float) -> None:
        """The publisher left (unpublished or dropped): the stream must end within its grace."""
        uid = self.conn_uid.pop(conn, None)
        if uid is not None:
            ledger = self.streams[uid]
            ledger.end_by = now + self.limits.reconnect_grace + self.limits.buffer_seconds + END_SLACK

    def pushed(self, conn: int, body: bytes, edge_now: float) -> bool:
        """A tag the edge core will number next; False if ``conn`` is not (or no longer) attached."""
        uid = self.conn_uid.get(conn)
        if uid is None:
            return False
        ledger = self.streams[uid]
        size = _TAG_HEADER + len(body)
        ledger.bodies.append(body)
        ledger.times.append(edge_now)
        ledger.prefix.append(ledger.prefix[-1] + size)
        ledger.delivered.append(0)
        self.tags += 1
        self.max_tag = max(self.max_tag, size)
        top = len(ledger.bodies)
        if _is_init(body):
            ledger.first_init = ledger.first_init or top
        else:
            ledger.media = True
        if ledger.prefix[top] - ledger.prefix[ledger.acked] > self.limits.buffer_bytes:
            ledger.at_risk = top - 1
        return True

    def limit_breached(self, edge: str, limit: str) -> None:
        """The edge's total budget overflowed: any of its streams may lose its oldest tags."""
        if limit == "max_buffered_total":
            for ledger in self.streams.values():
                if ledger.edge == edge:
                    ledger.at_risk = len(ledger.bodies)

    def edge_crashed(self, edge: str) -> None:
        """The process is gone with every tag it held, ended streams' tails included."""
        self.edge_live.pop(edge, None)
        for uid in self.edge_all.pop(edge, []):
            self.streams[uid].exempt = True
        for link in self.edge_links.pop(edge, {}):
            self.link_sids.pop(link, None)

    def link_up(self, edge: str, link: int) -> None:
        self.edge_links.setdefault(edge, {})[link] = None
        self.link_sids[link] = {}

    def link_down(self, edge: str, link: int) -> None:
        self.edge_links.get(edge, {}).pop(link, None)
        for uid in self.link_sids.pop(link, {}).values():
            ledger = self.streams[uid]
            if ledger.open_on is not None and ledger.open_on[0] == link:
                ledger.open_on = None

    def edge_sent(self, edge: str, link: int, frames: tuple[object, ...], edge_now: float) -> None:
        sids = self.link_sids.get(link)
        if sids is None:
            raise Violation("send on a dead link", f"{edge} sent {len(frames)} frames on link {link}")
        for frame in frames:
            if isinstance(frame, Open):
                self._opened(edge, link, frame)
                sids[frame.sid] = frame.uid
                continue
            uid = sids.get(getattr(frame, "sid", -1))
            if uid is None:
                raise Violation("frame for an unknown sid", f"{frame!r} on link {link}")
            ledger = self.streams[uid]
            if isinstance(frame, Data):
                self._data_sent(ledger, frame)
            elif isinstance(frame, Gap):
                self._gap(ledger, frame, edge_now)

    def _opened(self, edge: str, link: int, frame: Open) -> None:
        ledger = self.streams.get(frame.uid)
        if ledger is None:
            raise Violation("open of an unknown stream", repr(frame))
        if ledger.open_on is not None and ledger.open_on[0] != link:
            raise Violation(
                "one stream on two consumers",
                f"{frame.uid} opened on link {link} while on link {ledger.open_on[0]}",
            )
        ledger.open_on = (link, frame.sid)
        ledger.unassigned_since = None
        # The edge starts after what it counts as done: its acks, or the resume point the
        # consumer's Hello named (delivered there, its ack lost with the old link).
        ledger.acked = max(ledger.acked, min(frame.seq - 1, len(ledger.bodies)))

    def _data_sent(self, ledger: _Ledger, frame: Data) -> None:
        if frame.seq <= ledger.acked:
            raise Violation("acked tag sent again", f"{ledger.uid} seq {frame.seq}, acked {ledger.acked}")
        self._same_tags(ledger, frame.seq, frame.tags)

    def _same_tags(self, ledger: _Ledger, seq: int, tags: tuple[bytes, ...]) -> None:
        for i, tag in enumerate(tags):
            s = seq + i
            if s > len(ledger.bodies) or tag[_TAG_HEADER:] != ledger.bodies[s - 1]:
                raise Violation("wrong tag", f"{ledger.uid} seq {s} is not the tag pushed as seq {s}")

    def _gap(self, ledger: _Ledger, gap: Gap, edge_now: float) -> None:
        first = gap.seq - gap.tags
        if gap.tags <= 0 or first < 1:
            raise Violation("gap without a size", f"{ledger.uid} {gap!r}")
        for s in range(max(first, ledger.acked + 1), gap.seq):
            old = edge_now - ledger.times[s - 1] >= self.limits.buffer_seconds - 1e-6
            if s > ledger.at_risk and not old:
                raise Violation(
                    "gap where no limit was exceeded",
                    f"{ledger.uid} seq {s} in {gap!r}: {edge_now - ledger.times[s - 1]:.3f} s old, "
                    f"limits exceeded up to seq {ledger.at_risk}",
                )
        ledger.gapped.append((first, gap.seq - 1))

    def gap_reported(self, uid: str, gap: Gap, edge_now: float) -> None:
        self._gap(self.streams[uid], gap, edge_now)

    def stream_ended(self, edge: str, uid: str) -> None:
        """The edge ended the stream (its tail may still be flushing: :meth:`final` checks it)."""
        ledger = self.streams[uid]
        ledger.ended = True
        ledger.end_by = None
        self.edge_live.get(edge, {}).pop(uid, None)

    def edge_got(self, link: int, frame: object) -> None:
        """A frame reached the edge core (acks raise what the edge may free)."""
        if not isinstance(frame, Ack):
            return
        uid = self.link_sids.get(link, {}).get(frame.sid)
        if uid is None:
            return
        ledger = self.streams[uid]
        if ledger.open_on == (link, frame.sid) and frame.seq > ledger.acked:
            ledger.acked = min(frame.seq, len(ledger.bodies))

    def memory(self, edge: str, largest: int, total: int) -> None:
        if largest > self.limits.buffer_bytes + self.max_tag:
            raise Violation("buffer over its limit", f"{edge}: a stream holds {largest} bytes")
        if total > self.limits.max_buffered_total + self.max_tag + TAG_OVERHEAD:
            raise Violation("buffers over their total", f"{edge}: {total} bytes")

    # --- consumers --------------------------------------------------------------------

    def app_tags(self, consumer: str, uid: str, seq: int, tags: tuple[bytes, ...]) -> None:
        """A core handed tags to its app: exactly once and in order within one consumer."""
        key = (consumer, uid)
        expected = self.expect.get(key)
        if key in self.reopened and expected is not None and expected < seq <= self.streams[uid].acked + 1:
            expected = seq  # it came back after another consumer delivered and acked the middle
        self.reopened.pop(key, None)
        if expected is not None and seq > expected:
            raise Violation(
                "seq jump without a gap report", f"{consumer} {uid}: expected seq {expected}, got {seq}"
            )
        if expected is not None and seq < expected:
            raise Violation("duplicate within one consumer", f"{consumer} {uid}: seq {seq} again")
        ledger = self.streams[uid]
        if expected is None and 0 < ledger.first_init < seq and not self.fresh.get(key, False):
            raise Violation(
                "init tags not replayed on resume",
                f"{consumer} {uid}: first tag seq {seq}, sequence header at seq {ledger.first_init}",
            )
        self._same_tags(ledger, seq, tags)
        self.expect[key] = seq + len(tags)

    def app_opened(self, consumer: str, uid: str, init: tuple[bytes, ...]) -> None:
        key = (consumer, uid)
        if key in self.expect:
            self.reopened[key] = None
        else:  # a fresh decoder: it needs the sequence header before any tag after it
            self.fresh[key] = any(_is_init(tag[_TAG_HEADER:]) for tag in init)

    def app_gap(self, consumer: str, uid: str, gap: Gap) -> None:
        key = (consumer, uid)
        expected = self.expect.get(key)
        if key in self.reopened and expected is not None:
            expected = max(expected, min(gap.seq - gap.tags, self.streams[uid].acked + 1))
        self.reopened.pop(key, None)
        if expected is not None and gap.seq - gap.tags > expected:
            raise Violation("gap under-reported", f"{consumer} {uid}: {gap!r}, expected seq {expected}")
        self.expect[key] = gap.seq

    def delivered(self, consumer: str, uid: str, seq: int, count: int) -> None:
        """The app's pipeline finished ``count`` tags from ``seq``: across consumers at least once."""
        done = self.streams[uid].delivered
        again = 0
        for s in range(seq - 1, seq - 1 + count):
            if done[s]:
                again += 1
            done[s] = min(done[s] + 1, 255)
        if again:  # another consumer had them: an unacked tail replayed after a move
            key = (consumer, uid)
            self.replays[key] = self.replays.get(key, 0) + again
            self.replayed += again
            self.max_replay = max(self.max_replay, self.replays[key])

    # --- timed ------------------------------------------------------------------------

    def periodic(self, now: float, consumers: dict[str, list[tuple[str, ...]]]) -> None:
        """Every stream ends or is assigned within its grace.

        ``consumers``: per edge, the Hello patterns of each live link to a serving app.
        """
        for edge, uids in self.edge_live.items():
            links = consumers.get(edge, [])
            for uid in uids:
                ledger = self.streams[uid]
                can_assign = any(_wants(patterns, ledger.name) for patterns in links)
                if ledger.end_by is not None and now > ledger.end_by:
                    raise Violation("stream not ended within its grace", f"{uid} still at {edge}")
                # Until its first media tag an edge may hold the Open back (audio, video or both?).
                if ledger.open_on is not None or not can_assign or not ledger.media:
                    ledger.unassigned_since = None
                elif ledger.unassigned_since is None:
                    ledger.unassigned_since = now
                elif now - ledger.unassigned_since > ASSIGN_GRACE:
                    raise Violation(
                        "stream not assigned within its grace", f"{uid} on no link of {edge} with a consumer"
                    )

    def final(self) -> None:
        """After the quiet end: every tag delivered or reported lost, every stream gone."""
        for ledger in self.streams.values():
            if ledger.exempt:
                continue
            if not ledger.ended:
                raise Violation("stream never ended", ledger.uid)
            missing = _missing(ledger)
            if missing:
                raise Violation(
                    "tag lost", f"{ledger.uid} seq {missing[0]} neither delivered nor reported in a gap"
                )

    def lost(self) -> int:
        """Tags neither delivered nor in a reported gap (scale's ``lost_tags``), exempt streams included."""
        return sum(len(_missing(ledger)) for ledger in self.streams.values())


def _missing(ledger: _Ledger) -> list[int]:
    """Seqs of ``ledger`` no consumer delivered and no gap reported."""
    gapped = bytearray(len(ledger.bodies) + 1)
    for first, last in ledger.gapped:
        gapped[first : last + 1] = b"\x01" * (last - first + 1)
    return [s for s in range(1, len(ledger.bodies) + 1) if not ledger.delivered[s - 1] and not gapped[s]]


def _wants(patterns: tuple[str, ...], name: str) -> bool:
    """docs/TOPOLOGY.md: a consumer takes the names its patterns match; none means all."""
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _is_init(body: bytes) -> bool:
    return flv.sequence_key(flv.AUDIO, body) is not None
