"""A local stand-in for a LiveKit server and its egress workers, speaking LiveKit's real wire formats.

- Twirp: ``POST /twirp/livekit.Egress/{StartRoomCompositeEgress,StartTrackEgress,StopEgress,ListEgress}``
  and ``/twirp/livekit.RoomService/ListParticipants``, bodies in protobuf (what livekit-api sends,
  ``Content-Type: application/protobuf``) or JSON, decoded into livekit-protocol's own messages.
  Every call must carry ``Authorization: Bearer <JWT>`` signed with the API secret (checked with
  livekit-api's ``TokenVerifier``) and the grant LiveKit asks for (``roomRecord`` for egress,
  ``roomAdmin`` on the room for ListParticipants); otherwise 401 ``unauthenticated`` in Twirp's
  JSON error shape.
- Egress workers, started per egress by a test-supplied coroutine: :func:`rtmp_worker` publishes to
  the requested RTMP URL with the LiveKit-shaped GStreamer chain (``publishers.gst_livekit``) and can
  cut the connection and publish again with the same URL, as LiveKit does when it retries a sink;
  :func:`websocket_worker` dials ``websocket_url`` and sends S16LE 48 kHz stereo PCM in 20 ms binary
  messages plus ``{"muted": ...}`` text messages, like LiveKit's Track Egress.
- Webhooks: ``egress_started`` / ``egress_updated`` / ``egress_ended`` POSTed as JSON with the
  ``Authorization`` JWT whose ``sha256`` claim is the body's hash, as LiveKit's notifier does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from livekit import api
from livekit.protocol import egress as pe
from livekit.protocol import models as pm
from livekit.protocol import room as pr
from livekit.protocol import webhook as pw
from websockets.asyncio.client import connect as ws_connect

from tests.support import publishers

API_KEY = "APIstandin"
API_SECRET = "standin-secret-0123456789abcdef0123456789"

Worker = Callable[["LiveKitStandIn", "FakeEgress"], Awaitable[None]]

# method -> (request class, handler name, required grant)
_EGRESS = {
    "StartRoomCompositeEgress": pe.RoomCompositeEgressRequest,
    "StartTrackEgress": pe.TrackEgressRequest,
    "StopEgress": pe.StopEgressRequest,
    "ListEgress": pe.ListEgressRequest,
}
_ROOM = {"ListParticipants": pr.ListParticipantsRequest}


@dataclass
class FakeEgress:
    """One egress the stand-in started; ``info`` is what LiveKit would report."""

    info: pe.EgressInfo
    request: Message
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The RTMP URL (room composite) or websocket URL (track egress) requested."""
        if isinstance(self.request, pe.TrackEgressRequest):
            return self.request.websocket_url
        return self.request.stream_outputs[0].urls[0]  # type: ignore[attr-defined]


# --- redaction, as livekit/protocol utils/redact.go does it ---------------------------------------
# LiveKit stores, lists and reports every egress request redacted (egress/redact.go), so a key or
# token can never be read back from ListEgress. Go's `$` is Python's `\Z`.
_RTMP_URL = re.compile(r"^(rtmps?://)(.*/)(.*/)(\S*)( live=1)?\Z")
_SHORTHAND_URL = re.compile(r"^(mux|twitch)://(\S+)\Z")


def redact_identifier(identifier: str) -> str:
    """``{abc...xyz}``: the first and last 3 characters (2 from 6, 1 from 3, none below)."""
    for i in (3, 2, 1):
        if len(identifier) >= i * 3:
            return f"{{{identifier[:i]}...{identifier[-i:]}}}"
    return "{...}"


def redact_url_query_values(url: str) -> str:
    """Every non-empty query value becomes ``{...}``; names and the rest of the URL stay."""
    base, found, query = url.partition("?")
    if not found or not query:
        return url
    params = [p.split("=", 1)[0] + "={...}" if p.partition("=")[2] else p for p in query.split("&")]
    return base + "?" + "&".join(params)


def redact_stream_key(url: str) -> str:
    """An RTMP URL with its stream key redacted (utils.RedactStreamKey)."""
    if match := _SHORTHAND_URL.match(url):
        return f"{match[1]}://{redact_identifier(match[2])}"
    match = _RTMP_URL.match(url)
    if match is None:
        return redact_url_query_values(url)
    return match[1] + match[2] + match[3] + redact_identifier(match[4]) + (match[5] or "")


