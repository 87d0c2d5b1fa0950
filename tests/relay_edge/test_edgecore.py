"""The edge's sans-I/O link core, driven directly with a fake clock: no sockets, no sleeping."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from relay_edge import flv, wire
from relay_edge.edgecore import (
    MESSAGE_TARGET,
    TAIL_RECHECK,
    AcceptPublish,
    CloseLink,
    ClosePublisher,
    Count,
    Drain,
    Drained,
    EdgeCore,
    FrameReceived,
    GapReported,
    LimitBreached,
    LinkDown,
    LinkDue,
    LinkUp,
    LinkWritable,
    Log,
    Media,
    PublisherGone,
    PublishVerified,
    RejectPublish,
    SendFrames,
    StreamEnded,
    Unpublished,
)
from relay_edge.edgestream import (
    END,
    FINISH,
    FINISHING,
    GONE,
    LIVE,
    ORPHANED,
    PUBLISHER_LOST,
    TAKEOVER,
    TRANSITIONS,
    EdgeStream,
    Publisher,
    next_state,
)
from relay_edge.errors import LocalProtocolError
from relay_edge.limits import DEFAULT_LIMITS, Limits

AAC_CONFIG = b"\xaf\x00\x12\x10"
AVC_CONFIG = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f"
PUB = Publisher("10.0.0.1:5000", "live", "FMLE/3.0")
PUB2 = Publisher("10.0.0.2:6000", "live", "obs")


def audio(i: int, size: int = 100) -> bytes:
    """An AAC raw frame body of ``size`` bytes, distinct per ``i``."""
    return b"\xaf\x01" + bytes([i % 256]) * (size - 2)


def hello(instance: str = "app-1", *patterns: str, streams: tuple[wire.ResumePoint, ...] = ()) -> wire.Hello:
    return wire.Hello(version=1, role="client", instance=instance, streams=streams, patterns=patterns)


class Harness:
    """An EdgeCore, a fake clock and a record of everything it said."""

    def __init__(self, **limits: Any) -> None:
        self.limits: Limits = replace(DEFAULT_LIMITS, **limits)
        self.core = EdgeCore("edge1", "fra", self.limits)
        self.now = 100.0
        self.seen: list[Any] = []

    def feed(self, event: Any) -> list[Any]:
        self.core.handle(event, self.now)
        out = self.core.outputs()
        self.seen.extend(out)
        return out

    def publish(
        self, conn: int, name: str = "cam", publisher: Publisher = PUB, rtmp_id: int = 1
    ) -> list[Any]:
        return self.feed(PublishVerified(conn, rtmp_id, name, "live", publisher))

    def media(self, conn: int, n: int, *, first: int = 0, size: int = 100, rtmp_id: int = 1) -> None:
        for i in range(first, first + n):
            self.feed(Media(conn, rtmp_id, flv.AUDIO, i * 23, audio(i, size)))

    def pull(self, link: int) -> list[wire.Frame]:
        """Everything the link would send now, message by message, decoded."""
        frames: list[wire.Frame] = []
        for _ in range(1000):
            out = self.feed(LinkWritable(link))
            for o in out:
                if isinstance(o, SendFrames):
                    assert o.link_id == link
                    frames += wire.decode_message(b"".join(o.frames), self.limits)
            if not any(isinstance(o, LinkDue) and o.link_id == link for o in out):
                return frames
        raise AssertionError("the link never ran dry")

    def tick(self, at: float) -> list[Any]:
        self.now = at
        self.core.tick(at)
        out = self.core.outputs()
        self.seen.extend(out)
        return out


def data_seqs(frames: list[wire.Frame]) -> list[int]:
    """Sequence numbers of every tag in the Data frames, in order."""
    return [f.seq + i for f in frames if isinstance(f, wire.Data) for i in range(len(f.tags))]


def tag_timestamp(tag: bytes) -> int:
    """The timestamp in an encoded FLV tag's header (24 bits plus the extension byte)."""
    return int.from_bytes(tag[4:7], "big") | tag[7] << 24


def logs(outputs: list[Any]) -> list[tuple[str, int, str]]:
    """The log lines among ``outputs``, formatted as the pump would log them."""
    return [(o.logger, o.level, o.message) for o in outputs if isinstance(o, Log)]


def only(frames: list[Any], kind: type) -> list[Any]:
    return [f for f in frames if isinstance(f, kind)]


