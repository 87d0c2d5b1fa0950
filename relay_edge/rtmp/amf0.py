"""AMF0 values, sans-I/O: encode Python values, decode bytes (AMF0 spec, Adobe 2007).

Python mapping, both ways:

=============  ============================================
AMF0           Python
=============  ============================================
number         ``float`` (``int`` is encoded as a number)
boolean        ``bool``
string         ``str`` (long string when over 65535 bytes)
object         ``dict[str, Any]``
null           ``None``
undefined      :data:`UNDEFINED`
ECMA array     :class:`ECMAArray` (a ``dict``)
strict array   ``list``
date           :class:`Date`
long string    ``str``
=============  ============================================

Rejected on decode with :class:`~relay_edge.errors.AMFError`: reference (it
would let a few bytes expand into an unbounded graph), movie clip, recordset,
unsupported, XML document, typed object and the AMF3 switch marker. No RTMP
publisher puts these in a command.

The decoder is iterative (an explicit stack), so nesting depth is bounded by
``Limits.amf_max_depth`` alone and never by Python's recursion limit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ..errors import AMFError, LimitExceeded
from ..limits import DEFAULT_LIMITS, Limits

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11

_MARKER_NAMES = {
    MOVIECLIP: "movie clip",
    REFERENCE: "reference",
    OBJECT_END: "object end outside an object",
    UNSUPPORTED: "unsupported",
    RECORDSET: "recordset",
    XML_DOCUMENT: "XML document",
    TYPED_OBJECT: "typed object",
    AVMPLUS: "AMF3 switch (avmplus)",
}

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")
_END = b"\x00\x00\x09"


class Undefined:
    """The AMF0 ``undefined`` value; use the :data:`UNDEFINED` singleton."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = Undefined()


class ECMAArray(dict):  # type: ignore[type-arg]
    """An AMF0 ECMA (associative) array, e.g. ``onMetaData``'s payload; a ``dict``."""

    def __repr__(self) -> str:
        return f"ECMAArray({dict.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class Date:
    """An AMF0 date: ms since the Unix epoch, UTC, and the (unused) time-zone field."""

    ms: float
    timezone: int = 0


# --- encoding ---------------------------------------------------------------------


def encode(*values: Any) -> bytes:
    """Encode ``values`` back to back, as in a command message body."""
    out = bytearray()
    for value in values:
        _encode_into(out, value)
    return bytes(out)


def _encode_str_body(out: bytearray, text: str) -> None:
    """A string without marker: u16 length (keys and short strings)."""
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError(f"object key of {len(raw)} bytes does not fit AMF0's 65535")
    out += _U16.pack(len(raw))
    out += raw


def _encode_properties(out: bytearray, mapping: dict[str, Any]) -> None:
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"AMF0 object keys must be str, not {type(key).__name__}")
        _encode_str_body(out, key)
        _encode_into(out, item)
    out += _END


def _encode_into(out: bytearray, value: Any) -> None:
    # bool before int/float: bool is an int subclass.
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN, 1 if value else 0))
    elif isinstance(value, (int, float)):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            out += _U16.pack(len(raw))
        else:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        out += raw
    elif isinstance(value, ECMAArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(value))
        _encode_properties(out, value)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _encode_properties(out, value)
    elif isinstance(value, (list, tuple)):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_into(out, item)
    elif isinstance(value, Date):
        out.append(DATE)
        out += _DATE.pack(value.ms, value.timezone)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


# --- decoding ---------------------------------------------------------------------


class _Container:
    """One open object/array on the decoder's stack."""

    __slots__ = ("key", "left", "value")

    def __init__(self, value: dict[str, Any] | list[Any], left: int = -1) -> None:
        self.value = value
        self.key: str | None = None  # objects: key whose value is being decoded
        self.left = left  # strict arrays: items still to read; -1 for objects


def decode(
    data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS, offset: int = 0
) -> list[Any]:
    """Decode every value in ``data`` from ``offset`` on (a whole command or data message body).

    At most ``limits.amf_max_values`` values in all (nested ones included), so one
    call's work is bounded whatever the body's size.
    """
    reader = _Reader(memoryview(data), offset, limits)
    values: list[Any] = []
    while reader.pos < reader.end:
        values.append(reader.value())
    return values


def decode_value(
    data: bytes | bytearray | memoryview, offset: int = 0, limits: Limits = DEFAULT_LIMITS
) -> tuple[Any, int]:
    """Decode one value at ``offset``; return it and the offset just past it.

    Raises :class:`AMFError` on malformed or truncated input and
    :class:`LimitExceeded` when ``amf_max_depth``, ``amf_max_string``,
    ``amf_max_items`` or ``amf_max_values`` is passed.
    """
    reader = _Reader(memoryview(data), offset, limits)
    return reader.value(), reader.pos


