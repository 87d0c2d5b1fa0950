"""Edge and app cost per stream at 10, 100 and 500 concurrent 128 kbit/s AAC streams.

A lightweight publisher process (our sans-I/O ClientSession, asyncio, many
connections) replays a pre-recorded FLV in real time, looping, to either:

- rtmp-relay: ``relay-edge serve`` pushing to ``relay-client serve`` (no --out,
  no decoding: the app side only receives and acks), both real processes;
- nginx-rtmp (Debian's libnginx-mod-rtmp), publish only: the baseline.

Over a steady window it reads each server process's CPU time and RSS from
/proc and reports CPU as % of one core, per stream too. The same publisher
drives both, as MEASURED.md warns that the publisher changes the figures.

    .venv/bin/python bench/load.py --streams 10,100,500 --window 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay_edge import flv, keys  # noqa: E402
from relay_edge.rtmp.client import ClientSession  # noqa: E402
from relay_edge.rtmp.events import PublishRejected  # noqa: E402
from tests.support.media import read_tags, tone_flv  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402

SECRET = "bench-secret-0123456789"
TICK = 0.1  # publishers send what is due every 100 ms: cheap to drive 500 of them
CLK_TCK = os.sysconf("SC_CLK_TCK")
BIN = Path(sys.executable).parent


# --- the lightweight publisher (runs in its own process: `load.py publish ...`) ---------------


async def _publish_one(port: int, name: str, tags: list[flv.Tag], until: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session = ClientSession("live", name, f"rtmp://127.0.0.1:{port}/live", chunk_size=4096)
    session.initiate()
    writer.write(session.data_to_send())
    while not session.publishing:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError(f"{name}: closed before publish started")
        for event in session.receive_data(data):
            if isinstance(event, PublishRejected):
                raise ConnectionError(f"{name}: {event.code}")
        writer.write(session.data_to_send())

    async def drain_acks() -> None:
        while data := await reader.read(65536):
            session.receive_data(data)

    acks = asyncio.create_task(drain_acks())
    config = [t for t in tags if flv.is_sequence_header(t.type, t.data)]
    frames = [t for t in tags if not flv.is_sequence_header(t.type, t.data)]
    span = frames[-1].timestamp + 23
    for tag in config:
        session.send_media(tag.type, tag.timestamp, tag.data)
    start = time.monotonic()
    sent, loop_no, i = 0, 0, 0
    while time.monotonic() < until:
        now_ms = (time.monotonic() - start) * 1000
        while True:
            tag = frames[i]
            ts = tag.timestamp + loop_no * span
            if ts > now_ms:
                break
            session.send_media(tag.type, ts, tag.data)
            sent += 1
            i += 1
            if i == len(frames):
                i, loop_no = 0, loop_no + 1
        writer.write(session.data_to_send())
        await asyncio.sleep(TICK)
    session.unpublish()
    writer.write(session.data_to_send())
    await writer.drain()
    writer.close()
    acks.cancel()
    return sent


async def publish_many(port: int, names: list[str], flv_path: Path, seconds: float) -> None:
    tags = read_tags(flv_path)
    until = time.monotonic() + seconds
    tasks = []
    for name in names:  # ramp up gently: a connect storm is not what we measure
        tasks.append(asyncio.create_task(_publish_one(port, name, tags, until)))
        await asyncio.sleep(0.005)
    sent = await asyncio.gather(*tasks)
    print(json.dumps({"tags_sent": sum(sent)}), flush=True)


# --- measuring ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(pids: dict[str, int], warmup: float, window: float) -> dict[str, dict[str, float]]:
    time.sleep(warmup)
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    return {
        k: {"cpu_pct": 100 * (cpu_seconds(p) - before[k]) / elapsed, "rss_mib": rss_mib(p)}
        for k, p in pids.items()
    }


def spawn(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_relay(n: int, flv_path: Path, warmup: float, window: float) -> dict[str, Any]:
    rtmp, http, app = free_port(), free_port(), free_port()
    # Every publisher comes from 127.0.0.1 here; the per-IP default (50) is for the field.
    env = {
        "RELAY_SECRET": SECRET,
        "RELAY_LOG_LEVEL": "warning",
        "RELAY_LIMITS": "max_connections_per_ip=100000",
    }
    client = spawn([str(BIN / "relay-client"), "serve", "--listen", f"127.0.0.1:{app}"], env)
    wait_for_port("127.0.0.1", app, 15)
    edge_argv = ["serve", "--rtmp", f"127.0.0.1:{rtmp}", "--http", f"127.0.0.1:{http}"]
    edge = spawn([str(BIN / "relay-edge"), *edge_argv, "--upstream", f"ws://127.0.0.1:{app}/relay"], env)
    wait_for_port("127.0.0.1", rtmp, 15)
    names = [keys.mint_key(SECRET, f"s{i}", now=time.time()) for i in range(n)]
    try:
        result = _drive(rtmp, names, flv_path, warmup, window, {"edge": edge.pid, "app": client.pid})
    finally:
        stop(edge)
        stop(client)
    return result


def run_nginx(n: int, flv_path: Path, warmup: float, window: float) -> dict[str, Any]:
    from tests.support.nginx import NginxRtmp

    with tempfile.TemporaryDirectory() as tmp, NginxRtmp(Path(tmp)) as nginx:
        port = nginx.port
        pid = nginx.pid
        return _drive(port, [f"s{i}" for i in range(n)], flv_path, warmup, window, {"nginx": pid})


def _drive(
    port: int, names: list[str], flv_path: Path, warmup: float, window: float, pids: dict[str, int]
) -> dict[str, Any]:
    seconds = warmup + window + 2
    pub = subprocess.Popen(
        [sys.executable, __file__, "publish", str(port), str(flv_path), str(seconds), *names],
        stdout=subprocess.PIPE,
    )
    try:
        figures = measure({**pids, "publisher": pub.pid}, warmup + len(names) * 0.005, window)
        out, _ = pub.communicate(timeout=seconds + 60)
        figures["publisher"]["tags_sent"] = json.loads(out.splitlines()[-1])["tags_sent"]
    finally:
        if pub.poll() is None:
            pub.kill()
    return figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        port, path, seconds, *names = sys.argv[2:]
        asyncio.run(publish_many(int(port), names, Path(path), float(seconds)))
        return
    parser = argparse.ArgumentParser(description="edge/app CPU and RSS per stream vs nginx-rtmp")
    parser.add_argument("--streams", default="10,100,500")
    parser.add_argument("--window", type=float, default=20.0, help="steady-state seconds measured")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = tone_flv(Path(tmp) / "tone.flv", seconds=10)
        results: dict[str, Any] = {}
        for n in [int(x) for x in args.streams.split(",")]:
            results[str(n)] = {
                "relay": run_relay(n, source, args.warmup, args.window),
                "nginx": run_nginx(n, source, args.warmup, args.window),
            }
            r, g = results[str(n)]["relay"], results[str(n)]["nginx"]
            ratio = r["edge"]["cpu_pct"] / max(g["nginx"]["cpu_pct"], 0.01)
            print(
                f"{n:4d} streams: edge {r['edge']['cpu_pct']:5.1f}% {r['edge']['rss_mib']:6.1f} MiB | "
                f"app {r['app']['cpu_pct']:5.1f}% {r['app']['rss_mib']:6.1f} MiB | "
                f"nginx {g['nginx']['cpu_pct']:5.1f}% {g['nginx']['rss_mib']:6.1f} MiB | "
                f"edge/nginx CPU {ratio:.2f}x",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
