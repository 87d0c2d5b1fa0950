"""The fused ChunkReader path against the reader it replaced (chunk_oracle.py), byte for byte.

Both readers get the same bytes in the same reads; after every read they must have returned
the same messages (csid, type, stream id, timestamp, body) and, when the bytes are bad, raised
the same error with the same text after the same messages.
"""

from __future__ import annotations

import random
from collections import Counter

from chunk_oracle import OracleChunkReader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_edge.errors import ChunkError, LimitExceeded, ProtocolError
from relay_edge.limits import DEFAULT_LIMITS, Limits
from relay_edge.rtmp.chunk import ChunkReader, ChunkWriter, Message, basic_header
from tests.support.pure import pure_module

SET_CHUNK_SIZE = 1
ABORT = 2
CSIDS = (3, 4, 5, 6, 63, 64, 65, 319, 320, 1000)
TYPES = (8, 9, 18, 20, 4, 5, 3)  # audio, video, data, command, user control, window, ack


def _chunks(out: bytes, csid: int, length: int, chunk_size: int) -> list[tuple[bytes, bool]]:
    """Split one ChunkWriter message into its chunks, each flagged whether it starts the message."""
    n = max(1, -(-length // chunk_size))
    b3 = len(basic_header(3, csid))
    header = (11, 7, 3, 0)[out[0] >> 6] + len(basic_header(0, csid))
    ext = (len(out) - length - header - (n - 1) * b3) // n  # 0 or 4: the extended timestamp
    first = header + ext + min(length, chunk_size)
    step = b3 + ext + chunk_size
    rest = out[first:]
    return [(out[:first], True), *((rest[i : i + step], False) for i in range(0, len(rest), step))]


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A chunk stream of random messages, chunk sizes, interleaving, aborts and reads (split points).

    Each chunk stream mostly repeats one (type, length, stream id), as audio does, so the writer's
    format 2 and 3 headers (and message-starting format 3 after a format 2) come up often.
    Control messages go on chunk stream 2, which carries nothing else.
    """
    rng = random.Random(draw(st.integers(0, 2**32)))
    writer = ChunkWriter(draw(st.sampled_from((1, 2, 7, 128, 129, 400, 4096))))
    csids = rng.sample(CSIDS, draw(st.integers(1, 4)))
    clock = {c: rng.choice((0, 1000, 0xFFFFF0, 0xFFFFFFF0)) for c in csids}
    usual = {c: (rng.choice(TYPES), rng.choice((0, 1, 5, 200, 372, 5000)), rng.choice((0, 1))) for c in csids}
    out = bytearray()
    for _ in range(draw(st.integers(1, 4))):  # segments, each ended by a Set Chunk Size
        queues: dict[int, list[tuple[bytes, bool]]] = {c: [] for c in csids}
        for _ in range(rng.randint(0, 25)):
            csid = rng.choice(csids)
            step = rng.choice((0, 20, 23, 23, 23, 0xFFFFFF, 0x1000000, 2**32 - 5))
            clock[csid] = (clock[csid] + step) & 0xFFFFFFFF
            msg_type, length, sid = usual[csid]
            if rng.random() < 0.3:
                msg_type, sid = rng.choice(TYPES), rng.choice((0, 1, 2))
                length = rng.choice((0, 1, rng.randint(0, 600), rng.randint(0, 9000)))
            body = rng.randbytes(length)
            chunks = _chunks(
                writer.write(csid, msg_type, sid, clock[csid], body), csid, length, writer.chunk_size
            )
            queues[csid] += chunks
        while any(queues.values()):  # interleave the chunk streams, each one kept in order
            csid = rng.choice([c for c, q in queues.items() if q])
            out += queues[csid].pop(0)[0]
            queue = queues[csid]
            if queue and not queue[0][1] and rng.random() < 0.05:  # abort the message under way
                out += writer.write(2, ABORT, 0, 0, csid.to_bytes(4, "big"))
                while queue and not queue[0][1]:
                    queue.pop(0)
        size = rng.choice((1, 3, 64, 128, 255, 4096, 65536))
        out += writer.write(2, SET_CHUNK_SIZE, 0, 0, size.to_bytes(4, "big"))
        writer.chunk_size = size
    cuts = sorted(rng.sample(range(1, len(out)), min(len(out) - 1, draw(st.integers(0, 40)))))
    return bytes(out), cuts


def _run(reader: ChunkReader | OracleChunkReader, data: bytes, cuts: list[int]) -> list[object]:
    """Every read's messages, then the error (type and text) if one was raised."""
    seen: list[object] = []
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        try:
            for msg in reader.messages(data[a:b]):
                seen.append(tuple(msg))
        except ProtocolError as exc:
            seen.append((type(exc).__name__, str(exc)))
            return seen
        seen.append("read")
    seen.append(("rest", len(reader._rest)))
    return seen


def _both(data: bytes, cuts: list[int], limits: Limits = DEFAULT_LIMITS, refuse: int | None = None) -> None:
    def hook(msg_type: int, stream_id: int, length: int) -> None:
        if msg_type == refuse:
            raise ChunkError(f"refused type {msg_type} on {stream_id}, {length} bytes")

    fused = _run(ChunkReader(limits, on_message_start=hook), data, cuts)
    oracle = _run(OracleChunkReader(limits, on_message_start=hook), data, cuts)
    assert fused == oracle


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_fused_reader_matches_oracle(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case
    _both(data, cuts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from((0, 1, 100, 500)), st.sampled_from((None, 9, 20)))
def test_fused_reader_limits_and_refusals_match(
    case: tuple[bytes, list[int]], max_msg: int, refuse: int | None
) -> None:
    data, cuts = case
    limits = Limits(max_message_size=max_msg or DEFAULT_LIMITS.max_message_size, max_chunk_streams=3)
    _both(data, cuts, limits, refuse)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.integers(0, 2**32), st.integers(1, 8))
def test_fused_reader_matches_oracle_on_corrupted_bytes(
    case: tuple[bytes, list[int]], seed: int, flips: int
) -> None:
    data, cuts = case
    rng = random.Random(seed)
    corrupt = bytearray(data)
    for _ in range(flips):
        corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
    _both(bytes(corrupt), cuts)


def test_the_fused_path_takes_every_header_format() -> None:
    """The differential tests are only as good as what they feed: the fused path must see
    format 0, 1, 2 and 3 headers, and the streams must carry extended timestamps."""
    hits: Counter[int] = Counter()
    extended = 0

    @settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(streams())
    def collect(case: tuple[bytes, list[int]]) -> None:
        nonlocal extended
        data, cuts = case
        reader = pure_module("relay_edge.rtmp.chunk").ChunkReader()  # a compiled one takes no patch
        inner = reader._fused

        def counting(buf: bytes, pos: int, end: int, out: list[Message]) -> int:
            taken = inner(buf, pos, end, out)
            if taken:
                hits[buf[pos] >> 6] += 1
            return taken

        reader._fused = counting  # type: ignore[method-assign]
        _run(reader, data, cuts)
        extended += any(s.ext for s in reader._streams.values())

    collect()
    assert set(hits) == {0, 1, 2, 3}, hits
    assert extended


def test_limit_exceeded_is_raised_the_same_way() -> None:
    writer = ChunkWriter(4096)
    data = writer.write(3, 8, 1, 0, b"x" * 10) + writer.write(3, 8, 1, 20, b"y" * 300)
    limits = Limits(max_message_size=100)
    fused = ChunkReader(limits)
    assert [m.body for m in fused.feed(data[:22])] == [b"x" * 10]
    try:
        fused.feed(data[22:])
    except LimitExceeded as exc:
        assert "max_message_size" in str(exc)
    else:
        raise AssertionError("a 300-byte message passed max_message_size 100")


def test_continuations_read_in_the_payload_loop_match_at_every_cut() -> None:
    """A multi-chunk message (1-byte format-3 continuations, read inside ``_payload``) cut into
    two reads at every byte, with and without an extended timestamp and a partial limit hit,
    gives what the oracle gives."""
    writer = ChunkWriter(64)
    data = writer.write(2, SET_CHUNK_SIZE, 0, 0, (64).to_bytes(4, "big"))
    data += writer.write(4, 9, 1, 0x1000000, bytes(range(200)))  # extended: back to the general path
    data += writer.write(5, 9, 1, 40, bytes(range(190, 0, -1)))  # continuations: the loop
    data += writer.write(4, 9, 1, 0x1000010, b"z" * 130)
    reader = ChunkReader()
    assert [len(m.body) for m in reader.feed(data)] == [4, 200, 190, 130]
    for limits in (DEFAULT_LIMITS, Limits(max_partial_bytes=150)):
        for cut in range(1, len(data)):
            _both(data, [cut], limits)
