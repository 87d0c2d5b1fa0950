"""A real nginx-rtmp server on loopback: the baseline and interop peer for end-to-end tests.

Everything nginx writes (config, pid, error log, recordings) stays in one directory the caller owns,
so it runs unprivileged and in parallel. ``daemon off; master_process off;`` keeps it one process
that we start, watch and stop ourselves.

Quirks of nginx-rtmp 1.2.2 that tests must allow for (read in its record module, checked here):

- ``record all`` rebases timestamps on the first recorded tag (``timestamp - epoch``). ffmpeg, PyAV and
  GStreamer all send their AAC sequence header at 0, even with ``-output_ts_offset``, so the epoch is
  0 and an offset survives; a publisher whose first tag carried the offset would be recorded from 0.
- The recording gets the AAC sequence header from nginx's codec context, then the publisher's own AAC
  header tag: it appears twice (:func:`strip_injected_header` drops the copy). The AVC header is
  written once (the publisher's tag is skipped), video before the first keyframe is dropped, and
  metadata (onMetaData) is never recorded.
- The file is complete only once nginx has closed it after ``deleteStream``/disconnect, a few ms after
  the publisher exits: use :meth:`NginxRtmp.wait_recorded`.
- Subscribers get absolute timestamps (the first message after joining carries the publisher's own
  timestamp). ``publish_notify on`` sends ``NetStream.Play.UnpublishNotify``, which makes an
  ffmpeg/PyAV player see EOF when the publisher stops.
- nginx answers ``connect`` with several small writes and no TCP_NODELAY, so each request/answer step
  stalls ~40 ms on delayed ACKs: publishers need ~175 ms from TCP connect to ``publish`` accepted.
- An unknown application closes the connection at ``connect``; a second publisher of a live name gets
  ``NetStream.Publish.BadName`` ("Already publishing").
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from relay_edge.flv import AUDIO, FlvReader, Tag, is_sequence_header

from .net import LOOPBACK, free_port, wait_for_port
from .process import stop_process

NGINX = "nginx"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def require_nginx_rtmp() -> str:
    """Path of the nginx binary; skip the test if nginx or its RTMP module is not installed."""
    path = shutil.which(NGINX) or (f"/usr/sbin/{NGINX}" if Path(f"/usr/sbin/{NGINX}").exists() else None)
    if path is None:
        pytest.skip("nginx is not installed (apt-get install nginx libnginx-mod-rtmp)")
    if not RTMP_MODULE.exists():
        pytest.skip(f"nginx RTMP module missing at {RTMP_MODULE} (apt-get install libnginx-mod-rtmp)")
    return path


def start_nginx(
    workdir: Path, config: str, error_log: Path, host: str, port: int, timeout: float = 10.0
) -> subprocess.Popen[bytes]:
    """Write CONFIG to ``workdir/nginx.conf``, start nginx on it and wait until HOST:PORT accepts.

    One process (the config says ``daemon off; master_process off;``) that the caller stops with
    :func:`stop_nginx`. Raises RuntimeError if nginx exits first, TimeoutError if it never listens
    (nginx is stopped then); both messages carry the error log.
    """
    nginx = require_nginx_rtmp()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "temp").mkdir(exist_ok=True)  # nginx does not create the parent of its http temp paths
    conf = workdir / "nginx.conf"
    conf.write_text(config)
    # -e: the log used before the config is read (the Debian default is stderr).
    argv = [nginx, "-p", str(workdir), "-c", str(conf), "-e", str(error_log)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode} on start:\n{read_nginx_log(error_log)}")
        try:
            wait_for_port(host, port, timeout=0.05)
            return proc
        except TimeoutError:
            continue
    stop_nginx(proc)
    raise TimeoutError(f"nginx did not listen on {host}:{port} in {timeout} s:\n{read_nginx_log(error_log)}")


def stop_nginx(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> int | None:
    """Stop nginx (SIGQUIT: graceful, closes recordings; SIGKILL if it hangs); return its exit code."""
    return stop_process(proc, signal.SIGQUIT, timeout)


def read_nginx_log(path: Path) -> str:
    """An nginx error log's text ("" before nginx has created it)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def strip_injected_header(tags: list[Tag]) -> list[Tag]:
    """Drop the copy of the AAC sequence header nginx-rtmp writes ahead of the publisher's own.

    nginx-rtmp 1.2 records the AAC header from its codec context before the first audio tag and then
    records the publisher's header tag too (for AVC it keeps only its copy, so video needs nothing).
    """
    audio = [i for i, t in enumerate(tags) if t.type == AUDIO][:2]
    if len(audio) == 2:
        first, second = (tags[i] for i in audio)
        if first.data == second.data and is_sequence_header(AUDIO, first.data):
            return tags[: audio[0]] + tags[audio[0] + 1 :]
    return tags