# --- lifecycle table ---------------------------------------------------------------


def test_lifecycle_table_allows_the_documented_transitions() -> None:
    stream = EdgeStream("u", "cam", DEFAULT_LIMITS)
    assert stream.state == LIVE
    for event, state in [(PUBLISHER_LOST, ORPHANED), (TAKEOVER, LIVE), (END, FINISHING), (FINISH, GONE)]:
        stream.transition(event)
        assert stream.state == state
    assert stream.ended


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (s, e)
        for s in (LIVE, ORPHANED, FINISHING, GONE)
        for e in (TAKEOVER, PUBLISHER_LOST, END, FINISH)
        if (s, e) not in TRANSITIONS
    ],
)
def test_lifecycle_table_rejects_every_other_transition(state: str, event: str) -> None:
    with pytest.raises(LocalProtocolError, match=f"{event!r} has no transition from state {state!r}"):
        next_state(state, event)


def test_unknown_input_is_a_local_error() -> None:
    # The compiled core checks the argument's type at the call: a TypeError, before any state changes.
    with pytest.raises((LocalProtocolError, TypeError)):
        EdgeCore("e").handle(object(), 0.0)  # type: ignore[arg-type]


# --- open, credit, batching ----------------------------------------------------------


def test_publish_then_link_opens_the_stream_and_sends_every_tag() -> None:
    h = Harness()
    out = h.publish(1)
    assert only(out, AcceptPublish) == [AcceptPublish(1, 1, "edge1-1")]
    assert Count("streams") in out
    assert ("relay_edge", logging.INFO, "publish cam from 10.0.0.1:5000 (app 'live')") in logs(out)
    h.media(1, 5)
    assert h.feed(LinkUp(7, hello(), "app:443")) == [LinkDue(7)]
    frames = h.pull(7)
    (opened,) = only(frames, wire.Open)
    assert (opened.sid, opened.uid, opened.name, opened.seq, opened.resumed, opened.edge) == (
        1,
        "edge1-1",
        "cam",
        1,
        False,
        "fra",
    )
    assert opened.publisher == PUB.to_wire()
    assert data_seqs(frames) == [1, 2, 3, 4, 5]
    assert ("relay_edge.link", logging.INFO, "link app:443: open cam (sid 1, from seq 1)") in logs(h.seen)
    # One LinkDue per batch of media, not per tag, until the pump pulls.
    out = [o for i in range(5, 10) for o in h.feed(Media(1, 1, flv.AUDIO, i * 23, audio(i)))]
    assert out == [LinkDue(7)]
    assert data_seqs(h.pull(7)) == [6, 7, 8, 9, 10]


def test_credit_bounds_what_is_in_flight_until_acks_return_it() -> None:
    h = Harness(credit_bytes=1000, credit_max_bytes=1000)  # a window that does not grow
    h.publish(1)
    h.feed(LinkUp(1, hello()))
    h.media(1, 10, size=300)  # 311 bytes a tag encoded: three fit in 1000 bytes of credit
    assert data_seqs(h.pull(1)) == [1, 2, 3]
    assert data_seqs(h.pull(1)) == []  # nothing more without an ack
    assert h.feed(FrameReceived(1, wire.Ack(sid=1, seq=2))) == [LinkDue(1)]
    assert data_seqs(h.pull(1)) == [4, 5]
    h.feed(FrameReceived(1, wire.Ack(sid=1, seq=5)))
    assert data_seqs(h.pull(1)) == [6, 7, 8]


def test_a_big_backlog_leaves_in_messages_that_stop_growing_past_the_target() -> None:
    h = Harness(credit_bytes=8 * 1024 * 1024)
    for conn in range(1, 7):
        h.publish(conn, f"cam{conn}")
        h.media(conn, 100, size=1000)  # 101,100 bytes a stream: 606,600 due at once
    h.feed(LinkUp(1, hello()))
    sends: list[SendFrames] = []
    for _ in range(10):
        out = h.feed(LinkWritable(1))
        sends += only(out, SendFrames)
        if LinkDue(1) not in out:
            break
    # A message closes with the stream that took it past MESSAGE_TARGET: three streams each.
    assert [len(only(wire.decode_message(b"".join(s.frames), h.limits), wire.Open)) for s in sends] == [3, 3]
    assert all(MESSAGE_TARGET <= sum(map(len, s.frames)) < MESSAGE_TARGET + 101_100 for s in sends)
    frames = [f for s in sends for f in wire.decode_message(b"".join(s.frames), h.limits)]
    assert len(data_seqs(frames)) == 600


