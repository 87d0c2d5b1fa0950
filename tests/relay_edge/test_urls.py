"""ws:// to a host that is not loopback is warned about (Edge.start and `relay-client connect` log it)."""

from __future__ import annotations

import pytest

from relay_edge.urls import plaintext_warning


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("ws://app.example.com/relay", True),
        ("ws://10.0.0.5:8000/relay", True),
        ("wss://app.example.com/relay", False),
        ("ws://127.0.0.1:8000/relay", False),
        ("ws://localhost:8000/relay", False),
        ("ws://[::1]:8000/relay", False),
    ],
)
def test_plaintext_warning(url: str, warned: bool) -> None:
    warning = plaintext_warning(url)
    assert (warning is not None) == warned
    if warning:
        assert "ws:// (no TLS)" in warning and "wss://" in warning
