"""A LiveKit transcriber for Render: rooms in, 16 kHz mono PCM out to a :class:`Transcriber`.

Routes:

- ``POST /rooms/{room}/transcribe`` (JSON body, ``{}`` or ``{"slug": "..."}``): start the room's egress;
  answers the session (egress ids, stream name, mode). Asking twice starts nothing new.
- ``DELETE /rooms/{room}/transcribe`` (JSON body ``{}``): stop it. ``GET /rooms/{room}``: its state.

  These three take ``Authorization: Bearer TOKEN``: ``TRANSCRIBE_TOKEN``, or by default the status
  token derived from RELAY_SECRET (``relay-client status-token`` prints it). Without it anyone could
  record any room or stop a transcription. Bodies must be JSON (``Content-Type: application/json``),
  which an HTML form on another site can't send without a CORS preflight.
- ``GET /relay``: the edge's pushed link (RTMP_HOST/RTMP_PORT point at that edge).
- ``GET /livekit/track``: Track Egress PCM, the fallback when RTMP_HOST/RTMP_PORT are unset.
- ``POST /livekit/webhook``: LiveKit's signed webhooks (set this URL in LiveKit's project settings).
- ``GET /healthz`` (open), ``/api/rtmp/status``, ``/metrics`` (the same token).

At most ``TRANSCRIBE_MAX_ROOMS`` (default 100) rooms are held at once; ended sessions are forgotten
first, then a new room gets 429.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from livekit import api

from relay_client import AudioFormat, Receiver
from relay_client.livekit import ConfigError, EgressManager, LiveKitConfig, TrackAudioEndpoint, WebhookHandler
from relay_edge.web import GuardedSite, app_runner, common_routes, harden, status_token

from .transcriber import Transcriber, WavSegmentTranscriber

log = logging.getLogger("livekit_transcriber")

RECEIVER = web.AppKey("receiver", Receiver)
MANAGER = web.AppKey("manager", EgressManager)
ENDPOINT = web.AppKey("endpoint", TrackAudioEndpoint)
TOKEN = web.AppKey("token", str)
MAX_ROOMS = web.AppKey("max_rooms", int)

# LiveKit room names are free text; ours must fit a log line and a URL path segment.
ROOM_RE = re.compile(r"[A-Za-z0-9_.:@+-]{1,128}")


def build_app(
    env: Mapping[str, str] | None = None,
    *,
    transcriber: Transcriber | None = None,
) -> web.Application:
    """The whole app, configured from ``env`` (default: the process environment)."""
    env = dict(os.environ if env is None else env)
    config = LiveKitConfig.from_env(env)
    transcriber = transcriber or WavSegmentTranscriber(env.get("TRANSCRIPTS_DIR", "transcripts"))

    async def on_stream(stream: Any) -> None:
        sink = transcriber.open(stream.info.name, stream.info.publisher)
        try:
            async for chunk in stream.audio():
                await sink.feed(chunk.data, chunk.timestamp)
        finally:
            await sink.close(stream.end_reason or "stopped")

    receiver = Receiver(config.relay_secret, audio_format=AudioFormat(16000, 1, "s16"), on_stream=on_stream)
    endpoint = TrackAudioEndpoint(config.relay_secret, receiver)
    manager = EgressManager(config, track_endpoint=endpoint)
    webhook = WebhookHandler(config.api_key, config.api_secret, manager=manager)

    app = harden(web.Application())  # the body timeout first: room_guard reads bodies
    app.middlewares.append(room_guard)
    app[RECEIVER], app[MANAGER], app[ENDPOINT] = receiver, manager, endpoint
    app[TOKEN] = env.get("TRANSCRIBE_TOKEN") or status_token(config.relay_secret)
    app[MAX_ROOMS] = int(env.get("TRANSCRIBE_MAX_ROOMS", "100"))
    app.router.add_get("/relay", receiver.handler)
    app.router.add_get(endpoint.path, endpoint.handler)
    app.router.add_post("/livekit/webhook", webhook.handler)
    app.router.add_post("/rooms/{room}/transcribe", start_room)
    app.router.add_delete("/rooms/{room}/transcribe", stop_room)
    app.router.add_get("/rooms/{room}", room_state)
    common_routes(app, receiver.status, receiver.metrics.render, app[TOKEN])

    async def cleanup(_: web.Application) -> None:
        await manager.aclose()
        await endpoint.close()

    app.on_cleanup.append(cleanup)
    mode = "Room Composite → edge" if config.edge_configured else "Track Egress fallback"
    log.info("livekit transcriber ready (%s)", mode)
    return app


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def room_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``/rooms/...``: a bearer token, a sane room name, and JSON bodies on POST and DELETE."""
    if not request.path.startswith("/rooms/"):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(given.encode(), request.app[TOKEN].encode()):
        return web.json_response({"error": "Authorization: Bearer TOKEN required"}, status=401)
    if not ROOM_RE.fullmatch(request.match_info.get("room", "")):
        return web.json_response({"error": "room name must be 1-128 of A-Z a-z 0-9 _ . : @ + -"}, status=400)
    if request.method in ("POST", "DELETE"):
        if request.content_type != "application/json":
            return web.json_response(
                {"error": "body must be JSON (Content-Type: application/json)"}, status=415
            )
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
    return await handler(request)


def _room_for_one_more(app: web.Application, room: str) -> bool:
    """Forget ended sessions first; then whether ``room`` fits in MAX_ROOMS."""
    sessions = app[MANAGER].sessions
    if room in sessions:
        return True
    for name in [name for name, session in sessions.items() if session.ended]:
        del sessions[name]
    return len(sessions) < app[MAX_ROOMS]


async def start_room(request: web.Request) -> web.Response:
    room = request.match_info["room"]
    body = await request.json()
    slug = body.get("slug")
    if slug is not None and not isinstance(slug, str):
        return web.json_response({"error": "slug must be a string"}, status=400)
    if not _room_for_one_more(request.app, room):
        limit = request.app[MAX_ROOMS]
        return web.json_response({"error": f"TRANSCRIBE_MAX_ROOMS: {limit} rooms already"}, status=429)
    try:
        session = await request.app[MANAGER].start(room, slug)
    except ConfigError as exc:
        return web.json_response({"error": str(exc)}, status=500)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except api.TwirpError as exc:
        return web.json_response({"error": f"LiveKit: {exc.code}: {exc.message}"}, status=502)
    return web.json_response(session.describe())


async def stop_room(request: web.Request) -> web.Response:
    session = await request.app[MANAGER].stop_room(request.match_info["room"])
    if session is None:
        return web.json_response({"error": "not transcribing this room"}, status=404)
    return web.json_response(session.describe())


async def room_state(request: web.Request) -> web.Response:
    session = request.app[MANAGER].sessions.get(request.match_info["room"])
    if session is None:
        return web.json_response({"error": "not transcribing this room"}, status=404)
    return web.json_response(session.describe())


def main() -> None:
    """Serve on 0.0.0.0:$PORT, with the relay's HTTP timeouts (relay_edge.web.GuardedSite)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = build_app()
    except ConfigError as exc:
        raise SystemExit(f"livekit transcriber: {exc}") from None

    async def serve() -> None:
        runner = app_runner(app)
        await runner.setup()
        await GuardedSite(runner, "0.0.0.0", int(os.environ.get("PORT", "8000"))).start()
        try:
            await asyncio.Event().wait()  # until the process is stopped
        finally:
            await runner.cleanup()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
