"""``relay-client test --edge rtmp://HOST:PORT --app https://APP``: check a deployed pair, step by step.

The steps run in the order a stream travels, and the first failure stops the run
and says what to fix:

1. ``dns`` — the edge's host name resolves.
2. ``edge tcp`` — something accepts TCP on HOST:PORT.
3. ``rtmp handshake`` — it speaks RTMP: handshake, then ``connect`` accepted
   (our sans-I/O :class:`~relay_edge.rtmp.client.ClientSession` over a real socket).
4. ``stream key`` — on the same connection, the edge accepts ``publish`` with a
   freshly minted key for ``NAME-probe`` (signed with ``--secret``): the secrets match.
5. ``app reachable`` — ``GET APP/api/rtmp/status`` answers 200 with JSON.
6. ``publish`` — the PyAV publisher (a child process) connects and sends a tone as ``NAME``.
7. ``app receives stream`` — the app's status lists ``NAME`` with bytes > 0: the edge's
   link to the app is up and carries the stream.
8. ``decoded audio`` — the app decodes it: the stream's ``audio_samples`` is > 0 and grows
   between two status reads, and (where the app reports it) ``audio_level_dbfs`` is above
   -60 dBFS: the tone is there, not silence.

The report has the same shape as the loopback self-test (``ok``, ``steps``) plus
``failed_step`` and ``fix``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from relay_edge import keys
from relay_edge.errors import ProtocolError, RelayError
from relay_edge.rtmp.client import ClientSession
from relay_edge.rtmp.events import Connected, PublishRejected, PublishStarted
from relay_edge.web import status_token

# What asyncio.wait_for raises: not the builtin TimeoutError before Python 3.11.
TIMEOUTS = (TimeoutError,)
# The level a 0.5-amplitude sine reads is about -9 dBFS; -60 means "silence, or nearly".
SILENCE_DBFS = -60.0


@dataclass
class DiagnoseStep:
    name: str
    ok: bool
    detail: str
    ms: float


@dataclass
class DiagnoseReport:
    """What ``relay-client test --edge ... --app ...`` found."""

    edge: str
    app: str
    stream: str
    steps: list[DiagnoseStep] = field(default_factory=list)
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def failed_step(self) -> str | None:
        return next((s.name for s in self.steps if not s.ok), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "steps": [
                {"name": s.name, "ok": s.ok, "detail": s.detail, "ms": round(s.ms, 1)} for s in self.steps
            ],
            "failed_step": self.failed_step,
            "fix": self.fix,
            "edge": self.edge,
            "app": self.app,
            "stream": self.stream,
        }


class Failed(Exception):
    """A step failed: ``str(exc)`` says what happened, ``fix`` what to do about it."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.fix = fix


@dataclass
class Target:
    """Where the deployed pair is, parsed from the command line."""

    host: str
    port: int
    app_base: str  # scheme://host[:port], no path

    @classmethod
    def parse(cls, edge: str, app: str) -> Target:
        e = urlsplit(edge if "://" in edge else f"rtmp://{edge}")
        if e.scheme != "rtmp" or not e.hostname:
            raise ValueError(f"--edge must look like rtmp://HOST:PORT, got {edge!r}")
        a = urlsplit(app if "://" in app else f"https://{app}")
        scheme = {"wss": "https", "ws": "http"}.get(a.scheme, a.scheme)
        if scheme not in ("http", "https") or not a.netloc:
            raise ValueError(f"--app must look like https://APP, got {app!r}")
        return cls(e.hostname, e.port or 1935, f"{scheme}://{a.netloc}")


