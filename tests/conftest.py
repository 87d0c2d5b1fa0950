"""Shared fixtures. Media is generated once per session; servers are per test.

Every async test runs twice, on uvloop and on the stdlib loop (ids ``[uvloop]`` / ``[asyncio]``):
uvloop is what the image and the ``fast`` extra run in production, and it raises different
exceptions from the stdlib loop (a dialer bug lived in exactly that gap). Modules in
``SINGLE_LOOP`` run on the stdlib loop only, each with the reason.

Under ``CI=true`` a skipped test is a failure: a machine without ffmpeg, GStreamer, nginx-rtmp or
chromium would otherwise "pass" having tested little. The skip reasons are printed at the end.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import uvloop

from tests.support import media
from tests.support.nginx import NginxRtmp


@pytest.fixture(scope="session")
def tone_flv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of a 440 Hz sine, AAC-LC 44.1 kHz stereo 128 kbit/s, in an FLV file (~0.05 s to make)."""
    return media.tone_flv(tmp_path_factory.mktemp("media") / "tone.flv", seconds=3, frequency=440)


@pytest.fixture(scope="session")
def mp3_flv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of a 440 Hz sine, MP3 44.1 kHz stereo, in an FLV file."""
    return media.tone_flv(tmp_path_factory.mktemp("media") / "tone_mp3.flv", seconds=3, codec="mp3")


@pytest.fixture(scope="session")
def av_flv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of H.264 320x240 at 25 fps (keyframe every second) plus 440 Hz AAC, in an FLV file."""
    return media.av_flv(tmp_path_factory.mktemp("media") / "av.flv", seconds=3)


@pytest.fixture
def nginx_rtmp(tmp_path: Path) -> Iterator[NginxRtmp]:
    """A running nginx-rtmp that records every stream (skips if nginx-rtmp is not installed)."""
    with NginxRtmp(tmp_path / "nginx", record=True) as server:
        yield server


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}

# Async tests whose subject is not the event loop: one run on the stdlib loop is enough.
SINGLE_LOOP = {
    "test_dashboard.py": "the subject is the page in chromium; its edge runs on both loops elsewhere",
    "test_deploy.py": "the services are subprocesses, which pick their own loop (RELAY_LOOP)",
    "test_cli_pull.py": "the CLIs are subprocesses, parametrized over RELAY_LOOP=uvloop/asyncio",
    "test_links.py": "the CLIs are subprocesses, parametrized over RELAY_LOOP=uvloop/asyncio",
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """pytest-asyncio's hook (>= 1.4): the loops each async test is parametrized over."""
    if item.path.name in SINGLE_LOOP:
        return {"asyncio": LOOPS["asyncio"]}
    return LOOPS


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true any skip fails the run (exit status 1); the reasons are in the summary."""
    if not _in_ci() or exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    """Under CI=true, list every skip with its reason: each one is why the run failed."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not _in_ci() or not skipped:
        return
    terminalreporter.section("CI=true: skipped tests fail the run", sep="=", red=True, bold=True)
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        terminalreporter.line(f"SKIPPED {report.nodeid}: {reason}", red=True)
