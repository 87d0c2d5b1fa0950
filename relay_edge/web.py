"""HTTP both sides serve: health, status, metrics, and accepting a link that dials in.

:func:`common_routes` (``/healthz`` open; status, metrics and the dashboard behind
a bearer token on non-loopback listeners), :func:`harden` (a body
timeout) and :class:`GuardedSite` (a request-head timeout from accept). aiohttp has
neither timeout by default, so a client sending half a request held its socket forever.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from .auth import PROOF_HEADER, b64url, derive_key, target_of
from .errors import AuthError, LimitExceeded, ProtocolError, TransportClosed
from .limits import DEFAULT_LIMITS, Limits
from .metrics import CONTENT_TYPE
from .transport import SUBPROTOCOL

log = logging.getLogger("relay_edge.http")  # the name logs have always shown


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


STATUS_TOKEN_ENV = "RELAY_STATUS_TOKEN"
STATUS_COOKIE = "relay_status_token"  # the dashboard's copy of the token (HttpOnly)


def derived_status_token(secret: str) -> str:
    """The default status token: derived from the secret, so both sides know it without a new variable."""
    return b64url(derive_key(secret, "status-token"))


def status_token(secret: str) -> str:
    """What a non-loopback listener asks for: ``RELAY_STATUS_TOKEN`` if set, else the derived one."""
    return os.environ.get(STATUS_TOKEN_ENV) or derived_status_token(secret)


def is_loopback(host: str) -> bool:
    """Whether a listen address only takes connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume reachable from outside


def listener_token(host: str, secret: str) -> str | None:
    """The token a listener bound to ``host`` requires for status, metrics and the dashboard.

    None (open) on loopback; otherwise :func:`status_token`. Publisher addresses, stream
    names, rooms and identities are in those pages: not for the public internet.
    """
    return None if is_loopback(host) else status_token(secret)


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else request.cookies.get(STATUS_COOKIE, "")
    return hmac.compare_digest(given.encode(), token.encode())


