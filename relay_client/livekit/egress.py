"""Start and stop LiveKit egress toward the edge, or the Track Egress fallback.

With ``RTMP_HOST``/``RTMP_PORT`` set, :meth:`EgressManager.start` starts one
audio-only Room Composite Egress streaming to
``rtmp://RTMP_HOST:RTMP_PORT/live/<signed key>`` (the key's NAME is the session
slug); the edge relays it to the app. Without them it falls back, as the users'
runbook promises, to one Track Egress per audio track with ``websocket_url``
pointing at the app's own :class:`~relay_client.livekit.track_ws.TrackAudioEndpoint`.

Asking for the same room twice returns the running session instead of starting
a second egress (checked in this process and, cheaply, with ``ListEgress``).
LiveKit lists egress requests redacted (livekit/protocol ``utils/redact.go``): an
RTMP stream key shows as ``{abc...xyz}`` and every ``websocket_url`` query value as
``{...}``, so running egresses are matched on what survives: the room, a live
status, our edge's ``rtmp://host:port/live/`` or our endpoint's URL without query
and the track id; never on the key or token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from livekit import api
from livekit.protocol import egress as proto_egress
from livekit.protocol import models as proto_models
from livekit.protocol import room as proto_room

from relay_edge.keys import DEFAULT_TTL, is_valid_name, mint_key

from .track_ws import TrackAudioEndpoint

log = logging.getLogger("relay_client.livekit")

EgressStatus = proto_egress.EgressStatus
ENDED_STATUSES = frozenset(
    {
        EgressStatus.EGRESS_COMPLETE,
        EgressStatus.EGRESS_FAILED,
        EgressStatus.EGRESS_ABORTED,
        EgressStatus.EGRESS_LIMIT_REACHED,
    }
)
_LIVE_STATUSES = (EgressStatus.EGRESS_STARTING, EgressStatus.EGRESS_ACTIVE)
# An egress only moves forward: starting -> active -> ending -> one ended status.
_STAGE = {
    "EGRESS_STARTING": 0,
    "EGRESS_ACTIVE": 1,
    "EGRESS_ENDING": 2,
    **{EgressStatus.Name(s): 3 for s in ENDED_STATUSES},
}
ROOM_COMPOSITE = "room_composite"
# LiveKit never reconnects a Track Egress WebSocket: a lost one is a new egress. The first
# retry waits this long (doubling each time) and a track gets at most this many in a row,
# so a track that can't be egressed (unpublished meanwhile, quota) stops costing calls.
RESTART_BACKOFF = 1.0
MAX_RESTARTS = 5
TRACK = "track"


def _backwards(before: str, status: str) -> bool:
    """True if ``status`` is an earlier stage than ``before``, or another end after an end."""
    old, new = _STAGE.get(before, 0), _STAGE.get(status, 0)
    return new < old or (old == _STAGE["EGRESS_COMPLETE"] and status != before)


class ConfigError(ValueError):
    """Something needed to start an egress is not configured; the message says what."""


class RoomNotFound(LookupError):
    """LiveKit has no such room yet: StartRoomCompositeEgress fails until someone joins."""


def stream_name(slug: str) -> str:
    """``slug`` made a valid stream-key NAME (1-64 of ``A-Z a-z 0-9 _ -``).

    Valid slugs come back unchanged; others get every other character replaced by
    ``-`` and, if that changed or shortened them, 8 hex digits of their SHA-256 so
    distinct slugs stay distinct.
    """
    if is_valid_name(slug):
        return slug
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", slug).strip("-") or "session"
    digest = hashlib.sha256(slug.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[:55]}_{digest}"


@dataclass(frozen=True)
class LiveKitConfig:
    """Everything the egress helpers need; :meth:`from_env` reads the users' env names."""

    livekit_url: str
    api_key: str
    api_secret: str
    relay_secret: str
    rtmp_host: str | None = None
    rtmp_port: int | None = None
    public_url: str | None = None  # the app's https base, for the Track Egress fallback
    key_ttl: float = DEFAULT_TTL

    def __repr__(self) -> str:  # secrets stay out of logs and tracebacks
        return (
            f"LiveKitConfig(livekit_url={self.livekit_url!r}, api_key={self.api_key!r}, "
            f"rtmp={self.rtmp_host}:{self.rtmp_port}, public_url={self.public_url!r})"
        )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> LiveKitConfig:
        """LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, RELAY_SECRET, RTMP_HOST, RTMP_PORT,
        APP_PUBLIC_URL (or Render's RENDER_EXTERNAL_URL); keyword arguments that are not None win."""
        env = dict(os.environ if env is None else env)
        port = env.get("RTMP_PORT") or None
        values: dict[str, Any] = {
            "livekit_url": env.get("LIVEKIT_URL", ""),
            "api_key": env.get("LIVEKIT_API_KEY", ""),
            "api_secret": env.get("LIVEKIT_API_SECRET", ""),
            "relay_secret": env.get("RELAY_SECRET", ""),
            "rtmp_host": env.get("RTMP_HOST") or None,
            "rtmp_port": int(port) if port else None,
            "public_url": env.get("APP_PUBLIC_URL") or env.get("RENDER_EXTERNAL_URL") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        missing = [
            env_name
            for key, env_name in (
                ("livekit_url", "LIVEKIT_URL"),
                ("api_key", "LIVEKIT_API_KEY"),
                ("api_secret", "LIVEKIT_API_SECRET"),
                ("relay_secret", "RELAY_SECRET"),
            )
            if not values[key]
        ]
        if missing:
            raise ConfigError(f"not configured: {', '.join(missing)}")
        return cls(**values)

    @property
    def edge_configured(self) -> bool:
        """True when RTMP_HOST and RTMP_PORT are both set: Room Composite to the edge."""
        return bool(self.rtmp_host) and bool(self.rtmp_port)

    @property
    def rtmp_base(self) -> str:
        return f"rtmp://{self.rtmp_host}:{self.rtmp_port}/live/"


@dataclass
class EgressSession:
    """One room being streamed to the app: one Room Composite egress, or one Track Egress per track."""

    room: str
    name: str  # the stream name (RTMP) or the slug the per-track names start with
    mode: str  # ROOM_COMPOSITE or TRACK
    url: str  # where it streams, safe to log (no key signature, no token)
    egress_ids: list[str] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)  # egress id -> EgressStatus name
    tracks: dict[str, tuple[str, str]] = field(default_factory=dict)  # egress id -> (participant, track)
    stream_names: dict[str, str] = field(default_factory=dict)  # egress id -> stream name
    errors: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    adopted: bool = False  # found already running (ListEgress), not started by this call
    waiting: bool = False  # the room does not exist yet: starts on room_started/participant_joined
    wanted: bool = True  # False once stop_room() was asked: nothing is restarted then

    @property
    def ended(self) -> bool:
        return bool(self.egress_ids) and all(
            self.status.get(e) in {EgressStatus.Name(s) for s in ENDED_STATUSES} for e in self.egress_ids
        )

    @property
    def egress_id(self) -> str:
        """The (first) egress id."""
        return self.egress_ids[0] if self.egress_ids else ""

    def describe(self) -> dict[str, Any]:
        """JSON-ready: what ``/rooms/{room}`` style endpoints and the CLI print. No secrets."""
        return {
            "room": self.room,
            "mode": self.mode,
            "stream_name": self.name,
            "url": self.url,
            "egress_ids": list(self.egress_ids),
            "status": dict(self.status),
            "streams": dict(self.stream_names),
            "errors": dict(self.errors),
            "adopted": self.adopted,
            "waiting": self.waiting,
        }


