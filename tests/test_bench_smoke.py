"""The benchmarks still run (a short smoke run each). Figures are not asserted: benchmarks aren't tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.nginx import require_nginx_rtmp

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_first_frame_benchmark_runs(tmp_path: Path) -> None:
    out = run("bench/first_frame.py", "--runs", "1", "--seconds", "1", "--json", str(tmp_path / "r.json"))
    assert "relay adds:" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result["medians"]) == {"direct", "relay"}
    assert all(row["first_frame_ms"] > 0 for row in result["medians"].values())


def test_load_benchmark_runs(tmp_path: Path) -> None:
    require_nginx_rtmp()
    out = run(
        "bench/load.py",
        "--streams",
        "2",
        "--window",
        "1",
        "--warmup",
        "1",
        "--json",
        str(tmp_path / "l.json"),
    )
    assert "2 streams: edge" in out
    result = json.loads((tmp_path / "l.json").read_text())["2"]
    assert result["relay"]["publisher"]["tags_sent"] > 2 * 40  # ~43 AAC tags/s per stream for ~3 s
    assert result["relay"]["edge"]["rss_mib"] > 0 and result["nginx"]["nginx"]["rss_mib"] > 0