def redacted(request: Message) -> Message:
    """A copy of an egress request as LiveKit stores and lists it."""
    copy = type(request)()
    copy.CopyFrom(request)
    if isinstance(copy, pe.TrackEgressRequest) and copy.websocket_url:
        copy.websocket_url = redact_url_query_values(copy.websocket_url)
    elif isinstance(copy, pe.RoomCompositeEgressRequest):
        for output in copy.stream_outputs:
            output.urls[:] = [redact_stream_key(u) for u in output.urls]
    return copy


def sign_webhook(body: str, api_key: str = API_KEY, api_secret: str = API_SECRET, ttl: float = 600) -> str:
    """The Authorization value LiveKit sends with a webhook body."""
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    token = api.AccessToken(api_key, api_secret).with_sha256(digest)
    return token.with_ttl(datetime.timedelta(seconds=ttl)).to_jwt()


def participant(identity: str, *tracks: tuple[str, int]) -> pm.ParticipantInfo:
    """A ParticipantInfo with tracks given as ``(sid, TrackType)``."""
    return pm.ParticipantInfo(
        sid=f"PA_{identity}",
        identity=identity,
        state=pm.ParticipantInfo.State.ACTIVE,
        tracks=[pm.TrackInfo(sid=sid, type=kind, source=pm.TrackSource.MICROPHONE) for sid, kind in tracks],
    )


