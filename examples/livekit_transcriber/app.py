"""A LiveKit transcriber for Render: rooms in, 16 kHz mono PCM out to a :class:`Transcriber`.

Routes:

- ``POST /rooms/{room}/transcribe`` (optional JSON ``{"slug": "..."}``): start the room's egress;
  answers the session (egress ids, stream name, mode). Asking twice starts nothing new.
- ``DELETE /rooms/{room}/transcribe``: stop it. ``GET /rooms/{room}``: its state.
- ``GET /relay``: the edge's pushed link (RTMP_HOST/RTMP_PORT point at that edge).
- ``GET /livekit/track``: Track Egress PCM, the fallback when RTMP_HOST/RTMP_PORT are unset.
- ``POST /livekit/webhook``: LiveKit's signed webhooks (set this URL in LiveKit's project settings).
- ``GET /healthz``, ``/api/rtmp/status``, ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from livekit import api

from relay_client import AudioFormat, Receiver
from relay_client.livekit import ConfigError, EgressManager, LiveKitConfig, TrackAudioEndpoint, WebhookHandler
from relay_edge.http import common_routes

from .transcriber import Transcriber, WavSegmentTranscriber

log = logging.getLogger("livekit_transcriber")

RECEIVER = web.AppKey("receiver", Receiver)
MANAGER = web.AppKey("manager", EgressManager)
ENDPOINT = web.AppKey("endpoint", TrackAudioEndpoint)


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

    app = web.Application()
    app[RECEIVER], app[MANAGER], app[ENDPOINT] = receiver, manager, endpoint
    app.router.add_get("/relay", receiver.handler)
    app.router.add_get(endpoint.path, endpoint.handler)
    app.router.add_post("/livekit/webhook", webhook.handler)
    app.router.add_post("/rooms/{room}/transcribe", start_room)
    app.router.add_delete("/rooms/{room}/transcribe", stop_room)
    app.router.add_get("/rooms/{room}", room_state)
    common_routes(app, receiver.status, receiver.metrics.render)

    async def cleanup(_: web.Application) -> None:
        await manager.aclose()
        await endpoint.close()

    app.on_cleanup.append(cleanup)
    mode = "Room Composite → edge" if config.edge_configured else "Track Egress fallback"
    log.info("livekit transcriber ready (%s)", mode)
    return app


async def start_room(request: web.Request) -> web.Response:
    room = request.match_info["room"]
    slug = None
    if request.can_read_body:
        try:
            body = await request.json()
        except (ValueError, json.JSONDecodeError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        slug = body.get("slug") if isinstance(body, dict) else None
    try:
        session = await request.app[MANAGER].start(room, slug)
    except ConfigError as exc:
        return web.json_response({"error": str(exc)}, status=500)
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
    """Serve on 0.0.0.0:$PORT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = build_app()
    except ConfigError as exc:
        raise SystemExit(f"livekit transcriber: {exc}") from None
    web.run_app(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8000")), access_log=None)


if __name__ == "__main__":
    main()
