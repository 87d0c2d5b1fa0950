"""A real HTTP load balancer on loopback: nginx round-robin over app ports, WebSocket upgrades proxied.

It stands in for Render's (or any platform's) balancer in front of a service scaled to several
instances: each new connection, a link's upgrade included, goes to the next backend; a backend
that refuses is skipped (``proxy_next_upstream error``, nginx's default) and the next one tried.
The path and the ``Host`` header are passed through unchanged, as the link proof needs
(docs/DEPLOY.md). Same layout as :class:`tests.support.nginx.NginxRtmp`: one process, every
file in a directory the caller owns.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .net import LOOPBACK, free_port
from .nginx import read_nginx_log, start_nginx, stop_nginx, temp_paths


class Balancer:
    """nginx on ``127.0.0.1:port`` proxying HTTP and WebSocket round-robin to ``backends`` (ports)."""

    def __init__(self, workdir: Path, backends: list[int], port: int | None = None) -> None:
        self.workdir = workdir
        self.backends = backends
        self.host = LOOPBACK
        self.port = port or free_port()
        self.error_log = workdir / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str = "/relay") -> str:
        """``ws://127.0.0.1:PORT/PATH``: what the edge dials."""
        return f"ws://{self.host}:{self.port}{path}"

    def config(self) -> str:
        """The nginx.conf text; every path is inside :attr:`workdir`."""
        temp = self.workdir / "temp"
        servers = "\n".join(f"    server {self.host}:{port};" for port in self.backends)
        return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {self.workdir / "nginx.pid"};
error_log {self.error_log} info;
events {{ worker_connections 256; }}
http {{
  access_log off;
{temp_paths(temp)}
  upstream apps {{
{servers}
  }}
  server {{
    listen {self.host}:{self.port};
    location / {{
      proxy_pass http://apps;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $http_host;
      # A link is long-lived and pinged by both ends; nginx must not cut it between frames.
      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
      proxy_buffering off;
    }}
  }}
}}
"""

    def start(self, timeout: float = 10.0) -> Balancer:
        """Write the config, start nginx and wait until it listens."""
        self.proc = start_nginx(self.workdir, self.config(), self.error_log, self.host, self.port, timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop nginx (SIGQUIT, then SIGKILL if it hangs)."""
        proc, self.proc = self.proc, None
        stop_nginx(proc, timeout)

    def log_text(self) -> str:
        """The error log (upstream failures, connects)."""
        return read_nginx_log(self.error_log)

    def __enter__(self) -> Balancer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