class LiveKitStandIn:
    """``async with LiveKitStandIn() as lk``: Twirp on ``lk.url``; set ``worker`` and ``rooms``."""

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        api_secret: str = API_SECRET,
        worker: Worker | None = None,
        webhook_url: str | None = None,
        rooms: tuple[str, ...] = (),
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.worker = worker
        self.webhook_url = webhook_url
        # LiveKit has a room only once someone joined (or CreateRoom made it); ``rooms`` names
        # rooms that exist from the start, each with one participant.
        self.rooms: dict[str, list[pm.ParticipantInfo]] = {room: [participant("host")] for room in rooms}
        self.egresses: dict[str, FakeEgress] = {}
        self.calls: list[tuple[str, Message, str]] = []  # (method, request, content type)
        self.refused: list[str] = []
        self.webhook_answers: list[int] = []
        self._ids = itertools.count(1)
        self._verifier = api.TokenVerifier(api_key, api_secret)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def __aenter__(self) -> LiveKitStandIn:
        app = web.Application()
        app.router.add_post("/twirp/livekit.{service}/{method}", self._twirp)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for egress in self.egresses.values():
            egress.stop.set()
        tasks = [e.task for e in self.egresses.values() if e.task is not None]
        for task in tasks:
            if not task.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(task), 10)
                task.cancel()
            elif not task.cancelled():
                task.exception()  # a failed egress is in its info; don't log it again at exit
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def requests(self, method: str) -> list[Any]:
        return [req for m, req, _ in self.calls if m == method]

    async def wait_done(self, timeout: float = 30) -> None:
        """Wait for every egress worker to finish."""
        tasks = [e.task for e in self.egresses.values() if e.task is not None]
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout)

    # --- Twirp --------------------------------------------------------------------------------

    async def _twirp(self, request: web.Request) -> web.Response:
        service, method = request.match_info["service"], request.match_info["method"]
        table = _EGRESS if service == "Egress" else _ROOM if service == "RoomService" else {}
        if method not in table:
            return _twirp_error(404, "bad_route", f"no handler for {service}/{method}")
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        raw = await request.read()
        try:
            if ctype == "application/protobuf":
                message = table[method].FromString(raw)
            elif ctype == "application/json":
                message = json_format.Parse(raw.decode(), table[method](), ignore_unknown_fields=False)
            else:
                return _twirp_error(400, "malformed", f"unexpected Content-Type {ctype!r}")
        except Exception as exc:
            return _twirp_error(400, "malformed", f"bad body: {exc}")
        refusal = self._authorize(request.headers.get("Authorization", ""), service, message)
        if refusal is not None:
            self.refused.append(f"{method}: {refusal}")
            return _twirp_error(401, "unauthenticated", refusal)
        self.calls.append((method, message, ctype))
        try:
            answer = await getattr(self, f"_{method}")(message)
        except LookupError as exc:
            return _twirp_error(404, "not_found", str(exc))
        if ctype == "application/json":
            return web.Response(body=json_format.MessageToJson(answer).encode(), content_type=ctype)
        return web.Response(body=answer.SerializeToString(), content_type=ctype)

    def _authorize(self, header: str, service: str, message: Message) -> str | None:
        if not header.startswith("Bearer "):
            return "no bearer token"
        try:
            claims = self._verifier.verify(header[len("Bearer ") :])
        except Exception as exc:
            return f"invalid token: {type(exc).__name__}"
        video = claims.video
        if service == "Egress" and not (video and video.room_record):
            return "missing roomRecord grant"
        if service == "RoomService" and not (video and video.room_admin and video.room == message.room):  # type: ignore[attr-defined]
            return "missing roomAdmin grant for the room"
        return None

    def _new_egress(self, request: Message, room: str) -> FakeEgress:
        now = time.time_ns()
        info = pe.EgressInfo(
            egress_id=f"EG_standin{next(self._ids):04d}",
            room_id=f"RM_{room}",
            room_name=room,
            status=pe.EgressStatus.EGRESS_STARTING,
            started_at=now,
            updated_at=now,
        )
        if isinstance(request, pe.RoomCompositeEgressRequest):
            info.room_composite.CopyFrom(redacted(request))
            info.source_type = pe.EgressSourceType.EGRESS_SOURCE_TYPE_WEB
        else:
            info.track.CopyFrom(redacted(request))
            info.source_type = pe.EgressSourceType.EGRESS_SOURCE_TYPE_SDK
        egress = FakeEgress(info, request)
        self.egresses[info.egress_id] = egress
        if self.worker is not None:
            egress.task = asyncio.ensure_future(self._run(egress))
        return egress

    async def _run(self, egress: FakeEgress) -> None:
        await self.webhook("egress_started", egress)
        try:
            assert self.worker is not None
            await self.worker(self, egress)
            egress.info.status = pe.EgressStatus.EGRESS_COMPLETE
        except Exception as exc:
            egress.info.status = pe.EgressStatus.EGRESS_FAILED
            egress.info.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            egress.info.ended_at = time.time_ns()
            await self.webhook("egress_ended", egress)

    async def _StartRoomCompositeEgress(self, request: pe.RoomCompositeEgressRequest) -> pe.EgressInfo:
        if request.room_name not in self.rooms:  # livekit pkg/service/egress.go: ErrRoomNotFound
            raise LookupError("requested room does not exist")
        return self._new_egress(request, request.room_name).info

    async def _StartTrackEgress(self, request: pe.TrackEgressRequest) -> pe.EgressInfo:
        room = self.rooms.get(request.room_name, [])
        if not any(t.sid == request.track_id for p in room for t in p.tracks):
            raise LookupError(f"track {request.track_id} not found")
        return self._new_egress(request, request.room_name).info

    async def _StopEgress(self, request: pe.StopEgressRequest) -> pe.EgressInfo:
        egress = self.egresses.get(request.egress_id)
        if egress is None:
            raise LookupError(f"egress {request.egress_id} not found")
        egress.stop.set()
        if egress.info.status in (pe.EgressStatus.EGRESS_STARTING, pe.EgressStatus.EGRESS_ACTIVE):
            egress.info.status = pe.EgressStatus.EGRESS_ENDING
        if egress.task is None:
            egress.info.status = pe.EgressStatus.EGRESS_COMPLETE
        return egress.info

    async def _ListEgress(self, request: pe.ListEgressRequest) -> pe.ListEgressResponse:
        live = (pe.EgressStatus.EGRESS_STARTING, pe.EgressStatus.EGRESS_ACTIVE)
        items = [
            e.info
            for e in self.egresses.values()
            if (not request.room_name or e.info.room_name == request.room_name)
            and (not request.egress_id or e.info.egress_id == request.egress_id)
            and (not request.active or e.info.status in live)
        ]
        return pe.ListEgressResponse(items=items)

    async def _ListParticipants(self, request: pr.ListParticipantsRequest) -> pr.ListParticipantsResponse:
        return pr.ListParticipantsResponse(participants=self.rooms.get(request.room, []))

    # --- webhooks -----------------------------------------------------------------------------

    async def webhook(self, event: str, egress: FakeEgress) -> None:
        """POST a signed webhook for ``egress`` (if a webhook URL is set)."""
        await self._post(pw.WebhookEvent(event=event, egress_info=egress.info))

    async def _post(self, event: pw.WebhookEvent) -> None:
        if self.webhook_url is None or self._session is None:
            return
        event.id, event.created_at = f"EV_{next(self._ids)}", int(time.time())
        body = json_format.MessageToJson(event)
        headers = {"Authorization": sign_webhook(body, self.api_key, self.api_secret),
                   "Content-Type": "application/webhook+json"}  # fmt: skip
        async with self._session.post(self.webhook_url, data=body.encode(), headers=headers) as resp:
            self.webhook_answers.append(resp.status)

    async def join(self, room: str, who: pm.ParticipantInfo) -> None:
        """``who`` joins ``room``: room_started (if it is new), then participant_joined, as LiveKit sends."""
        if room not in self.rooms:
            self.rooms[room] = []
            await self._post(pw.WebhookEvent(event="room_started", room=pm.Room(name=room)))
        self.rooms[room].append(who)
        await self._post(
            pw.WebhookEvent(event="participant_joined", room=pm.Room(name=room), participant=who)
        )

    async def set_active(self, egress: FakeEgress) -> None:
        egress.info.status = pe.EgressStatus.EGRESS_ACTIVE
        egress.info.updated_at = time.time_ns()
        await self.webhook("egress_updated", egress)


