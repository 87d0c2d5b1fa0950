"""The outbox: sequence numbers, acks, credit, rewind/resume, overflow gaps. No I/O, clock passed in."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay_edge import flv
from relay_edge.frames import Gap
from relay_edge.limits import DEFAULT_LIMITS
from relay_edge.outbox import Outbox

AAC_CONFIG = b"\xaf\x00\x12\x10"
AVC_CONFIG = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f"
METADATA = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"

SID = 7  # the stream's sid on the link: outbox.take() puts it in the Gap frame


def frame(i: int, size: int = 100) -> bytes:
    """An AAC raw frame body of ``size`` bytes, distinct per ``i``."""
    return b"\xaf\x01" + bytes([i % 256]) * (size - 2)


def enc(tag_type: int, ts: int, body: bytes) -> bytes:
    return flv.Tag(tag_type, ts, body).encode()


def box(**limits: float) -> Outbox:
    return Outbox(replace(DEFAULT_LIMITS, **limits))


def fill(ob: Outbox, n: int, size: int = 100, now: float = 0.0, step_ms: int = 23) -> None:
    for i in range(n):
        ob.push(flv.AUDIO, i * step_ms, frame(i, size), now)


def test_sequence_numbers_and_take_in_order() -> None:
    ob = box()
    assert [ob.push(flv.AUDIO, i, frame(i), 0.0) for i in range(5)] == [1, 2, 3, 4, 5]
    gap, seq, tags = ob.take(SID)
    assert (gap, seq) == (None, 1)
    assert tags == [enc(flv.AUDIO, i, frame(i)) for i in range(5)]
    assert not ob.pending
    assert ob.take(SID) == (None, 6, [])


def test_ack_frees_buffer_and_credit() -> None:
    ob = box()
    fill(ob, 4)
    ob.take(SID)
    assert ob.inflight_bytes == ob.buffered_bytes == 4 * 111
    ob.ack(2)
    assert (ob.acked, ob.buffered_tags, ob.inflight_bytes) == (2, 2, 2 * 111)
    ob.ack(1)  # stale ack: no effect
    assert ob.acked == 2
    ob.ack(99)  # beyond what was sent: clamped
    assert (ob.acked, ob.buffered_tags, ob.inflight_bytes) == (4, 0, 0)


def test_behind_means_unsent_bytes_with_credit_to_spare() -> None:
    ob = box(credit_bytes=1110)  # ten 111-byte tags in flight
    fill(ob, 25)
    assert ob.behind(2000)  # 2775 unsent, nothing in flight: the link is not keeping up
    assert not ob.behind(2775)
    ob.take(SID)  # ten go out: the window is full
    assert ob.buffered_bytes - ob.inflight_bytes == 15 * 111
    assert not ob.behind(1000)  # unsent, but waiting on the app's acks: not the link's fault
    ob.ack(5)
    assert ob.behind(1000)  # credit is back and 1665 bytes still wait


CREDIT_CASES = [
    # (credit_bytes, tag size, tags pushed, tags taken first)
    pytest.param(1000, 100, 20, 9, id="window of nine 111-byte tags"),
    pytest.param(111, 100, 3, 1, id="exactly one tag"),
    pytest.param(50, 100, 3, 1, id="tag larger than the window still moves alone"),
    pytest.param(10**6, 100, 30, 30, id="everything fits"),
]


@pytest.mark.parametrize(("credit", "size", "pushed", "taken"), CREDIT_CASES)
def test_credit_window(credit: int, size: int, pushed: int, taken: int) -> None:
    ob = box(credit_bytes=credit, credit_max_bytes=credit)  # a window that does not grow
    fill(ob, pushed, size)
    _, seq, tags = ob.take(SID)
    assert (seq, len(tags)) == (1, taken)
    assert ob.take(SID)[2] == [] or taken == pushed  # nothing more until an ack
    ob.ack(taken)
    _, seq, more = ob.take(SID)
    assert seq == taken + 1
    assert len(more) == min(taken, pushed - taken)


def test_a_full_window_grows_by_each_ack_up_to_credit_max() -> None:
    """Slow start: a window that held tags back grows by what each ack frees, to the cap."""
    ob = box(credit_bytes=2 * 111, credit_max_bytes=5 * 111)
    fill(ob, 40)
    sizes = []
    for _ in range(6):
        _, seq, tags = ob.take(SID)
        sizes.append(len(tags))
        ob.ack(seq + len(tags) - 1)
    assert sizes == [2, 4, 5, 5, 5, 5]
    assert ob.credit == 5 * 111


def test_a_window_that_never_fills_does_not_grow() -> None:
    """Real-time audio under the window: acks return credit, the window stays credit_bytes."""
    ob = box(credit_bytes=10 * 111)
    for _ in range(20):
        fill(ob, 3)
        _, seq, tags = ob.take(SID)
        ob.ack(seq + len(tags) - 1)
    assert ob.credit == 10 * 111


def test_rewind_resends_everything_after_the_last_ack() -> None:
    ob = box()
    fill(ob, 6)
    ob.take(SID)
    ob.ack(3)
    ob.rewind()  # link dropped with 4..6 in flight
    gap, seq, tags = ob.take(SID)
    assert (gap, seq, len(tags)) == (None, 4, 3)
    assert tags[0] == enc(flv.AUDIO, 3 * 23, frame(3))


def test_resume_from_a_client_that_delivered_more_than_we_saw_acked() -> None:
    ob = box()
    fill(ob, 6)
    ob.take(SID)
    ob.ack(2)
    ob.resume_from(5)  # its ack for 3..5 was lost with the link
    assert ob.acked == 5
    gap, seq, tags = ob.take(SID)
    assert (gap, seq, len(tags)) == (None, 6, 1)
    assert ob.inflight_bytes == 111


def test_resume_from_beyond_what_exists_is_clamped() -> None:
    ob = box()
    fill(ob, 3)
    ob.resume_from(1000)
    assert ob.acked == 3 and not ob.pending


def test_overflow_by_bytes_drops_oldest_whole_tags_and_reports_the_gap() -> None:
    ob = box(buffer_bytes=111 * 10)
    fill(ob, 15)  # 5 too many, never sent
    assert (ob.buffered_tags, ob.dropped_tags, ob.dropped_bytes) == (10, 5, 5 * 111)
    gap, seq, tags = ob.take(SID)
    assert gap == Gap(sid=SID, seq=6, tags=5, bytes=5 * 111, ms=4 * 23)
    assert (seq, len(tags)) == (6, 10)
    assert tags[0] == enc(flv.AUDIO, 5 * 23, frame(5))
    assert ob.take(SID)[0] is None  # reported once


def test_overflow_by_seconds() -> None:
    ob = box(buffer_seconds=10.0)
    for i in range(20):
        ob.push(flv.AUDIO, i * 1000, frame(i), now=float(i))
    # At now=19, tags that arrived before t=9 are gone: seq 1..9.
    assert ob.dropped_tags == 9
    gap, seq, _ = ob.take(SID)
    assert gap == Gap(sid=SID, seq=10, tags=9, bytes=9 * 111, ms=8000)
    assert seq == 10


def test_dropping_in_flight_tags_shows_as_a_gap_only_if_the_link_drops() -> None:
    ob = box(buffer_bytes=111 * 5)
    fill(ob, 5)
    ob.take(SID)  # 1..5 in flight
    ob.push(flv.AUDIO, 500, frame(5), 0.0)  # pushes 1 out while in flight
    assert ob.dropped_tags == 1
    assert ob.inflight_bytes == 4 * 111
    # The link survives: the client got 1 anyway and acks it; no gap.
    ob.ack(5)
    gap, seq, tags = ob.take(SID)
    assert (gap, seq, len(tags)) == (None, 6, 1)


def test_in_flight_drop_then_link_loss_reports_a_gap_on_the_next_link() -> None:
    ob = box(buffer_bytes=111 * 5)
    fill(ob, 5)
    ob.take(SID)
    fill(ob, 2)  # drops 1 and 2, which were in flight
    ob.rewind()
    gap, seq, tags = ob.take(SID)
    assert gap == Gap(sid=SID, seq=3, tags=2, bytes=2 * 111, ms=23)
    assert (seq, len(tags)) == (3, 5)


def test_init_keeps_the_latest_metadata_and_codec_configuration() -> None:
    ob = box(buffer_bytes=2000)
    ob.push(flv.SCRIPT, 0, METADATA, 0.0)
    ob.push(flv.VIDEO, 0, AVC_CONFIG, 0.0)
    ob.push(flv.AUDIO, 0, AAC_CONFIG, 0.0)
    fill(ob, 40)  # the configuration tags themselves overflow out of the buffer
    assert ob.dropped_tags > 3
    assert ob.init == {
        "metadata": enc(flv.SCRIPT, 0, METADATA),
        "video": enc(flv.VIDEO, 0, AVC_CONFIG),
        "audio": enc(flv.AUDIO, 0, AAC_CONFIG),
    }
    new_config = b"\xaf\x00\x11\x90"
    ob.push(flv.AUDIO, 5000, new_config, 0.0)
    assert ob.init["audio"] == enc(flv.AUDIO, 5000, new_config)


def test_init_keeps_each_enhanced_track_configuration() -> None:
    """Enhanced RTMP: SequenceStart by FourCC, one slot per multitrack track, nothing else."""
    ob = box()
    opus_start = b"\x90Opus" + b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
    hevc_start = b"\x90hvc1\x01\x01\x60"
    track1_start = b"\x95\x00mp4a\x01\x11\x90"
    ob.push(flv.VIDEO, 0, hevc_start, 0.0)
    ob.push(flv.AUDIO, 0, opus_start, 0.0)
    ob.push(flv.AUDIO, 0, b"\x94Opus\x01\x02\x00\x00\x00\x03", 0.0)  # MultichannelConfig
    ob.push(flv.AUDIO, 0, track1_start, 0.0)
    ob.push(flv.VIDEO, 40, b"\xd4hvc1\x02\x00\x09colorInfo", 0.0)  # Metadata
    ob.push(flv.AUDIO, 20, b"\x95\x01mp4a\x01\x21\x10", 0.0)  # track 1 coded frames
    assert ob.init == {
        "video": enc(flv.VIDEO, 0, hevc_start),
        "audio": enc(flv.AUDIO, 0, opus_start),
        "audio.1": enc(flv.AUDIO, 0, track1_start),
    }


def test_replay_tracks_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """max_replay_tracks: a publisher can't make the edge keep a header for every track id."""
    ob = box(max_replay_tracks=3)
    ob.push(flv.SCRIPT, 0, METADATA, 0.0)
    for track in range(6):
        ob.push(flv.AUDIO, 0, b"\x95\x00Opus" + bytes([track]) + b"OpusHead", 0.0)
    assert list(ob.init) == ["metadata", "audio", "audio.1", "audio.2"]
    renewed = b"\x95\x00Opus\x02OpusHead\x02"
    ob.push(flv.AUDIO, 9, renewed, 0.0)  # a kept track's new header still replaces the old one
    assert ob.init["audio.2"] == enc(flv.AUDIO, 9, renewed)
    assert ob.next_seq == 9  # every tag passed
    assert [r.message for r in caplog.records].count(
        "max_replay_tracks: 3 tracks' sequence starts kept; audio.3 not kept for a resume"
    ) == 1


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("push"), st.integers(1, 400)),
            st.tuples(st.just("take"), st.just(0)),
            st.tuples(st.just("ack"), st.integers(0, 60)),
            st.tuples(st.just("rewind"), st.just(0)),
            st.tuples(st.just("resume"), st.just(0)),
        ),
        max_size=80,
    )
)
def test_every_tag_is_delivered_once_or_reported_as_a_gap(ops: list[tuple[str, int]]) -> None:
    """Across any mix of pushes, takes, acks, link drops and resumes: the receiver sees each sequence
    number once, in order, or inside a gap whose byte count is exactly that of the tags it names;
    bookkeeping never goes negative."""
    ob = box(buffer_bytes=2000, credit_bytes=700)
    delivered = 0  # what a receiver that dedups by seq has seen
    sizes: dict[int, int] = {}
    for op, arg in ops:
        if op == "push":
            sizes[ob.next_seq] = flv.TAG_HEADER_SIZE + 2 + arg
            ob.push(flv.AUDIO, ob.next_seq, b"\xaf\x01" + b"x" * arg, 0.0)
        elif op == "resume":
            ob.resume_from(delivered)  # a new link whose client delivered more than it acked
        elif op == "take":
            gap, seq, tags = ob.take(SID)
            if gap is not None:
                assert gap.seq - gap.tags <= delivered + 1 <= gap.seq
                assert gap.bytes == sum(sizes[s] for s in range(gap.seq - gap.tags, gap.seq))
                delivered = max(delivered, gap.seq - 1)
            if tags:
                assert seq <= delivered + 1
                delivered = max(delivered, seq + len(tags) - 1)
        elif op == "ack":
            ob.ack(min(arg, delivered))
        else:
            ob.rewind()
        assert ob.buffered_bytes >= 0 and ob.inflight_bytes >= 0
        assert ob.inflight_bytes <= ob.buffered_bytes
    # Drain: everything pushed is either delivered or reported.
    ob.rewind()
    while ob.pending:
        gap, seq, tags = ob.take(SID)
        if gap is not None:
            delivered = max(delivered, gap.seq - 1)
        if tags:
            assert seq <= delivered + 1
            delivered = max(delivered, seq + len(tags) - 1)
        ob.ack(delivered)
    assert delivered == ob.next_seq - 1


