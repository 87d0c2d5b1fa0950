"""The app's endpoint for LiveKit Track Egress over WebSocket (the fallback path).

When no edge is configured, :class:`~relay_client.livekit.egress.EgressManager`
starts one Track Egress per audio track with ``websocket_url`` pointing here.
LiveKit then sends binary messages of interleaved S16LE PCM (always 48 kHz stereo;
silence while muted) and text messages ``{"muted":true}`` / ``{"muted":false}``.
Each track becomes a :class:`~relay_client.pcm_stream.PcmStream`, delivered through
``Receiver.add_stream`` like an RTMP stream.

LiveKit never reconnects a Track Egress WebSocket (egress
``pkg/pipeline/sink/websocket.go``): a socket that closes ends that egress. So a
closed socket ends its stream at once, unless ``on_closed(room, track)`` (the
:class:`~relay_client.livekit.egress.EgressManager` sets it) answers that a new
egress is being started: then the stream waits for it and goes on with a
:class:`~relay_client.stream.GapEvent` for the time lost.

Authentication: the URL carries the stream's name, room, participant, track,
an expiry and ``token`` = URL-safe base64 of 128 bits of
``HMAC-SHA256(derive_key(RELAY_SECRET, "livekit-track-ws"), FIELDS)`` where FIELDS
is NAME, ROOM, PARTICIPANT, TRACK and EXP in UTF-8, each after its length as 4
bytes big-endian (so no two field sets sign alike), checked in constant time. The
token is per egress, never logged, and the URL is only ever logged without its
query. One socket per token at a time: a second is refused with 409.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

from relay_edge.auth import b64url, derive_key
from relay_edge.keys import is_valid_name

from ..decode import AudioFormat
from ..pcm_stream import PcmStream

log = logging.getLogger("relay_client.livekit")

TRACK_WS_LABEL = "livekit-track-ws"
DEFAULT_PATH = "/livekit/track"
TOKEN_BYTES = 16
MAX_MESSAGE = 1 << 20  # 1 MiB: LiveKit sends ~20 ms (3840 bytes at 48 kHz stereo) per message
_FIELDS = ("name", "room", "participant", "track", "exp")
# LiveKit ends an egress with an empty close frame (1005 here); 1000 is a normal close too.
# Anything else, 1006 above all (no close frame), is the connection lost.
_CLEAN_CLOSE = (1000, 1005)


class StreamSink(Protocol):
    """Where new streams go: :class:`~relay_client.receiver.Receiver` has this method."""

    def add_stream(self, stream: Any) -> None: ...


def track_token(secret: str, fields: dict[str, str]) -> str:
    """The per-egress token for ``fields`` (name, room, participant, track, exp)."""
    encoded = [fields[k].encode("utf-8", "surrogatepass") for k in _FIELDS]
    message = b"".join(len(v).to_bytes(4, "big") + v for v in encoded)
    mac = hmac.new(derive_key(secret, TRACK_WS_LABEL), message, hashlib.sha256).digest()
    return b64url(mac[:TOKEN_BYTES])


class TrackAudioEndpoint:
    """aiohttp handler receiving Track Egress PCM: ``app.router.add_get(endpoint.path, endpoint.handler)``."""

    def __init__(
        self,
        secret: str,
        sink: StreamSink,
        *,
        audio_format: AudioFormat | None = None,
        path: str = DEFAULT_PATH,
        input_rate: int = 48000,
        input_channels: int = 2,
        out_dir: str | None = None,
    ) -> None:
        if not secret:
            raise ValueError("the relay secret must not be empty")
        self._secret = secret
        self.sink = sink
        self.audio_format = audio_format or getattr(sink, "audio_format", None) or AudioFormat()
        self.path = path
        self.input_rate = input_rate
        self.input_channels = input_channels
        self.out_dir = out_dir if out_dir is not None else getattr(sink, "out_dir", None)
        self.streams: dict[tuple[str, str], PcmStream] = {}  # (room, track) -> live stream
        self._connections: dict[tuple[str, str], int] = {}
        # (room, track) -> when its socket closed, while a restarted egress is awaited
        self._restarting: dict[tuple[str, str], float] = {}
        # Called when a track's last socket closed; True if a new egress is on its way.
        self.on_closed: Callable[[str, str], bool] | None = None
        self._live_tokens: set[str] = set()  # one socket per token: a copied URL can't join in

    def base_url(self, public_url: str) -> str:
        """The endpoint's WebSocket URL without a query: ``https://app`` -> ``wss://app/livekit/track``."""
        base = public_url.rstrip("/")
        if base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        return base + self.path

    def url_for(
        self, public_url: str, *, name: str, room: str, participant: str, track: str, ttl: float = 86400
    ) -> str:
        """The ``websocket_url`` for one track's egress (``public_url`` is the app's https base)."""
        if not is_valid_name(name):
            raise ValueError(f"stream name must be 1-64 characters of A-Z a-z 0-9 _ -, not {name!r}")
        fields = {
            "name": name,
            "room": room,
            "participant": participant,
            "track": track,
            "exp": str(int(time.time() + ttl)),
        }
        query = urlencode({**fields, "token": track_token(self._secret, fields)})
        return f"{self.base_url(public_url)}?{query}"

    def _check(self, request: web.Request) -> dict[str, str] | None:
        query = request.query
        fields = {k: query.get(k, "") for k in _FIELDS}
        token = query.get("token", "")
        expected = track_token(self._secret, fields)
        if not hmac.compare_digest(expected.encode("ascii"), token.encode("utf-8", "replace")):
            return None
        if not fields["exp"].isdigit() or time.time() >= int(fields["exp"]):
            return None
        if not is_valid_name(fields["name"]):
            return None
        return fields

    async def handler(self, request: web.Request) -> web.StreamResponse:
        """Accept one Track Egress WebSocket; 401 without a valid token (no detail given)."""
        fields = self._check(request)
        if fields is None:
            log.warning("refused a track egress websocket from %s: bad or expired token", request.remote)
            return web.Response(status=401, text="unauthorized\n")
        token = request.query["token"]
        if token in self._live_tokens:
            log.warning(
                "refused a second track egress websocket for %s from %s", fields["name"], request.remote
            )
            return web.Response(status=409, text="already connected\n")
        self._live_tokens.add(token)
        try:
            return await self._serve(request, fields)
        finally:
            self._live_tokens.discard(token)

    async def _serve(self, request: web.Request, fields: dict[str, str]) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=None)
        await ws.prepare(request)
        key = (fields["room"], fields["track"])
        stream = self._stream_for(key, fields, request)
        self._connections[key] = self._connections.get(key, 0) + 1
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await stream.feed_pcm(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._control(stream, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    log.warning("track egress websocket for %s failed: %s", stream.info.name, ws.exception())
                    break
        finally:
            self._connections[key] -= 1
            if self._connections[key] == 0:
                del self._connections[key]
                self._closed(key, stream, ws.close_code not in _CLEAN_CLOSE)
        return ws

    def _closed(self, key: tuple[str, str], stream: PcmStream, lost: bool) -> None:
        """The track's socket is gone, and with it that egress (LiveKit never reconnects).

        A close frame is LiveKit ending the egress; a connection lost without one (a failed
        write, the network) may be restarted by ``on_closed``.
        """
        if stream.ended:
            return
        if lost and self.on_closed is not None and self.on_closed(*key):
            self._restarting[key] = time.monotonic()
            log.info("stream %s: track egress socket closed; a new egress is being started", stream.info.name)
            return
        self._end(key, stream, "track egress websocket closed")

    def _stream_for(self, key: tuple[str, str], fields: dict[str, str], request: web.Request) -> PcmStream:
        closed_at = self._restarting.pop(key, None)
        stream = self.streams.get(key)
        if stream is not None and not stream.ended:
            stream.stats.links += 1
            if closed_at is not None:
                stream.gap(round((time.monotonic() - closed_at) * 1000))
            log.info("stream %s: a restarted track egress continues it", stream.info.name)
            return stream
        rate, channels = _content_type_format(request.headers.get("Content-Type", ""))
        stream = PcmStream(
            fields["name"],
            f"lk-{fields['room']}-{fields['track']}",
            audio_format=self.audio_format,
            publisher={
                "participant": fields["participant"],
                "track_id": fields["track"],
                "room": fields["room"],
                "remote": request.remote or "",
            },
            input_rate=rate or self.input_rate,
            input_channels=channels or self.input_channels,
            out_dir=self.out_dir,
            deliver_audio="audio" in getattr(self.sink, "consume", {"audio"}),
        )
        self.streams[key] = stream
        log.info(
            "stream %s opened: track %s of %s in room %s (%d Hz, %d ch PCM)",
            stream.info.name,
            fields["track"],
            fields["participant"],
            fields["room"],
            stream.input_rate,
            stream.input_channels,
        )
        self.sink.add_stream(stream)
        return stream

    def _control(self, stream: PcmStream, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            log.warning("stream %s: ignored a text message that is not JSON", stream.info.name)
            return
        if isinstance(message, dict) and isinstance(message.get("muted"), bool):
            stream.set_muted(message["muted"])

    def _end(self, key: tuple[str, str], stream: PcmStream, reason: str) -> None:
        self._restarting.pop(key, None)
        stream.end(reason)
        if self.streams.get(key) is stream:
            del self.streams[key]

    def end_track(self, room: str, track: str, reason: str) -> None:
        """End a track's stream now (its egress ended and won't be restarted)."""
        key = (room, track)
        stream = self.streams.get(key)
        if stream is not None:
            self._end(key, stream, reason)

    async def close(self) -> None:
        """End every stream (app shutdown)."""
        self._restarting.clear()
        for key, stream in list(self.streams.items()):
            with contextlib.suppress(Exception):
                stream.end("app shutting down")
            self.streams.pop(key, None)


def _content_type_format(value: str) -> tuple[int | None, int | None]:
    """``audio/x-raw;rate=48000;channels=1`` -> (48000, 1), if the dialer says so."""
    rate = channels = None
    for part in value.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k == "rate" and v.isdigit() and 8000 <= int(v) <= 192000:
            rate = int(v)
        elif k == "channels" and v in ("1", "2"):
            channels = int(v)
    return rate, channels
