"""``relay-client``: receive streams (serve / connect), self-test, mint keys."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable

import click
from aiohttp import web

from relay_edge.cliopts import (
    limit_option,
    limits_from,
    mint_key,
    run_until_signal,
    secret_from,
    status_token_cmd,
    tunnels_from,
    with_log_options,
)
from relay_edge.logs import setup_logging
from relay_edge.loop import run
from relay_edge.urls import parse_hostport, warn_if_plaintext
from relay_edge.web import GuardedSite, app_runner, common_routes, harden, listener_token

from .allocator import tune_allocator
from .decode import AudioFormat
from .livekit import cli as livekit_cli
from .receiver import Receiver


@click.group()
@click.version_option(package_name="rtmp-relay")
def main() -> None:
    """rtmp-relay app side: receive relayed RTMP streams, decoded."""


def audio_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--channels", default=1, show_default=True, type=click.IntRange(1, 2))(f)
    f = click.option("--sample-rate", default=16000, show_default=True, type=click.IntRange(8000, 192000))(f)
    f = click.option(
        "--out",
        "out_dir",
        envvar="RELAY_OUT",
        default=None,
        type=click.Path(file_okay=False),
        help="write NAME.flv, NAME.wav and NAME.json per stream here",
    )(f)
    f = click.option("--secret", envvar="RELAY_SECRET", required=True, help="shared secret (never logged)")(f)
    f = click.option(
        "--republish",
        envvar="RELAY_REPUBLISH",
        default=None,
        help="publish every stream to your own RTMP server: rtmp://127.0.0.1:1935/live (as live/NAME; "
        "{name} places it elsewhere)",
    )(f)
    f = click.option(
        "--forward",
        envvar="RELAY_FORWARD",
        multiple=True,
        help="raw TCP tunnel NAME=HOST:PORT: connect the edge's --tcp NAME here; repeatable",
    )(f)
    return limit_option(f)


def cli_receiver(
    secret: str,
    out_dir: str | None,
    sample_rate: int,
    channels: int,
    limit: tuple[str, ...],
    forward: tuple[str, ...],
    republish: str | None = None,
) -> Receiver:
    """The Receiver that ``serve`` and ``connect`` run: files only, no in-process consumer."""
    from .republish import RepublishError

    logging.getLogger("relay_client").info("allocator: %s", tune_allocator())
    try:
        return Receiver(
            secret,
            audio_format=AudioFormat(sample_rate, channels),
            consume=frozenset(),
            out_dir=out_dir,
            limits=limits_from(limit),
            forwards=tunnels_from(forward, "--forward"),
            republish=republish,
        )
    except RepublishError as exc:
        raise click.BadParameter(str(exc), param_hint="--republish") from None


@main.command()
@click.option(
    "--listen",
    envvar="RELAY_LISTEN",
    default=None,
    help="HOST:PORT to listen on [default: 0.0.0.0:$PORT, or 0.0.0.0:8000]",
)
@click.option("--path", envvar="RELAY_PATH", default="/relay", show_default=True, help="the link's URL path")
@audio_options
@with_log_options
def serve(
    listen: str | None,
    path: str,
    secret: str,
    out_dir: str | None,
    sample_rate: int,
    channels: int,
    limit: tuple[str, ...],
    forward: tuple[str, ...],
    republish: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Receive links pushed by edges (the edge's RELAY_UPSTREAM points here)."""
    setup_logging(log_level, log_format, (secret_from(secret),))
    host, port = parse_hostport(listen or f"0.0.0.0:{os.environ.get('PORT', '8000')}", 8000)
    receiver = cli_receiver(secret, out_dir, sample_rate, channels, limit, forward, republish)
    app = harden(web.Application(), receiver.limits)
    app.router.add_get(path, receiver.handler)
    token = listener_token(host, secret)
    common_routes(app, receiver.status, receiver.metrics.render, token, health=receiver.unhealthy)
    runner = app_runner(app, receiver.limits)

    async def start() -> None:
        await runner.setup()
        await GuardedSite(runner, host, port, receiver.limits, reuse_address=True).start()
        click.echo(f"relay-client listening on {host}:{port}{path}", err=True)

    async def stop() -> None:
        # SIGTERM: finish handing over and acking what arrived, close the links
        # (the edge redials at once, reaching the next instance), then stop serving.
        await receiver.shutdown()
        await runner.cleanup()

    run(run_until_signal(start, stop, "relay_client"))


