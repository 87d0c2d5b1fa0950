"""Every contender side by side, in one run on this machine: ``bench/run`` (see bench/README.md).

Four sections, each a median over ``--runs`` with the contenders alternating inside a run,
so drift on the machine hits them alike:

1. first frame and latency: one 128 kbit/s AAC stream published in real time; time from
   publish (and from TCP connect) to the first decoded audio frame at the app, and per decoded
   frame the delay since the publisher wrote the packet holding its last sample (p50/p99).
2. load: N concurrent AAC streams; CPU % of one core and RSS of the edge (or nginx-rtmp) and of
   the app, and per audio tag the delay from the publisher's write to the app (p50/p99). The app
   only receives and acks here, so the figures are the edge's.
3. decode: the same with the app decoding every stream to 16 kHz mono s16: its CPU per stream.
4. throughput: one H.264 stream (720p, ~6 Mbit/s) flooded at RTMP chunk sizes 128 and 4096:
   MB/s reaching the app and the middle's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from relay_edge import accel
from tests.support.media import read_tags, tone_flv

from . import contenders as c
from .procs import ROOT, CpuMeter
from .publisher import Published, publish_flood, publish_many, publish_paced, schedule_name

RESULTS = ROOT / "bench" / "results"
RAMP = 0.005  # seconds between stream starts under load: a connect storm is not what we measure


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def alternate(
    names: list[str], runs: int, once: Callable[[str], dict[str, Any]], keys: tuple[str, ...], label: str
) -> dict[str, dict[str, Any]]:
    """Each contender ``runs`` times, alternating within a run; per contender its runs and medians."""
    rows: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    failed: dict[str, list[str]] = {n: [] for n in names}
    for i in range(runs):
        for name in names:
            try:
                rows[name].append(once(name))
            except RuntimeError as exc:  # one bad run (a consumer that died) is said and run again, once
                log(f"{label} run {i + 1}/{runs} {name} failed, running it again: {exc}")
                failed[name].append(str(exc))
                rows[name].append(once(name))
            log(f"{label} run {i + 1}/{runs} {name}: {json.dumps(rows[name][-1])}")
    result: dict[str, dict[str, Any]] = {}
    for n, r in rows.items():
        result[n] = {"runs": r, "median": {k: median_of(r, k) for k in keys}}
        if failed[n]:
            result[n]["failed"] = failed[n]
    return result


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- 1. first frame and latency ---------------------------------------------------------------------


def frame_latencies(frames: list[list[float]], pub: Published) -> list[float]:
    """Per frame: arrival minus when the packet holding its last sample was written."""
    pts = sorted(pub.sent_at)
    out = []
    for arrived, start, duration in frames:
        i = bisect.bisect_right(pts, start + duration - 1) - 1
        if i >= 0:
            out.append((arrived - pub.sent_at[pts[i]]) * 1000)
    return out


def first_frame_once(name: str, tags: list[Any], seconds: float) -> dict[str, Any]:
    with c.CONTENDERS[name]("frames", ["ff"]) as setup:
        pub = asyncio.run(publish_paced(setup.port, setup.app, setup.key("ff"), tags, seconds))
        end = seconds * 1000 - 100

        def complete(lines: list[dict[str, Any]]) -> bool:
            return any(x["f"][1] + x["f"][2] >= end for x in lines if "f" in x)

        try:
            setup.consumer.wait(complete, seconds + 15, "last frame")
        except (RuntimeError, TimeoutError) as e:
            log(f"  {name}: {e}")
        frames = [x["f"] for x in setup.consumer.finish() if "f" in x]
    if not frames:
        return {"first_frame_ms": None, "error": "no frame decoded"}
    latency = frame_latencies(frames, pub)
    return {
        "first_frame_ms": (frames[0][0] - pub.started_at) * 1000,
        "from_connect_ms": (frames[0][0] - pub.connected_at) * 1000,
        "latency_p50_ms": percentile(latency, 0.5),
        "latency_p99_ms": percentile(latency, 0.99),
        "frames": len(frames),
        "audio_s": round(sum(f[2] for f in frames) / 1000, 3),
    }


FIRST_FRAME_KEYS = ("first_frame_ms", "from_connect_ms", "latency_p50_ms", "latency_p99_ms")


def first_frame(names: list[str], runs: int, seconds: float, source: Path) -> dict[str, Any]:
    tags = read_tags(source)
    table = alternate(
        names, runs, lambda n: first_frame_once(n, tags, seconds), FIRST_FRAME_KEYS, "first frame"
    )
    floor = table.get("floor", {}).get("median")
    if floor:
        for row in table.values():
            m = row["median"]
            row["vs_floor"] = {
                "first_frame_x": _ratio(m["first_frame_ms"], floor["first_frame_ms"]),
                "added_p50_ms": _minus(m["latency_p50_ms"], floor["latency_p50_ms"]),
                "added_p99_ms": _minus(m["latency_p99_ms"], floor["latency_p99_ms"]),
            }
    return table


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _minus(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


# --- 2. load ----------------------------------------------------------------------------------------


def load_once(
    name: str, n: int, tags: list[Any], warmup: float, window: float, mode: str = "load"
) -> dict[str, Any]:
    base = time.monotonic() + 4 + n * 0.01  # after setup (nginx players connect ~10 ms apart)
    starts = [base + i * RAMP for i in range(n)]
    names = [schedule_name(f"s{i}", t0) for i, t0 in enumerate(starts)]
    w0 = starts[-1] + warmup
    w1 = w0 + window
    with c.CONTENDERS[name](mode, names, ("--window", f"{w0},{w1}")) as setup:
        if time.monotonic() > base - 1:
            log(f"  {name}: setup overran the schedule by {time.monotonic() - base + 1:.2f} s")
        meter = CpuMeter({**setup.pids, "app": setup.consumer.proc.pid})

        async def drive() -> tuple[list[Published], dict[str, dict[str, float]]]:
            async def metered() -> dict[str, dict[str, float]]:
                await asyncio.sleep(w0 - time.monotonic())
                meter.start()
                await asyncio.sleep(w1 - time.monotonic())
                return meter.stop()

            task = asyncio.create_task(metered())
            keys = [setup.key(x) for x in names]
            pubs = await publish_many(setup.port, setup.app, keys, starts, tags, until=w1 + 0.5)
            return pubs, await task

        pubs, figures = asyncio.run(drive())
        time.sleep(0.5)
        summary = next((x for x in reversed(setup.consumer.finish()) if "latency_ms" in x), None)
        if summary is None:
            state, tail = setup.consumer.state(), setup.consumer.stderr_tail()
            raise RuntimeError(f"no summary from the consumer ({state}); its stderr: {tail!r}")
    middle = "edge" if "edge" in figures else "nginx"
    lag = [x for p in pubs for x in p.lag_ms]
    lat = summary["latency_ms"]
    return {
        "server_cpu_pct": figures[middle]["cpu_pct"],
        "server_rss_mib": figures[middle]["rss_mib"],
        "server_cpu_per_stream_pct": figures[middle]["cpu_pct"] / n,
        "app_cpu_pct": figures["app"]["cpu_pct"],
        "app_cpu_per_stream_pct": figures["app"]["cpu_pct"] / n,
        "app_rss_mib": figures["app"]["rss_mib"],
        "latency_p50_ms": percentile(lat, 0.5),
        "latency_p99_ms": percentile(lat, 0.99),
        "latency_samples": len(lat),
        "publisher_lag_p99_ms": percentile(lag, 0.99),
        "tags_sent": sum(p.tags for p in pubs),
        "tags_received": summary["tags"],
        "chunks_decoded": summary["chunks"],
    }


LOAD_KEYS = (
    "server_cpu_pct",
    "server_rss_mib",
    "server_cpu_per_stream_pct",
    "app_cpu_pct",
    "app_cpu_per_stream_pct",
    "app_rss_mib",
    "latency_p50_ms",
    "latency_p99_ms",
    "publisher_lag_p99_ms",
)


def load(
    names: list[str],
    counts: list[int],
    runs: int,
    warmup: float,
    window: float,
    source: Path,
    mode: str = "load",
) -> dict:
    tags = read_tags(source)
    return {
        str(n): alternate(
            names,
            runs,
            partial(load_once, n=n, tags=tags, warmup=warmup, window=window, mode=mode),
            LOAD_KEYS,
            f"{mode} {n}",
        )
        for n in counts
    }


# --- 3. throughput ----------------------------------------------------------------------------------


def throughput_once(name: str, chunk: int, tags: list[Any], seconds: float) -> dict[str, Any]:
    with c.CONTENDERS[name]("count", ["tp"]) as setup:
        meter = CpuMeter({**setup.pids, "app": setup.consumer.proc.pid})

        async def drive() -> Published:
            meter.start()
            return await publish_flood(setup.port, setup.app, setup.key("tp"), tags, seconds, chunk)

        pub = asyncio.run(drive())
        figures = meter.stop()
        setup.consumer.settle()
        counts = [(x["t"], x["bytes"]) for x in setup.consumer.finish() if "bytes" in x]
        received = counts[-1][1] if counts else 0
        if not received:
            log(f"  {name}: the consumer received nothing; its stderr:\n{setup.consumer.stderr_tail()}")
    inside = [(t, b) for t, b in counts if pub.started_at + 0.5 <= t <= pub.started_at + seconds]
    rate = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) if len(inside) > 1 else 0.0
    middle = next((k for k in figures if k != "app"), None)
    return {
        "mb_s": rate / 1e6,
        "sent_mb_s": pub.bytes / seconds / 1e6,
        "received_mb": received / 1e6,
        "sent_mb": pub.bytes / 1e6,
        "server_cpu_pct": figures[middle]["cpu_pct"] if middle else None,
        "app_cpu_pct": figures["app"]["cpu_pct"],
    }


THROUGHPUT_KEYS = ("mb_s", "sent_mb_s", "server_cpu_pct", "app_cpu_pct")


def throughput(names: list[str], chunks: list[int], runs: int, seconds: float, source: Path) -> dict:
    tags = read_tags(source)
    table: dict[str, dict[str, Any]] = {}
    for chunk in chunks:
        table[str(chunk)] = rows = alternate(
            names,
            runs,
            partial(throughput_once, chunk=chunk, tags=tags, seconds=seconds),
            THROUGHPUT_KEYS,
            f"throughput {chunk}",
        )
        floor = rows.get("floor", {}).get("median", {}).get("mb_s")
        for row in rows.values():
            row["vs_floor_x"] = _ratio(row["median"]["mb_s"], floor)
    return table


def video_flv(path: Path, seconds: float) -> Path:
    """720p30 H.264 at ~6 Mbit/s with AAC: a heavy publisher, encoded once by the ffmpeg CLI."""
    argv = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"]
    argv += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", str(seconds)]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-b:v", "6M", "-maxrate", "6M", "-bufsize", "6M"]
    argv += ["-g", "60", "-c:a", "aac", "-b:a", "128k", "-f", "flv", str(path)]
    subprocess.run(argv, check=True)
    return path


# --- report -----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import av

    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError:
            return "missing"
        return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr) else "?"

    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return {
        "cpus": os.cpu_count(),
        "cpu": next(
            (
                x.split(":", 1)[1].strip()
                for x in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in x
            ),
            platform.processor(),
        ),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "ffmpeg_in_pyav": ".".join(str(x) for x in av.library_versions["libavformat"]),
        "nginx": version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
        "websockify": version(["dpkg-query", "-W", "-f", "${Version}", "websockify"]),
        "relay_loop": os.environ.get("RELAY_LOOP", loop),
        "relay_core": accel.state(),  # "compiled" or "pure: <why>" (relay_edge/accel.py)
    }


Column = tuple[str, Callable[[dict[str, Any]], str]]  # header, cell from a contender's row


def _section(title: str, table: dict[str, Any], columns: list[Column]) -> None:
    """Print one table: a line per contender, a column per figure."""
    rows = [["contender", *(h for h, _ in columns)]]
    rows += [[name, *(cell(row) for _, cell in columns)] for name, row in table.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\n{title}")
    for row in rows:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells))


def _m(key: str, digits: int = 1) -> Callable[[dict[str, Any]], str]:
    return lambda row: _fmt(row["median"][key], digits)


FIRST_FRAME_COLUMNS: list[Column] = [
    (
        "first frame ms",
        lambda r: f"{_fmt(r['median']['first_frame_ms'])} ({_x(r.get('vs_floor', {}).get('first_frame_x'))})",
    ),
    ("from connect", _m("from_connect_ms")),
    (
        "p50 ms (added)",
        lambda r: (
            f"{_fmt(r['median']['latency_p50_ms'])} ({_plus(r.get('vs_floor', {}).get('added_p50_ms'))})"
        ),
    ),
    (
        "p99 ms (added)",
        lambda r: (
            f"{_fmt(r['median']['latency_p99_ms'])} ({_plus(r.get('vs_floor', {}).get('added_p99_ms'))})"
        ),
    ),
]
LOAD_COLUMNS: list[Column] = [
    ("server CPU%", _m("server_cpu_pct")),
    ("per stream", _m("server_cpu_per_stream_pct", 3)),
    ("RSS MiB", _m("server_rss_mib")),
    ("app CPU%", _m("app_cpu_pct")),
    ("per stream", _m("app_cpu_per_stream_pct", 3)),
    ("p50 ms", _m("latency_p50_ms")),
    ("p99 ms", _m("latency_p99_ms")),
]
THROUGHPUT_COLUMNS: list[Column] = [
    ("MB/s at app", _m("mb_s")),
    ("vs floor", lambda r: _x(r.get("vs_floor_x"))),
    ("MB/s sent", _m("sent_mb_s")),
    ("server CPU%", _m("server_cpu_pct")),
    ("app CPU%", _m("app_cpu_pct")),
]


def print_table(result: dict[str, Any]) -> None:
    if ff := result.get("first_frame"):
        runs = result["params"]["runs"]
        _section(
            f"first decoded frame after publish, latency: medians of {runs} runs", ff, FIRST_FRAME_COLUMNS
        )
    for n, table in result.get("load", {}).items():
        _section(f"load: {n} AAC streams (CPU: % of one core; latency: write to app)", table, LOAD_COLUMNS)
    for n, table in result.get("decode", {}).items():
        _section(f"app decoding {n} AAC streams to 16 kHz mono s16", table, LOAD_COLUMNS)
    for chunk, table in result.get("throughput", {}).items():
        _section(f"throughput: one H.264 720p stream flooded, chunk size {chunk}", table, THROUGHPUT_COLUMNS)


def _fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def _plus(v: float | None) -> str:
    return "—" if v is None else f"{v:+.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a ~20 s run that only checks the benchmark works"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the first-frame stream")
    parser.add_argument("--streams", default="10,100,500", help="load: concurrent streams")
    parser.add_argument("--decode-streams", default="10,100,200", help="decode: streams the app decodes")
    parser.add_argument("--load-runs", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--window", type=float, default=10.0, help="load: seconds measured")
    parser.add_argument("--chunks", default="128,4096", help="throughput: RTMP chunk sizes")
    parser.add_argument("--flood", type=float, default=5.0, help="throughput: seconds per run")
    parser.add_argument("--sections", default="first_frame,load,decode,throughput")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--chart", type=Path, default=None, help="PNG chart (default: beside --out)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.seconds, args.streams, args.decode_streams, args.load_runs = 1, 2.0, "3", "2", 1
        args.warmup, args.window, args.flood = 1.0, 1.0, 1.0
        # One chunk size is enough to check every contender end to end. At 128, PyAV behind the
        # websockify tunnel received nothing in 3 of 3 full-suite runs (never when run alone);
        # bench/README.md tracks it, and the full run still measures both sizes.
        args.chunks = "4096"
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 500 streams: ~1000 sockets per server
    sections = args.sections.split(",")
    result: dict[str, Any] = {
        "machine": machine(),
        "params": vars(args) | {"out": str(args.out), "chart": None},
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        audio = tone_flv(Path(tmp) / "tone.flv", seconds=10)
        if "first_frame" in sections:
            result["first_frame"] = first_frame(c.FIRST_FRAME, args.runs, args.seconds, audio)
        if "load" in sections:
            counts = [int(x) for x in args.streams.split(",")]
            result["load"] = load(c.LOAD, counts, args.load_runs, args.warmup, args.window, audio)
        if "decode" in sections:
            counts = [int(x) for x in args.decode_streams.split(",")]
            result["decode"] = load(
                c.DECODE, counts, args.load_runs, args.warmup, args.window, audio, "decode"
            )
        if "throughput" in sections:
            video = video_flv(Path(tmp) / "video.flv", seconds=4)
            chunks = [int(x) for x in args.chunks.split(",")]
            result["throughput"] = throughput(c.THROUGHPUT, chunks, args.load_runs, args.flood, video)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    chart = args.chart or args.out.with_suffix(".png")
    from .chart import draw

    draw(result, chart)
    result["params"]["chart"] = str(chart)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out} and {chart} in {result['elapsed_s']} s")
    return 0