# --- every state, as a table ----------------------------------------------------------------------
#
# A tag is in one of: buffered and unsent, in flight (sent on the current link, unacked), acked
# (freed), dropped before it was ever sent, dropped after being sent, or reported in a Gap. Each case
# drives the outbox with a script, then takes once more and checks what the link would send and the
# bookkeeping. Tags are 111 bytes encoded (100-byte bodies), 23 ms apart, seq N has timestamp 23*(N-1).
# Script steps: ("push", n[, now]), ("take",), ("ack", seq), ("rewind",), ("resume", seq).

T = 111  # one test tag, encoded

STATE_CASES = [
    # (limits, script, expected final take (gap, first seq, tag count), (acked, buffered tags, in flight))
    pytest.param({}, [], (None, 1, 0), (0, 0, 0), id="empty"),
    pytest.param({}, [("push", 3)], (None, 1, 3), (0, 3, 3 * T), id="buffered, unsent -> sent"),
    pytest.param({}, [("push", 3), ("take",)], (None, 4, 0), (0, 3, 3 * T), id="all in flight: nothing due"),
    pytest.param(
        {"credit_bytes": 2 * T}, [("push", 5), ("take",)], (None, 3, 0), (0, 5, 2 * T), id="credit exhausted"
    ),
    pytest.param(
        {"credit_bytes": 2 * T, "credit_max_bytes": 2 * T},
        [("push", 5), ("take",), ("ack", 1)],
        (None, 3, 1),
        (1, 4, 2 * T),
        id="an ack returns credit",
    ),
    pytest.param(
        {"credit_bytes": 2 * T},
        [("push", 6), ("take",), ("ack", 1)],
        (None, 3, 2),
        (1, 5, 3 * T),
        id="an ack to a full window widens it by what it freed",
    ),
    pytest.param(
        {"credit_bytes": 2 * T},
        [("push", 6), ("take",), ("ack", 1), ("rewind",)],
        (None, 2, 2),
        (1, 5, 2 * T),
        id="a new link starts from credit_bytes again",
    ),
    pytest.param(
        {}, [("push", 4), ("take",), ("ack", 3), ("ack", 2)], (None, 5, 0), (3, 1, T), id="stale ack ignored"
    ),
    pytest.param(
        {}, [("push", 4), ("take",), ("ack", 99)], (None, 5, 0), (4, 0, 0), id="ack beyond sent is clamped"
    ),
    pytest.param(
        {},
        [("push", 4), ("take",), ("ack", 1), ("rewind",)],
        (None, 2, 3),
        (1, 3, 3 * T),
        id="link lost: resend",
    ),
    pytest.param(
        {},
        [("push", 4), ("take",), ("ack", 1), ("resume", 3)],
        (None, 4, 1),
        (3, 1, T),
        id="resume point above the last ack (its ack was lost)",
    ),
    pytest.param(
        {},
        [("push", 4), ("take",), ("ack", 3), ("resume", 1)],
        (None, 4, 1),
        (3, 1, T),
        id="resume point below the last ack is stale",
    ),
    pytest.param(
        {}, [("push", 2), ("resume", 50)], (None, 3, 0), (2, 0, 0), id="resume point beyond what exists"
    ),
    pytest.param(
        {"buffer_bytes": 3 * T},
        [("push", 5)],
        (Gap(SID, 3, 2, 2 * T, 23), 3, 3),
        (0, 3, 3 * T),
        id="overflow, unsent",
    ),
    pytest.param(
        {"buffer_seconds": 1.0},
        [("push", 2, 0.0), ("push", 1, 5.0)],
        (Gap(SID, 3, 2, 2 * T, 23), 3, 1),
        (0, 1, T),
        id="too old, unsent",
    ),
    pytest.param(
        {"buffer_bytes": 3 * T},
        [("push", 3), ("take",), ("push", 2), ("ack", 3)],
        (None, 4, 2),
        (3, 2, 2 * T),
        id="dropped in flight, link survives: no gap",
    ),
    pytest.param(
        {"buffer_bytes": 3 * T},
        [("push", 3), ("take",), ("push", 2), ("rewind",)],
        (Gap(SID, 3, 2, 2 * T, 23), 3, 3),
        (0, 3, 3 * T),
        id="dropped in flight, link lost: gap on the next link",
    ),
    pytest.param(
        {"buffer_bytes": 3 * T},
        [("push", 3), ("take",), ("ack", 1), ("rewind",), ("push", 3), ("resume", 2)],
        (Gap(SID, 4, 1, T, 0), 4, 3),
        (2, 3, 3 * T),
        id="dropped while down, client delivered part of it: gap counts only the rest",
    ),
    pytest.param(
        {"buffer_bytes": 3 * T},
        [("push", 5), ("take",), ("rewind",)],
        (Gap(SID, 3, 2, 2 * T, 23), 3, 3),
        (0, 3, 3 * T),
        id="gap reported, link lost before its ack: reported again",
    ),
    pytest.param(
        {"buffer_bytes": 3 * T},
        [("push", 5), ("take",), ("ack", 5), ("rewind",)],
        (None, 6, 0),
        (5, 0, 0),
        id="gap acked: never again",
    ),
    pytest.param(
        {"buffer_bytes": 50, "credit_bytes": 50},
        [("push", 1)],
        (None, 1, 1),
        (0, 1, T),
        id="one tag over every bound",
    ),
]


@pytest.mark.parametrize(("limits", "script", "take", "books"), STATE_CASES)
def test_outbox_states(
    limits: dict[str, float],
    script: list[tuple],
    take: tuple[Gap | None, int, int],
    books: tuple[int, int, int],
) -> None:
    ob = box(**limits)
    for step in script:
        op, *args = step
        if op == "push":
            n, now = args[0], (args[1] if len(args) > 1 else 0.0)
            for _ in range(n):
                i = ob.next_seq - 1
                ob.push(flv.AUDIO, i * 23, frame(i), now)
        elif op == "take":
            ob.take(SID)
        elif op == "ack":
            ob.ack(args[0])
        elif op == "rewind":
            ob.rewind()
        elif op == "resume":
            ob.resume_from(args[0])
    gap, seq, tags = ob.take(SID)
    assert (gap, seq, len(tags)) == take
    assert (ob.acked, ob.buffered_tags, ob.inflight_bytes) == books
    for offset, tag in enumerate(tags):  # the right tags, byte for byte
        n = seq + offset - 1
        assert tag == enc(flv.AUDIO, n * 23, frame(n))
