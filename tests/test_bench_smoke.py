"""``bench/run --smoke`` still runs every contender end to end. Figures are not asserted: benchmarks
aren't tests. What is asserted is that each contender really carried media, so a broken contender
can't hide behind a table of dashes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
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


def test_bench_ingest_carries_every_tag(tmp_path: Path) -> None:
    """bench/ingest.py's path: every AAC tag each publisher wrote reaches the link, in order,
    byte for byte, as FLV tags in Data frames."""
    from bench import ingest
    from relay_edge import flv, wire
    from tests.support.media import read_tags, tone_flv

    tags = read_tags(tone_flv(tmp_path / "tone.flv", seconds=1))
    audio = [t.data for t in tags if t.type == flv.AUDIO]
    streams = [ingest.publisher_bytes(tags, 1.5, chunk, f"s{i}") for i, chunk in enumerate((128, 4096))]
    # 1.5 s of 1024-sample frames at 44.1 kHz (the 1 s file looped), plus the sequence header.
    assert [s.tags for s in streams] == [66, 66]
    messages: list[bytes] = []
    _, pushed, link = ingest.run_once(streams, messages)
    assert pushed == 132 and link == sum(map(len, messages))
    carried: dict[int, list[bytes]] = {1: [], 2: []}
    for message in messages:
        for frame in wire.decode_message(message):
            assert frame.seq == len(carried[frame.sid]) + 1
            carried[frame.sid] += [flv.decode_tag(t).data for t in frame.tags]
    expected = [audio[0]] + [audio[1:][i % (len(audio) - 1)] for i in range(65)]
    assert carried == {1: expected, 2: expected}
    assert ingest.reader_once(streams)[1] == 132


def test_bench_edgepump_carries_every_tag(tmp_path: Path) -> None:
    """bench/edgepump.py's path: the real edge's connections, core and link entries carry every
    AAC tag each publisher wrote, in order and byte for byte, and the acks free them."""
    from bench import edgepump, ingest
    from relay_edge import flv, keys, wire
    from tests.support.media import read_tags, tone_flv

    tags = read_tags(tone_flv(tmp_path / "tone.flv", seconds=1))
    audio = [t.data for t in tags if t.type == flv.AUDIO]
    now = time.time()
    streams = [
        ingest.publisher_bytes(tags, 1.5, chunk, keys.mint_key(edgepump.SECRET, f"s{i}", now=now))
        for i, chunk in enumerate((128, 4096, 4096))
    ]
    messages: list[bytes] = []
    _, pushed = edgepump.run_once(streams, 2, messages)
    assert pushed == 3 * 66
    carried: dict[str, list[bytes]] = {}
    names: dict[int, str] = {}
    for message in messages:
        for frame in wire.decode_message(message):
            if isinstance(frame, wire.Open):
                names[frame.sid] = frame.name
                carried[frame.name] = []
            elif isinstance(frame, wire.Data):
                got = carried[names[frame.sid]]
                assert frame.seq == len(got) + 1
                got += [flv.decode_tag(t).data for t in frame.tags]
    expected = [audio[0]] + [audio[1:][i % (len(audio) - 1)] for i in range(65)]
    assert carried == {"s0": expected, "s1": expected, "s2": expected}


def test_bench_masking_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import masking
    from tests.support.net import free_port

    assert (
        masking.main(["--sizes", "4096", "--seconds", "0.2", "--runs", "1", "--port", str(free_port())]) == 0
    )
    out = capsys.readouterr().out
    assert "C speedup in use: True" in out
    assert out.count("client, 65536 B messages") == 2