# --- resume ---------------------------------------------------------------------------


def test_resume_after_link_drop_starts_after_the_ack_with_init_tags_replayed() -> None:
    h = Harness()
    h.publish(1)
    h.feed(Media(1, 1, flv.AUDIO, 0, AAC_CONFIG))
    h.media(1, 5, first=1)
    h.feed(LinkUp(1, hello("app-1")))
    assert data_seqs(h.pull(1)) == [1, 2, 3, 4, 5, 6]
    h.feed(FrameReceived(1, wire.Ack(sid=1, seq=3)))
    h.feed(LinkDown(1))
    h.media(1, 2, first=6)
    out = h.feed(LinkUp(2, hello("app-2")))
    assert Count("resumes") in out
    frames = h.pull(2)
    (opened,) = only(frames, wire.Open)
    assert (opened.seq, opened.resumed) == (4, True)
    assert opened.init == (flv.Tag(flv.AUDIO, 0, AAC_CONFIG).encode(),)
    assert data_seqs(frames) == [4, 5, 6, 7, 8]  # the unacked tail again, then the new tags


def test_resume_point_in_the_apps_hello_skips_what_it_already_delivered() -> None:
    h = Harness()
    h.publish(1)
    h.media(1, 6)
    h.feed(LinkUp(1, hello()))
    h.pull(1)
    h.feed(LinkDown(1))  # the app delivered up to 5, but its ack was lost with the link
    h.feed(LinkUp(2, hello(streams=(wire.ResumePoint("edge1-1", 5),))))
    frames = h.pull(2)
    (opened,) = only(frames, wire.Open)
    assert (opened.seq, opened.resumed) == (6, True)
    assert data_seqs(frames) == [6]


def test_hello_resume_points_name_every_stream_held() -> None:
    h = Harness()
    h.publish(1, "a")
    h.publish(2, "b")
    h.media(2, 3)
    assert h.core.resume_points() == (wire.ResumePoint("edge1-1", 0), wire.ResumePoint("edge1-2", 3))


# --- takeover and grace ---------------------------------------------------------------


def test_takeover_closes_the_old_publisher_and_continues_the_same_stream() -> None:
    h = Harness()
    h.publish(1)
    h.media(1, 3)
    h.feed(LinkUp(1, hello()))
    h.pull(1)
    out = h.publish(2, publisher=PUB2)
    assert only(out, ClosePublisher) == [ClosePublisher(1)]
    assert only(out, AcceptPublish) == [AcceptPublish(2, 1, "edge1-1")]
    assert ("relay_edge", logging.INFO, "publisher of cam reconnected from 10.0.0.2:6000") in logs(out)
    h.media(1, 2, first=50)  # the old connection's last bytes: ignored
    h.media(2, 2)
    frames = h.pull(1)
    assert only(frames, wire.Open) == []  # the same stream, the same sid
    (data,) = only(frames, wire.Data)
    assert (data.sid, data.seq, len(data.tags), data.publisher) == (1, 4, 2, PUB2.to_wire())
    # The new publisher's clock restarted at 0: its tags come after the old publisher's last.
    assert tag_timestamp(data.tags[0]) > 2 * 23


def test_a_drain_after_a_takeover_closes_only_the_new_publisher() -> None:
    """Found by the simulation: the old connection, already closed at the takeover, was closed
    again by a Drain."""
    h = Harness()
    h.publish(1)
    h.publish(2, publisher=PUB2)
    assert only(h.feed(Drain(grace=4.0)), ClosePublisher) == [ClosePublisher(2)]


def test_grace_expiry_ends_an_orphaned_stream_and_sends_its_close() -> None:
    h = Harness(reconnect_grace=30.0)
    h.publish(1)
    h.media(1, 2)
    h.feed(LinkUp(1, hello()))
    h.pull(1)
    out = h.feed(PublisherGone(1))
    assert ("relay_edge", logging.INFO, "publisher of cam disconnected; waiting 30 s for it") in logs(out)
    assert h.core.next_deadline() == 130.0
    assert h.tick(129.9) == []
    out = h.tick(130.0)
    assert only(out, StreamEnded) == [StreamEnded("edge1-1", "cam", "publisher_lost", "publisher: gone")]
    (close,) = only(h.pull(1), wire.Close)
    assert (close.sid, close.code) == (1, "publisher_lost")
    h.feed(FrameReceived(1, wire.Ack(sid=1, seq=2)))
    assert not h.core.finishing and h.core.streams == {}


