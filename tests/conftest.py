"""Shared fixtures. Media is generated once per session; servers are per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
