"""Nobody gets in: stream keys, the static allow-list, link proofs and TLS, over real sockets.

- A publish with an unsigned, expired, tampered or wrongly signed key gets
  NetStream.Publish.Unauthorized and a closed connection; an app refusal gets
  NetStream.Publish.BadName. No byte of a refused stream reaches the app or disk.
- Static allow-list keys publish under their NAME; hostile NAMEs ("../", NUL)
  land as safe file names inside --out.
- Link proofs are checked before the WebSocket upgrade on both endpoints (push:
  the app's /relay; pull: the edge's /link): 401 for a missing, wrong-secret,
  stale, wrong-role or replayed proof, and a link with the wrong secret never
  sees a stream.
- RTMPS on the edge, and wss:// to the app with certificate verification on:
  refused without the private CA, working with ``ca_file``.

Certificates come from a CA generated per test session with the openssl CLI.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import ssl
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from relay_client.receiver import Receiver
from relay_client.tone import count_silent_gaps, dominant_frequency
from relay_edge import flv, keys
from relay_edge.auth import make_proof
from relay_edge.edge import Edge, EdgeConfig
from relay_edge.web import common_routes
from tests.support import publishers
from tests.support.raw import RtmpClient, wait_closed, ws_upgrade
from tests.support.relay import SECRET, Relay, until, with_limits

pytestmark = pytest.mark.slow

UNAUTHORIZED = "NetStream.Publish.Unauthorized"
BAD_NAME = "NetStream.Publish.BadName"
AAC_CONFIG = b"\xaf\x00\x12\x10"
FAST = with_limits(handshake_timeout=2.0)


def wav_tone(path: Path) -> tuple[float, float, int]:
    """(seconds, dominant frequency, silent gaps) of a 16 kHz mono WAV."""
    with wave.open(str(path), "rb") as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    return len(pcm) / 2 / rate, dominant_frequency(pcm, rate, 1), count_silent_gaps(pcm[1600:-1600], rate, 1)


def key_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def metric(edge_or_receiver: object, line_start: str) -> float:
    """The value of the first metrics line starting with ``line_start`` (0 if absent)."""
    text = edge_or_receiver.metrics.render().decode()  # type: ignore[attr-defined]
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path  # the private CA's certificate: what ca_file points at
    cert: Path  # server certificate for localhost and 127.0.0.1, signed by the CA
    key: Path

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throwaway CA and a server certificate it signed (EC P-256, one day), via the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    ca_ext = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=rtmp-relay test CA", *ca_ext)  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "ext.cnf")  # fmt: skip
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key")


# --- stream keys -------------------------------------------------------------------------------


async def test_bad_keys_get_unauthorized_and_nothing_is_forwarded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    now = time.time()
    good = keys.mint_key(SECRET, "victim", 600, now=now)
    name, expiry, sig = good.split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    bad = {
        "unsigned": "victim",
        "expired": keys.mint_key(SECRET, "victim", 10, now=now - 1000),
        "tampered signature": f"{name}.{expiry}.{flipped}",
        "tampered expiry": f"{name}.{int(expiry) + 86400}.{sig}",
        "tampered name": f"victin.{expiry}.{sig}",
        "other secret": keys.mint_key("not-the-secret", "victim", 600, now=now),
        "path in key": "../../etc/passwd",
        "empty": "",
    }
    async with Relay(tmp_path / "out") as relay:
        edge = relay.edge
        assert edge is not None
        for case, key in bad.items():
            client = await RtmpClient.publish(edge.rtmp_port, key)
            assert client.codes == [UNAUTHORIZED], (case, client.codes)
            assert client.rejected is not None and client.rejected.code == UNAUTHORIZED
            assert client.rejected.description == "stream key refused"  # says nothing about why
            await wait_closed(client.reader, 5)  # and the edge hangs up
            client.close()
        assert metric(edge, 'relay_edge_auth_failures_total{kind="stream_key"}') == len(bad)
        assert edge.streams == {} and edge.status()["streams"] == []
        assert relay.receiver.live == {} and relay.streams == {}
        assert metric(relay.receiver, "relay_client_streams_total") == 0
    assert files_under(tmp_path / "out") == []  # no byte reached the disk
    text = caplog.text
    assert "bad signature on stream key for 'victim'" in text
    assert "expired" in text
    for key in bad.values():
        signature = key.rsplit(".", 1)[-1]
        if len(signature) == 22:
            assert signature not in text  # names may be logged, signatures never


@pytest.mark.parametrize("mode", ["push", "pull"])
async def test_app_refusal_gets_badname_and_no_bytes_reach_disk(mode: str, tmp_path: Path) -> None:
    seen: list[str] = []

    def accept(stream: object) -> str | None:
        name = stream.info.name  # type: ignore[attr-defined]
        seen.append(name)
        return "no such session" if name == "refused" else None

    async with Relay(tmp_path, accept=accept, mode=mode) as relay:
        edge = relay.edge
        assert edge is not None
        client = await RtmpClient.publish(edge.rtmp_port, key_of(relay.url("refused")))
        # The edge accepts a valid key at once (LiveKit egress won't wait for a cold app)...
        assert client.started and client.codes == ["NetStream.Publish.Start"]
        await client.send_media(flv.AUDIO, 0, AAC_CONFIG)
        for i in range(20):
            await client.send_media(flv.AUDIO, 23 * i, b"\xaf\x01" + bytes(100))
        # ...and turns the app's refusal into the error the publisher understands, then hangs up.
        await client.pump_until(lambda: client.rejected is not None, 10)
        assert client.rejected is not None
        assert (client.rejected.code, client.rejected.description) == (BAD_NAME, "no such session")
        assert client.codes == ["NetStream.Publish.Start", BAD_NAME]
        await wait_closed(client.reader, 5)
        client.close()
        await until(lambda: "refused" not in edge.streams, 5)
        assert seen == ["refused"]
        assert "refused" not in relay.streams and relay.pcm("refused") == b""
    assert files_under(tmp_path) == []


# --- the static allow-list ---------------------------------------------------------------------

STATIC = {
    "studio": "studio-static-key-0123456789",
    "../../escape/me": "escape-static-key-0123456789",
    "nul\x00byte": "nul-static-key-0123456789abc",
    "cam.main": "cam-main-static-key-01234567",
    "cam.backup": "cam-backup-static-key-012345",
}


async def test_allow_list_keys_publish_under_safe_names(
    tmp_path: Path, tone_flv_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "deep" / "out"
    async with Relay(out, edge_options={"allow_keys": STATIC}) as relay:
        edge = relay.edge
        assert edge is not None
        base = f"rtmp://127.0.0.1:{edge.rtmp_port}/live/"
        pubs = [
            await publishers.ffmpeg_copy(base + key, tone_flv_file, realtime=False) for key in STATIC.values()
        ]
        for pub in pubs:
            async with pub:
                await pub.wait_ok(30)
        for name in STATIC:
            path = out / f"{keys.safe_filename(name)}.json"
            await until(path.exists, 20, f"{name!r} did not end")
        # A near miss of a static key is refused and is not echoed into the log.
        near = STATIC["studio"][:-1] + "X"
        client = await RtmpClient.publish(edge.rtmp_port, near)
        assert client.codes == [UNAUTHORIZED]
        client.close()
    expected = sorted(f"{keys.safe_filename(n)}.{ext}" for n in STATIC for ext in ("flv", "wav", "json"))
    assert [f for f in files_under(out) if not f.startswith(".")] == expected
    # Nothing escaped --out: everything under tmp_path is out itself and the files in it.
    assert files_under(tmp_path) == ["deep", "deep/out", *(f"deep/out/{f}" for f in files_under(out))]
    for name in STATIC:
        seconds, freq, gaps = wav_tone(out / f"{keys.safe_filename(name)}.wav")
        assert abs(seconds - 3.0) <= 0.1 and freq == pytest.approx(440, abs=1) and gaps == 0, name
    for static in [*STATIC.values(), near]:
        assert static not in caplog.text


# --- link proofs -------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["app /relay (push)", "edge /link (pull)"])
async def test_link_proofs_are_checked_before_the_upgrade(
    tmp_path: Path, endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Relay(tmp_path) as relay:
        edge = relay.edge
        assert edge is not None
        if endpoint.startswith("app"):
            port, path, role, other, owner = relay.app_port, "/relay", "edge", "client", relay.receiver
            metric_name = 'relay_client_auth_failures_total{kind="link_proof"}'
        else:
            port, path, role, other, owner = edge.http_port, "/link", "client", "edge", edge
            metric_name = 'relay_edge_auth_failures_total{kind="link_proof"}'
        now = time.time()
        target = f"127.0.0.1{path}"  # what ws_upgrade dials: the Host header and the path
        valid = make_proof(SECRET, role, now, target=target)
        # (proof, the 401 body as a regex): clocks tick between minting and checking, hence 299-301.
        cases = [
            (None, r"link refused: malformed proof"),
            ("2.edge.garbage", r"link refused: malformed proof"),
            (make_proof("wrong-secret", role, now, target=target), r"link refused: bad signature"),
            # A proof for another host or path (captured at a proxy in front of another replica).
            *(
                (make_proof(SECRET, role, now, target=other_target), r"link refused: bad signature")
                for other_target in (f"other.example.com{path}", "127.0.0.1/elsewhere", "")  # "": unbound
            ),
            (
                make_proof(SECRET, role, now - 300, target=target),
                r"link refused: stale proof: (299|300|301) s from our clock, limit 60 s",
            ),
            (
                make_proof(SECRET, role, now + 300, target=target),
                r"link refused: stale proof: (299|300|301) s from our clock, limit 60 s",
            ),
            (
                make_proof(SECRET, other, now, target=target),
                rf"link refused: proof is for role '{other}', expected '{role}'",
            ),
        ]
        for proof, body in cases:
            ws = await ws_upgrade(port, path, proof)
            assert ws.status == 401 and re.fullmatch(body, ws.body.decode().strip()), (ws.status, ws.body)
            ws.writer.close()
        first = await ws_upgrade(port, path, valid)
        assert first.status == 101
        first.writer.transport.abort()
        replay = await ws_upgrade(port, path, valid)
        assert (replay.status, replay.body.decode().strip()) == (401, "link refused: replayed proof")
        replay.writer.close()
        assert metric(owner, metric_name) == len(cases) + 1
        # The real link is still the only one, and it still works.
        async with await publishers.ffmpeg_tone(relay.url("after"), seconds=1) as pub:
            await pub.wait_ok(30)
        await relay.ended("after")
    assert SECRET not in caplog.text
    assert valid.rsplit(".", 1)[1] not in caplog.text  # the proof's signature is never logged


async def test_push_with_a_wrong_secret_never_sees_a_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    receiver = Receiver("the-apps-secret", out_dir=str(tmp_path), name="app")
    app = web.Application()
    app.router.add_get("/relay", receiver.handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    edge = Edge(
        EdgeConfig(
            secret=SECRET,
            rtmp_listen=("127.0.0.1", 0),
            http_listen=None,
            upstreams=(f"ws://127.0.0.1:{port}/relay",),
            limits=FAST,
        )
    )
    await edge.start()
    try:
        key = keys.mint_key(SECRET, "pushed", 600, now=time.time())
        async with await publishers.ffmpeg_tone(f"rtmp://127.0.0.1:{edge.rtmp_port}/live/{key}", 2) as pub:
            await pub.wait_ok(30)
        await until(lambda: metric(receiver, 'relay_client_auth_failures_total{kind="link_proof"}') >= 2, 10)
        assert edge.links == [] and receiver.links == [] and receiver.live == {}
        assert edge.status()["streams"][0]["name"] == "pushed"  # held at the edge, waiting
    finally:
        await edge.stop()
        await runner.cleanup()
    assert files_under(tmp_path) == []
    assert "401" in caplog.text and "bad signature" in caplog.text


async def test_pull_with_a_wrong_secret_never_sees_a_stream(tmp_path: Path) -> None:
    async with Relay(tmp_path / "right") as relay:  # a working push pair, for the stream
        edge = relay.edge
        assert edge is not None
        wrong = Receiver("the-wrong-secret", out_dir=str(tmp_path / "wrong"), name="intruder")
        dialer = asyncio.create_task(wrong.connect(f"ws://127.0.0.1:{edge.http_port}/link"))
        try:
            async with await publishers.ffmpeg_tone(relay.url("pulled"), seconds=2) as pub:
                await pub.wait_ok(30)
            await relay.ended("pulled")
            await until(lambda: metric(edge, 'relay_edge_auth_failures_total{kind="link_proof"}') >= 2, 10)
            assert wrong.links == [] and wrong.live == {}
            assert len(edge.links) == 1
        finally:
            dialer.cancel()
            await asyncio.gather(dialer, return_exceptions=True)
    assert not (tmp_path / "wrong").exists() or files_under(tmp_path / "wrong") == []
    assert (tmp_path / "right" / "pulled.wav").exists()


# --- TLS ---------------------------------------------------------------------------------------


async def test_rtmps_publish_and_handshake_timeout(tmp_path: Path, certs: Certs) -> None:
    options = {"rtmps_listen": ("127.0.0.1", 0), "tls_cert": str(certs.cert), "tls_key": str(certs.key)}
    async with Relay(tmp_path, edge_options=options, limits=FAST) as relay:
        edge = relay.edge
        assert edge is not None and edge.rtmps_port
        url = f"rtmps://127.0.0.1:{edge.rtmps_port}/live/{key_of(relay.url('secure'))}"
        async with await publishers.ffmpeg_tone(url, seconds=2, frequency=660) as pub:
            await pub.wait_ok(30)
        await relay.ended("secure")
        # Our own client verifies the edge's certificate against the private CA.
        client = await RtmpClient.publish(
            edge.rtmps_port,
            key_of(relay.url("verified")),
            host="localhost",
            ssl_context=certs.client_context(),
        )
        assert client.codes == ["NetStream.Publish.Start"]
        client.close()
        # Plain RTMP to the RTMPS port: not a TLS ClientHello, closed at once.
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.rtmps_port)
        writer.write(b"\x03" + bytes(1536))
        seconds_plain, _, data = await wait_closed(reader, 5)
        assert b"RTMP" not in data
        writer.close()
        # A TLS handshake that stalls is dropped at handshake_timeout (nothing is counted before it).
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.rtmps_port)
        writer.write(bytes.fromhex("160301"))  # the first bytes of a record, then nothing
        seconds_stall, _, _ = await wait_closed(reader, FAST.handshake_timeout + 5)
        writer.close()
        assert seconds_stall >= FAST.handshake_timeout - 0.1
    seconds, freq, gaps = wav_tone(tmp_path / "secure.wav")
    assert abs(seconds - 2.0) <= 0.1 and freq == pytest.approx(660, abs=1) and gaps == 0
    print(f"RTMPS: plain RTMP closed after {seconds_plain:.2f} s, stalled TLS after {seconds_stall:.2f} s")


async def test_rtmps_connections_count_from_tcp_accept(tmp_path: Path, certs: Certs) -> None:
    """A TLS handshake not yet finished holds a place in max_connections_per_ip, like plain RTMP."""
    options = {"rtmps_listen": ("127.0.0.1", 0), "tls_cert": str(certs.cert), "tls_key": str(certs.key)}
    limits = with_limits(max_connections_per_ip=2, handshake_timeout=30.0)
    async with Relay(tmp_path, edge_options=options, limits=limits) as relay:
        edge = relay.edge
        assert edge is not None
        # Two TCP connections that never send a ClientHello.
        held = [await asyncio.open_connection("127.0.0.1", edge.rtmps_port) for _ in range(2)]
        await until(lambda: len(edge.connections) == 2, 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.rtmps_port)
        _, how, data = await wait_closed(reader, 5)
        writer.close()
        assert data == b"" and how in ("eof", "reset")  # refused at accept, before any TLS
        for _, w in held:
            w.close()
        await until(lambda: not edge.connections, 5)
        # The places are free again, and a real RTMPS publisher gets through.
        client = await RtmpClient.publish(
            edge.rtmps_port, key_of(relay.url("after")), host="localhost", ssl_context=certs.client_context()
        )
        assert client.codes == ["NetStream.Publish.Start"]
        client.close()


async def _tls_app(receiver: Receiver, certs: Certs) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/relay", receiver.handler)
    common_routes(app, receiver.status, receiver.metrics.render)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(certs.cert), str(certs.key))
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_wss_push_verifies_the_app_certificate(
    tmp_path: Path, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    receiver = Receiver(SECRET, out_dir=str(tmp_path), name="tls-app")
    runner, port = await _tls_app(receiver, certs)
    url = f"wss://localhost:{port}/relay"
    try:
        # Verification is on by default: a private CA's certificate is refused.
        untrusting = Edge(
            EdgeConfig(secret=SECRET, rtmp_listen=("127.0.0.1", 0), http_listen=None, upstreams=(url,))
        )
        await untrusting.start()
        try:
            await until(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, 10, "no verification failure")
            assert untrusting.links == [] and receiver.links == []
        finally:
            await untrusting.stop()
        # With ca_file the same app is trusted, and a stream goes through.
        trusting = Edge(
            EdgeConfig(
                secret=SECRET,
                rtmp_listen=("127.0.0.1", 0),
                http_listen=None,
                upstreams=(url,),
                ca_file=str(certs.ca),
            )
        )
        await trusting.start()
        try:
            await until(lambda: bool(trusting.links and receiver.links), 10, "wss link not up")
            key = keys.mint_key(SECRET, "overtls", 600, now=time.time())
            async with await publishers.ffmpeg_tone(
                f"rtmp://127.0.0.1:{trusting.rtmp_port}/live/{key}", 2
            ) as pub:
                await pub.wait_ok(30)
            await until((tmp_path / "overtls.json").exists, 20, "stream did not end")
        finally:
            await trusting.stop()
    finally:
        await runner.cleanup()
    seconds, freq, gaps = wav_tone(tmp_path / "overtls.wav")
    assert abs(seconds - 2.0) <= 0.1 and freq == pytest.approx(440, abs=1) and gaps == 0