@main.command()
@click.argument("url", envvar="RELAY_EDGE_URL")
@click.option("--ca-file", envvar="RELAY_CA_FILE", default=None, help="extra CA to trust for wss://")
@click.option(
    "--http",
    "http_listen",
    envvar="RELAY_HTTP_LISTEN",
    default=None,
    help="also serve /healthz, /api/rtmp/status and /metrics on HOST:PORT",
)
@audio_options
@with_log_options
def connect(
    url: str,
    ca_file: str | None,
    http_listen: str | None,
    secret: str,
    out_dir: str | None,
    sample_rate: int,
    channels: int,
    limit: tuple[str, ...],
    forward: tuple[str, ...],
    republish: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Pull mode: dial the edge's /link (wss://EDGE/link) and receive its streams."""
    setup_logging(log_level, log_format, (secret_from(secret),))
    receiver = cli_receiver(secret, out_dir, sample_rate, channels, limit, forward, republish)
    runner: web.AppRunner | None = None
    task: asyncio.Task[None] | None = None

    async def start() -> None:
        nonlocal runner, task
        if http_listen:
            host, port = parse_hostport(http_listen, 8000)
            app = harden(web.Application(), receiver.limits)
            token = listener_token(host, secret)
            common_routes(app, receiver.status, receiver.metrics.render, token, health=receiver.unhealthy)
            runner = app_runner(app, receiver.limits)
            await runner.setup()
            await GuardedSite(runner, host, port, receiver.limits, reuse_address=True).start()
        warn_if_plaintext(url, logging.getLogger("relay_client"))
        task = asyncio.create_task(receiver.connect(url, ca_file=ca_file))
        click.echo(f"relay-client dialing {url.split('?')[0]}", err=True)

    async def stop() -> None:
        await receiver.shutdown()
        if task is not None:
            task.cancel()
        if runner is not None:
            await runner.cleanup()

    run(run_until_signal(start, stop, "relay_client"))


@main.command("test")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the summary")
@click.option("--seconds", default=3.0, show_default=True, help="length of the published tone")
@click.option("--frequency", default=440.0, show_default=True, help="tone frequency in Hz")
@click.option("--edge", default=None, help="check a deployed edge: rtmp://HOST:PORT (with --app)")
@click.option("--app", default=None, help="the deployed app's public URL: https://APP (with --edge)")
@click.option("--secret", envvar="RELAY_SECRET", default=None, help="the pair's secret (with --edge/--app)")
@click.option(
    "--timeout", default=60.0, show_default=True, help="with --edge/--app: seconds to wait for the app"
)
def test_cmd(
    as_json: bool,
    seconds: float,
    frequency: float,
    edge: str | None,
    app: str | None,
    secret: str | None,
    timeout: float,
) -> None:
    """End-to-end check on loopback: edge + client + a real RTMP publisher.

    With --edge and --app: the same checks against a deployed pair, naming the first step that fails.
    """
    from .selftest import run_local

    def say(line: str) -> None:
        click.echo(line, err=as_json)

    if edge or app:
        _remote_test(edge, app, secret, as_json, seconds, frequency, timeout, say)
        return
    report = run(run_local(seconds=seconds, frequency=frequency, say=say))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        d = report.as_dict()
        passed = sum(s["ok"] for s in d["steps"])
        click.echo(f"\n{'PASS' if report.ok else 'FAIL'}: {passed}/{len(d['steps'])} steps")
        if report.ok:
            lat = d["latency_ms"]
            click.echo(f"  first decoded frame: {d['first_frame_ms']} ms after the publisher's first write")
            click.echo(f"  ({d['publisher_start_ms']} ms after the publisher process started)")
            click.echo(f"  latency publisher → decoded audio: p50 {lat['p50']} ms, p99 {lat['p99']} ms")
            click.echo(
                f"  {d['frames']} chunks, {d['duration_s']} s, tone {d['frequency_hz']} Hz, {d['gaps']} gaps"
            )
    sys.exit(0 if report.ok else 1)


def _remote_test(
    edge: str | None,
    app: str | None,
    secret: str | None,
    as_json: bool,
    seconds: float,
    frequency: float,
    timeout: float,
    say: Callable[[str], None],
) -> None:
    """``relay-client test --edge ... --app ...``: see :mod:`relay_client.diagnose`."""
    from .diagnose import Target, diagnose

    if not edge or not app:
        raise click.UsageError("--edge and --app go together")
    if not secret:
        raise click.UsageError("--secret (or RELAY_SECRET) is needed to mint a stream key")
    try:
        Target.parse(edge, app)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    report = run(diagnose(edge, app, secret, seconds=seconds, frequency=frequency, timeout=timeout, say=say))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        passed = sum(s.ok for s in report.steps)
        verdict = "PASS" if report.ok else f"FAIL at {report.failed_step!r}"
        click.echo(f"\n{verdict}: {passed}/{len(report.steps)} steps")
    sys.exit(0 if report.ok else 1)


# The same command as the edge's: one implementation.
main.add_command(mint_key)
main.add_command(livekit_cli.livekit)


main.add_command(status_token_cmd)
