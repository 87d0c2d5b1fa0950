"""Keep one outgoing link up: the edge dialing an app (push) or an app dialing an edge (pull).

Same loop for both: prove the secret in a header, hand the connection to the
caller's ``run_link``, and when it ends redial with exponential backoff and
jitter, at once if the peer said it is restarting (close codes 1001/1012, what
Render and Fly proxies send on a deploy).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from . import tls
from .auth import PROOF_HEADER, link_target, make_proof
from .errors import AuthError, ProtocolError
from .limits import Limits
from .transport import SUBPROTOCOL, TransportClosed, WebsocketsTransport

log = logging.getLogger("relay_edge.dial")

# Close codes for "going away / service restart": redial at once.
RESTART_CODES = (1001, 1012)
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 10.0

RunLink = Callable[[WebsocketsTransport, str], Awaitable[None]]


def safe_url(url: str) -> str:
    """The URL without its query string (which might carry a token) for logs and status."""
    return url.split("?")[0]


def ssl_context(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """Verification on for wss:// (system CAs, plus ``ca_file`` if given); None for ws://."""
    return tls.client_context(ca_file) if url.startswith("wss://") else None


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
) -> None:
    """Dial ``url`` until cancelled; ``run_link(transport, proof)`` pumps each connected link."""
    delay = 0.0
    ctx = ssl_context(url, ca_file)
    shown = safe_url(url)
    while True:
        if delay:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        on_state("connecting")
        proof = make_proof(secret, role, time.time(), target=link_target(url))
        try:
            async with connect(
                url,
                additional_headers={PROOF_HEADER: proof},
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                max_size=limits.ws_max_message,
                compression=None,
                ping_interval=None,  # our own ping frames carry liveness, on both sides
                open_timeout=limits.handshake_timeout,
                ssl=ctx,
                proxy=None,
            ) as conn:
                on_state("up")
                delay = 0.0
                await run_link(WebsocketsTransport(conn, shown), proof)
        except asyncio.CancelledError:
            raise
        except TransportClosed as exc:
            log.warning("link to %s closed: %s", shown, exc)
            on_failure("closed")
            if exc.code in RESTART_CODES:
                delay = 0.0
                continue
        except (OSError, InvalidHandshake, InvalidStatus, ProtocolError, AuthError, TimeoutError) as exc:
            log.warning("link to %s failed: %s", shown, exc)
            on_failure(type(exc).__name__)
        finally:
            on_state("down")
        delay = min(max(delay * 2, BACKOFF_FIRST), BACKOFF_MAX)
