"""relay_edge.keys: stream keys (doc vector, each refusal reason), publish names, safe file names."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_edge.auth import b64url
from relay_edge.errors import AuthError
from relay_edge.keys import (
    MAX_FILENAME,
    is_valid_name,
    key_expiry,
    mint_key,
    safe_filename,
    split_publish_name,
    verify_key,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
SECRET = "correct horse battery staple"
NOW = 1_700_000_000.25


def doc_block(marker: str) -> Any:
    match = re.search(rf"<!-- {marker} -->\s*```json\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.S)
    assert match, f"no ```json block after <!-- {marker} --> in {DOC}"
    return json.loads(match.group(1))


def test_doc_stream_key_vector() -> None:
    vectors = doc_block("vectors:auth")
    v = vectors["stream_key"]
    key = mint_key(vectors["secret"], v["name"], v["ttl"], now=v["now"])
    assert key == v["value"]
    assert key.rpartition(".")[0] == v["signed"]
    assert verify_key(vectors["secret"], v["value"], v["now"]) == v["name"]


# --- mint and verify --------------------------------------------------------------------------------


def test_minted_key_verifies_to_its_name_until_expiry() -> None:
    key = mint_key(SECRET, "room-42", 3600, now=NOW)
    assert key.startswith("room-42.1700003600.")
    assert verify_key(SECRET, key, NOW) == "room-42"
    assert verify_key(SECRET, key, 1_700_003_599.999) == "room-42"
    with pytest.raises(AuthError, match=r"^stream key for 'room-42' expired 0 s ago$"):
        verify_key(SECRET, key, 1_700_003_600)


def test_an_expired_key_still_continues_its_live_stream() -> None:
    """LiveKit retries with the same URL for as long as the session lives (issue 12 item 3)."""
    key = mint_key(SECRET, "room-42", 3600, now=NOW)
    later = NOW + 7200
    live = {"room-42": 1_700_003_600}  # name -> expiry of the key the live stream was published with
    assert verify_key(SECRET, key, later, live=live.get) == "room-42"
    older = mint_key(SECRET, "room-42", 1800, now=NOW)  # the same name, another (expired) key
    with pytest.raises(AuthError, match="expired"):
        verify_key(SECRET, older, later, live=live.get)
    with pytest.raises(AuthError, match="expired"):
        verify_key(SECRET, key, later, live={}.get)  # no live stream: a new stream needs a valid key
    forged = key.rsplit(".", 1)[0] + "." + "A" * 22
    with pytest.raises(AuthError, match="bad signature"):
        verify_key(SECRET, forged, later, live=live.get)
    assert key_expiry(key) == 1_700_003_600 and key_expiry("static-key") is None


def test_default_ttl_is_a_day() -> None:
    assert mint_key(SECRET, "a", now=0).split(".")[1] == "86400"


@pytest.mark.parametrize("name", ["", "a.b", "a b", "a/b", "é", "x" * 65, "a\n", "room?x=1"])
def test_mint_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="stream name must be 1-64 characters"):
        mint_key(SECRET, name, now=NOW)


@pytest.mark.parametrize("ttl", [0, -1, float("nan")])
def test_mint_refuses_non_positive_ttl(ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        mint_key(SECRET, "a", ttl, now=NOW)


def test_mint_refuses_expiry_past_twelve_digits() -> None:
    with pytest.raises(ValueError, match="expiry"):
        mint_key(SECRET, "a", 10**13, now=NOW)


def _parts(key: str) -> list[str]:
    return key.split(".")


KEY = mint_key(SECRET, "room-42", 3600, now=NOW)
NAME, EXPIRY, SIG = _parts(KEY)

REFUSED: list[tuple[str, str, str]] = [
    ("unsigned", "room-42", "stream key 'room-42' is not signed: expected NAME.EXPIRY.SIGNATURE"),
    ("empty", "", "malformed stream key"),
    ("name only with dot", "room-42.", "malformed stream key"),
    ("no signature", f"{NAME}.{EXPIRY}", "malformed stream key"),
    ("extra part", f"{KEY}.x", "malformed stream key"),
    ("short signature", KEY[:-1], "malformed stream key"),
    ("long signature", KEY + "A", "malformed stream key"),
    ("signature not base64url", f"{NAME}.{EXPIRY}.{'+' * 22}", "malformed stream key"),
    ("leading-zero expiry", f"{NAME}.0{EXPIRY}.{SIG}", "malformed stream key"),
    ("signed expiry", f"{NAME}.+{EXPIRY}.{SIG}", "malformed stream key"),
    ("underscored expiry", f"{NAME}.1_700_003_600.{SIG}", "malformed stream key"),
    ("fullwidth expiry", f"{NAME}.{'１' * 10}.{SIG}", "malformed stream key"),
    ("name with slash", f"a/b.{EXPIRY}.{SIG}", "malformed stream key"),
    ("name too long", f"{'x' * 65}.{EXPIRY}.{SIG}", "malformed stream key"),
    ("query left on", f"{KEY}?a=1", "malformed stream key"),
    ("whitespace", f" {KEY}", "malformed stream key"),
    ("newline", f"{KEY}\n", "malformed stream key"),
    ("huge", "x" * 100_000, "malformed stream key"),
    ("tampered name", f"room-43.{EXPIRY}.{SIG}", "bad signature on stream key for 'room-43'"),
    ("tampered expiry", f"{NAME}.{int(EXPIRY) + 86400}.{SIG}", "bad signature on stream key for 'room-42'"),
    (
        "tampered signature",
        f"{NAME}.{EXPIRY}.{b64url(bytes(16))}",
        "bad signature on stream key for 'room-42'",
    ),
    ("signature low bits", f"{NAME}.{EXPIRY}.{SIG[:-1]}{'B' if SIG[-1] == 'A' else 'A'}", "bad signature on"),
    (
        "wrong secret",
        mint_key("other secret", "room-42", 3600, now=NOW),
        "bad signature on stream key for 'room-42'",
    ),
    (
        "expired",
        mint_key(SECRET, "room-42", 60, now=NOW - 3660),
        "stream key for 'room-42' expired 3600 s ago",
    ),
]


@pytest.mark.parametrize(("key", "reason"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_keys_say_why_and_never_echo_the_signature(key: str, reason: str) -> None:
    with pytest.raises(AuthError) as caught:
        verify_key(SECRET, key, NOW)
    message = str(caught.value)
    assert message.startswith(reason), message
    assert SIG not in message and SECRET not in message
    if key.count(".") == 2:
        assert key.split(".")[2] not in message


def test_expired_and_tampered_reads_bad_signature() -> None:
    # Signature before expiry: a forged extension of an old key is a forgery, not "expired".
    old = mint_key(SECRET, "room", 60, now=NOW - 3600)
    name, expiry, sig = _parts(old)
    with pytest.raises(AuthError, match="bad signature"):
        verify_key(SECRET, f"{name}.{int(expiry) + 10**6}.{sig}", NOW)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_auth_error(key: str) -> None:
    with pytest.raises(AuthError):
        verify_key(SECRET, key, NOW)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), st.integers(1, 10**9), st.text(min_size=1))
def test_any_valid_name_round_trips(name: str, ttl: int, secret: str) -> None:
    assert is_valid_name(name)
    key = mint_key(secret, name, ttl, now=NOW)
    assert verify_key(secret, key, NOW) == name
    assert split_publish_name(key + "?x=1") == (key, {"x": "1"})


def test_is_valid_name() -> None:
    assert is_valid_name("A-z_09")
    assert not is_valid_name("a.b") and not is_valid_name("") and not is_valid_name(None)  # type: ignore[arg-type]


# --- publish names -----------------------------------------------------------------------------------

PUBLISH_NAMES: list[tuple[str, tuple[str, dict[str, str]]]] = [
    ("KEY", ("KEY", {})),
    ("KEY?", ("KEY", {})),
    ("KEY?a=1&b=2", ("KEY", {"a": "1", "b": "2"})),
    ("KEY?a=1&a=2", ("KEY", {"a": "2"})),
    ("KEY?flag&x=", ("KEY", {"flag": "", "x": ""})),
    ("KEY?t=a%20b+c&u=%E2%9C%93", ("KEY", {"t": "a b c", "u": "✓"})),
    ("KEY?a=1?b=2", ("KEY", {"a": "1?b=2"})),
    ("KEY?bad=%ff", ("KEY", {"bad": "\ufffd"})),
    ("?a=1", ("", {"a": "1"})),
    ("", ("", {})),
]


@pytest.mark.parametrize(("raw", "expected"), PUBLISH_NAMES, ids=[r or "empty" for r, _ in PUBLISH_NAMES])
def test_split_publish_name(raw: str, expected: tuple[str, dict[str, str]]) -> None:
    assert split_publish_name(raw) == expected


def test_split_publish_name_parses_at_most_32_fields() -> None:
    raw = "KEY?" + "&".join(f"f{i}={i}" for i in range(10_000))
    name, fields = split_publish_name(raw)
    assert name == "KEY" and len(fields) == 32 and fields["f31"] == "31"


# --- safe file names -----------------------------------------------------------------------------------

SAFE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._~-]{0,63}")


def assert_safe(result: str) -> None:
    assert SAFE_RE.fullmatch(result), repr(result)
    assert ".." not in result and not result.endswith(".")
    assert result.partition(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT1"}


FILENAMES: list[tuple[str, str]] = [
    ("room-42", "room-42"),
    ("Room_42.v2", "Room_42.v2"),
    ("x" * 64, "x" * 64),
    ("../", "__~"),
    ("../../etc/passwd", "____etc_passwd~"),
    ("/etc/passwd", "_etc_passwd~"),
    ("C:\\Windows\\win.ini", "C__Windows_win.ini~"),
    ("a\0b", "a_b~"),
    ("tab\there\nnew", "tab_here_new~"),
    ("\x7f\x1b[31m", "___31m~"),
    ("ＡＢＣ", "ABC~"),
    ("ﬁle", "file~"),  # ligature
    ("a\u202eexe.txt", "a_exe.txt~"),  # right-to-left override
    ("a\u200bb", "a_b~"),  # zero-width space
    ("\u2024\u2024", "_~"),  # one-dot leaders: NFKC makes them ".."
    (".", "stream~"),
    ("..", "_~"),
    ("...", "_~"),
    (".hidden", "hidden~"),
    ("-rf", "rf~"),
    ("name.", "name~"),
    ("a..b", "a_b~"),
    ("CON", "_CON~"),
    ("nul.flv", "_nul.flv~"),
    ("COM1", "_COM1~"),
    ("stream~abc", "stream_abc~"),
    ("", "stream~"),
    ("日本語", "___~"),
    ("\udcff", "_~"),  # lone surrogate
    ("x" * 10_000, "x" * 51 + "~"),
    ("x" * 65, "x" * 51 + "~"),
]


@pytest.mark.parametrize(("name", "prefix"), FILENAMES, ids=[repr(n[:20]) for n, _ in FILENAMES])
def test_safe_filename(name: str, prefix: str) -> None:
    result = safe_filename(name)
    assert_safe(result)
    if "~" in prefix:
        assert result.startswith(prefix) and re.fullmatch(r"[0-9a-f]{12}", result[len(prefix) :]), result
    else:
        assert result == prefix


def test_unchanged_names_never_contain_a_tilde() -> None:
    # The "~" marks a changed name, so an unchanged name can't collide with one.
    changed = safe_filename("room 42")
    assert "~" in changed and safe_filename(changed) != changed


def test_distinct_names_that_clean_alike_stay_distinct() -> None:
    names = [
        "ABC",
        "ＡＢＣ",
        "a/b",
        "a\\b",
        "a_b",
        "a b",
        "a\0b",
        "..",
        ".",
        "",
        "x" * 70,
        "x" * 71,
        "x" * 64 + "y",
    ]
    results = [safe_filename(n) for n in names]
    assert len(set(results)) == len(names), results


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_any_name_becomes_one_safe_component(name: str) -> None:
    result = safe_filename(name)
    assert_safe(result)
    assert 1 <= len(result) <= MAX_FILENAME
    assert result == safe_filename(name)  # deterministic


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=80), min_size=2, max_size=10, unique=True))
def test_distinct_inputs_give_distinct_outputs(names: list[str]) -> None:
    assert len({safe_filename(n) for n in names}) == len(names)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=30))
def test_nfkc_forms_of_one_name_differ_unless_identical(name: str) -> None:
    folded = unicodedata.normalize("NFKC", name)
    if folded != name:
        assert safe_filename(folded) != safe_filename(name)
