"""The ChunkReader as it was before the fused fast path: the test oracle for it.

A verbatim copy of ``relay_edge.rtmp.chunk.ChunkReader`` (one chunk header, then its payload,
per step) at commit 8533927, kept so tests/relay_edge/rtmp/test_rtmp_chunk_fused.py can check
the fused reader against it message for message and error for error. Do not optimise it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from relay_edge.errors import ChunkError, LimitExceeded
from relay_edge.limits import DEFAULT_LIMITS, Limits
from relay_edge.rtmp.chunk import (
    DEFAULT_CHUNK_SIZE,
    EXTENDED,
    MSG_ABORT,
    MSG_SET_CHUNK_SIZE,
    TIMESTAMP_MASK,
    Message,
)

_HEADER_SIZES = (11, 7, 3, 0)
_H1 = struct.Struct(">BHBHB")
_H2 = struct.Struct(">BH")
_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")


class _Stream:
    """Per-chunk-stream header state and the message being reassembled."""

    __slots__ = (
        "body",
        "delta",
        "ext",
        "ext_value",
        "has_header",
        "length",
        "stream_id",
        "timestamp",
        "type",
    )

    def __init__(self) -> None:
        self.has_header = False
        self.type = 0
        self.stream_id = 0
        self.length = 0
        self.timestamp = 0  # absolute timestamp of the current (or last) message
        self.delta = 0  # what a message-starting format-3 header adds
        self.ext = False  # did the last 0/1/2 header use an extended timestamp?
        self.ext_value = 0  # ...and which 4-byte value, repeated on format-3 chunks
        self.body: bytearray | None = None  # unfinished message, None between messages


class OracleChunkReader:
    """Incremental chunk stream parser: :meth:`feed` bytes, get whole messages.

    Raises :class:`ChunkError` for malformed chunk streams and
    :class:`LimitExceeded` for ``max_message_size``, ``max_chunk_size`` and
    ``max_chunk_streams``. After an error the reader must be discarded.
    """

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        on_message_start: Callable[[int, int, int], None] | None = None,
    ) -> None:
        """``on_message_start(type, message stream id, declared length)`` is called as each
        message's first header is parsed, before any of its payload is buffered; whatever it
        raises propagates from :meth:`feed`."""
        self.limits = limits
        self.on_message_start = on_message_start
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _Stream] = {}
        self._rest = b""  # unparsed tail: never more than one chunk header
        self._cur: _Stream | None = None  # stream whose chunk payload is being read
        self._cur_csid = 0
        self._left = 0  # payload bytes left in the current chunk
        self._partial = 0  # bytes held in unfinished messages, all streams
        self._max_partial = limits.max_partial_bytes
        self._partial_limit = "max_partial_bytes"

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Consume ``data``; return the messages it completed, in wire order."""
        return list(self.messages(data))

    def messages(self, data: bytes | bytearray | memoryview) -> Iterator[Message]:
        """Consume ``data``, yielding each message as it completes.

        Unlike :meth:`feed`, a caller sees every message that precedes a
        malformed chunk before the error is raised. Must be exhausted.
        """
        buf = self._rest + data if self._rest else bytes(data)
        view = memoryview(buf)
        end = len(buf)
        pos = 0
        out: list[Message] = []  # at most one message per step
        while pos < end:
            if self._left:
                pos = self._payload(buf, view, pos, end, out)
            else:
                new_pos = self._header(buf, pos, end)
                if new_pos < 0:
                    break
                pos = new_pos
                if self._left == 0:  # zero-length message: complete with its header
                    self._finish(b"", out)
            if out:
                yield out.pop()
        self._rest = buf[pos:]

    # --- headers ----------------------------------------------------------------

    def _header(self, buf: bytes, pos: int, end: int) -> int:
        """Parse one chunk header at ``pos``; -1 if incomplete. Sets up the payload read."""
        first = buf[pos]
        fmt = first >> 6
        low = first & 0x3F
        if low >= 2:
            csid, hsize = low, 1
        elif low == 0:
            if end - pos < 2:
                return -1
            csid, hsize = buf[pos + 1] + 64, 2
        else:
            if end - pos < 3:
                return -1
            csid, hsize = buf[pos + 1] + (buf[pos + 2] << 8) + 64, 3
        # Ordering errors are raised as soon as the basic header names the chunk stream.
        stream = self._streams.get(csid)
        if stream is None:
            stream = self._new_stream(csid)
        self._check_order(csid, stream, fmt)
        p = pos + hsize
        mh_end = p + _HEADER_SIZES[fmt]
        if mh_end > end:
            return -1
        if fmt == 3:
            return self._header3(buf, stream, csid, mh_end, end)
        if fmt == 0:
            hi, lo, len_hi, len_lo, msg_type = _H1.unpack_from(buf, p)
            field = (hi << 16) | lo
            # "Message stream ID is stored in little-endian format" (spec 5.3.1.2.1).
            sid = _U32LE.unpack_from(buf, p + 7)[0]
        elif fmt == 1:
            hi, lo, len_hi, len_lo, msg_type = _H1.unpack_from(buf, p)
            field = (hi << 16) | lo
        else:
            hi, lo = _H2.unpack_from(buf, p)
            field = (hi << 16) | lo
        ext = field == EXTENDED
        if ext:
            if mh_end + 4 > end:
                return -1
            field = _U32.unpack_from(buf, mh_end)[0]
            mh_end += 4
        # Header complete: commit it.
        if fmt < 2:
            length = (len_hi << 16) | len_lo
            if length > self.limits.max_message_size:
                raise LimitExceeded("max_message_size", length, self.limits.max_message_size)
            stream.length = length
            stream.type = msg_type
        if fmt == 0:
            stream.stream_id = sid
            stream.timestamp = field
            stream.has_header = True
        else:
            stream.timestamp = (stream.timestamp + field) & TIMESTAMP_MASK
        stream.delta = field
        stream.ext = ext
        stream.ext_value = field
        self._start_chunk(csid, stream)
        return mh_end

    @staticmethod
    def _check_order(csid: int, stream: _Stream, fmt: int) -> None:
        if fmt == 3:
            if not stream.has_header:
                raise ChunkError(f"chunk stream {csid}: format 3 header with no previous message header")
            return
        if stream.body is not None:
            raise ChunkError(
                f"chunk stream {csid}: format {fmt} header while a {stream.length}-byte message "
                f"has {stream.length - len(stream.body)} bytes left (expected format 3)"
            )
        if fmt != 0 and not stream.has_header:
            raise ChunkError(f"chunk stream {csid}: format {fmt} header with no previous format 0 header")

    def _header3(self, buf: bytes, stream: _Stream, csid: int, p: int, end: int) -> int:
        if stream.ext:
            if p + 4 > end:
                return -1  # can't tell yet whether the extended timestamp is there
            value = _U32.unpack_from(buf, p)[0]
            if value == stream.ext_value or (stream.body is not None and value == stream.timestamp):
                p += 4
        if stream.body is None:  # a new message reusing the previous header
            stream.timestamp = (stream.timestamp + stream.delta) & TIMESTAMP_MASK
        self._start_chunk(csid, stream)
        return p

    def _new_stream(self, csid: int) -> _Stream:
        if len(self._streams) >= self.limits.max_chunk_streams:
            raise LimitExceeded(
                "max_chunk_streams", len(self._streams) + 1, self.limits.max_chunk_streams, "chunk streams"
            )
        stream = self._streams[csid] = _Stream()
        return stream

    def set_partial_limit(self, name: str, value: int) -> None:
        """Bound the bytes held in unfinished messages by ``value``, reported as limit ``name``."""
        self._partial_limit, self._max_partial = name, value

    def _start_chunk(self, csid: int, stream: _Stream) -> None:
        if stream.body is None:  # the first chunk of a message
            received = 0
            if self.on_message_start is not None:
                self.on_message_start(stream.type, stream.stream_id, stream.length)
        else:
            received = len(stream.body)
        self._cur = stream
        self._cur_csid = csid
        self._left = min(stream.length - received, self.chunk_size)

    # --- payload ----------------------------------------------------------------

    def _payload(self, buf: bytes, view: memoryview, pos: int, end: int, out: list[Message]) -> int:
        stream = self._cur
        assert stream is not None
        n = min(self._left, end - pos)
        if stream.body is None and n == stream.length:
            # Fast path: the whole message is in one chunk and in this buffer.
            self._left = 0
            self._finish(buf[pos : pos + n], out)
            return pos + n
        if stream.body is None:
            stream.body = bytearray()
        self._partial += n
        if self._partial > self._max_partial:
            raise LimitExceeded(self._partial_limit, self._partial, self._max_partial)
        stream.body += view[pos : pos + n]
        self._left -= n
        if len(stream.body) == stream.length:
            body = bytes(stream.body)
            self._partial -= len(body)
            stream.body = None
            self._finish(body, out)
        return pos + n

    def _finish(self, body: bytes, out: list[Message]) -> None:
        stream = self._cur
        assert stream is not None
        self._cur = None
        msg = Message(self._cur_csid, stream.type, stream.stream_id, stream.timestamp, body)
        # Applied whatever message stream they came on (the spec says 0): ignoring
        # one would misframe every chunk after it.
        if msg.type == MSG_SET_CHUNK_SIZE:
            self.set_chunk_size(msg.body)
        elif msg.type == MSG_ABORT:
            self.abort(msg.body)
        out.append(msg)

    # --- protocol control that changes how the next chunk is read --------------

    def set_chunk_size(self, body: bytes) -> None:
        """Apply a Set Chunk Size body (4 bytes, big endian)."""
        if len(body) < 4:
            raise ChunkError(f"Set Chunk Size message of {len(body)} bytes (needs 4)")
        size = _U32.unpack_from(body)[0]
        if size & 0x80000000:
            raise ChunkError(f"Set Chunk Size {size} has the reserved top bit set")
        if size == 0:
            raise ChunkError("Set Chunk Size 0 is invalid (must be at least 1)")
        if size > self.limits.max_chunk_size:
            raise LimitExceeded("max_chunk_size", size, self.limits.max_chunk_size)
        self.chunk_size = size

    def abort(self, body: bytes) -> None:
        """Apply an Abort body: drop the named chunk stream's unfinished message."""
        if len(body) < 4:
            raise ChunkError(f"Abort message of {len(body)} bytes (needs 4)")
        stream = self._streams.get(_U32.unpack_from(body)[0])
        if stream is not None and stream.body is not None:
            self._partial -= len(stream.body)
            stream.body = None
