"""Secrets never leak: not in logs, status JSON, metrics, file names, file contents or exceptions.

Two full runs, each with successful streams and every kind of refusal (bad
key signature, wrong static key, wrong-secret and replayed link proofs):

- in process, with every log record captured at DEBUG (caplog sees records
  before the CLI's redaction filter, so this proves no code path logs them);
- the two CLIs as subprocesses at ``--log-level debug``, reading their stderr.

Then everything a user or an attacker could read is searched for the relay
secret, the static allow-list keys, the signatures of the stream keys used and
of the link proofs sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from relay_edge import keys
from relay_edge.auth import AuthError, ProofVerifier, make_proof
from relay_edge.edge import EdgeConfig
from tests.support import publishers
from tests.support.net import free_port, wait_for_port_async
from tests.support.raw import RtmpClient, ws_upgrade
from tests.support.relay import SECRET, TEST_LIMITS, Relay, until

pytestmark = pytest.mark.slow

STATIC_KEY = "static-key-for-the-studio-9f3e1a"
WRONG_STATIC = "static-key-for-the-studio-9f3e1b"  # one character off: a near miss
BIN = Path(sys.executable).parent


def signature(key_or_proof: str) -> str:
    return key_or_proof.rsplit(".", 1)[1]


def assert_clean(where: str, text: str, secrets: list[str]) -> None:
    for s in secrets:
        assert s not in text, f"{s[:4]}... found in {where}"


def everything_on_disk(out: Path) -> str:
    """Every file name under ``out`` and the text of every JSON file (stats, resume points)."""
    parts = []
    for path in sorted(out.rglob("*")):
        parts.append(str(path.relative_to(out)))
        if path.suffix == ".json":
            parts.append(path.read_text())
    return "\n".join(parts)


async def fetch(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        assert response.status == 200, url
        return await response.text()


async def refusals(rtmp_port: int, link_port: int, link_path: str, role: str, now: float) -> list[str]:
    """Every refusal a run should survive; returns the credentials used (to search for)."""
    forged = keys.mint_key("an-attackers-guess", "studio", 600, now=now)
    expired = keys.mint_key(SECRET, "studio", 10, now=now - 1000)
    for key in (forged, expired, WRONG_STATIC, "studio"):
        client = await RtmpClient.publish(rtmp_port, key)
        assert client.codes == ["NetStream.Publish.Unauthorized"]
        client.close()
    wrong = make_proof("not-the-secret", role, now, target=f"127.0.0.1{link_path}")
    valid = make_proof(SECRET, role, now, target=f"127.0.0.1{link_path}")
    for proof, status in ((wrong, 401), (valid, 101), (valid, 401)):  # the second use is a replay
        ws = await ws_upgrade(link_port, link_path, proof)
        assert ws.status == status
        ws.writer.transport.abort()
    return [signature(forged), signature(expired), WRONG_STATIC, signature(wrong), signature(valid)]


async def test_in_process_run_leaks_nothing(
    tmp_path: Path, tone_flv_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    now = time.time()
    out = tmp_path / "out"
    async with Relay(out, edge_options={"allow_keys": {"studio": STATIC_KEY}}) as relay:
        edge = relay.edge
        assert edge is not None
        signed = keys.mint_key(SECRET, "signed", 600, now=now)
        base = f"rtmp://127.0.0.1:{edge.rtmp_port}/live/"
        a = await publishers.ffmpeg_copy(base + signed + "?token=abc", tone_flv_file, realtime=False)
        b = await publishers.ffmpeg_copy(base + STATIC_KEY, tone_flv_file, realtime=False)
        async with a, b:
            await asyncio.gather(a.wait_ok(30), b.wait_ok(30))
        await asyncio.gather(relay.ended("signed"), relay.ended("studio"))
        used = await refusals(edge.rtmp_port, relay.app_port, "/relay", "edge", now)
        used += await refusals(edge.rtmp_port, edge.http_port, "/link", "client", now)
        async with aiohttp.ClientSession() as http:
            served = [
                await fetch(http, f"http://127.0.0.1:{port}{path}")
                for port in (edge.http_port, relay.app_port)
                for path in ("/api/rtmp/status", "/metrics")
            ]
        reprs = [repr(edge.config), repr(edge._verifier), repr(edge._allow), repr(relay.receiver._verifier)]
        documents = [str(edge.status()), str(relay.receiver.status())]
    secrets = [SECRET, STATIC_KEY, signature(signed), *used]
    assert_clean("logs", caplog.text, secrets)
    assert_clean("exceptions in logs", "\n".join(str(r.exc_info) for r in caplog.records), secrets)
    assert_clean("HTTP status and metrics", "\n".join(served), secrets)
    assert_clean("status documents", "\n".join(documents), secrets)
    assert_clean("files", everything_on_disk(out), secrets)
    assert_clean("reprs", "\n".join(reprs), secrets)
    # The refusals were logged, by reason, so an operator can see them.
    assert "bad signature on stream key for 'studio'" in caplog.text
    assert "unknown static key and not a signed stream key" in caplog.text
    assert caplog.text.count("refused link from") == 4  # two wrong secrets, two replays
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        f"{n}.{ext}" for n in ("signed", "studio") for ext in ("flv", "json", "wav")
    ]


def test_exceptions_and_reprs_hold_no_secret() -> None:
    config = EdgeConfig(secret=SECRET, tls_key="/etc/key.pem", allow_keys={"a": STATIC_KEY})
    assert SECRET not in repr(config) and STATIC_KEY not in repr(config)
    verifier = ProofVerifier(SECRET)
    proof = make_proof(SECRET, "edge", time.time())
    verifier.verify(proof, time.time())
    for attempt in (proof, proof[:-1] + "A", "x" * 300):
        with pytest.raises(AuthError) as info:
            verifier.verify(attempt, time.time())
        assert signature(proof) not in str(info.value) and SECRET not in str(info.value)
    key = keys.mint_key(SECRET, "n", 60, now=time.time())
    with pytest.raises(AuthError) as info:
        keys.verify_key(SECRET, key[:-1] + ("A" if key[-1] != "A" else "B"), time.time())
    assert signature(key)[:-1] not in str(info.value)


async def test_cli_run_leaks_nothing(tmp_path: Path, tone_flv_file: Path) -> None:
    """``relay-client serve`` and ``relay-edge serve`` as real processes, at --log-level debug."""
    out = tmp_path / "out"
    app_port, rtmp_port, http_port = free_port(), free_port(), free_port()
    env = {**os.environ, "RELAY_SECRET": SECRET, "RELAY_ALLOW_KEYS": f"studio={STATIC_KEY}"}
    # The shared Relay's grace (tests/support/relay.py says why), for the edge run as a CLI.
    env["RELAY_LIMITS"] = f"reconnect_grace={TEST_LIMITS.reconnect_grace:g}"
    client_argv = [str(BIN / "relay-client"), "serve", "--listen", f"127.0.0.1:{app_port}", "--out", str(out)]
    edge_argv = [
        str(BIN / "relay-edge"),
        "serve",
        "--rtmp",
        f"127.0.0.1:{rtmp_port}",
        "--http",
        f"127.0.0.1:{http_port}",
        "--upstream",
        f"ws://127.0.0.1:{app_port}/relay",
    ]
    procs = []
    for argv in (client_argv, edge_argv):
        procs.append(
            await asyncio.create_subprocess_exec(
                *argv,
                "--log-level",
                "debug",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        )
        await wait_for_port_async("127.0.0.1", app_port if argv is client_argv else http_port, 20)
    now = time.time()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{http_port}/api/rtmp/status"

            async def link_up() -> bool:
                return bool((await (await http.get(url)).json())["links"])

            deadline = time.monotonic() + 15
            while not await link_up():
                assert time.monotonic() < deadline, "link did not come up"
                await asyncio.sleep(0.1)
            signed = keys.mint_key(SECRET, "signed", 600, now=now)
            base = f"rtmp://127.0.0.1:{rtmp_port}/live/"
            a = await publishers.ffmpeg_copy(base + signed, tone_flv_file, realtime=False)
            b = await publishers.ffmpeg_copy(base + STATIC_KEY, tone_flv_file, realtime=False)
            async with a, b:
                await asyncio.gather(a.wait_ok(30), b.wait_ok(30))
            await until(lambda: (out / "signed.json").exists() and (out / "studio.json").exists(), 20)
            used = await refusals(rtmp_port, app_port, "/relay", "edge", now)
            used += await refusals(rtmp_port, http_port, "/link", "client", now)
            served = [
                await fetch(http, f"http://127.0.0.1:{port}{path}")
                for port in (http_port, app_port)
                for path in ("/api/rtmp/status", "/metrics")
            ]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        outputs = [await asyncio.wait_for(proc.communicate(), 20) for proc in procs]
    logs = "\n".join(o.decode(errors="replace") + e.decode(errors="replace") for o, e in outputs)
    secrets = [SECRET, STATIC_KEY, signature(signed), *used]
    assert_clean("CLI stderr", logs, secrets)
    assert_clean("HTTP status and metrics", "\n".join(served), secrets)
    assert_clean("files", everything_on_disk(out), secrets)
    assert "[secret]" not in logs  # nothing even reached the redaction filter
    assert "DEBUG" in logs and "refused publish" in logs and "refused link" in logs
    assert [p.returncode for p in procs] == [0, 0]