def test_a_takeover_within_grace_cancels_the_expiry() -> None:
    h = Harness(reconnect_grace=30.0)
    h.publish(1)
    h.feed(PublisherGone(1))
    h.now = 110.0
    h.publish(2, publisher=PUB2)
    assert h.tick(131.0) == []
    assert h.core.streams["cam"].state == LIVE


# --- tails, gaps ------------------------------------------------------------------------


def test_tail_on_a_link_that_never_acks_expires_with_gap_then_close() -> None:
    h = Harness(credit_bytes=1000, buffer_seconds=120.0)
    h.publish(1)
    h.feed(LinkUp(1, hello()))
    h.media(1, 10, size=300)
    assert data_seqs(h.pull(1)) == [1, 2, 3]  # then credit runs out: the app never acks
    h.feed(Unpublished(1, 1, "FCUnpublish"))
    assert h.core.next_deadline() == 220.0
    out = h.tick(220.0)
    assert ("relay_edge", logging.WARNING, "cam ended 120 s ago; dropping its 10 unacked tags") in logs(out)
    frames = h.pull(1)
    gap, close = frames
    assert isinstance(gap, wire.Gap) and (gap.seq, gap.tags, gap.bytes) == (11, 7, 7 * 311)
    assert isinstance(close, wire.Close) and close.code == "unpublished"
    assert only(h.seen, GapReported)[0].gap == gap
    assert h.core.finishing  # still waiting, a little, for the Close to leave
    h.tick(220.0 + TAIL_RECHECK)
    assert not h.core.finishing and h.core.budget.used == 0


def test_buffer_overflow_reports_a_gap_of_exactly_what_was_dropped() -> None:
    h = Harness(buffer_bytes=10 * 311)
    h.publish(1)
    h.media(1, 25, size=300)  # no link: 15 oldest tags dropped, 10 kept
    h.feed(LinkUp(1, hello()))
    frames = h.pull(1)
    (gap,) = only(frames, wire.Gap)
    assert (gap.sid, gap.seq, gap.tags, gap.bytes, gap.ms) == (1, 16, 15, 15 * 311, 14 * 23)
    assert data_seqs(frames) == list(range(16, 26))
    assert (
        "relay_edge",
        logging.WARNING,
        "gap in cam: dropped 15 tags (4665 bytes, 322 ms) before seq 16",
    ) in logs(h.seen)


def test_app_reject_refuses_the_publisher_and_forgets_the_stream() -> None:
    h = Harness()
    h.publish(1)
    h.media(1, 2)
    h.feed(LinkUp(1, hello()))
    h.pull(1)
    out = h.feed(FrameReceived(1, wire.Reject(sid=1, code="forbidden", reason="no such room")))
    assert only(out, RejectPublish) == [RejectPublish(1, 1, "NetStream.Publish.BadName", "no such room")]
    assert h.core.streams == {} and not h.core.finishing and h.core.budget.used == 0


# --- assignment ---------------------------------------------------------------------------


def test_two_links_share_the_streams_and_a_stream_returns_to_its_consumer() -> None:
    h = Harness()
    h.feed(LinkUp(1, hello("app-a")))
    h.feed(LinkUp(2, hello("app-b")))
    for conn in range(1, 5):
        h.publish(conn, f"cam{conn}")
        h.media(conn, 1)
    opened = {1: only(h.pull(1), wire.Open), 2: only(h.pull(2), wire.Open)}
    assert sorted(len(v) for v in opened.values()) == [2, 2]
    names_on_2 = {o.name for o in opened[2]}
    h.feed(LinkDown(2))
    assert {o.name for o in only(h.pull(1), wire.Open)} == names_on_2  # failover
    h.feed(LinkUp(3, hello("app-b")))  # app-b back: its streams are already on app-a, they stay
    assert only(h.pull(3), wire.Open) == []


