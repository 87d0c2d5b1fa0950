"""A bounded msgpack reader: peeks at each value's type byte and declared length first.

It only ever unpacks the scalars and byte strings its caller asks for, so no input
can make it build a container nobody expected, and a declared length over a limit
raises :class:`~relay_edge.errors.LimitExceeded` before any allocation.
:mod:`relay_edge.wire` builds the frame codec on it.
"""

from __future__ import annotations

import builtins
from typing import Any

import msgpack

from .errors import LimitExceeded, WireError
from .flv import TAG_HEADER_SIZE
from .limits import Limits

# --- msgpack type bytes ----------------------------------------------------------------
# The decoder peeks at the type byte and declared length before unpacking.

INT, NIL, BOOL, FLOAT, STR, BIN, ARRAY, MAP, EXT, BAD = range(10)
KIND_NAMES = ("int", "nil", "bool", "float", "str", "bin", "array", "map", "ext", "invalid byte")


def _head_table() -> list[tuple[int, int, int]]:
    """For each first byte: (kind, length held in the byte, width of a following length)."""
    table = [(BAD, 0, 0)] * 256
    for b in [*range(0x00, 0x80), *range(0xE0, 0x100), *range(0xCC, 0xD4)]:
        table[b] = (INT, 0, 0)
    for b in [*range(0xD4, 0xD9), 0xC7, 0xC8, 0xC9]:
        table[b] = (EXT, 0, 0)
    for b in range(0x80, 0x90):
        table[b] = (MAP, b & 0x0F, 0)
    for b in range(0x90, 0xA0):
        table[b] = (ARRAY, b & 0x0F, 0)
    for b in range(0xA0, 0xC0):
        table[b] = (STR, b & 0x1F, 0)
    table[0xC0], table[0xC2], table[0xC3] = (NIL, 0, 0), (BOOL, 0, 0), (BOOL, 0, 0)
    table[0xCA] = table[0xCB] = (FLOAT, 0, 0)
    for b, kind, width in (
        (0xC4, BIN, 1),
        (0xC5, BIN, 2),
        (0xC6, BIN, 4),
        (0xD9, STR, 1),
        (0xDA, STR, 2),
        (0xDB, STR, 4),
        (0xDC, ARRAY, 2),
        (0xDD, ARRAY, 4),
        (0xDE, MAP, 2),
        (0xDF, MAP, 4),
    ):
        table[b] = (kind, 0, width)
    return table


_HEAD = _head_table()


def show(value: str, limit: int = 40) -> str:
    """A peer-supplied string, cut short, for an error message."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


class Reader:
    """Walks one message: peeks at type and length, then unpacks exactly one scalar.

    msgpack's Unpacker is the cursor (and does the C-speed scalar decoding);
    its own max_*_len bounds are a second line behind the peeks.
    """

    __slots__ = ("buf", "end", "max_bin", "max_items", "max_str", "up")

    def __init__(self, message: bytes | bytearray, limits: Limits) -> None:
        self.buf = message
        self.end = len(message)
        # A bin is at most one FLV tag: header plus the largest RTMP message body.
        self.max_bin = TAG_HEADER_SIZE + limits.max_message_size
        self.max_str = limits.wire_max_str
        self.max_items = limits.wire_max_items
        self.up = msgpack.Unpacker(
            None,
            raw=False,
            use_list=False,
            max_buffer_size=max(self.end, 1),
            max_bin_len=self.max_bin,
            max_str_len=self.max_str,
            max_array_len=self.max_items,
            max_map_len=self.max_items,
            max_ext_len=0,
        )
        self.up.feed(message)

    def at_end(self) -> bool:
        return self.up.tell() >= self.end

    def peek(self) -> tuple[int, int]:
        """``(kind, declared length)`` of the next value, without consuming it."""
        pos = self.up.tell()
        if pos >= self.end:
            raise WireError("truncated: value missing")
        kind, length, width = _HEAD[self.buf[pos]]
        if width:
            if pos + 1 + width > self.end:
                raise WireError("truncated: length missing")
            length = int.from_bytes(self.buf[pos + 1 : pos + 1 + width], "big")
        return kind, length

    def expect(self, kind: int) -> int:
        """Check the next value is of ``kind``; return its declared length."""
        got, length = self.peek()
        if got != kind:
            raise WireError(f"must be {KIND_NAMES[kind]}, got {KIND_NAMES[got]}")
        return length

    def uint(self, maximum: int) -> int:
        self.expect(INT)
        value = self.up.unpack()
        if not 0 <= value <= maximum:
            raise WireError(f"integer {value} out of range 0..{maximum}")
        return value

    def str(self) -> str:
        return self._str(self.expect(STR))

    def key(self) -> builtins.str | None:
        """The next map key, or None when it is not a string."""
        kind, length = self.peek()
        return self._str(length) if kind == STR else None

    def _str(self, length: int) -> builtins.str:
        if length > self.max_str:
            raise LimitExceeded("wire_max_str", length, self.max_str)
        try:
            return self.up.unpack()
        except UnicodeDecodeError:
            raise WireError("string is not valid UTF-8") from None

    def bin(self) -> bytes:
        length = self.expect(BIN)
        if length > self.max_bin:
            # Name the Limits field behind the bound: a bin holds at most one tag.
            raise LimitExceeded("max_message_size", length - TAG_HEADER_SIZE, self.max_bin - TAG_HEADER_SIZE)
        return self.up.unpack()

    def count(self, kind: int) -> int:
        """Consume an array or map header, bounded by ``Limits.wire_max_items``."""
        length = self.expect(kind)
        if length > self.max_items:
            raise LimitExceeded("wire_max_items", length, self.max_items, "entries")
        return self.up.read_array_header() if kind == ARRAY else self.up.read_map_header()

    def scalar(self) -> Any:
        """nil, boolean, integer, float or string (a publisher field's value)."""
        kind, length = self.peek()
        if kind == STR:
            return self._str(length)
        if kind in (NIL, BOOL, INT, FLOAT):
            return self.up.unpack()
        raise WireError(f"must be a scalar, got {KIND_NAMES[kind]}")