def _twirp_error(status: int, code: str, msg: str) -> web.Response:
    return web.Response(
        status=status, body=json.dumps({"code": code, "msg": msg}), content_type="application/json"
    )


# --- egress workers ------------------------------------------------------------------------------

# rtmp2sink has no stats outside a GStreamer program; its debug log shows the same numbers:
# gst_rtmp_connection_handle_ack logs "Peer acknowledged N bytes" as it sets out-bytes-acked.
GST_RTMP_LOG = {"GST_DEBUG": "rtmpconnection:6,rtmpmessage:6", "GST_DEBUG_NO_COLOR": "1"}
_ACKED = re.compile(r"Peer acknowledged (\d+) bytes")
_SENT = re.compile(r">>> message cstream:\d+ +mstream:\d+ +ts:\d+ +len:\d+ +type:(\S+)")


def acknowledged(log: str) -> list[int]:
    """Every out-bytes-acked value rtmp2sink took from a server Acknowledgement, in order."""
    return [int(n) for n in _ACKED.findall(log)]


def sent_before_first_ack(log: str, kind: str = "audio") -> int:
    """How many ``kind`` messages rtmp2sink wrote before the server's first Acknowledgement."""
    first = _ACKED.search(log)
    return len([t for t in _SENT.findall(log[: first.start() if first else len(log)]) if t == kind])


@dataclass
class Part:
    """One publish of a restartable egress: ``seconds`` of ``frequency``; ``cut`` ends it early.

    ``cut`` resolves when the connection should break (a network error): the publisher is killed,
    as a dropped TCP connection would leave it, and the next part publishes to the same URL.
    """

    seconds: float
    frequency: float
    cut: Callable[[], Awaitable[None]] | None = None


# LiveKit egress (pkg/pipeline/builder/stream.go Reset, watch.go): a failed RTMP output is restarted
# with the same URL until 30 s after its first disconnect, but a first failure is fatal unless the
# server acknowledged bytes (out-bytes-acked > 0) or the 5 s liveness monitor saw > 4 KiB go out.
RETRY_WINDOW = 30.0
MONITOR_PERIOD = 5.0


class OutputFailed(RuntimeError):
    """The RTMP output failed where LiveKit's egress would not retry it."""


def may_retry(pub: publishers.Publisher, first_disconnect: float | None, now: float) -> bool:
    """Whether LiveKit would restart ``pub``'s output after it failed at ``now`` (monotonic)."""
    if first_disconnect is not None:
        return now - first_disconnect < RETRY_WINDOW
    acked = acknowledged(pub.output)
    # A monitor tick came and saw this (audio at 128 kbit/s is 80 KB per 5 s, far over 4 KiB).
    progressed = now - pub.started >= MONITOR_PERIOD
    return bool(acked and acked[-1] > 0) or progressed