async def diagnose(
    edge: str,
    app: str,
    secret: str,
    *,
    name: str | None = None,
    seconds: float = 6.0,
    frequency: float = 440.0,
    timeout: float = 30.0,
    connect_timeout: float = 5.0,
    say: Callable[[str], None] = print,
) -> DiagnoseReport:
    """Run the checks against a deployed edge and app; return the report.

    ``timeout`` bounds the wait for the app to show the stream (a sleeping
    free-tier Render instance takes 30-60 s to wake) and for decoded audio.
    """
    target = Target.parse(edge, app)
    name = name or f"diagnose-{secrets.token_hex(3)}"
    report = DiagnoseReport(edge=f"rtmp://{target.host}:{target.port}", app=target.app_base, stream=name)
    # The tone outlasts every wait (the run stops it once the checks pass): a stream that ended
    # before a waking app saw it would leave the app's status list again.
    tone_seconds = max(seconds, timeout + 10)
    checks = _Checks(target, secret, name, tone_seconds, frequency, timeout, connect_timeout)
    steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("dns", checks.dns),
        ("edge tcp", checks.tcp),
        ("rtmp handshake", checks.handshake),
        ("stream key", checks.stream_key),
        ("app reachable", checks.app_reachable),
        ("publish", checks.publish),
        ("app receives stream", checks.app_receives),
        ("decoded audio", checks.decoded_audio),
    ]
    try:
        for step_name, action in steps:
            say(f"… {step_name}")
            t0 = time.perf_counter()
            try:
                detail, ok, fix = await action(), True, None
            except Failed as exc:
                detail, ok, fix = str(exc), False, exc.fix
            ms = (time.perf_counter() - t0) * 1000
            report.steps.append(DiagnoseStep(step_name, ok, detail, ms))
            say(f"{'✓' if ok else '✗'} {step_name}: {detail} ({ms:.0f} ms)")
            if not ok:
                report.fix = fix
                say(f"  fix: {fix}")
                break
    finally:
        await checks.close()
    return report


