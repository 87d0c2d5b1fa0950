"""The pre-auth budget over real sockets: what an unauthenticated client may hold, and for how long.

- a client that trickles a ``connect`` (every byte resetting ``idle_timeout``) is closed at
  ``publish_timeout`` from accept;
- ``max_connections_per_ip`` counts only connections not yet granted a publish: 200 signed publishers
  from one address work with the default limits, while unauthenticated ones from that address are
  still capped;
- the full attack of issue #13 against a real ``relay-edge serve`` process with a real ffmpeg stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay_edge.limits import DEFAULT_LIMITS
from relay_edge.rtmp import amf0
from relay_edge.rtmp import messages as m
from relay_edge.rtmp.chunk import ChunkWriter
from relay_edge.rtmp.handshake import PACKET_SIZE
from tests.support.attack import scenario
from tests.support.raw import RtmpClient, wait_closed
from tests.support.relay import Relay, until, with_limits

HANDSHAKE = b"\x03" + bytes(PACKET_SIZE) * 2
SWEEP_AND_SLACK = 1.0 + 5.0  # the once-a-second timeout sweep, plus a loaded CI machine


def closing_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    pattern = re.compile(r"closing RTMP connection from [\d.:]+: (.*)")
    return [m.group(1) for r in caplog.records if (m := pattern.match(r.getMessage()))]


async def test_a_trickled_connect_is_closed_at_publish_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    limits = with_limits(publish_timeout=2.0, idle_timeout=30.0)
    body = amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "x" * 2000})
    wire = ChunkWriter().write(m.CSID_COMMAND, m.COMMAND_AMF0, 0, 0, body)
    async with Relay(tmp_path, limits=limits) as relay:
        assert relay.edge is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.edge.rtmp_port)
        started = time.monotonic()
        writer.write(HANDSHAKE)
        closed = asyncio.create_task(wait_closed(reader, limits.publish_timeout + SWEEP_AND_SLACK))
        sent = 0
        while not closed.done() and sent < len(wire):
            writer.write(wire[sent : sent + 2])  # 2 bytes every 0.1 s: never idle, never finished
            sent += 2
            await asyncio.wait({closed}, timeout=0.1)
        seconds, _, _ = await closed
        writer.close()
    assert time.monotonic() - started >= limits.publish_timeout - 0.1
    assert seconds <= limits.publish_timeout + SWEEP_AND_SLACK
    assert sent < len(wire)  # closed while still trickling
    assert closing_reasons(caplog) == ["publish_timeout: no accepted publish 2 s after accept"]


async def test_200_signed_publishers_from_one_address_with_default_limits(tmp_path: Path) -> None:
    count = 200
    assert count > DEFAULT_LIMITS.max_connections_per_ip  # the point of the test
    async with Relay(tmp_path, consume=frozenset()) as relay:
        edge = relay.edge
        assert edge is not None
        keys = [relay.url(f"s{i}").rsplit("/", 1)[1] for i in range(count)]
        clients: list[RtmpClient] = []
        for batch in range(0, count, 20):  # 20 at a time: each batch within the per-address count
            clients += await asyncio.gather(
                *(RtmpClient.publish(edge.rtmp_port, k) for k in keys[batch:][:20])
            )
        assert [c.codes for c in clients] == [["NetStream.Publish.Start"]] * count
        assert len(edge.streams) == count
        # Unauthenticated connections from the same address are still capped.
        held = []
        for _ in range(DEFAULT_LIMITS.max_connections_per_ip):
            held.append(await asyncio.open_connection("127.0.0.1", edge.rtmp_port))
        await until(lambda: len(edge.connections) == count + len(held), 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.rtmp_port)
        _, how, data = await wait_closed(reader, 5)
        assert data == b"" and how in ("eof", "reset")
        writer.close()
        assert len(edge.connections) == count + len(held)
        for _, w in held:
            w.close()
        for c in clients:
            c.close()
        metrics = edge.metrics.render().decode()
    assert 'relay_edge_limit_breaches_total{limit="max_connections_per_ip"} 1.0' in metrics


@pytest.mark.slow
async def test_the_attack_leaves_a_real_edge_small_responsive_and_the_stream_identical(
    tmp_path: Path,
) -> None:
    """Issue #13's measured goal, against ``relay-edge serve`` (RSS from /proc of that process)."""
    outcome = await scenario(tmp_path, "relay", seconds=20.0)
    print(outcome.line())
    attack = outcome.attack
    assert attack.trickles == 300 and attack.refused == 0
    assert attack.trickles_open == 0, outcome.line()  # every trickle closed, within the 20 s attack
    assert attack.big_connections >= 60 and attack.big_open_at_end == 0, outcome.line()
    assert outcome.rss_growth_mib < 32, outcome.line()
    assert outcome.healthz["failures"] == 0 and outcome.healthz["probes"] > 100, outcome.line()
    assert outcome.identical and outcome.received_tags == outcome.sent_tags, outcome.line()


@pytest.mark.parametrize(
    "argv",
    [
        ["relay-edge", "serve", "--rtmp", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        ["relay-client", "serve", "--listen", "127.0.0.1:0"],
        ["relay-client", "connect", "ws://127.0.0.1:9/link"],
    ],
)
def test_a_short_secret_is_refused_at_startup(argv: list[str]) -> None:
    short = "correct-horse-battery-staple"  # 28 characters
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "RELAY_SECRET": short}
    argv = [str(bin_dir / argv[0]), *argv[1:]]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert "RELAY_SECRET has 28 characters; at least 32 are needed" in out.stderr
    assert "openssl rand -base64 32" in out.stderr
    assert short not in out.stderr + out.stdout