def safe_url(url: str) -> str:
    """An egress URL fit for logs: ``rtmp://host:port/live/NAME…`` or a websocket URL without query."""
    parts = urlsplit(url)
    if parts.scheme in ("rtmp", "rtmps"):
        head, _, key = url.rpartition("/")
        return f"{head}/{key.split('.', 1)[0]}…" if "." in key else f"{head}/{key}"
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class EgressManager:
    """Starts, tracks and stops the egress of rooms; owns the LiveKit API client.

    ``track_endpoint`` is needed only for the Track Egress fallback (mount its
    ``handler`` at its ``path`` and set ``public_url``)::

        manager = EgressManager(LiveKitConfig.from_env(), track_endpoint=TrackAudioEndpoint(secret, receiver))
        session = await manager.start("my-room", slug="session-42")
    """

    def __init__(
        self,
        config: LiveKitConfig,
        *,
        track_endpoint: TrackAudioEndpoint | None = None,
        lkapi: api.LiveKitAPI | None = None,
        on_change: Callable[[EgressSession, str], None] | None = None,
        restart_backoff: float = RESTART_BACKOFF,
        max_restarts: int = MAX_RESTARTS,
    ) -> None:
        self.config = config
        self.track_endpoint = track_endpoint
        self.restart_backoff = restart_backoff
        self.max_restarts = max_restarts
        self._restarting: dict[tuple[str, str], asyncio.Task[None]] = {}  # (room, track) -> restart
        if track_endpoint is not None:
            track_endpoint.on_closed = self._track_lost
        self._api = lkapi
        self._on_change = on_change
        self.sessions: dict[str, EgressSession] = {}  # room -> current session
        self._by_egress: dict[str, EgressSession] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # True once a WebhookHandler feeds this manager: a room that does not exist yet then
        # waits for its room_started/participant_joined instead of failing start().
        self.webhooks = False

    @property
    def lkapi(self) -> api.LiveKitAPI:
        if self._api is None:
            c = self.config
            self._api = api.LiveKitAPI(c.livekit_url, c.api_key, c.api_secret)
        return self._api

    async def aclose(self) -> None:
        for task in self._restarting.values():
            task.cancel()
        await asyncio.gather(*self._restarting.values(), return_exceptions=True)
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    async def __aenter__(self) -> EgressManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- start -----------------------------------------------------------------------------

    async def start(self, room: str, slug: str | None = None) -> EgressSession:
        """Stream ``room`` to the app; returns the running session if there already is one."""
        if not room:
            raise ValueError("room must not be empty")
        lock = self._locks.setdefault(room, asyncio.Lock())
        async with lock:
            current = self.sessions.get(room)
            if current is not None and not current.ended:
                log.info("room %s is already streaming (egress %s)", room, ", ".join(current.egress_ids))
                return current
            name = stream_name(slug or room)
            if self.config.edge_configured:
                session = await self._adopt_room_composite(room, name) or await self._start_or_wait(
                    room, name
                )
            else:
                session = await self._start_tracks(room, name)
            self._register(session)
            return session

    async def _start_or_wait(self, room: str, name: str) -> EgressSession:
        try:
            return await self._start_room_composite(room, name)
        except RoomNotFound:
            if not self.webhooks:
                raise
        log.info("room %s does not exist yet: its egress starts on room_started/participant_joined", room)
        return EgressSession(room=room, name=name, mode=ROOM_COMPOSITE, url="", waiting=True)

    async def room_ready(self, room: str) -> None:
        """A ``room_started`` or ``participant_joined`` webhook: start a waiting room's egress."""
        session = self.sessions.get(room)
        if session is None or not session.waiting:
            return
        async with self._locks.setdefault(room, asyncio.Lock()):
            if not session.waiting:
                return
            try:
                started = await self._start_room_composite(room, session.name)
            except RoomNotFound:
                log.info("room %s: still no room to start an egress in; waiting on", room)
                return
            session.waiting = False
            session.url = started.url
            for egress_id in started.egress_ids:
                session.egress_ids.append(egress_id)
                session.status[egress_id] = started.status[egress_id]
                session.stream_names[egress_id] = started.stream_names[egress_id]
            self._register(session)

    async def _start_room_composite(self, room: str, name: str) -> EgressSession:
        key = mint_key(self.config.relay_secret, name, self.config.key_ttl, now=time.time())
        url = self.config.rtmp_base + key
        request = proto_egress.RoomCompositeEgressRequest(
            room_name=room,
            audio_only=True,
            stream_outputs=[proto_egress.StreamOutput(protocol=proto_egress.StreamProtocol.RTMP, urls=[url])],
        )
        try:
            info = await self.lkapi.egress.start_room_composite_egress(request)
        except api.TwirpError as exc:
            if exc.code != "not_found":
                raise
            raise RoomNotFound(
                f"room {room} does not exist yet (LiveKit: {exc.message}): a Room Composite egress "
                "needs someone in the room. Start it again once someone joined, or mount "
                "WebhookHandler(manager=...) and have LiveKit send webhooks: it then starts on "
                "room_started/participant_joined."
            ) from exc
        session = EgressSession(room=room, name=name, mode=ROOM_COMPOSITE, url=safe_url(url))
        self._add_egress(session, info, name)
        log.info("Egress streaming to: %s (room %s, egress %s)", session.url, room, info.egress_id)
        return session

    async def _list_live(self, room: str) -> list[proto_egress.EgressInfo]:
        """The room's egress LiveKit reports as starting or active (empty if ListEgress fails)."""
        try:
            listed = await self.lkapi.egress.list_egress(
                proto_egress.ListEgressRequest(room_name=room, active=True)
            )
        except api.TwirpError as exc:
            log.warning("ListEgress for room %s failed (%s); starting a new egress", room, exc.message)
            return []
        return [info for info in listed.items if info.status in _LIVE_STATUSES]

    async def _adopt_room_composite(self, room: str, name: str) -> EgressSession | None:
        """An audio-only Room Composite egress of ``room`` already streaming to our edge, if any.

        Its key is redacted in the listing, so its stream NAME can't be read back: the session
        takes ``name``, the one this call would have used (one egress per room either way).
        """
        for info in await self._list_live(room):
            if self._streams_to_our_edge(info):
                session = EgressSession(
                    room=room,
                    name=name,
                    mode=ROOM_COMPOSITE,
                    url=self.config.rtmp_base + name + "…",
                    adopted=True,
                )
                self._add_egress(session, info, name)
                log.info("room %s already has egress %s streaming to our edge", room, info.egress_id)
                return session
        return None

    def _streams_to_our_edge(self, info: proto_egress.EgressInfo) -> bool:
        """An audio-only Room Composite with an output URL on our edge's host, port and app."""
        if not info.HasField("room_composite") or not info.room_composite.audio_only:
            return False
        base = self.config.rtmp_base
        return any(url.startswith(base) for o in info.room_composite.stream_outputs for url in o.urls)

    def _streams_to_our_endpoint(self, info: proto_egress.EgressInfo) -> bool:
        """A Track Egress whose websocket_url, without its (redacted) query, is our endpoint."""
        if not info.HasField("track") or self.track_endpoint is None or not self.config.public_url:
            return False
        base = self.track_endpoint.base_url(self.config.public_url)
        return info.track.websocket_url.split("?", 1)[0] == base

    async def _start_tracks(self, room: str, slug: str) -> EgressSession:
        endpoint, public = self.track_endpoint, self.config.public_url
        if endpoint is None or not public:
            raise ConfigError(
                "RTMP_HOST/RTMP_PORT are not set, and the Track Egress fallback needs APP_PUBLIC_URL "
                "and a mounted TrackAudioEndpoint"
            )
        base = endpoint.base_url(public)
        session = EgressSession(room=room, name=slug, mode=TRACK, url=base)
        log.info("RTMP_HOST/RTMP_PORT not set: falling back to Track Egress for room %s", room)
        participants = await self.lkapi.room.list_participants(proto_room.ListParticipantsRequest(room=room))
        owners = {t.sid: p.identity for p in participants.participants for t in p.tracks}
        for info in await self._list_live(room):  # tracks already streaming to us (another process)
            if self._streams_to_our_endpoint(info):
                # the query (name, participant) is redacted: the track id and the room's
                # participant list say whose track it is, and the name is the one we would mint
                track = info.track.track_id
                participant = owners.get(track, "")
                session.tracks[info.egress_id] = (participant, track)
                self._add_egress(session, info, stream_name(f"{slug}-{participant}-{track}"))
                session.adopted = True
                log.info("track %s of room %s already streams to us (egress %s)", track, room, info.egress_id)
        for participant in participants.participants:
            for track in participant.tracks:
                if track.type == proto_models.TrackType.AUDIO:
                    await self._start_track(session, participant.identity, track.sid)
        if not session.egress_ids:
            log.warning("room %s has no audio tracks yet; new ones start on track_published", room)
        return session

    async def _start_track(self, session: EgressSession, participant: str, track: str) -> None:
        assert self.track_endpoint is not None and self.config.public_url
        if any(t == track for _, t in session.tracks.values()):
            return
        name = stream_name(f"{session.name}-{participant}-{track}")
        url = self.track_endpoint.url_for(
            self.config.public_url,
            name=name,
            room=session.room,
            participant=participant,
            track=track,
            ttl=self.config.key_ttl,
        )
        info = await self.lkapi.egress.start_track_egress(
            proto_egress.TrackEgressRequest(room_name=session.room, track_id=track, websocket_url=url)
        )
        session.tracks[info.egress_id] = (participant, track)
        self._add_egress(session, info, name)
        self._by_egress[info.egress_id] = session
        log.info(
            "Track Egress streaming %s/%s to: %s (stream %s, egress %s)",
            participant,
            track,
            safe_url(url),
            name,
            info.egress_id,
        )

    def _add_egress(self, session: EgressSession, info: proto_egress.EgressInfo, name: str) -> None:
        session.egress_ids.append(info.egress_id)
        session.status[info.egress_id] = EgressStatus.Name(info.status)
        session.stream_names[info.egress_id] = name

    def _register(self, session: EgressSession) -> None:
        self.sessions[session.room] = session
        for egress_id in session.egress_ids:
            self._by_egress[egress_id] = session
        self._changed(session, "started")

    # --- stop ------------------------------------------------------------------------------

    async def stop(self, egress_id: str) -> proto_egress.EgressInfo:
        """Stop one egress (any egress id; those we track get their status updated)."""
        info = await self.lkapi.egress.stop_egress(proto_egress.StopEgressRequest(egress_id=egress_id))
        self.update(info, "stopped")
        log.info("stopped egress %s (%s)", egress_id, EgressStatus.Name(info.status))
        return info

    async def stop_room(self, room: str) -> EgressSession | None:
        """Stop every egress of ``room``'s session; returns it (None if there was none).

        A session this process does not know (a restart, another instance) is found with
        ListEgress by the same rule :meth:`start` adopts by.
        """
        session = self.sessions.get(room)
        if session is not None:
            session.wanted = False
            for (r, _), task in list(self._restarting.items()):
                if r == room:
                    task.cancel()
        if session is None:
            session = await self._find_running(room)
        if session is None:
            return None
        for egress_id in list(session.egress_ids):
            if session.status.get(egress_id) not in {EgressStatus.Name(s) for s in ENDED_STATUSES}:
                try:
                    await self.stop(egress_id)
                except api.TwirpError as exc:
                    log.warning("stopping egress %s failed: %s", egress_id, exc.message)
        return session

    async def _find_running(self, room: str) -> EgressSession | None:
        if self.config.edge_configured:
            return await self._adopt_room_composite(room, "")
        live = [info for info in await self._list_live(room) if self._streams_to_our_endpoint(info)]
        if not live:
            return None
        session = EgressSession(room=room, name="", mode=TRACK, url="", adopted=True)
        for info in live:
            session.tracks[info.egress_id] = ("", info.track.track_id)
            self._add_egress(session, info, "")
        return session

    # --- lifecycle from webhooks -----------------------------------------------------------

    def update(self, info: proto_egress.EgressInfo, event: str) -> EgressSession | None:
        """An EgressInfo from a webhook (egress_started/updated/ended) or an API answer."""
        session = self._by_egress.get(info.egress_id)
        status = EgressStatus.Name(info.status)
        failed = event == "egress_ended" and bool(info.error)
        if session is None:
            if failed and self._streams_to_our_endpoint(info):
                # An egress of ours from before an app restart: LiveKit won't reconnect it.
                self._adopt_lost_track(info)
                return self.sessions.get(info.room_name)
            log.info("egress %s (room %s): %s, not one of ours", info.egress_id, info.room_name, status)
            return None
        before = session.status.get(info.egress_id)
        if before is not None and _backwards(before, status):
            # Webhooks arrive more than once and out of order: a replayed egress_started
            # after egress_ended must not bring the egress back to life.
            log.info("egress %s: ignored %s (%s) after %s", info.egress_id, event, status, before)
            return session
        session.status[info.egress_id] = status
        if info.error:
            session.errors[info.egress_id] = info.error
        if before != status:
            log_fn = (
                log.warning
                if info.status in (EgressStatus.EGRESS_FAILED, EgressStatus.EGRESS_ABORTED)
                else log.info
            )
            log_fn(
                "egress %s of room %s: %s%s",
                info.egress_id,
                session.room,
                status,
                f" ({info.error})" if info.error else "",
            )
        ended = info.status in ENDED_STATUSES or event == "egress_ended"
        if ended and session.mode == TRACK and self.track_endpoint is not None:
            _, track = session.tracks.get(info.egress_id, ("", ""))
            if not (failed and self._track_lost(session.room, track)):
                self.track_endpoint.end_track(session.room, track, f"egress {status.lower()}")
        self._changed(session, event)
        return session

    # --- restarting Track Egress --------------------------------------------------------------

    def _track_lost(self, room: str, track: str) -> bool:
        """A track's egress socket closed or its egress failed: start a new one if still wanted."""
        session = self.sessions.get(room)
        if session is None or session.mode != TRACK or not session.wanted or not track:
            return False
        if (room, track) not in self._restarting:
            task = asyncio.ensure_future(self._restart_track(session, track))
            self._restarting[(room, track)] = task
            task.add_done_callback(lambda _: self._restarting.pop((room, track), None))
        return True

    def _adopt_lost_track(self, info: proto_egress.EgressInfo) -> None:
        room = info.room_name
        session = self.sessions.get(room)
        if session is None:
            assert self.track_endpoint is not None and self.config.public_url
            base = self.track_endpoint.base_url(self.config.public_url)
            session = EgressSession(room=room, name=stream_name(room), mode=TRACK, url=base, adopted=True)
            self.sessions[room] = session
        log.info(
            "egress %s of track %s (room %s) failed: starting a new one",
            info.egress_id,
            info.track.track_id,
            room,
        )
        self._track_lost(room, info.track.track_id)

    async def _restart_track(self, session: EgressSession, track: str) -> None:
        """New Track Egresses for ``track`` with backoff, up to ``max_restarts``; else end its stream."""
        participant = next((p for p, t in session.tracks.values() if t == track), "")
        for egress_id, (_, t) in list(session.tracks.items()):
            if t == track:
                del session.tracks[egress_id]  # that egress is over; the new one replaces it
        delay = self.restart_backoff
        for attempt in range(1, self.max_restarts + 1):
            await asyncio.sleep(delay)
            delay *= 2
            if not session.wanted:
                return
            try:
                if not participant:
                    participant = await self._owner_of(session.room, track)
                await self._start_track(session, participant, track)
            except api.TwirpError as exc:
                log.warning("restarting the egress of track %s failed (%d/%d): %s", track, attempt,
                            self.max_restarts, exc.message)  # fmt: skip
                if exc.code == "not_found":
                    break  # the track is gone: nothing to restart
                continue
            self._register(session)
            return
        if self.track_endpoint is not None:
            self.track_endpoint.end_track(session.room, track, "track egress lost and not restarted")

    async def _owner_of(self, room: str, track: str) -> str:
        participants = await self.lkapi.room.list_participants(proto_room.ListParticipantsRequest(room=room))
        return next((p.identity for p in participants.participants for t in p.tracks if t.sid == track), "")

    async def track_published(self, room: str, participant: str, track: proto_models.TrackInfo) -> None:
        """A ``track_published`` webhook: in fallback mode, a new audio track gets its own egress."""
        session = self.sessions.get(room)
        if session is None or session.mode != TRACK or track.type != proto_models.TrackType.AUDIO:
            return
        async with self._locks.setdefault(room, asyncio.Lock()):
            await self._start_track(session, participant, track.sid)
        self._changed(session, "track_published")

    def _changed(self, session: EgressSession, event: str) -> None:
        if self._on_change is not None:
            try:
                self._on_change(session, event)
            except Exception:
                log.exception("on_change callback failed")
