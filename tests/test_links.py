"""Push mode to a load-balanced app: ``relay-edge serve --links 2`` through a real balancer.

Two ``relay-client serve`` processes stand for a Render service scaled to two instances, behind
nginx round-robin (tests/support/balancer.py). The edge's two links land on different instances
and the streams spread over them; then one instance is SIGKILLed mid-stream and its streams resume
on the other from their last ack: every stream's tags, byte for byte, once in order across the two
instances' files. Run once per event loop the CLIs pick (RELAY_LOOP).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from relay_edge import keys
from tests.support import media, publishers
from tests.support.balancer import Balancer
from tests.support.net import free_port
from tests.support.wait import until
from tests.test_deploy import BIN, Service, relay_status, wait_http

pytestmark = pytest.mark.slow

SECRET = "links-secret-9f86d081884c7d659a2f"
STREAMS, SECONDS = 4, 8
AAC_TAGS_PER_SECOND = 44100 / 1024


def covered(source: list[bytes], first: list[bytes], second: list[bytes]) -> bool:
    """Whether ``first`` is a prefix of ``source`` and ``second`` (init tag, then a resumed tail)
    continues it with nothing missing: every tag at least once, in order, duplicates only at the seam."""
    if first != source[: len(first)] or second[:1] != source[:1]:
        return False
    tail = second[1:]
    start = len(source) - len(tail)
    return source[start:] == tail and 1 <= start <= len(first)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_links_spread_over_balanced_instances_and_fail_over(tmp_path: Path, loop: str) -> None:
    source = media.tone_flv(tmp_path / "tone.flv", seconds=SECONDS, frequency=660)
    sent = media.audio_payloads(source)
    env = {"RELAY_SECRET": SECRET, "RELAY_LOOP": loop}
    ports = [free_port(), free_port()]
    outs = [tmp_path / "out-a", tmp_path / "out-b"]
    apps = [
        Service(
            f"relay-client serve {i}",
            [str(BIN / "relay-client"), "serve", "--listen", f"127.0.0.1:{port}", "--out", str(out)],
            env,
            tmp_path / f"app{i}.log",
        )
        for i, (port, out) in enumerate(zip(ports, outs, strict=True))
    ]
    balancer = Balancer(tmp_path / "balancer", ports)
    rtmp_port, http_port = free_port(), free_port()
    edge_argv = [str(BIN / "relay-edge"), "serve", "--rtmp", f"127.0.0.1:{rtmp_port}",
                 "--http", f"127.0.0.1:{http_port}", "--links", "2", "--upstream"]  # fmt: skip
    edge: Service | None = None
    pubs: list[publishers.Publisher] = []
    try:
        for port, app in zip(ports, apps, strict=True):
            wait_http(f"http://127.0.0.1:{port}/healthz", 20, app)
        instances = [relay_status(port, app)["instance"] for port, app in zip(ports, apps, strict=True)]
        balancer.start()
        edge = Service("relay-edge serve", [*edge_argv, balancer.url()], env, tmp_path / "edge.log")
        wait_http(f"http://127.0.0.1:{http_port}/healthz", 20, edge)

        def reached() -> set[str]:
            assert edge is not None
            return {ln["instance"] for ln in relay_status(http_port, edge)["links"]}

        await until(lambda: reached() == set(instances), 20, "one link on each instance")
        upstream = relay_status(http_port, edge)["upstreams"][0]
        assert (upstream["links_up"], upstream["links"], upstream["state"]) == (2, 2, "up")

        names = [f"cam{i}" for i in range(STREAMS)]
        for name in names:
            url = f"rtmp://127.0.0.1:{rtmp_port}/live/{keys.mint_key(SECRET, name, ttl=300, now=time.time())}"
            pubs.append(await publishers.ffmpeg_copy(url, source))

        def held(i: int) -> set[str]:
            return {s["name"] for s in relay_status(ports[i], apps[i])["streams"]}

        def acked() -> int:
            assert edge is not None
            streams = relay_status(http_port, edge)["streams"]
            return min((s["acked_seq"] for s in streams), default=0) if len(streams) == STREAMS else 0

        await until(lambda: acked() > 2 * AAC_TAGS_PER_SECOND, 30, "2 s of every stream acked")
        on = [held(0), held(1)]
        assert on[0] | on[1] == set(names) and not on[0] & on[1], on
        assert abs(len(on[0]) - len(on[1])) <= 1, on  # balanced by instance

        apps[1].proc.send_signal(signal.SIGKILL)  # no close, no last ack: its links just die
        assert apps[1].proc.wait(5) == -signal.SIGKILL
        for pub in pubs:
            await pub.wait_ok(30)
        await until(
            lambda: all((outs[0] / f"{n}.json").exists() for n in names), 30, "every stream ended at A"
        )
        # The dead instance's link redialed through the balancer and reached the survivor.
        await until(lambda: reached() == {instances[0]}, 20, "both links on the survivor")
        upstream = relay_status(http_port, edge)["upstreams"][0]
        assert (upstream["links_up"], upstream["links"]) == (2, 2)
        code, _ = edge.terminate(10)
        assert code == 0, edge.output()
        code, _ = apps[0].terminate(10)
        assert code == 0, apps[0].output()
    finally:
        for pub in pubs:
            await pub.kill()
        for service in (edge, *apps):
            if service is not None:
                service.stop()
        balancer.stop()

    log = edge.output()
    for instance in instances:
        assert f"instance {instance}" in log, log  # each link logs the replica it reached
    for app in apps:
        assert f"event loop: {loop}" in app.output(), app.output()
    for name in names:
        stats = json.loads((outs[0] / f"{name}.json").read_text())
        assert stats["gaps"] == 0, stats
        survivor = media.audio_payloads(outs[0] / f"{name}.flv")
        if name in on[0]:
            assert survivor == sent, name  # never moved: the source, byte for byte, once
        else:
            killed = media.audio_payloads(outs[1] / f"{name}.flv")
            assert covered(sent, killed, survivor), (name, len(sent), len(killed), len(survivor))