class NginxRtmp:
    """nginx-rtmp listening on ``127.0.0.1:port`` with one live application (default ``live``).

    ``record=True`` records every published stream NAME to ``record_dir/NAME.flv``.
    Use as a context manager (sync or async); :meth:`url` builds publish/play URLs.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        record: bool = False,
        app: str = "live",
        port: int | None = None,
        chunk_size: int = 4096,
        extra_app_config: str = "",
        worker_connections: int = 1024,
        http_port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.record = record
        self.app = app
        self.host = LOOPBACK
        self.port = port or free_port()
        self.chunk_size = chunk_size
        self.extra_app_config = extra_app_config
        self.worker_connections = worker_connections  # publishers + players + 1
        self.http_port = http_port  # a plain HTTP /healthz (200 "ok"), to time nginx's event loop
        self.record_dir = self.workdir / "record"
        self.conf_path = self.workdir / "nginx.conf"
        self.error_log = self.workdir / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        """``rtmp://127.0.0.1:PORT/APP/NAME``."""
        return f"rtmp://{self.host}:{self.port}/{self.app}/{name}"

    def config(self) -> str:
        """The nginx.conf text; every path is inside :attr:`workdir`."""
        record = (
            f"record all;\n      record_path {self.record_dir};\n      record_unique off;"
            if self.record
            else "record off;"
        )
        http = ""
        if self.http_port:
            temp = self.workdir / "temp"
            http = f"""
http {{
  access_log off;
{temp_paths(temp)}
  server {{
    listen {self.host}:{self.http_port};
    location = /healthz {{ return 200 "ok"; }}
  }}
}}
"""
        return f"""\
load_module {RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {self.workdir / "nginx.pid"};
error_log {self.error_log} info;
events {{ worker_connections {self.worker_connections}; }}
rtmp {{
  server {{
    listen {self.host}:{self.port};
    chunk_size {self.chunk_size};
    application {self.app} {{
      live on;
      # Players get NetStream.Play.UnpublishNotify, so ffmpeg/PyAV players end at EOF.
      publish_notify on;
      {record}
      {self.extra_app_config}
    }}
  }}
}}
{http}"""

    def start(self, timeout: float = 10.0) -> NginxRtmp:
        """Write the config, start nginx and wait until the RTMP port accepts connections."""
        self.record_dir.mkdir(parents=True, exist_ok=True)  # nginx-rtmp does not create record_path
        self.proc = start_nginx(self.workdir, self.config(), self.error_log, self.host, self.port, timeout)
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop nginx (SIGQUIT: graceful, closes recordings; SIGKILL if it hangs); return its exit code."""
        proc, self.proc = self.proc, None
        return stop_nginx(proc, timeout)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def log_text(self) -> str:
        """The error log (info level: connects, publishes, disconnects and errors)."""
        return read_nginx_log(self.error_log)

    def record_path(self, name: str) -> Path:
        """Where ``record all`` writes stream NAME."""
        return self.record_dir / f"{name}.flv"

    def wait_recorded(self, name: str, timeout: float = 5.0) -> Path:
        """Wait until nginx has written and closed the recording of NAME; return its path.

        "Closed" is read from ``/proc/PID/fd``: no open descriptor of nginx points at the file.
        """
        path = self.record_path(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and not self._has_open(path):
                return path
            time.sleep(0.01)
        state = "still open" if path.exists() else "never created"
        raise TimeoutError(f"recording {path} {state} after {timeout} s:\n{self.log_text()[-2000:]}")

    async def wait_recorded_async(self, name: str, timeout: float = 5.0) -> Path:
        """:meth:`wait_recorded` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_recorded, name, timeout)

    async def recorded_tags(self, name: str, timeout: float = 5.0) -> list[Tag]:
        """The tags nginx recorded for NAME, without its extra AAC header (:func:`strip_injected_header`)."""
        path = await self.wait_recorded_async(name, timeout)
        return strip_injected_header(FlvReader().feed(path.read_bytes()))

    def _has_open(self, path: Path) -> bool:
        if self.proc is None:
            return False
        target = str(path.resolve())
        try:
            fds = list(Path(f"/proc/{self.proc.pid}/fd").iterdir())
        except FileNotFoundError:  # nginx is gone: nothing is open
            return False
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    return True
            except OSError:  # closed while we looked
                continue
        return False

    def __enter__(self) -> NginxRtmp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> NginxRtmp:
        # Start is a few ms of blocking work (spawn + connect poll); fine on the test loop.
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


def temp_paths(temp: Path) -> str:
    """An nginx ``http`` block's temp directories under ``temp`` (nginx's defaults may be unwritable)."""
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    return "\n".join(f"  {kind}_temp_path {temp}/{kind.removeprefix('client_')};" for kind in kinds)
