"""LiveKit's signed webhooks, verified, tied to the egress lifecycle.

LiveKit POSTs each event as JSON (``application/webhook+json``) with an
``Authorization`` header holding a JWT signed with the API secret whose
``sha256`` claim is the base64 SHA-256 of the body. :class:`WebhookHandler`
checks both with livekit-api's ``WebhookReceiver`` + ``TokenVerifier`` and
answers 401 to anything unsigned, wrongly signed, expired or tampered with.
Egress events update the :class:`~relay_client.livekit.egress.EgressManager`
(status, logs, the end of Track Egress streams); ``track_published`` starts the
fallback egress of a new audio track.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web
from livekit import api
from livekit.protocol.webhook import WebhookEvent

from .egress import EgressManager

log = logging.getLogger("relay_client.livekit")

MAX_BODY = 1 << 20
# LiveKit retries a webhook it got no 2xx for, so the same event id can come twice; ids are
# remembered this long (a few per egress: about a day of a busy app's events).
MAX_SEEN_EVENTS = 10_000
EGRESS_EVENTS = ("egress_started", "egress_updated", "egress_ended")
ROOM_EVENTS = ("room_started", "participant_joined")  # a room that did not exist now does

EventHook = Callable[[WebhookEvent], Awaitable[None]]


class WebhookHandler:
    """aiohttp handler: ``app.router.add_post("/livekit/webhook", WebhookHandler(...).handler)``."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        manager: EgressManager | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        self._receiver = api.WebhookReceiver(api.TokenVerifier(api_key, api_secret))
        self._manager: EgressManager | None = None
        self.manager = manager
        self.on_event = on_event
        self.accepted = 0
        self.refused = 0
        self.duplicates = 0
        self._seen: OrderedDict[str, None] = OrderedDict()  # event ids, oldest first

    @property
    def manager(self) -> EgressManager | None:
        """The manager events go to; setting one tells it webhooks arrive (see ``room_ready``)."""
        return self._manager

    @manager.setter
    def manager(self, manager: EgressManager | None) -> None:
        self._manager = manager
        if manager is not None:
            manager.webhooks = True

    def verify(self, body: str, authorization: str) -> WebhookEvent:
        """The event, if ``authorization`` signs ``body``; raises otherwise."""
        token = authorization[7:] if authorization.lower().startswith("bearer ") else authorization
        if not token:
            raise PermissionError("no Authorization header")
        return self._receiver.receive(body, token)

    async def handler(self, request: web.Request) -> web.Response:
        """200 for a verified event, 401 for anything else (no detail in the answer)."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413, text="too large\n")
        body = (await request.read())[:MAX_BODY].decode("utf-8", "replace")
        try:
            event = self.verify(body, request.headers.get("Authorization", ""))
        except Exception as exc:
            self.refused += 1
            log.warning("refused a webhook from %s: %s", request.remote, type(exc).__name__)
            return web.Response(status=401, text="unauthorized\n")
        self.accepted += 1
        await self.dispatch(event)
        return web.Response(text="ok\n")

    async def dispatch(self, event: WebhookEvent) -> None:
        """Route one verified event to the manager and the app's hook, once per event id."""
        log.debug("webhook %s (id %s)", event.event, event.id)
        if event.id:
            if event.id in self._seen:
                self.duplicates += 1
                log.info("webhook %s (id %s) seen before: ignored", event.event, event.id)
                return
            self._seen[event.id] = None
            if len(self._seen) > MAX_SEEN_EVENTS:
                self._seen.popitem(last=False)
        if self.manager is not None:
            if event.event in EGRESS_EVENTS and event.HasField("egress_info"):
                self.manager.update(event.egress_info, event.event)
            elif event.event in ROOM_EVENTS and event.room.name:
                try:
                    await self.manager.room_ready(event.room.name)
                except Exception:
                    log.exception("starting the egress of room %s failed", event.room.name)
            elif event.event == "track_published" and event.HasField("track"):
                try:
                    await self.manager.track_published(
                        event.room.name, event.participant.identity, event.track
                    )
                except Exception:
                    log.exception("starting Track Egress for %s failed", event.track.sid)
        if self.on_event is not None:
            await self.on_event(event)
