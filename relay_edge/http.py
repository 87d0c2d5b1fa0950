"""The edge's HTTP side: health, status, metrics, and ``/link`` for apps that dial in (pull)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from .auth import PROOF_HEADER
from .errors import AuthError, LimitExceeded, ProtocolError
from .metrics import CONTENT_TYPE
from .transport import SUBPROTOCOL, AiohttpTransport, TransportClosed

if TYPE_CHECKING:
    from .edge import Edge

log = logging.getLogger("relay_edge.http")


@functools.cache
def dashboard_html() -> bytes:
    """The one-file dashboard shipped as package data (``relay_edge/dashboard.html``)."""
    return resources.files(__package__).joinpath("dashboard.html").read_bytes()


async def dashboard_handler(_: web.Request) -> web.Response:
    """``GET /``: the live dashboard, which polls ``/api/rtmp/status`` every second."""
    return web.Response(
        body=dashboard_html(),
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def common_routes(
    app: web.Application,
    status: object,
    metrics: object,
    health: Callable[[], list[str]] | None = None,
) -> None:
    """``/healthz``, ``/api/rtmp/status``, ``/metrics`` and the dashboard at ``/``, the same on both sides.

    ``/healthz`` answers 200 ``ok``, or 503 with one line per problem while ``health()``
    lists any (a background task that keeps failing): Fly, Render and systemd then restart
    the process.
    """

    async def healthz(_: web.Request) -> web.Response:
        problems = health() if health is not None else []
        if problems:
            return web.Response(status=503, text="unhealthy\n" + "".join(f"{p}\n" for p in problems))
        return web.Response(text="ok\n")

    async def status_handler(_: web.Request) -> web.Response:
        return web.json_response(status())  # type: ignore[operator]

    async def metrics_handler(_: web.Request) -> web.Response:
        return web.Response(body=metrics(), headers={"Content-Type": CONTENT_TYPE})  # type: ignore[operator]

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/rtmp/status", status_handler)
    app.router.add_get("/metrics", metrics_handler)
    if not any(r.method == "GET" and r.resource and r.resource.canonical == "/" for r in app.router.routes()):
        app.router.add_get("/", dashboard_handler)  # unless the app's own path took "/"


async def accept_link(
    request: web.Request, verify: object, limits_max: int
) -> tuple[web.WebSocketResponse, str] | web.Response:
    """Check the dialer's proof *before* upgrading; 401 without a WebSocket otherwise."""
    proof = request.headers.get(PROOF_HEADER, "")
    try:
        verify(proof)  # type: ignore[operator]
    except AuthError as exc:
        log.warning("refused link from %s: %s", request.remote, exc)
        return web.Response(status=401, text=f"link refused: {exc}\n")
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,), max_msg_size=limits_max, autoping=True, compress=False
    )
    await ws.prepare(request)
    return ws, proof


# How a link ends without anyone's bug. asyncio.TimeoutError is not TimeoutError before 3.11.
LINK_ENDED = (TransportClosed, ProtocolError, AuthError, TimeoutError, asyncio.TimeoutError, ConnectionError)


def close_code_for(exc: BaseException) -> int:
    """The WebSocket status a link ended by ``exc`` closes with (docs/PROTOCOL.md, Transport).

    1009 for a breached size limit, 1002 for any other protocol error, 1008 for
    auth; 1000 otherwise. The peer sees it with the error as the close reason.
    """
    if isinstance(exc, LimitExceeded):
        return 1009
    if isinstance(exc, ProtocolError):
        return 1002
    if isinstance(exc, AuthError):
        return 1008
    return 1000


def edge_app(edge: Edge) -> web.Application:
    app = web.Application()
    common_routes(app, edge.status, edge.metrics.render, edge.unhealthy)

    async def link(request: web.Request) -> web.StreamResponse:
        accepted = await accept_link(request, edge.verify_link_proof, edge.limits.ws_max_message)
        if isinstance(accepted, web.Response):
            edge.metrics.auth_failures.labels("link_proof").inc()
            return accepted
        ws, proof = accepted
        transport = AiohttpTransport(ws, f"{request.remote} (pull)")
        try:
            await edge.run_link(transport, dialer_proof=proof, dialed=False)
        except LINK_ENDED as exc:
            log.warning("link from %s ended: %s", request.remote, exc)
            with contextlib.suppress(Exception):
                await transport.close(close_code_for(exc), str(exc))
        except Exception as exc:  # a bug: logged with its traceback and counted; only this link ends
            edge.supervisor.report("link (pull)", exc, then="dropping that link")
            with contextlib.suppress(Exception):
                await transport.close(1011, f"internal error: {type(exc).__name__}")
        finally:
            await ws.close()
        return ws

    app.router.add_get("/link", link)
    return app
