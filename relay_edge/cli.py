"""``relay-edge``: run an edge, mint stream keys. Commands build a config and call :func:`loop.run`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

import click

from . import keys
from .access import parse_allow_keys
from .auth import check_secret
from .edge import Edge, EdgeConfig, parse_hostport
from .http import status_token
from .limits import Limits, parse_overrides
from .logs import setup_logging
from .loop import loop_name, run
from .tunnel import parse_tunnels

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


@click.group()
@click.version_option(package_name="rtmp-relay")
def main() -> None:
    """rtmp-relay edge: accepts RTMP and forwards FLV tags to apps over one WebSocket."""


@main.command()
@click.option(
    "--rtmp",
    envvar="RELAY_RTMP_LISTEN",
    default="0.0.0.0:1935",
    show_default=True,
    help="RTMP listen address HOST:PORT",
)
@click.option(
    "--http",
    envvar="RELAY_HTTP_LISTEN",
    default="0.0.0.0:8080",
    show_default=True,
    help="HTTP listen address for /healthz, /api/rtmp/status, /metrics and /link",
)
@click.option(
    "--upstream",
    envvar="RELAY_UPSTREAM",
    multiple=True,
    help="push mode: the app's relay URL (wss://app.onrender.com/relay); repeatable or comma-separated",
)
@click.option("--secret", envvar="RELAY_SECRET", required=True, help="shared secret (never logged)")
@click.option("--name", envvar="RELAY_NAME", default=None, help="this edge's name in status pages")
@click.option("--ca-file", envvar="RELAY_CA_FILE", default=None, help="extra CA to trust when dialing wss://")
@click.option("--rtmps", envvar="RELAY_RTMPS_LISTEN", default=None, help="RTMPS listen address HOST:PORT")
@click.option("--cert", envvar="RELAY_TLS_CERT", default=None, help="RTMPS certificate chain (PEM)")
@click.option("--key", "key_file", envvar="RELAY_TLS_KEY", default=None, help="RTMPS private key (PEM)")
@click.option(
    "--allow-key",
    envvar="RELAY_ALLOW_KEYS",
    multiple=True,
    help="NAME=STATICKEY: a fixed key for a publisher that can't take signed keys (never logged); "
    "repeatable or comma-separated",
)
@click.option(
    "--tcp",
    "tcp",
    envvar="RELAY_TCP",
    multiple=True,
    help="raw TCP tunnel HOST:PORT=NAME: carry any TCP connection to the app's --forward NAME "
    "(like ngrok tcp; no resume); repeatable or comma-separated",
)
@limit_option
@with_log_options
def serve(
    rtmp: str,
    http: str,
    upstream: tuple[str, ...],
    secret: str,
    name: str | None,
    ca_file: str | None,
    rtmps: str | None,
    cert: str | None,
    key_file: str | None,
    allow_key: tuple[str, ...],
    tcp: tuple[str, ...],
    limit: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Accept RTMP publishers and relay their streams to the app."""
    limits = limits_from(limit)
    tunnels = tunnels_from(tcp, "--tcp")
    try:
        allow = parse_allow_keys(allow_key)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-key") from None
    if rtmps and not (cert and key_file):
        raise click.UsageError("--rtmps needs --cert and --key")
    secret_from(secret)
    setup_logging(log_level, log_format, (secret, *allow.values()))
    config = EdgeConfig(
        secret=secret,
        rtmp_listen=parse_hostport(rtmp, 1935),
        http_listen=parse_hostport(http, 8080),
        upstreams=split_list(upstream),
        ca_file=ca_file,
        rtmps_listen=parse_hostport(rtmps, 1936) if rtmps else None,
        tls_cert=cert,
        tls_key=key_file,
        allow_keys=allow,
        limits=limits,
        tcp_tunnels=tunnels,
    )
    if name:
        config.name = name
    edge = Edge(config)
    run(run_until_signal(edge.start, edge.stop))


@main.command("mint-key")
@click.argument("name")
@click.option("--ttl", default=86400.0, show_default=True, help="seconds the key stays valid")
@click.option("--secret", envvar="RELAY_SECRET", required=True)
def mint_key(name: str, ttl: float, secret: str) -> None:
    """Print a signed stream key for NAME (publish to rtmp://HOST:PORT/live/KEY)."""
    try:
        click.echo(keys.mint_key(secret, name, ttl=ttl, now=time.time()))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None


@main.command("status-token")
@click.option("--secret", envvar="RELAY_SECRET", required=True)
def status_token_cmd(secret: str) -> None:
    """Print the bearer token for /api/rtmp/status, /metrics and the dashboard.

    Listeners bound to a non-loopback address ask for it (RELAY_STATUS_TOKEN if set, else
    derived from the secret): send ``Authorization: Bearer TOKEN``.
    """
    click.echo(status_token(secret_from(secret)))
