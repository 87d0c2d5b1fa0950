"""Keep one outgoing link up: the edge dialing an app (push) or an app dialing an edge (pull).

Same loop for both: prove the secret in a header, hand the connection to the
caller's ``run_link``, and when it ends redial with exponential backoff and
jitter, at once if the peer said it is restarting (close codes 1001/1012, what
Render and Fly proxies send on a deploy).

No exception from one attempt ends the loop. Failures the network and platform
fronts produce (refused, reset, 502/503, a close during the opening handshake, a
timeout) are logged once per kind with what to do, counted in
``link_failures_total{reason}``, and retried. Anything else is a bug: it goes to
``on_error`` (the process's :class:`~relay_edge.supervise.Supervisor`: ERROR with
traceback, ``task_failures_total``, /healthz) and is retried with backoff too.

Redirects are not followed by websockets; this loop reports them as what they are,
and follows only one that upgrades ``ws://`` to ``wss://`` on the same host and path
(Render answers ``301`` to ``https://`` for every ``ws://`` request).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, WebSocketException

from . import tls
from .auth import PROOF_HEADER, link_target, make_proof
from .errors import AuthError, ProtocolError, TransportClosed
from .limits import Limits
from .supervise import BACKOFF_FIRST, BACKOFF_MAX, Backoff, Rand, Sleep
from .transport import SUBPROTOCOL, WebsocketsTransport

log = logging.getLogger("relay_edge.dial")

# Close codes for "going away / service restart": redial at once.
RESTART_CODES = (1001, 1012)
__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "RESTART_CODES", "classify", "dial_forever", "upgrade_target"]

RunLink = Callable[[WebsocketsTransport, str], Awaitable[None]]

# What one attempt may fail with that is the network's or the peer's doing, not a bug.
EXPECTED = (
    OSError,
    EOFError,
    TimeoutError,
    WebSocketException,
    TransportClosed,
    ProtocolError,
    AuthError,
)


class _connect(connect):
    """websockets' ``connect`` minus its own redirect following (which would carry the proof
    header to wherever a front points); :func:`dial_forever` decides what a redirect means."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def safe_url(url: str) -> str:
    """The URL without its query string (which might carry a token) for logs and status."""
    return url.split("?")[0]