class _Checks:
    """The steps, sharing the RTMP connection and the HTTP session between them."""

    def __init__(
        self,
        target: Target,
        secret: str,
        name: str,
        seconds: float,
        frequency: float,
        timeout: float,
        connect_timeout: float,
    ) -> None:
        self.t = target
        self.secret = secret
        self.name = name
        self.seconds = seconds
        self.frequency = frequency
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.addresses: list[str] = []
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.session: ClientSession | None = None
        self.http: aiohttp.ClientSession | None = None
        self.publisher: asyncio.Task[Any] | None = None
        self.stop = asyncio.Event()
        self.first_packet = asyncio.Event()
        self.stream: dict[str, Any] = {}

    @property
    def where(self) -> str:
        return f"{self.t.host}:{self.t.port}"

    async def close(self) -> None:
        await self._close_rtmp()
        if self.publisher is not None:
            self.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.publisher), 10.0)
            if not self.publisher.done():
                self.publisher.cancel()
                with contextlib.suppress(BaseException):
                    await self.publisher
        if self.http is not None:
            await self.http.close()

    async def _close_rtmp(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.writer = None

    # --- 1-4: the edge ------------------------------------------------------------------

    async def dns(self) -> str:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(self.t.host, self.t.port, type=socket.SOCK_STREAM), self.connect_timeout
            )
        except (OSError, *TIMEOUTS) as exc:
            raise Failed(
                f"{self.t.host} does not resolve: {exc}",
                "check RTMP_HOST: the edge's host name (Fly: APP.fly.dev, with a dedicated IPv4 from "
                "`fly ips allocate-v4`; a VPS: its A record or its IP address)",
            ) from None
        self.addresses = sorted({str(info[4][0]) for info in infos})
        return f"{self.t.host} → {', '.join(self.addresses)}"

    async def tcp(self) -> str:
        t0 = time.perf_counter()
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.t.host, self.t.port), self.connect_timeout
            )
        except ConnectionRefusedError:
            raise Failed(
                f"{self.where} refused the connection: port closed, nothing listens there",
                "start the edge (`systemctl status relay-edge`, `fly status`, `fly logs`: look for "
                "'RTMP server started on port 1935'); check RTMP_PORT; on a VPS `ufw allow 1935/tcp`; "
                "on Fly a [[services]] block with protocol 'tcp' and port 1935, and a dedicated IPv4",
            ) from None
        except TIMEOUTS:
            raise Failed(
                f"no answer from {self.where} within {self.connect_timeout:g} s: the edge is down or a "
                "firewall drops the packets",
                "check the edge is running and the firewall or security group lets TCP "
                f"{self.t.port} in (`ufw allow {self.t.port}/tcp`); on Fly, `fly ips list` must show a "
                "dedicated v4 address",
            ) from None
        except OSError as exc:
            raise Failed(
                f"cannot connect to {self.where}: {exc}",
                "check RTMP_HOST and RTMP_PORT, and the network between here and the edge",
            ) from None
        return f"connected to {self.where} in {(time.perf_counter() - t0) * 1000:.0f} ms"

    async def _pump_until(self, kinds: tuple[type, ...], what: str, fix: str) -> Any:
        """Feed server bytes to the session until an event of ``kinds``; send what is due."""
        assert self.reader is not None and self.writer is not None and self.session is not None
        deadline = time.monotonic() + self.connect_timeout
        while True:
            out = self.session.data_to_send()
            if out:
                self.writer.write(out)
                await self.writer.drain()
            left = deadline - time.monotonic()
            try:
                data = await asyncio.wait_for(self.reader.read(65536), max(left, 0.001))
            except TIMEOUTS:
                raise Failed(f"no {what} within {self.connect_timeout:g} s", fix) from None
            except OSError as exc:
                raise Failed(f"connection lost during the {what}: {exc}", fix) from None
            if not data:
                raise Failed(f"the server closed the connection during the {what}", fix)
            try:
                events = self.session.receive_data(data)
            except (ProtocolError, RelayError) as exc:
                raise Failed(f"not RTMP: {exc}", fix) from None
            for event in events:
                if isinstance(event, kinds):
                    out = self.session.data_to_send()
                    if out:
                        self.writer.write(out)
                        await self.writer.drain()
                    return event

    async def handshake(self) -> str:
        key = keys.mint_key(self.secret, f"{self.name}-probe", ttl=600, now=time.time())
        tc_url = f"rtmp://{self.t.host}:{self.t.port}/live"
        self.session = ClientSession("live", key, tc_url)
        self.session.initiate()
        fix = (
            f"something other than the edge answers on {self.where} (an HTTP server? an old ngrok "
            "port?); point RTMP_HOST/RTMP_PORT at the edge's RTMP port (1935), not its HTTP port"
        )
        event = await self._pump_until((Connected, PublishRejected), "RTMP handshake and connect", fix)
        if isinstance(event, PublishRejected):
            raise Failed(f"connect refused: {event.code} {event.description}", fix)
        return "handshake done, connect accepted (app 'live')"

    async def stream_key(self) -> str:
        fix = (
            "the edge refused a key signed with this --secret/RELAY_SECRET: it differs from the edge's "
            "RELAY_SECRET. Copy the app's RELAY_SECRET (Render: Environment) to the edge "
            "(`fly secrets set RELAY_SECRET=...` or /etc/rtmp-relay/edge.env) and restart it; "
            "the edge logs 'refused publish from …: bad signature'"
        )
        event = await self._pump_until((PublishStarted, PublishRejected), "answer to publish", fix)
        if isinstance(event, PublishRejected):
            if "Unauthorized" in event.code:
                raise Failed(f"publish refused: {event.code} ({event.description})", fix)
            raise Failed(
                f"publish refused: {event.code} ({event.description})",
                "the edge refused the publish for a reason other than the key: see its log "
                "(limits such as max_streams, or the app refusing streams)",
            )
        assert self.session is not None and self.writer is not None
        self.session.unpublish()
        self.writer.write(self.session.data_to_send())
        with contextlib.suppress(OSError):
            await self.writer.drain()
        await self._close_rtmp()
        return f"a key for {self.name}-probe signed with this secret was accepted"

    # --- 5-8: the app -------------------------------------------------------------------

    async def _status(self) -> dict[str, Any]:
        if self.http is None:
            # A deployed app's status asks for the status token (relay_edge.web.listener_token).
            auth = {"Authorization": f"Bearer {status_token(self.secret)}"}
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), headers=auth)
        async with self.http.get(f"{self.t.app_base}/api/rtmp/status") as response:
            if response.status == 401:
                raise Failed(
                    f"GET {self.t.app_base}/api/rtmp/status answered 401: the status token was refused",
                    "the app's token is RELAY_STATUS_TOKEN if it sets one, else derived from its "
                    "RELAY_SECRET: set the same RELAY_STATUS_TOKEN here, or check that the secrets match",
                )
            if response.status != 200:
                raise Failed(
                    f"GET {self.t.app_base}/api/rtmp/status answered {response.status}",
                    "the URL is not an rtmp-relay app: run `relay-client serve` (render.yaml) or mount "
                    "the status routes next to your Receiver",
                )
            return await response.json(content_type=None)  # type: ignore[no-any-return]

    async def app_reachable(self) -> str:
        try:
            doc = await self._status()
        except (aiohttp.ClientError, *TIMEOUTS, ValueError) as exc:
            raise Failed(
                f"cannot read {self.t.app_base}/api/rtmp/status: {type(exc).__name__}: {exc}",
                "check --app (the app's public https:// URL) and that the service is deployed and "
                "healthy (Render: Events and Logs; a free instance may still be waking up)",
            ) from None
        links = doc.get("links", [])
        return f"{doc.get('role', '?')} {doc.get('name', '?')}: {len(links)} link(s) up"

    async def publish(self) -> str:
        from .publish import PublishError, publish_tone

        key = keys.mint_key(self.secret, self.name, ttl=600, now=time.time())
        url = f"rtmp://{self.t.host}:{self.t.port}/live/{key}"
        self.publisher = asyncio.ensure_future(
            publish_tone(
                url,
                seconds=self.seconds,
                frequency=self.frequency,
                stop=self.stop,
                on_packet=lambda _pts: self.first_packet.set(),
            )
        )
        waiter = asyncio.ensure_future(self.first_packet.wait())
        await asyncio.wait(
            {self.publisher, waiter}, timeout=self.connect_timeout + 10, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if self.first_packet.is_set():
            return f"publishing a {self.frequency:g} Hz tone as {self.name}"
        fix = "the edge accepted the probe but not the publisher: see the edge's log for this stream"
        if not self.publisher.done():
            raise Failed("the publisher sent no packet within the time allowed", fix)
        try:
            self.publisher.result()
        except PublishError as exc:
            raise Failed(f"the publisher failed: {exc}", fix) from None
        raise Failed("the publisher exited without sending a packet", fix)

    def _find(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        return next((s for s in doc.get("streams", []) if s.get("name") == self.name), None)

    async def _poll(self, until: Callable[[dict[str, Any] | None], bool]) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.timeout
        stream = None
        while True:
            with contextlib.suppress(aiohttp.ClientError, *TIMEOUTS, ValueError):
                stream = self._find(await self._status())
                if until(stream):
                    return stream
            if time.monotonic() > deadline or (self.publisher is not None and self.publisher.done()):
                return stream
            await asyncio.sleep(0.25)

    async def app_receives(self) -> str:
        stream = await self._poll(lambda s: s is not None and s.get("bytes", 0) > 0)
        if stream is None or not stream.get("bytes"):
            raise Failed(
                f"the app lists no stream {self.name} after {self.timeout:g} s",
                "the edge is not linked to this app: set the edge's RELAY_UPSTREAM to "
                f"{self.t.app_base.replace('https://', 'wss://').replace('http://', 'ws://')}/relay, "
                "with the same RELAY_SECRET on both; the edge logs 'link to … failed: …' and the app "
                "'refused link from …' when they disagree; check both /api/rtmp/status 'links'",
            )
        self.stream = stream
        return f"{self.name}: {stream['bytes']} bytes, codecs {stream.get('codecs') or '?'}"

    async def decoded_audio(self) -> str:
        first = self.stream
        seen: list[dict[str, Any]] = []

        def growing(s: dict[str, Any] | None) -> bool:
            if s is None:
                return False
            seen.append(s)
            samples = [x.get("audio_samples", 0) for x in seen]
            level = s.get("audio_level_dbfs")
            return samples[-1] > 0 and samples[-1] > samples[0] and (level is None or level > SILENCE_DBFS)

        stream = await self._poll(growing) or first
        samples = stream.get("audio_samples", 0)
        level = stream.get("audio_level_dbfs")
        if samples and growing(stream):
            shown = "" if level is None else f", level {level:.1f} dBFS"
            return f"{samples} samples decoded and growing{shown}"
        codecs = stream.get("codecs") or {}
        if "audio" not in codecs:
            detail = (
                f"the app receives {self.name} ({stream.get('bytes', 0)} bytes) but it has no audio track"
            )
        elif samples and level is not None and level <= SILENCE_DBFS:
            detail = f"the app decodes {self.name} but hears silence ({level:.1f} dBFS)"
        else:
            detail = (
                f"the app receives {self.name} ({stream.get('bytes', 0)} bytes, audio {codecs.get('audio')}) "
                f"but decodes no audio ({samples} samples)"
            )
        raise Failed(
            detail,
            "the app must decode: `relay-client serve` decodes with --out/RELAY_OUT set; your own Receiver "
            "needs consume={'audio'} and a reader of stream.audio(); PyAV must be installed "
            "(pip install '.[client]'); the app's log shows decode errors",
        )
