"""Click options and commands both CLIs share (``relay-edge`` and ``relay-client``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

import click

from . import keys
from .auth import check_secret
from .limits import Limits, parse_overrides
from .loop import loop_name
from .tunnel import parse_tunnels
from .web import status_token

log_options = [
    click.option(
        "--log-level",
        envvar="RELAY_LOG_LEVEL",
        default="info",
        show_default=True,
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    ),
    click.option(
        "--log-format",
        envvar="RELAY_LOG_FORMAT",
        default="text",
        show_default=True,
        type=click.Choice(["text", "json"], case_sensitive=False),
        help="json: one JSON object per line",
    ),
]


def with_log_options(f):  # type: ignore[no-untyped-def]
    for option in reversed(log_options):
        f = option(f)
    return f


limit_option = click.option(
    "--limit",
    "limit",
    envvar="RELAY_LIMITS",
    multiple=True,
    help="override a limit from docs/LIMITS.md, NAME=VALUE (e.g. max_streams=1000); "
    "repeatable or comma-separated",
)


def limits_from(items: tuple[str, ...]) -> Limits:
    """``--limit``/RELAY_LIMITS values → Limits; a bad name or value is a usage error."""
    try:
        return parse_overrides(split_list(items))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--limit") from None


def secret_from(secret: str) -> str:
    """``secret`` if it is long enough to start with; a usage error (never echoing it) if not."""
    try:
        check_secret(secret)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--secret / RELAY_SECRET") from None
    return secret


def tunnels_from(items: tuple[str, ...], hint: str) -> dict[str, tuple[str, int]]:
    """``--tcp`` / ``--forward`` values → {name: (host, port)}; a bad one is a usage error."""
    try:
        return parse_tunnels(split_list(items))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def split_list(values: tuple[str, ...]) -> tuple[str, ...]:
    """Repeatable options that also take comma- or space-separated lists (env vars)."""
    return tuple(v for value in values for v in value.replace(",", " ").split() if v)


async def run_until_signal(start, stop, logger: str = "relay_edge") -> None:  # type: ignore[no-untyped-def]
    """Start, wait for SIGTERM/SIGINT, stop: the shape of every long-running command."""
    logging.getLogger(logger).info("event loop: %s", loop_name())
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, done.set)
    await start()
    try:
        await done.wait()
    finally:
        await stop()


@click.command("mint-key")
@click.argument("name")
@click.option("--ttl", default=86400.0, show_default=True, help="seconds the key stays valid")
@click.option("--secret", envvar="RELAY_SECRET", required=True)
def mint_key(name: str, ttl: float, secret: str) -> None:
    """Print a signed stream key for NAME (publish to rtmp://HOST:PORT/live/KEY)."""
    try:
        click.echo(keys.mint_key(secret, name, ttl=ttl, now=time.time()))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None


@click.command("status-token")
@click.option("--secret", envvar="RELAY_SECRET", required=True)
def status_token_cmd(secret: str) -> None:
    """Print the bearer token for /api/rtmp/status, /metrics and the dashboard.

    Listeners bound to a non-loopback address ask for it (RELAY_STATUS_TOKEN if set, else
    derived from the secret): send ``Authorization: Bearer TOKEN``.
    """
    click.echo(status_token(secret_from(secret)))
