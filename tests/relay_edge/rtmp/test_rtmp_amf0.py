"""AMF0: one case table for encode and decode, limits, truncation, property tests."""

from __future__ import annotations

import contextlib
import math
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_edge.errors import AMFError, LimitExceeded
from relay_edge.limits import Limits
from relay_edge.rtmp import amf0
from relay_edge.rtmp.amf0 import UNDEFINED, Date, ECMAArray


def num(x: float) -> bytes:
    return b"\x00" + struct.pack(">d", x)


END = b"\x00\x00\x09"

# (value, exact AMF0 bytes) written from the AMF0 spec, section 2. Used both ways.
CASES = [
    pytest.param(0.0, num(0.0), id="number-zero"),
    pytest.param(1.0, b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00", id="number-one"),
    pytest.param(-2.5, num(-2.5), id="number-negative"),
    pytest.param(True, b"\x01\x01", id="true"),
    pytest.param(False, b"\x01\x00", id="false"),
    pytest.param("", b"\x02\x00\x00", id="empty-string"),
    pytest.param("hi", b"\x02\x00\x02hi", id="string"),
    pytest.param("é", b"\x02\x00\x02\xc3\xa9", id="utf8-string"),
    pytest.param(None, b"\x05", id="null"),
    pytest.param(UNDEFINED, b"\x06", id="undefined"),
    pytest.param({}, b"\x03" + END, id="empty-object"),
    pytest.param({"a": 1.0}, b"\x03\x00\x01a" + num(1.0) + END, id="object"),
    pytest.param(
        {"app": "live", "o": {"n": None}},
        b"\x03\x00\x03app\x02\x00\x04live\x00\x01o\x03\x00\x01n\x05" + END + END,
        id="nested-object",
    ),
    pytest.param(ECMAArray(x=True), b"\x08\x00\x00\x00\x01\x00\x01x\x01\x01" + END, id="ecma-array"),
    pytest.param([1.0, "a"], b"\x0a\x00\x00\x00\x02" + num(1.0) + b"\x02\x00\x01a", id="strict-array"),
    pytest.param([], b"\x0a\x00\x00\x00\x00", id="empty-strict-array"),
    pytest.param(Date(1.5e12, 0), b"\x0b" + struct.pack(">d", 1.5e12) + b"\x00\x00", id="date"),
    pytest.param("a" * 70000, b"\x0c\x00\x01\x11\x70" + b"a" * 70000, id="long-string"),
]

BIG = Limits(amf_max_string=1 << 20)


@pytest.mark.parametrize(("value", "wire"), CASES)
def test_encode(value: object, wire: bytes) -> None:
    assert amf0.encode(value) == wire


@pytest.mark.parametrize(("value", "wire"), CASES)
def test_decode(value: object, wire: bytes) -> None:
    decoded, end = amf0.decode_value(wire, 0, BIG)
    assert decoded == value
    assert type(decoded) is type(value)
    assert end == len(wire)


@pytest.mark.parametrize(("value", "wire"), CASES)
def test_every_truncation_is_an_amf_error(value: object, wire: bytes) -> None:
    for cut in range(len(wire)):
        with pytest.raises(AMFError, match="truncated AMF0"):
            amf0.decode_value(wire[:cut], 0, BIG)


def test_command_body_round_trip() -> None:
    body = amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"}, None)
    assert amf0.decode(body) == ["connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"}, None]


# --- decode-only leniency -------------------------------------------------------------


def test_ecma_array_count_is_only_a_hint() -> None:
    # FFmpeg's onMetaData count can differ from the entries; the end marker decides.
    wire = b"\x08\x00\x00\x00\x09\x00\x01x" + num(2.0) + END
    assert amf0.decode_value(wire)[0] == {"x": 2.0}


def test_empty_key_with_a_value_is_a_key() -> None:
    wire = b"\x03\x00\x00\x05" + END
    assert amf0.decode_value(wire)[0] == {"": None}


def test_int_encodes_as_number_and_tuple_as_strict_array() -> None:
    assert amf0.encode(3) == num(3.0)
    assert amf0.encode((1, 2)) == amf0.encode([1.0, 2.0])


def test_unencodable_values_are_type_errors() -> None:
    with pytest.raises(TypeError):
        amf0.encode(object())
    with pytest.raises(TypeError):
        amf0.encode({1: "x"})