def test_pattern_subscribers_come_before_catch_alls() -> None:
    h = Harness()
    h.feed(LinkUp(1, hello("all")))
    h.feed(LinkUp(2, hello("rooms", "room-*")))
    for conn, name in enumerate(["room-1", "room-2", "lobby"], start=1):
        h.publish(conn, name)
        h.media(conn, 1)
    assert {o.name for o in only(h.pull(2), wire.Open)} == {"room-1", "room-2"}
    assert {o.name for o in only(h.pull(1), wire.Open)} == {"lobby"}


# --- admission, drain ------------------------------------------------------------------------


def test_admission_caps_streams_counting_unacked_tails() -> None:
    h = Harness(max_streams=2, max_streams_per_key=1)
    h.publish(1, "a")
    h.feed(Unpublished(1, 1, "FCUnpublish"))  # "a" is finishing: its tail was never taken
    out = h.publish(2, "a")
    assert only(out, RejectPublish) == [
        RejectPublish(2, 1, "NetStream.Publish.BadName", "max_streams_per_key reached")
    ]
    assert LimitBreached("max_streams_per_key") in out
    h.publish(3, "b")
    out = h.publish(4, "c")
    assert only(out, RejectPublish) == [
        RejectPublish(4, 1, "NetStream.Publish.BadName", "max_streams reached")
    ]
    assert (
        "relay_edge",
        logging.WARNING,
        "refused publish of 'c' from 10.0.0.1:5000: max_streams reached",
    ) in logs(out)


def test_drain_ends_every_stream_and_closes_links_once_tails_are_acked() -> None:
    h = Harness()
    h.publish(1)
    h.media(1, 3)
    h.feed(LinkUp(1, hello()))
    h.pull(1)
    out = h.feed(Drain(grace=4.0))
    assert only(out, ClosePublisher) == [ClosePublisher(1)]
    assert only(out, Drained) == []
    assert only(h.pull(1), wire.Close) == [
        wire.Close(sid=1, reason="edge shutting down", code="publisher_lost")
    ]
    out = h.feed(FrameReceived(1, wire.Ack(sid=1, seq=3)))
    assert only(out, Drained) == [Drained(0)]
    assert only(out, CloseLink) == [CloseLink(1, "shutdown", "edge shutting down")]
    assert only(h.publish(2), RejectPublish) != []


def test_drain_gives_up_after_its_grace_and_counts_the_unacked() -> None:
    h = Harness()
    h.publish(1)
    h.media(1, 3)
    h.feed(LinkUp(1, hello()))
    h.pull(1)
    h.feed(Drain(grace=4.0))
    assert h.core.next_deadline() == 104.0
    out = h.tick(104.0)
    assert only(out, Drained) == [Drained(3)]
    assert ("relay_edge", logging.WARNING, "shutting down with 3 tags not acked by the app") in logs(out)


# --- the pump's direct ack entry -------------------------------------------------------


def _acked_run(direct: bool) -> list[Any]:
    """Credit, a drain and a finished tail, every ack through one entry or the other."""
    h = Harness(credit_bytes=1000)
    h.publish(1)
    h.publish(2, "mic")
    h.feed(LinkUp(1, hello()))
    h.media(1, 6, size=300)
    h.media(2, 2, size=300)
    h.pull(1)

    def ack(*pairs: tuple[int, int]) -> None:
        if direct:
            h.core.acks(1, list(pairs))
            h.seen.extend(h.core.outputs())
        else:
            for sid, seq in pairs:
                h.feed(FrameReceived(1, wire.Ack(sid=sid, seq=seq)))

    ack((1, 2), (2, 1), (9, 4))  # sid 9 is unknown: ignored
    h.pull(1)
    h.feed(Drain(grace=4.0))
    h.pull(1)
    ack((1, 5), (2, 2))  # credit back: the last tag and the Close go out
    h.pull(1)
    ack((1, 6))
    return h.seen


def test_direct_acks_do_what_ack_frames_do() -> None:
    seen = _acked_run(direct=True)
    assert seen == _acked_run(direct=False)
    assert only(seen, Drained) == [Drained(0)]  # the acks finished both tails
    assert len(only(seen, CloseLink)) == 1


def test_direct_acks_on_an_unknown_link_are_ignored() -> None:
    h = Harness()
    h.publish(1)
    h.core.acks(7, [(1, 1)])
    assert h.core.outputs() == []
