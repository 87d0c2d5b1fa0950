"""Invalid and truncated wire samples (``fixtures/*.bin``) and the exact errors they raise."""

from __future__ import annotations

from typing import Any

import pytest
from rtmp_fixtures import FIXTURES, FIXTURES_DIR, Fixture
from rtmp_support import SPLIT_MODES, pieces

from relay_edge.errors import ProtocolError
from relay_edge.rtmp import ServerSession, amf0


def test_every_fixture_file_is_listed_and_reproducible() -> None:
    on_disk = {path.name for path in FIXTURES_DIR.glob("*.bin")}
    assert on_disk == set(FIXTURES)
    for name, fixture in FIXTURES.items():
        assert (FIXTURES_DIR / name).read_bytes() == fixture.build(), f"{name}: run rtmp_fixtures.py"


def run_session(data: bytes, mode: str) -> tuple[list[Any], ProtocolError | None]:
    """Feed ``data`` in ``mode`` pieces; return the events completed and the error, if any."""
    session = ServerSession()
    events: list[Any] = []
    for piece in pieces(data, mode, seed=len(data)):
        try:
            events.extend(session.receive_data(piece))
        except ProtocolError as exc:
            events.extend(exc.events)  # type: ignore[attr-defined]
            return events, exc
    return events, None


SESSION = [name for name, fixture in FIXTURES.items() if fixture.target == "session"]
AMF = [name for name, fixture in FIXTURES.items() if fixture.target == "amf0"]


@pytest.mark.parametrize("mode", SPLIT_MODES)
@pytest.mark.parametrize("name", SESSION)
def test_session_fixture(name: str, mode: str) -> None:
    fixture: Fixture = FIXTURES[name]
    events, error = run_session((FIXTURES_DIR / name).read_bytes(), mode)
    assert tuple(type(event).__name__ for event in events) == fixture.events
    if fixture.error is None:
        assert error is None
    else:
        assert type(error) is fixture.error
        assert str(error) == fixture.message


@pytest.mark.parametrize("name", AMF)
def test_amf_fixture(name: str) -> None:
    fixture = FIXTURES[name]
    assert fixture.error is not None
    with pytest.raises(fixture.error) as info:
        amf0.decode((FIXTURES_DIR / name).read_bytes())
    assert type(info.value) is fixture.error
    assert str(info.value) == fixture.message


def test_a_failed_session_refuses_more_input() -> None:
    session = ServerSession()
    with pytest.raises(ProtocolError):
        session.receive_data((FIXTURES_DIR / "session_bad_version.bin").read_bytes())
    from relay_edge.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError, match="failed session"):
        session.receive_data(b"\x03")
