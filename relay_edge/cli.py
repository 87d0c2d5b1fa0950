"""``relay-edge``: run an edge, mint stream keys. Commands build a config and call :func:`loop.run`."""

from __future__ import annotations

import click

from .access import parse_allow_keys
from .cliopts import (
    limit_option,
    limits_from,
    mint_key,
    run_until_signal,
    secret_from,
    split_list,
    status_token_cmd,
    tunnels_from,
    with_log_options,
)
from .edge import MAX_LINKS, Edge, EdgeConfig
from .logs import setup_logging
from .loop import run
from .urls import parse_hostport


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
@click.option(
    "--links",
    envvar="RELAY_LINKS",
    default=2,
    show_default=True,
    type=click.IntRange(1, MAX_LINKS),
    help="push mode: links to each upstream, so a load balancer spreads streams over its app instances "
    "(set it to at least the instance count)",
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
    links: int,
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
        links=links,
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


main.add_command(mint_key)
main.add_command(status_token_cmd)
