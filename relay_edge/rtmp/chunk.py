"""The RTMP chunk stream, sans-I/O: :class:`ChunkReader` and :class:`ChunkWriter`.

Wire format (RTMP spec 1.0, section 5.3): every chunk is a basic header
(format + chunk stream id, 1-3 bytes), a message header of 11/7/3/0 bytes for
formats 0/1/2/3, an optional 4-byte extended timestamp and up to *chunk size*
bytes of payload. Decisions this module makes, with where they come from:

* Timestamps are 32-bit; deltas add modulo 2**32 (a publisher running for
  49.7 days wraps around, and ``-output_ts_offset`` starts near the top).
* A format-3 header that *starts* a message repeats the previous delta
  (GStreamer's rtmp2sink sends one whenever type, size and delta repeat).
  After a format-0 header the "previous delta" is that header's timestamp:
  FFmpeg (``ts_field``) and GStreamer (``ts_delta``) both read and write it
  that way; nginx-rtmp and gortmplib use 0, which only differs for a stream
  whose first timestamp is non-zero *and* whose second message comes exactly
  that many ms later with the same type and size.
* Extended timestamps: a field of 0xFFFFFF means 4 more bytes follow. Format-3
  chunks (continuations and new messages) repeat those 4 bytes when the last
  0/1/2 header on that chunk stream used them: FFmpeg, GStreamer, librtmp and
  nginx-rtmp all write and read them so. Some old encoders omit them, so like
  GStreamer (``gst_rtmp_chunk_stream_parse_header``) and SRS we only consume
  the 4 bytes when they equal the value we expect; otherwise they are payload.
* A format 0/1/2 header on a chunk stream whose message is unfinished, and a
  format 1/2/3 header on a chunk stream that never had a format-0 header, are
  errors (as in gortmplib): a real publisher never sends either.
* Set Chunk Size (1) and Abort (2) act inside the reader, so the very next
  chunk is parsed with them; the messages are still returned to the caller.
* The declared message length is checked against ``max_message_size`` when
  the header arrives, before any payload is buffered; ``on_message_start``
  lets the session refuse a message by type, stream and length right there too.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from ..errors import ChunkError, LimitExceeded
from ..limits import DEFAULT_LIMITS, Limits

DEFAULT_CHUNK_SIZE = 128  # spec: until a Set Chunk Size says otherwise
MAX_CSID = 65599  # 3-byte basic header: 64 + 0xFFFF
TIMESTAMP_MASK = 0xFFFFFFFF
EXTENDED = 0xFFFFFF

MSG_SET_CHUNK_SIZE = 1
MSG_ABORT = 2


_HEADER_SIZES = (11, 7, 3, 0)
_H1 = struct.Struct(">BHBHB")  # timestamp or delta (3), length (3), type; format 0 adds a LE stream id
_H2 = struct.Struct(">BH")  # ts delta(3)
_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")


class Message:
    """One reassembled RTMP message. ``timestamp`` is absolute, 32-bit ms.

    A plain class, not a NamedTuple: compiled (relay_edge.accel), it is a native object, built
    and read without a Python call (a NamedTuple's ``__new__`` is Python code, run per message).
    It still unpacks and compares like the tuple ``(csid, type, stream_id, timestamp, body)``.
    """

    __slots__ = ("body", "csid", "stream_id", "timestamp", "type")

    def __init__(self, csid: int, type: int, stream_id: int, timestamp: int, body: bytes) -> None:
        self.csid = csid
        self.type = type
        self.stream_id = stream_id
        self.timestamp = timestamp
        self.body = body

    def __iter__(self) -> Iterator[int | bytes]:
        return iter((self.csid, self.type, self.stream_id, self.timestamp, self.body))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:  # never dump payloads into logs
        return (
            f"Message(csid={self.csid}, type={self.type}, stream_id={self.stream_id}, "
            f"timestamp={self.timestamp}, len={len(self.body)})"
        )


class _Stream:
    """Per-chunk-stream header state and the message being reassembled."""

    __slots__ = (
        "body",
        "delta",
        "ext",
        "ext_value",
        "has_header",
        "length",
        "received",
        "stream_id",
        "timestamp",
        "type",
        "views",
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
        # The unfinished message's payload so far, as pieces joined once on its last chunk
        # (None between messages): bytes, then memoryviews into the read being parsed.
        self.body: list[bytes | memoryview] | None = None
        self.received = 0  # payload bytes in ``body``
        self.views = -1  # index in ``body`` of the first view into the current read; -1: none


def basic_header(fmt: int, csid: int) -> bytes:
    """The 1-3 byte basic header for chunk format ``fmt`` on chunk stream ``csid``."""
    if csid < 2 or csid > MAX_CSID:
        raise ValueError(f"chunk stream id {csid} outside 2..{MAX_CSID}")
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    rest = csid - 64
    return bytes(((fmt << 6) | 1, rest & 0xFF, rest >> 8))


class ChunkReader:
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
        self._viewing: list[_Stream] = []  # streams whose body holds views into the current read
        self._cur: _Stream | None = None  # stream whose chunk payload is being read
        self._cur_csid = 0
        self._left = 0  # payload bytes left in the current chunk
        self._partial = 0  # bytes held in unfinished messages, all streams
        self._max_partial = limits.max_partial_bytes
        self._max_message = limits.max_message_size  # read per message: a native int when compiled
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
        fused = self._fused
        while pos < end:
            if self._left:
                pos = self._payload(buf, view, pos, end, out)
            else:
                # The common case first: a whole message in one chunk, already in ``buf``.
                new_pos = fused(buf, pos, end, out)
                if new_pos:
                    pos = new_pos
                    yield out.pop()
                    continue
                new_pos = self._header(buf, pos, end)
                if new_pos < 0:
                    break
                pos = new_pos
                if self._left == 0:  # zero-length message: complete with its header
                    self._finish(b"", out)
            if out:
                yield out.pop()
        self._rest = buf[pos:]
        if self._viewing:
            self._unview()

    def _unview(self) -> None:
        """Copy the views of unfinished messages into bytes of their own, before the read goes.

        A message's chunks are held as views of the read they came in and joined once, on
        its last chunk: one copy for a message that ends in the read it started in (most,
        in a flood), where ``bytearray +=`` then ``bytes()`` made two. Only a message still
        unfinished at the read's end has its views copied here, so no view outlives the
        read (the caller may reuse its buffer) and what is held is exactly what
        ``max_partial_bytes`` counts.
        """
        for stream in self._viewing:
            body, first = stream.body, stream.views
            if body is not None and first >= 0:
                body[first:] = [b"".join(body[first:])]
            stream.views = -1
        self._viewing.clear()

    def _fused(self, buf: bytes, pos: int, end: int, out: list[Message]) -> int:
        """Header and payload of one whole single-chunk message in one step; 0 if not that case.

        Taken only for a 1-byte basic header on a chunk stream that has had its format-0
        header, has no unfinished message and whose last header had no extended timestamp,
        with the whole message (at most one chunk) in ``buf``. Everything else (first
        messages, extended timestamps, multi-chunk messages, split reads, every error) is
        left to the general path, which reparses from ``pos``: nothing is committed here
        before the decision. tests/relay_edge/rtmp/test_rtmp_chunk_fused.py checks the two
        paths give the same messages and errors.
        """
        first = buf[pos]
        csid = first & 0x3F
        if csid < 2:
            return 0
        stream = self._streams.get(csid)
        if stream is None or not stream.has_header or stream.body is not None or stream.ext:
            return 0
        fmt = first >> 6
        p = pos + 1
        if fmt == 3:
            length = stream.length
            if p + length > end or length > self.chunk_size:
                return 0
            stream.timestamp = (stream.timestamp + stream.delta) & TIMESTAMP_MASK
        elif fmt == 2:
            length = stream.length
            p += 3
            if p + length > end or length > self.chunk_size:
                return 0
            field = (buf[p - 3] << 16) | (buf[p - 2] << 8) | buf[p - 1]
            if field == EXTENDED:
                return 0
            stream.timestamp = (stream.timestamp + field) & TIMESTAMP_MASK
            stream.delta = stream.ext_value = field
        else:
            hsize = 11 if fmt == 0 else 7
            if p + hsize > end:
                return 0
            hi: int
            lo: int
            len_hi: int
            len_lo: int
            msg_type: int
            hi, lo, len_hi, len_lo, msg_type = _H1.unpack_from(buf, p)
            field = (hi << 16) | lo
            length = (len_hi << 16) | len_lo
            if (
                field == EXTENDED
                or p + hsize + length > end
                or length > self.chunk_size
                or length > self._max_message
            ):
                return 0
            if fmt == 0:
                stream.stream_id = _U32LE.unpack_from(buf, p + 7)[0]
                stream.timestamp = field
            else:
                stream.timestamp = (stream.timestamp + field) & TIMESTAMP_MASK
            p += hsize
            stream.length = length
            stream.type = msg_type
            stream.delta = stream.ext_value = field
        if self.on_message_start is not None:
            self.on_message_start(stream.type, stream.stream_id, length)
        msg = Message(csid, stream.type, stream.stream_id, stream.timestamp, buf[p : p + length])
        if msg.type <= MSG_ABORT:  # Set Chunk Size (1) and Abort (2) change how the next chunk is read
            self._control(msg)
        out.append(msg)
        return p + length

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
            if length > self._max_message:
                raise LimitExceeded("max_message_size", length, self._max_message)
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
                f"has {stream.length - stream.received} bytes left (expected format 3)"
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
            received = stream.received
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
        body = stream.body
        if body is None:
            body = stream.body = []
            stream.received = 0
        if stream.views < 0:  # its first view into this read: _unview copies it if unfinished
            stream.views = len(body)
            self._viewing.append(stream)
        # The message's next chunks, when they follow here behind a 1-byte format-3 header and
        # no extended timestamp (every continuation of a video frame from FFmpeg or OBS), are
        # read in this loop: what _header, _header3 and _start_chunk would do for them is
        # only to set _left. Anything else goes back to the general path. The differential
        # test against chunk_oracle.py checks the two agree.
        cont = 0xC0 | self._cur_csid if self._cur_csid < 64 and not stream.ext else -1
        while True:
            self._partial += n
            if self._partial > self._max_partial:
                raise LimitExceeded(self._partial_limit, self._partial, self._max_partial)
            body.append(view[pos : pos + n])
            stream.received += n
            pos += n
            left = self._left - n
            if stream.received == stream.length:
                self._left = 0
                self._partial -= stream.received
                stream.body = None
                stream.views = -1
                self._finish(b"".join(body), out)
                return pos
            if left or pos >= end or buf[pos] != cont:
                self._left = left
                return pos
            pos += 1  # a continuation chunk's header: the rest of this chunk follows
            self._left = min(stream.length - stream.received, self.chunk_size)
            n = min(self._left, end - pos)

    def _finish(self, body: bytes, out: list[Message]) -> None:
        stream = self._cur
        assert stream is not None
        self._cur = None
        msg = Message(self._cur_csid, stream.type, stream.stream_id, stream.timestamp, body)
        self._control(msg)
        out.append(msg)

    def _control(self, msg: Message) -> None:
        # Applied whatever message stream they came on (the spec says 0): ignoring
        # one would misframe every chunk after it.
        if msg.type == MSG_SET_CHUNK_SIZE:
            self.set_chunk_size(msg.body)
        elif msg.type == MSG_ABORT:
            self.abort(msg.body)

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
            self._partial -= stream.received
            stream.body = None
            stream.views = -1


class _OutStream:
    __slots__ = ("delta", "length", "stream_id", "timestamp", "type")

    def __init__(self, stream_id: int, msg_type: int, length: int, timestamp: int, delta: int) -> None:
        self.stream_id = stream_id
        self.type = msg_type
        self.length = length
        self.timestamp = timestamp
        self.delta = delta


class ChunkWriter:
    """Serializes messages into chunks, compressing headers like FFmpeg and GStreamer do.

    Format 0 for a chunk stream's first message, a new message stream or a
    timestamp going backwards; format 1 when type or length change; format 2
    when only the delta changes; format 3 when all repeat.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self._streams: dict[int, _OutStream] = {}

    def write(self, csid: int, msg_type: int, stream_id: int, timestamp: int, body: bytes) -> bytes:
        """The chunks of one message. ``timestamp`` is absolute ms, taken modulo 2**32."""
        timestamp &= TIMESTAMP_MASK
        length = len(body)
        if length > 0xFFFFFF:
            raise ValueError(f"message of {length} bytes does not fit RTMP's 24-bit length")
        prev = self._streams.get(csid)
        delta = (timestamp - prev.timestamp) & TIMESTAMP_MASK if prev is not None else 0
        if prev is None or prev.stream_id != stream_id or delta >= 0x80000000:
            fmt, field = 0, timestamp
        elif prev.type != msg_type or prev.length != length:
            fmt, field = 1, delta
        elif prev.delta != delta:
            fmt, field = 2, delta
        else:
            fmt, field = 3, delta
        if prev is None:
            self._streams[csid] = _OutStream(stream_id, msg_type, length, timestamp, field)
        else:
            prev.stream_id, prev.type, prev.length, prev.timestamp = stream_id, msg_type, length, timestamp
            prev.delta = field
        ext = _U32.pack(field) if field >= EXTENDED else b""
        short = EXTENDED if ext else field
        parts = [basic_header(fmt, csid)]
        if fmt == 0:
            parts.append(_H1.pack(short >> 16, short & 0xFFFF, length >> 16, length & 0xFFFF, msg_type))
            parts.append(_U32LE.pack(stream_id))
        elif fmt == 1:
            parts.append(_H1.pack(short >> 16, short & 0xFFFF, length >> 16, length & 0xFFFF, msg_type))
        elif fmt == 2:
            parts.append(_H2.pack(short >> 16, short & 0xFFFF))
        parts.append(ext)
        size = self.chunk_size
        if length <= size:
            parts.append(body)
            return b"".join(parts)
        view = memoryview(body)
        parts.append(view[:size])
        continuation = basic_header(3, csid) + ext
        for off in range(size, length, size):
            parts.append(continuation)
            parts.append(view[off : off + size])
        return b"".join(parts)
