"""``bench/run --smoke`` still runs every contender end to end. Figures are not asserted: benchmarks
aren't tests. What is asserted is that each contender really carried media, so a broken contender
can't hide behind a table of dashes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import contenders
from tests.support.nginx import require_nginx_rtmp
from tests.support.publishers import require

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_bench_run_smoke(tmp_path: Path) -> None:
    require_nginx_rtmp()
    require("ffmpeg")
    if shutil.which("websockify") is None:
        pytest.skip("websockify is not installed (apt-get install websockify)")
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "first decoded frame after publish" in done.stdout
    result = json.loads(out.read_text())
    assert Path(result["params"]["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    first = result["first_frame"]
    assert list(first) == contenders.FIRST_FRAME
    for name, row in first.items():
        (run,) = row["runs"]
        assert run["first_frame_ms"] > 0, name
        assert abs(run["audio_s"] - 2.0) < 0.15, (name, run)  # the whole 2 s stream was decoded

    (load,) = result["load"].values()
    assert list(load) == contenders.LOAD
    for name, row in load.items():
        (run,) = row["runs"]
        assert run["tags_sent"] > 3 * 40, (name, run)  # 3 streams, ~43 tags/s each
        # Everything arrived; nginx-rtmp adds its own metadata tag per stream on top.
        extra = 3 if name.startswith("nginx") else 0
        assert run["tags_received"] == run["tags_sent"] + extra, (name, run)
        assert run["latency_samples"] > 0 and run["server_rss_mib"] > 0, (name, run)

    (decode,) = result["decode"].values()
    (run,) = decode["relay-push"]["runs"]
    assert run["chunks_decoded"] > 2 * 40 and run["tags_received"] == run["tags_sent"], run

    for chunk, table in result["throughput"].items():
        assert list(table) == contenders.THROUGHPUT
        for name, row in table.items():
            (run,) = row["runs"]
            assert run["received_mb"] > 1, (chunk, name, run, done.stderr[-3000:])  # a 720p second: ~0.75 MB