class _Reader:
    """Cursor over one AMF0 value; every read checks the bytes are there."""

    __slots__ = ("data", "end", "left", "limits", "pos")

    def __init__(self, data: memoryview, pos: int, limits: Limits) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)
        self.limits = limits
        self.left = limits.amf_max_values  # values this reader may still decode

    def _need(self, n: int, what: str) -> int:
        pos = self.pos
        if self.end - pos < n:
            raise AMFError(f"truncated AMF0 {what} at offset {pos}: need {n} bytes, have {self.end - pos}")
        self.pos = pos + n
        return pos

    def _text(self, size: int, what: str) -> str:
        if size > self.limits.amf_max_string:
            raise LimitExceeded("amf_max_string", size, self.limits.amf_max_string)
        pos = self._need(size, what)
        try:
            return str(self.data[pos : pos + size], "utf-8")
        except UnicodeDecodeError as exc:
            raise AMFError(f"invalid UTF-8 in AMF0 {what} at offset {pos + exc.start}") from None

    def _short_text(self, what: str) -> str:
        (size,) = _U16.unpack_from(self.data, self._need(2, what + " length"))
        return self._text(size, what)

    def value(self) -> Any:
        stack: list[_Container] = []
        while True:
            if stack:
                top = stack[-1]
                if top.left < 0:  # object / ECMA array: a key or the end marker
                    if self._at_object_end():
                        self.pos += 3
                        result: Any = stack.pop().value
                    else:
                        if len(top.value) >= self.limits.amf_max_items:
                            raise LimitExceeded(
                                "amf_max_items", len(top.value) + 1, self.limits.amf_max_items, "items"
                            )
                        top.key = self._short_text("object key")
                        result = self._scalar_or_open(stack)
                elif top.left == 0:
                    result = stack.pop().value
                else:
                    result = self._scalar_or_open(stack)
            else:
                result = self._scalar_or_open(stack)
            if result is _OPENED:  # a container was pushed; its items come next
                continue
            if not stack:
                return result
            top = stack[-1]
            if top.left < 0:
                top.value[top.key] = result  # type: ignore[index,call-overload]
                top.key = None
            else:
                top.value.append(result)  # type: ignore[union-attr]
                top.left -= 1

    def _at_object_end(self) -> bool:
        data, pos = self.data, self.pos
        if self.end - pos < 3:
            # An empty key needs 2 bytes and a marker; anything shorter is truncated.
            self._need(3, "object key or end marker")
        return data[pos] == 0 and data[pos + 1] == 0 and data[pos + 2] == OBJECT_END

    def _open(self, stack: list[_Container], container: _Container) -> object:
        depth = len(stack) + 1
        if depth > self.limits.amf_max_depth:
            raise LimitExceeded("amf_max_depth", depth, self.limits.amf_max_depth, "levels")
        stack.append(container)
        return _OPENED

    def _scalar_or_open(self, stack: list[_Container]) -> Any:
        self.left -= 1
        if self.left < 0:
            limit = self.limits.amf_max_values
            raise LimitExceeded("amf_max_values", limit + 1, limit, "values")
        marker = self.data[self._need(1, "type marker")]
        if marker == NUMBER:
            return _DOUBLE.unpack_from(self.data, self._need(8, "number"))[0]
        if marker == BOOLEAN:
            return self.data[self._need(1, "boolean")] != 0
        if marker == STRING:
            return self._short_text("string")
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == OBJECT:
            return self._open(stack, _Container({}))
        if marker == ECMA_ARRAY:
            self._need(4, "ECMA array count")  # a hint only; the end marker decides
            return self._open(stack, _Container(ECMAArray()))
        if marker == STRICT_ARRAY:
            (count,) = _U32.unpack_from(self.data, self._need(4, "strict array count"))
            if count > self.limits.amf_max_items:
                raise LimitExceeded("amf_max_items", count, self.limits.amf_max_items, "items")
            return self._open(stack, _Container([], count))
        if marker == DATE:
            ms, tz = _DATE.unpack_from(self.data, self._need(10, "date"))
            return Date(ms, tz)
        if marker == LONG_STRING:
            (size,) = _U32.unpack_from(self.data, self._need(4, "long string length"))
            return self._text(size, "long string")
        name = _MARKER_NAMES.get(marker)
        if name is not None:
            raise AMFError(f"unsupported AMF0 type 0x{marker:02x} ({name}) at offset {self.pos - 1}")
        raise AMFError(f"unknown AMF0 type marker 0x{marker:02x} at offset {self.pos - 1}")


_OPENED = object()  # sentinel: a container was pushed, its value is not complete yet