# --- rejections and limits (the fixture files hold the bytes of the big ones) --------


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x07\x00\x01", "unsupported AMF0 type 0x07 (reference) at offset 0"),
        (b"\x10\x00\x01C" + END, "unsupported AMF0 type 0x10 (typed object) at offset 0"),
        (b"\x11\x01", "unsupported AMF0 type 0x11 (AMF3 switch (avmplus)) at offset 0"),
        (b"\x09", "unsupported AMF0 type 0x09 (object end outside an object) at offset 0"),
        (b"\x0a\x00\x00\x00\x01\x04", "unsupported AMF0 type 0x04 (movie clip) at offset 5"),
        (b"\x20", "unknown AMF0 type marker 0x20 at offset 0"),
        (b"\x02\x00\x02\xff\xfe", "invalid UTF-8 in AMF0 string at offset 3"),
        (b"\x03\x00\x01a", "truncated AMF0 type marker at offset 4: need 1 bytes, have 0"),
    ],
)
def test_rejected_input(wire: bytes, message: str) -> None:
    with pytest.raises(AMFError) as info:
        amf0.decode_value(wire)
    assert str(info.value) == message


def test_depth_limit_counts_containers() -> None:
    limits = Limits(amf_max_depth=2)
    ok = {"a": {"b": 1.0}}
    assert amf0.decode_value(amf0.encode(ok), 0, limits)[0] == ok
    with pytest.raises(LimitExceeded) as info:
        amf0.decode_value(amf0.encode({"a": {"b": [1.0]}}), 0, limits)
    assert str(info.value) == "amf_max_depth: 3 levels exceeds limit of 2 levels"


def test_ten_thousand_deep_nesting_fails_fast_without_recursion() -> None:
    wire = b"\x03\x00\x01a" * 10_000
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        amf0.decode_value(wire)
    assert time.perf_counter() - start < 0.1
    assert str(info.value) == "amf_max_depth: 33 levels exceeds limit of 32 levels"


def test_depth_is_iterative_even_with_a_huge_limit() -> None:
    wire = b"\x0a\x00\x00\x00\x01" * 5000 + b"\x05"
    value, _ = amf0.decode_value(wire, 0, Limits(amf_max_depth=10_000, amf_max_values=10_000))
    depth = 0
    while isinstance(value, list):
        value, depth = value[0], depth + 1
    assert depth == 5000


def test_string_and_item_limits() -> None:
    limits = Limits(amf_max_string=4, amf_max_items=2)
    with pytest.raises(LimitExceeded, match="amf_max_string: 5 bytes exceeds limit of 4 bytes"):
        amf0.decode_value(amf0.encode("hello"), 0, limits)
    with pytest.raises(LimitExceeded, match="amf_max_string: 5 bytes exceeds limit of 4 bytes"):
        amf0.decode_value(amf0.encode({"abcde": 1}), 0, limits)
    with pytest.raises(LimitExceeded, match="amf_max_items: 3 items exceeds limit of 2 items"):
        amf0.decode_value(amf0.encode({"a": 1, "b": 2, "c": 3}), 0, limits)
    with pytest.raises(LimitExceeded, match="amf_max_items: 3 items exceeds limit of 2 items"):
        amf0.decode_value(amf0.encode([1, 2, 3]), 0, limits)
    with pytest.raises(LimitExceeded, match="amf_max_items: 3 items exceeds limit of 2 items"):
        amf0.decode_value(amf0.encode(ECMAArray(a=1, b=2, c=3)), 0, limits)


# --- property tests ------------------------------------------------------------------

_keys = st.text(max_size=8)
_scalars = (
    st.floats(allow_nan=False)
    | st.booleans()
    | st.text(max_size=20)
    | st.none()
    | st.just(UNDEFINED)
    | st.builds(Date, st.floats(allow_nan=False), st.integers(-32768, 32767))
)
values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(_keys, inner, max_size=5)
        | st.dictionaries(_keys, inner, max_size=5).map(ECMAArray)
    ),
    max_leaves=25,
)


def _same(a: object, b: object) -> bool:
    """Equality that also checks container types (ECMAArray vs dict) and -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)  # type: ignore[arg-type]
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)  # type: ignore[attr-defined,index]
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


@settings(max_examples=300, deadline=None)
@given(st.lists(values, max_size=4))
def test_values_round_trip(items: list[object]) -> None:
    wire = amf0.encode(*items)
    decoded = amf0.decode(wire)
    assert len(decoded) == len(items)
    assert all(_same(a, b) for a, b in zip(decoded, items, strict=True))
    assert amf0.encode(*decoded) == wire  # if it parses, it re-serializes


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_documented_errors(data: bytes) -> None:
    try:
        decoded = amf0.decode(data, Limits(amf_max_depth=8, amf_max_items=16, amf_max_string=64))
    except (AMFError, LimitExceeded):
        return
    amf0.encode(*decoded)  # whatever decodes can be encoded again


@settings(max_examples=300, deadline=None)
@given(values, st.binary(min_size=1, max_size=8))
def test_corrupted_values_raise_only_documented_errors(value: object, noise: bytes) -> None:
    wire = bytearray(amf0.encode(value))
    for i, b in enumerate(noise):
        wire[(i * 7919) % len(wire)] ^= b
    with contextlib.suppress(AMFError, LimitExceeded):
        amf0.decode(bytes(wire))