def rtmp_worker(*parts: Part) -> Worker:
    """Room Composite egress: publish ``parts`` in turn to the requested RTMP URL with GStreamer.

    Shaped like LiveKit's: voaacenc AAC-LC 44.1 kHz stereo at 128 kbit/s, ``flvmux streamable=true``,
    ``rtmp2sink``; after a cut the next part goes to the same URL only under LiveKit's retry rule
    (:func:`may_retry`), else the egress fails.
    """

    async def run(standin: LiveKitStandIn, egress: FakeEgress) -> None:
        first_disconnect: float | None = None
        for number, part in enumerate(parts):
            pub = await publishers.gst_livekit(
                egress.url, seconds=part.seconds, frequency=part.frequency, env=GST_RTMP_LOG
            )
            if number == 0:
                await standin.set_active(egress)
            async with pub:
                if part.cut is None:
                    await pub.wait_ok(part.seconds + 30)
                    return
                await asyncio.wait_for(part.cut(), part.seconds + 30)
                await pub.kill()  # the network error: the TCP connection is gone
            now = time.monotonic()
            if not may_retry(pub, first_disconnect, now):
                acked = acknowledged(pub.output)
                raise OutputFailed(
                    f"output failed with out-bytes-acked {acked[-1] if acked else 0}: not retried"
                )
            first_disconnect = first_disconnect if first_disconnect is not None else now
            egress.info.retry_count += 1

    return run


# Track Egress always sends 48 kHz stereo (the request has no channel option) and exactly these
# texts (egress pkg/pipeline/sink/websocket.go).
TRACK_RATE, TRACK_CHANNELS = 48000, 2
MUTED, UNMUTED = '{"muted":true}', '{"muted":false}'


def sine_s16(frequency: float, seconds: float, rate: int = 48000, channels: int = 2, start: int = 0) -> bytes:
    """Interleaved S16LE sine, phase-continuous from sample ``start``."""
    n = round(seconds * rate)
    t = (np.arange(n) + start) / rate
    mono = np.round(0.5 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    return np.repeat(mono[:, None], channels, axis=1).tobytes()


def websocket_worker(
    frequencies: dict[str, float],
    seconds: float = 2.0,
    *,
    mute_at: float | None = None,
    mute_seconds: float = 0.2,
    frame_ms: int = 20,
    fail_at: float | None = None,
) -> Worker:
    """Track Egress as LiveKit runs it (egress pkg/pipeline/sink/websocket.go): dial ``websocket_url``
    once with ``Content-Type: audio/x-raw``, send ``seconds`` of the track's tone as 48 kHz stereo
    S16LE in ``frame_ms`` messages.

    ``frequencies`` maps track sid -> Hz. With ``mute_at``, ``{"muted":true}`` is sent there,
    ``mute_seconds`` of silence follow (LiveKit keeps sending while muted), then ``{"muted":false}``
    and the tone goes on. A closed socket or failed write fails the egress: LiveKit never reconnects.
    With ``fail_at``, each track's first egress fails there (a write error), as a network drop does.
    """
    rate, channels = TRACK_RATE, TRACK_CHANNELS
    failed: set[str] = set()

    async def run(standin: LiveKitStandIn, egress: FakeEgress) -> None:
        request = egress.request
        assert isinstance(request, pe.TrackEgressRequest)
        pcm = sine_s16(frequencies[request.track_id], seconds, rate, channels)
        if mute_at is not None:
            start, end = (round(t * rate) * 2 * channels for t in (mute_at, mute_at + mute_seconds))
            pcm = pcm[:start] + bytes(end - start) + pcm[end:]
        step = rate * frame_ms // 1000 * 2 * channels
        headers = {"Content-Type": "audio/x-raw"}
        # A failed write (ConnectionClosed from the app's side too) fails the egress: no reconnect.
        async with ws_connect(request.websocket_url, additional_headers=headers, compression=None) as ws:
            await standin.set_active(egress)
            for offset in range(0, len(pcm), step):
                if mute_at is not None and offset == start:
                    await ws.send(MUTED)
                elif mute_at is not None and offset == end:
                    await ws.send(UNMUTED)
                if fail_at is not None and request.track_id not in failed and offset >= fail_at * rate * 4:
                    failed.add(request.track_id)
                    ws.transport.abort()  # the connection drops: no close frame reaches the app
                    raise ConnectionError("websocket: write failed (connection reset)")
                await ws.send(pcm[offset : offset + step])
                if egress.stop.is_set():
                    break
                await asyncio.sleep(0)
        egress.info.status = pe.EgressStatus.EGRESS_ENDING

    return run
