"""The CLIs' event loop: uvloop where installed, RELAY_LOOP=asyncio to opt out, bad values rejected."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from pathlib import Path

import click
import pytest

from relay_edge.loop import loop_name, run
from tests.support.net import free_port
from tests.support.relay import SECRET
from tests.test_deploy import BIN, Service

needs_uvloop = pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")


async def which(value: int) -> tuple[str, int]:
    await asyncio.sleep(0)
    return loop_name(), value


@needs_uvloop
def test_run_uses_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAY_LOOP", raising=False)
    assert run(which(1)) == ("uvloop", 1)
    monkeypatch.setenv("RELAY_LOOP", "uvloop")
    assert run(which(2)) == ("uvloop", 2)


def test_relay_loop_asyncio_forces_the_stdlib_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_LOOP", "asyncio")
    assert run(which(3)) == ("asyncio", 3)


def test_unknown_relay_loop_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_LOOP", "bogus")
    with pytest.raises(click.UsageError, match=r"RELAY_LOOP='bogus' is not one of auto, uvloop, asyncio"):
        run(which(4))


def serve(log: Path, env: dict[str, str], argv0: list[str] | None = None) -> Service:
    """``relay-edge serve`` on loopback ports, its stderr in ``log``."""
    argv = [*(argv0 or [str(BIN / "relay-edge")]), "serve"]
    argv += ["--rtmp", f"127.0.0.1:{free_port()}", "--http", "127.0.0.1:0"]
    return Service("relay-edge serve", argv, {"RELAY_SECRET": SECRET, **env}, log)


def wait_started(edge: Service) -> None:
    deadline = time.monotonic() + 15
    while "RTMP server started" not in edge.output():
        assert time.monotonic() < deadline and edge.proc.poll() is None, edge.output()
        time.sleep(0.05)


@pytest.mark.parametrize("choice", [pytest.param("", marks=needs_uvloop), "asyncio"])
def test_serve_logs_its_event_loop(tmp_path: Path, choice: str) -> None:
    edge = serve(tmp_path / "edge.log", {"RELAY_LOOP": choice})
    try:
        wait_started(edge)
        code, _ = edge.terminate(10)
        assert code == 0, edge.output()
        lines = [ln for ln in edge.output().splitlines() if "event loop:" in ln]
        assert len(lines) == 1, edge.output()
        assert lines[0].endswith(f"INFO    [relay_edge] event loop: {choice or 'uvloop'}")
    finally:
        edge.stop()


def test_serve_rejects_a_bad_relay_loop(tmp_path: Path) -> None:
    edge = serve(tmp_path / "edge.log", {"RELAY_LOOP": "bogus"})
    try:
        assert edge.proc.wait(15) == 2, edge.output()
        assert "Error: RELAY_LOOP='bogus' is not one of auto, uvloop, asyncio" in edge.output()
    finally:
        edge.stop()


def test_without_uvloop(tmp_path: Path) -> None:
    """Where uvloop can't be imported: asyncio by default, a clear error if RELAY_LOOP=uvloop."""
    # sys.modules["uvloop"] = None makes `import uvloop` raise ImportError, as if not installed.
    code = "import sys; sys.modules['uvloop'] = None; import relay_edge.cli; relay_edge.cli.main()"
    no_uvloop = [sys.executable, "-c", code]
    edge = serve(tmp_path / "forced.log", {"RELAY_LOOP": "uvloop"}, no_uvloop)
    try:
        assert edge.proc.wait(15) == 2, edge.output()
        assert "Error: RELAY_LOOP=uvloop but uvloop is not installed" in edge.output()
    finally:
        edge.stop()
    edge = serve(tmp_path / "default.log", {}, no_uvloop)
    try:
        wait_started(edge)
        assert edge.terminate(10)[0] == 0, edge.output()
        assert "[relay_edge] event loop: asyncio" in edge.output()
    finally:
        edge.stop()