def ssl_context(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """Verification on for wss:// (system CAs, plus ``ca_file`` if given); None for ws://."""
    return tls.client_context(ca_file) if url.startswith("wss://") else None


def redirect_location(exc: BaseException) -> tuple[int, str] | None:
    """(status, absolute Location) if ``exc`` is a 3xx answer to the upgrade, else None."""
    if not isinstance(exc, InvalidStatus) or not 300 <= exc.response.status_code < 400:
        return None
    return exc.response.status_code, exc.response.headers.get("Location", "")


def upgrade_target(url: str, location: str) -> str | None:
    """The wss:// URL to follow a redirect to, if it only upgrades ``url`` from ws:// to TLS.

    Same host and path (the port may change: 80 becomes 443); our query string is kept.
    Anything else (another host or path, a downgrade) is None: not followed.
    """
    ours = urllib.parse.urlsplit(url)
    theirs = urllib.parse.urlsplit(urllib.parse.urljoin(url.replace("ws", "http", 1), location))
    if ours.scheme != "ws" or theirs.scheme not in ("https", "wss"):
        return None
    if theirs.hostname != ours.hostname or theirs.path != ours.path:
        return None
    return urllib.parse.urlunsplit(("wss", theirs.netloc, ours.path, ours.query, ""))


def _as_ws(location: str) -> str:
    """``https://app/relay`` → ``wss://app/relay``: what to put in the URL setting instead."""
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if location.startswith(http):
            return ws + location[len(http) :]
    return location


def classify(exc: BaseException, limits: Limits, peer: str = "the app") -> tuple[str, str]:
    """(``link_failures_total`` reason, what happened and what to do) for an expected failure.

    ``peer`` names who was dialed in the message: "the app" (push) or "the edge" (pull).
    """
    if (redirect := redirect_location(exc)) is not None:
        status, location = redirect
        where = safe_url(_as_ws(location)) or "?"
        return (
            "redirect",
            f"{peer} answered {status} to {safe_url(location) or '(no Location)'}: use {where}",
        )
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        hint = {
            401: "the secrets differ: give both sides the same RELAY_SECRET",
            403: "refused by the app or a firewall in front of it",
            404: "wrong path: the URL must end in the app's --path (default /relay) or the edge's /link",
            502: "the platform's proxy has no app behind it (deploying, restarting or waking: normal "
            "for up to a minute)",
            503: "the app is not ready (deploying, restarting or waking: normal for up to a minute)",
        }.get(status, "not an rtmp-relay endpoint, or one in trouble")
        return f"http_{status}", f"server rejected WebSocket connection: HTTP {status}: {hint}"
    if isinstance(exc, TransportClosed):
        return "closed", str(exc)
    if isinstance(exc, (ConnectionClosed, EOFError)) or (
        isinstance(exc, InvalidHandshake) and "did not receive a valid HTTP response" in str(exc)
    ):
        # uvloop raises ConnectionClosedError here, asyncio InvalidMessage: the same event.
        return "closed_in_handshake", (
            f"the connection closed before the WebSocket upgrade was answered ({exc}): a front with no "
            "app behind it (restarting), or not an rtmp-relay endpoint"
        )
    if isinstance(exc, TimeoutError) and str(exc).startswith("ping_timeout"):
        return "timeout", f"{exc}: the link went silent (half-open: a NAT, proxy or peer dropped it)"
    if isinstance(exc, TimeoutError):
        return "timeout", (
            f"no answer within handshake_timeout={limits.handshake_timeout:g} s ({exc or 'timed out'}): "
            "the app or a front is stalled, or a firewall drops the traffic"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            "tls",
            f"{exc}: the app's certificate is not trusted (--ca-file / RELAY_CA_FILE for a private CA)",
        )
    if isinstance(exc, ssl.SSLError):
        return "tls", f"TLS failed: {exc} (is the URL's port really TLS? ws:// vs wss://)"
    if isinstance(exc, socket.gaierror):
        return "dns", f"{exc}: the host name in the URL does not resolve"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", f"{exc}: nothing listens there (app down or restarting, or a wrong port)"
    if isinstance(exc, ConnectionResetError):
        return "reset", f"{exc}: the connection was reset (a proxy or the app dropped it)"
    if isinstance(exc, AuthError):
        return "auth", f"{exc}: the secrets differ (RELAY_SECRET) or a clock is off"
    if isinstance(exc, ProtocolError):
        return "protocol", str(exc)
    if isinstance(exc, InvalidHandshake):
        return "handshake", f"{exc}: not an rtmp-relay endpoint"
    if isinstance(exc, WebSocketException):
        return "websocket", str(exc)
    return "network", str(exc) or type(exc).__name__


def _log_unexpected(exc: Exception) -> None:
    log.error("link attempt failed unexpectedly: %r", exc, exc_info=exc)


class _Target:
    """What the dial loop carries between attempts: where it dials (after a followed redirect),
    and which failure kinds it already logged since the link was last up."""

    def __init__(self, url: str, ca_file: str | None, role: str, limits: Limits) -> None:
        self.ca_file = ca_file
        self.peer = "the app" if role == "edge" else "the edge"
        self.limits = limits
        self.said: set[str] = set()
        self.failed = 0
        self.go(url)

    def go(self, url: str) -> None:
        self.url, self.ctx, self.shown = url, ssl_context(url, ca_file=self.ca_file), safe_url(url)

    def connected(self) -> None:
        if self.failed:
            log.info("link to %s connected after %d failed attempts", self.shown, self.failed)
        self.said.clear()
        self.failed = 0

    def failed_with(self, exc: BaseException, on_failure: Callable[[str], None]) -> bool:
        """Log and count an expected failure; True to redial at once (restart close, followed redirect)."""
        location = redirect_location(exc)
        target = upgrade_target(self.url, location[1]) if location else None
        if location and target:
            status, where = location
            log.warning(
                "%s answered %d to %s: following it, dialing %s from now on (set the URL to it to skip "
                "the redirect)",
                self.peer,
                status,
                safe_url(where),
                safe_url(target),
            )
            self.go(target)
            return True
        kind, text = classify(exc, self.limits, self.peer)
        on_failure(kind)
        if isinstance(exc, TransportClosed):
            log.warning("link to %s closed: %s", self.shown, exc)
            return exc.code in RESTART_CODES
        self.failed += 1
        log.log(logging.DEBUG if kind in self.said else logging.WARNING,
                "link to %s failed: %s; retrying", self.shown, text)  # fmt: skip
        self.said.add(kind)
        return False


async def dial_forever(
    url: str,
    *,
    secret: str,
    role: str,
    limits: Limits,
    run_link: RunLink,
    ca_file: str | None = None,
    on_state: Callable[[str], None] = lambda state: None,
    on_failure: Callable[[str], None] = lambda kind: None,
    on_error: Callable[[Exception], None] = _log_unexpected,
    sleep: Sleep = asyncio.sleep,
    rand: Rand = random.uniform,
) -> None:
    """Dial ``url`` until cancelled; ``run_link(transport, proof)`` pumps each connected link.

    ``on_failure(reason)`` is called for every failed attempt or ended link, ``on_error(exc)``
    for an exception that is nobody's expected failure (a bug). ``sleep`` and ``rand`` are
    the backoff's clock and jitter, injectable for tests.
    """
    backoff = Backoff(rand=rand)
    target = _Target(url, ca_file, role, limits)
    while True:
        on_state("connecting")
        redial_now = False
        up_at: float | None = None
        try:
            # Bound to where it goes (the URL after a followed redirect), so a front can't replay it.
            proof = make_proof(secret, role, time.time(), target=link_target(target.url))
            async with _connect(
                target.url,
                additional_headers={PROOF_HEADER: proof},
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                max_size=limits.ws_max_message,
                compression=None,
                ping_interval=None,  # our own ping frames carry liveness, on both sides
                open_timeout=limits.handshake_timeout,
                close_timeout=limits.close_timeout,
                ssl=target.ctx,
                proxy=None,
            ) as conn:
                on_state("up")
                up_at = time.monotonic()
                target.connected()
                try:
                    await run_link(WebsocketsTransport(conn, target.shown), proof)
                except TimeoutError:
                    conn.transport.abort()  # silent past ping_timeout: a dead peer never answers a close
                    raise
        except asyncio.CancelledError:
            raise
        except EXPECTED as exc:
            redial_now = target.failed_with(exc, on_failure)
        except Exception as exc:
            target.failed += 1
            on_failure("unexpected")
            on_error(exc)
        finally:
            on_state("down")
        # A link that lived through a ping interval was sound: the backoff starts over. Shorter
        # ones (accepted, then dropped or failed at once) keep it growing, so a peer that flaps,
        # or a bug that ends every link, is not redialled in a hot loop.
        if up_at is not None and time.monotonic() - up_at >= limits.ping_interval:
            backoff.reset()
        if not redial_now:
            await sleep(backoff.next())
