"""``relay-client``: receive streams (serve / connect), self-test, mint keys."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import click
from aiohttp import web

from relay_edge import cli as edge_cli
from relay_edge.cli import run_until_signal, with_log_options
from relay_edge.edge import parse_hostport
from relay_edge.http import common_routes
from relay_edge.logs import setup_logging

from .decode import AudioFormat
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
    return f


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
    log_level: str,
    log_format: str,
) -> None:
    """Receive links pushed by edges (the edge's RELAY_UPSTREAM points here)."""
    setup_logging(log_level, log_format, (secret,))
    host, port = parse_hostport(listen or f"0.0.0.0:{os.environ.get('PORT', '8000')}", 8000)
    receiver = Receiver(
        secret, audio_format=AudioFormat(sample_rate, channels), consume=frozenset(), out_dir=out_dir
    )
    app = web.Application()
    app.router.add_get(path, receiver.handler)
    common_routes(app, receiver.status, receiver.metrics.render)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        click.echo(f"relay-client listening on {host}:{port}{path}", err=True)

    asyncio.run(run_until_signal(start, runner.cleanup))


@main.command("test")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the summary")
@click.option("--seconds", default=3.0, show_default=True, help="length of the published tone")
@click.option("--frequency", default=440.0, show_default=True, help="tone frequency in Hz")
def test_cmd(as_json: bool, seconds: float, frequency: float) -> None:
    """End-to-end check on loopback: edge + client + a real RTMP publisher."""
    from .selftest import run_local

    def say(line: str) -> None:
        click.echo(line, err=as_json)

    report = asyncio.run(run_local(seconds=seconds, frequency=frequency, say=say))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        d = report.as_dict()
        passed = sum(s["ok"] for s in d["steps"])
        click.echo(f"\n{'PASS' if report.ok else 'FAIL'}: {passed}/{len(d['steps'])} steps")
        if report.ok:
            lat = d["latency_ms"]
            click.echo(f"  first decoded frame: {d['first_frame_ms']} ms after publish started")
            click.echo(f"  latency publisher → decoded audio: p50 {lat['p50']} ms, p99 {lat['p99']} ms")
            click.echo(
                f"  {d['frames']} chunks, {d['duration_s']} s, tone {d['frequency_hz']} Hz, {d['gaps']} gaps"
            )
    sys.exit(0 if report.ok else 1)


# The same command as the edge's: one implementation.
main.add_command(edge_cli.mint_key)
