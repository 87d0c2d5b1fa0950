"""relay_edge.limits: every field documented in docs/LIMITS.md with its default; overrides parse."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from relay_edge.limits import DEFAULT_LIMITS, KIB, MIB, Limits, parse_overrides

DOC = (Path(__file__).parents[2] / "docs" / "LIMITS.md").read_text()


def documented_default(text: str) -> float:
    """``"10 MiB"`` -> 10485760, ``"2 500 000 B"`` -> 2500000, ``"60 s"`` -> 60, ``"2 ms"`` -> 0.002."""
    number, _, unit = text.replace("\u202f", " ").rpartition(" ") if " " in text else (text, "", "")
    number = number.replace(" ", "")
    scale = {"KiB": KIB, "MiB": MIB, "B": 1, "s": 1, "ms": 0.001, "": 1}[unit]
    return float(number) * scale


@pytest.mark.parametrize("name", [f.name for f in fields(Limits)])
def test_every_limit_is_documented_with_its_default(name: str) -> None:
    row = re.search(rf"^\| `{name}` \| ([^|]+) \|", DOC, re.MULTILINE)
    assert row is not None, f"docs/LIMITS.md has no row for {name}"
    assert documented_default(row.group(1).strip()) == pytest.approx(getattr(DEFAULT_LIMITS, name)), name


def test_every_documented_limit_exists() -> None:
    names = {f.name for f in fields(Limits)}
    assert set(re.findall(r"^\| `([a-z_]+)` \|", DOC, re.MULTILINE)) == names


def test_the_link_carries_the_largest_message() -> None:
    """A WebSocket message must hold one whole tag: the largest RTMP message plus framing."""
    assert DEFAULT_LIMITS.ws_max_message > DEFAULT_LIMITS.max_message_size + 1024
    assert DEFAULT_LIMITS.wire_max_str >= DEFAULT_LIMITS.amf_max_string
    assert DEFAULT_LIMITS.wire_max_frames > 2 * DEFAULT_LIMITS.max_streams


def test_overrides() -> None:
    limits = parse_overrides(["max_streams=7", "idle_timeout=2.5"])
    assert (limits.max_streams, limits.idle_timeout) == (7, 2.5)
    with pytest.raises(ValueError, match="unknown limit 'nope'"):
        parse_overrides(["nope=1"])
    with pytest.raises(ValueError, match="limit max_streams needs a int"):
        parse_overrides(["max_streams=lots"])
