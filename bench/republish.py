"""``python -m bench.republish``: what ``--republish`` costs the app per tag, into a real nginx-rtmp.

LocalPublish writes a pre-recorded stream as fast as nginx takes it, in batches of 16 tags (what the
stream pipeline hands it at most between two acks when live), and we note wall time and this
process's CPU time. Median of 5 runs. A 128 kbit/s AAC stream is 43 tags/s, so the figure per tag
times 43 is the CPU share one live stream costs.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path

from relay_client.republish import LocalPublish, Target
from tests.support import media
from tests.support.nginx import NginxRtmp

RUNS = 5
BATCH = 16


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def one_run(port: int, name: str, tags: list[bytes]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to publish ``tags`` after the first (which opens the publish)."""
    publish = LocalPublish(Target.parse(f"rtmp://127.0.0.1:{port}/live"), name)
    await publish.write(tags[:1])
    c0, t0 = cpu(), time.perf_counter()
    for i in range(1, len(tags), BATCH):
        await publish.write(tags[i : i + BATCH])
    wall, used = time.perf_counter() - t0, cpu() - c0
    await publish.close()
    return wall, used


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-republish-"))
    sources = {
        "AAC 128 kbit/s, 120 s": media.tone_flv(tmp / "aac.flv", seconds=120),
        "H.264 320x240 + AAC, 20 s": media.av_flv(tmp / "av.flv", seconds=20),
    }
    with NginxRtmp(tmp / "nginx") as server:
        for label, path in sources.items():
            tags = [t.encode() for t in media.read_tags(path)]
            runs = [await one_run(server.port, f"bench{i}", tags) for i in range(RUNS)]
            n = len(tags) - 1
            wall = statistics.median(r[0] for r in runs)
            used = statistics.median(r[1] for r in runs)
            print(f"{label}: {n} tags, {sum(map(len, tags)) / 1e6:.2f} MB: {n / wall:,.0f} tags/s, "
                  f"{used / n * 1e6:.1f} µs CPU per tag (median of {RUNS})")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
