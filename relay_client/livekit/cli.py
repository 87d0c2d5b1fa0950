"""``relay-client livekit ...``: start and stop egress from the command line."""

from __future__ import annotations

import asyncio
import json
import sys

import click
from livekit import api

from relay_edge.cliopts import with_log_options
from relay_edge.logs import setup_logging

from .egress import ConfigError, EgressManager, EgressStatus, LiveKitConfig, RoomNotFound


def livekit_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--livekit-url", envvar="LIVEKIT_URL", default=None, help="LiveKit server URL")(f)
    f = click.option("--api-key", envvar="LIVEKIT_API_KEY", default=None, help="LiveKit API key")(f)
    f = click.option(
        "--api-secret", envvar="LIVEKIT_API_SECRET", default=None, help="LiveKit API secret (never logged)"
    )(f)
    return f


def _config(**kwargs: object) -> LiveKitConfig:
    try:
        return LiveKitConfig.from_env(**kwargs)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@click.group()
def livekit() -> None:
    """LiveKit egress toward the edge (or the Track Egress fallback)."""


@livekit.command("start-egress")
@click.argument("room")
@click.option("--slug", default=None, help="session slug: the stream NAME [default: the room name]")
@click.option("--secret", envvar="RELAY_SECRET", default=None, help="shared secret (never logged)")
@click.option("--rtmp-host", envvar="RTMP_HOST", default=None, help="where LiveKit reaches the edge")
@click.option("--rtmp-port", envvar="RTMP_PORT", default=None, type=int)
@click.option(
    "--public-url",
    envvar="APP_PUBLIC_URL",
    default=None,
    help="the app's https base URL, for the Track Egress fallback",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@livekit_options
@with_log_options
def start_egress(
    room: str,
    slug: str | None,
    secret: str | None,
    rtmp_host: str | None,
    rtmp_port: int | None,
    public_url: str | None,
    as_json: bool,
    livekit_url: str | None,
    api_key: str | None,
    api_secret: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Start an audio-only Room Composite egress of ROOM toward the edge; print its id and stream name.

    With RTMP_HOST/RTMP_PORT unset, this falls back to Track Egress, which needs the app's
    endpoint (APP_PUBLIC_URL); the app itself should start those (examples/livekit_transcriber).
    """
    config = _config(
        livekit_url=livekit_url,
        api_key=api_key,
        api_secret=api_secret,
        relay_secret=secret,
        rtmp_host=rtmp_host,
        rtmp_port=rtmp_port,
        public_url=public_url,
    )
    setup_logging(log_level, log_format, (config.relay_secret, config.api_secret))
    if not config.edge_configured:
        raise click.UsageError(
            "RTMP_HOST and RTMP_PORT are not set: Track Egress needs the app's WebSocket endpoint, so "
            "start it from the app (EgressManager with a TrackAudioEndpoint)"
        )

    async def run() -> dict[str, object]:
        async with EgressManager(config) as manager:
            return (await manager.start(room, slug)).describe()

    try:
        session = asyncio.run(run())
    except RoomNotFound as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except api.TwirpError as exc:
        click.echo(f"LiveKit refused: {exc.code}: {exc.message}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(session))
    else:
        click.echo(f"egress_id {session['egress_ids'][0]}")  # type: ignore[index]
        click.echo(f"stream {session['stream_name']}")


@livekit.command("stop-egress")
@click.argument("egress_id")
@livekit_options
@with_log_options
def stop_egress(
    egress_id: str,
    livekit_url: str | None,
    api_key: str | None,
    api_secret: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Stop the egress EGRESS_ID; print its final status."""
    setup_logging(log_level, log_format, tuple(s for s in (api_secret,) if s))
    config = _config(livekit_url=livekit_url, api_key=api_key, api_secret=api_secret, relay_secret="-")

    async def run() -> str:
        async with EgressManager(config) as manager:
            info = await manager.stop(egress_id)
            return EgressStatus.Name(info.status)

    try:
        status = asyncio.run(run())
    except api.TwirpError as exc:
        click.echo(f"LiveKit refused: {exc.code}: {exc.message}", err=True)
        sys.exit(1)
    click.echo(f"egress_id {egress_id}")
    click.echo(f"status {status}")
