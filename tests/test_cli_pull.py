"""Pull mode as the CLIs run it: ``relay-edge serve`` and ``relay-client connect`` as processes.

Once on uvloop (what the image and the ``fast`` extra run) and once on the stdlib loop. The app
process is SIGKILLed mid-stream and started again: the new process dials, the edge resumes the
stream from the last ack, and the files hold the whole tone once (at most a few unacked tags twice).
"""

from __future__ import annotations

import json
import signal
import time
import wave
from pathlib import Path

import pytest

from relay_client.tone import dominant_frequency
from relay_edge import keys
from tests.support import publishers
from tests.support.net import free_port
from tests.support.wait import until
from tests.test_deploy import BIN, Service, relay_status, wait_http

pytestmark = pytest.mark.slow

SECRET = "cli-pull-secret-2b7e151628aed2a6"
SECONDS, FREQUENCY = 6, 550
AAC_TAGS_PER_SECOND = 44100 / 1024


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_pull_mode_clis_survive_a_sigkilled_app(tmp_path: Path, loop: str) -> None:
    env = {"RELAY_SECRET": SECRET, "RELAY_LOOP": loop}
    rtmp_port, http_port, out = free_port(), free_port(), tmp_path / "out"
    serve = [str(BIN / "relay-edge"), "serve", "--rtmp", f"127.0.0.1:{rtmp_port}", "--http"]
    edge = Service("relay-edge serve", [*serve, f"127.0.0.1:{http_port}"], env, tmp_path / "edge.log")
    connect = [str(BIN / "relay-client"), "connect", f"ws://127.0.0.1:{http_port}/link", "--out", str(out)]
    apps = [Service("relay-client connect", connect, env, tmp_path / "app1.log")]
    try:
        wait_http(f"http://127.0.0.1:{http_port}/healthz", 20, edge)
        await until(lambda: len(relay_status(http_port, edge)["links"]) == 1, 20, "the app's link up")
        key = keys.mint_key(SECRET, "pull", ttl=300, now=time.time())
        url = f"rtmp://127.0.0.1:{rtmp_port}/live/{key}"
        async with await publishers.ffmpeg_tone(url, seconds=SECONDS, frequency=FREQUENCY) as pub:

            def acked() -> int:
                streams = relay_status(http_port, edge)["streams"]
                return streams[0]["acked_seq"] if streams else 0

            await until(lambda: acked() > 2 * AAC_TAGS_PER_SECOND, 20, "2 s of the stream acked")
            apps[0].proc.send_signal(signal.SIGKILL)  # no close, no last ack: the link just dies
            assert apps[0].proc.wait(5) == -signal.SIGKILL
            apps.append(Service("relay-client connect", connect, env, tmp_path / "app2.log"))
            await pub.wait_ok(30)
        await until((out / "pull.json").exists, 30, "pull.json from the second app")
        stats = json.loads((out / "pull.json").read_text())
        code, _ = apps[1].terminate(10)
        assert code == 0, apps[1].output()
        code, _ = edge.terminate(10)
        assert code == 0, edge.output()
    finally:
        for service in (*apps, edge):
            service.stop()
    for service in (edge, *apps):
        assert f"event loop: {loop}" in service.output(), service.output()
    # The new process found the killed one's files and resumed the same stream into them.
    assert "continuing after a restart" in apps[1].output(), apps[1].output()
    assert (stats["resumes"], stats["streams"]) == (1, 1)
    assert stats["gaps"] == 0
    with wave.open(str(out / "pull.wav"), "rb") as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    seconds = len(pcm) / 2 / rate
    # Unacked tags the killed app had written arrive again: at most ~0.25 s more than the tone.
    assert SECONDS - 0.15 <= seconds <= SECONDS + 0.3, seconds
    assert dominant_frequency(pcm, rate, 1) == pytest.approx(FREQUENCY, abs=2.0)