def _unauthorized() -> web.Response:
    return web.Response(
        status=401,
        text="status token required: Authorization: Bearer TOKEN (relay-edge status-token)\n",
        headers={"WWW-Authenticate": 'Bearer realm="rtmp-relay"'},
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guarded(handler: Handler, token: str | None) -> Handler:
    if token is None:
        return handler

    async def guarded(request: web.Request) -> web.StreamResponse:
        return await handler(request) if _authorized(request, token) else _unauthorized()

    return guarded


def common_routes(
    app: web.Application,
    status: object,
    metrics: object,
    token: str | None = None,
    *,
    health: Callable[[], list[str]] | None = None,
) -> None:
    """``/healthz``, ``/api/rtmp/status``, ``/metrics`` and the dashboard at ``/``, the same on both sides.

    With ``token`` (see :func:`listener_token`) status and metrics need ``Authorization:
    Bearer TOKEN`` or the dashboard's cookie, which ``POST /api/rtmp/session`` with the
    header sets; ``/healthz`` and the dashboard page itself (no data) stay open.

    ``/healthz`` answers 200 ``ok``, or 503 with one line per problem while ``health()``
    lists any (a background task that keeps failing), for the platform's health check.
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

    async def session(request: web.Request) -> web.Response:
        """The dashboard trades the token, once, for an HttpOnly cookie."""
        if token is None:
            return web.Response(status=204)
        header = request.headers.get("Authorization", "")
        if header[:7].lower() != "bearer " or not _authorized(request, token):
            return _unauthorized()
        response = web.Response(status=204)
        secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
        response.set_cookie(STATUS_COOKIE, token, httponly=True, samesite="Strict", secure=secure, path="/")
        return response

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/rtmp/status", _guarded(status_handler, token))
    app.router.add_get("/metrics", _guarded(metrics_handler, token))
    app.router.add_post("/api/rtmp/session", session)
    if not any(r.method == "GET" and r.resource and r.resource.canonical == "/" for r in app.router.routes()):
        app.router.add_get("/", dashboard_handler)  # unless the app's own path took "/"


def harden(app: web.Application, limits: Limits = DEFAULT_LIMITS) -> web.Application:
    """Add the body timeout: a request body must arrive whole within ``http_body_timeout``.

    The body (at most the app's ``client_max_size``, 1 MiB by default) is read before the
    handler runs, so a handler's ``await request.json()`` never waits on a slow client.
    """
    timeout = limits.http_body_timeout

    @web.middleware
    async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists and request.method not in ("GET", "HEAD"):
            try:
                await asyncio.wait_for(request.read(), timeout)
            except TimeoutError:
                log.warning("HTTP body from %s not complete after %g s", request.remote, timeout)
                return web.Response(
                    status=408, text=f"http_body_timeout: body not complete after {timeout:g} s\n"
                )
        return await handler(request)

    app.middlewares.append(body_deadline)
    return app


class _OpenCount:
    """The HTTP connections open on one listener, against ``http_max_connections``."""

    def __init__(self, limit: int) -> None:
        self.limit, self.open, self.refused = limit, 0, 0
        self._last_log = -math.inf

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        if self.open < self.limit:
            self.open += 1
            return True
        self.refused += 1
        now = time.monotonic()
        if now - self._last_log >= 10.0:  # one line per 10 s however hard it is hammered
            self._last_log = now
            log.warning(
                "refusing HTTP connections: http_max_connections (%d) open; %d refused so far (last from %s)",
                self.limit, self.refused, transport.get_extra_info("peername"),
            )  # fmt: skip
        return False


class _HeadDeadline(asyncio.Protocol):
    """Wraps aiohttp's protocol: a connection whose first request head (up to the blank line)
    isn't in within ``timeout`` seconds of accept is closed. Later requests on a kept-alive
    connection are bounded by aiohttp's ``keepalive_timeout``, which :class:`GuardedSite` sets
    to the same value. Past ``http_max_connections`` open, a connection is closed at accept."""

    def __init__(self, inner: Callable[[], asyncio.Protocol], timeout: float, count: _OpenCount) -> None:
        self._make_inner, self.timeout, self._count = inner, timeout, count
        self.inner: asyncio.Protocol | None = None  # made only for an admitted connection
        self._tail: bytes | None = b""  # last bytes seen while looking for the head's end; None once found
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._count.admit(transport):
            transport.abort()  # an RST: nothing of aiohttp's is made for it
            return
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self.timeout, self._expired)
        self.inner = self._make_inner()
        self.inner.connection_made(transport)

    def _expired(self) -> None:
        if self._tail is not None and self._transport is not None:
            peer = self._transport.get_extra_info("peername")
            log.info("closing HTTP connection from %s: http_header_timeout (%g s)", peer, self.timeout)
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if self._tail is not None:
            seen = self._tail + data[:4096]
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._tail = None
                if self._timer is not None:
                    self._timer.cancel()
            else:
                self._tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.inner is not None:
            self._count.open -= 1
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """A TCPSite whose connections must send a request head within ``http_header_timeout``,
    with at most ``http_max_connections`` open at once."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, limits: Limits = DEFAULT_LIMITS, **kw: Any
    ):
        super().__init__(runner, host, port, **kw)
        self.header_timeout = limits.http_header_timeout
        self.connections = _OpenCount(limits.http_max_connections)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        timeout, count = self.header_timeout, self.connections
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _HeadDeadline(server, timeout, count),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


def app_runner(app: web.Application, limits: Limits = DEFAULT_LIMITS) -> web.AppRunner:
    """An AppRunner with no access log and kept-alive connections closed after ``http_header_timeout``."""
    return web.AppRunner(app, access_log=None, keepalive_timeout=limits.http_header_timeout)


PUBLIC_HOST_ENV = "RELAY_PUBLIC_HOST"


def acceptor_target(host: str, path: str) -> str:
    """The target an acceptor checks link proofs against: its public host and the request's path.

    The host is ``RELAY_PUBLIC_HOST``, else the host of ``RENDER_EXTERNAL_URL`` (Render sets it),
    else the request's own ``Host`` header. Only a configured host stops a proof captured at a
    TLS-terminating proxy from being replayed to another host: a replayer chooses the Host header.
    """
    configured = (
        os.environ.get(PUBLIC_HOST_ENV) or (os.environ.get("RENDER_EXTERNAL_URL") or "").partition("://")[2]
    )
    return target_of(configured.partition("/")[0] or host, path)


async def accept_link(
    request: web.Request, verify: object, limits_max: int
) -> tuple[web.WebSocketResponse, str] | web.Response:
    """Check the dialer's proof *before* upgrading; 401 without a WebSocket otherwise."""
    proof = request.headers.get(PROOF_HEADER, "")
    try:
        verify(proof, acceptor_target(request.host, request.path))  # type: ignore[operator]
    except AuthError as exc:
        log.warning("refused link from %s: %s", request.remote, exc)
        return web.Response(status=401, text=f"link refused: {exc}\n")
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,), max_msg_size=limits_max, autoping=True, compress=False
    )
    try:
        await ws.prepare(request)
    except ConnectionError as exc:
        # The dialer went away mid-upgrade (a front closing, a redial racing a timeout): its link
        # ended before it began, nobody's bug. aiohttp drops the answer to a gone peer silently.
        log.info("link from %s closed during the upgrade: %s", request.remote, exc)
        return web.Response(status=400, text="link closed during the upgrade\n")
    return ws, proof


# How a link ends without anyone's bug.
LINK_ENDED = (TransportClosed, ProtocolError, AuthError, TimeoutError, ConnectionError)


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
