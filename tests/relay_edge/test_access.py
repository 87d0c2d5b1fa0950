"""relay_edge.access: parsing --allow-key, constant-time matching, keys kept out of reprs; CLI flags."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from relay_edge.access import MIN_STATIC_KEY, AllowList, parse_allow_keys
from relay_edge.cli import main

KEY_A = "a-static-key-0123456789"
KEY_B = "b-static-key-0123456789"


def test_parse_allow_keys_forms() -> None:
    assert parse_allow_keys([f"cam1={KEY_A}", f"cam2={KEY_B}"]) == {"cam1": KEY_A, "cam2": KEY_B}
    assert parse_allow_keys([f"cam1={KEY_A}, cam2={KEY_B}"]) == {"cam1": KEY_A, "cam2": KEY_B}
    assert parse_allow_keys([f"weird/../name={KEY_A}"]) == {"weird/../name": KEY_A}  # made safe later
    assert parse_allow_keys([f"k={KEY_A}=x"]) == {"k": f"{KEY_A}=x"}  # only the first '=' splits
    assert parse_allow_keys([]) == {}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("justaname", "allow-key entries must be NAME=STATICKEY"),
        (f"={KEY_A}", "allow-key entries must be NAME=STATICKEY"),
        ("cam=short", f"static key for 'cam' is shorter than {MIN_STATIC_KEY} characters"),
        (f"cam={KEY_A},cam={KEY_B}", "stream name 'cam' appears twice in the allow-list"),
    ],
)
def test_parse_allow_keys_errors_name_the_entry_not_the_key(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_allow_keys([entry])
    assert KEY_A not in str(info.value) and KEY_B not in str(info.value) and "short'" not in str(info.value)


def test_match() -> None:
    allow = AllowList({"cam1": KEY_A, "cam2": KEY_B})
    assert (allow.match(KEY_A), allow.match(KEY_B)) == ("cam1", "cam2")
    assert allow.match(KEY_A[:-1]) is None and allow.match(KEY_A + "x") is None and allow.match("") is None
    assert len(allow) == 2 and bool(AllowList({})) is False
    assert repr(allow) == "AllowList(2 entries)"


@given(key=st.text(max_size=64))
def test_property_only_the_exact_key_matches(key: str) -> None:
    allow = AllowList({"cam1": KEY_A})
    assert allow.match(key) == ("cam1" if key == KEY_A else None)


def test_cli_flags(tmp_path: object) -> None:
    runner = CliRunner()
    help_text = runner.invoke(main, ["serve", "--help"]).output
    for flag in ("--rtmps", "--cert", "--key", "--allow-key", "--ca-file"):
        assert flag in help_text
    result = runner.invoke(main, ["serve", "--secret", "s", "--rtmps", "127.0.0.1:0"])
    assert result.exit_code == 2 and "--rtmps needs --cert and --key" in result.output
    result = runner.invoke(main, ["serve", "--secret", "s"], env={"RELAY_ALLOW_KEYS": "cam=tooshort"})
    assert result.exit_code == 2 and "shorter than 16" in result.output and "tooshort" not in result.output
