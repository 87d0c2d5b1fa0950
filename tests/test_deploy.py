"""The deploy files: render.yaml, fly.toml, the Dockerfile and the systemd unit.

They are checked three ways: against the platforms' schemas (from ../shared/reference)
and documented fields, against our CLIs (every command and environment variable they
use exists), and by running them: the edge and the app start with the exact commands
and environment the files give, on loopback, and a real ffmpeg publisher streams
through them.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import wave
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from relay_client import cli as client_cli
from relay_client.tone import dominant_frequency
from relay_edge import cli as edge_cli
from relay_edge import keys
from tests.support import publishers
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"
BIN = Path(sys.executable).parent  # the venv's relay-edge / relay-client

# --- loading the files (shared with test_ops.py) ------------------------------------------------


def render_blueprint() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "render.yaml").read_text())


def render_service() -> dict[str, Any]:
    (service,) = [s for s in render_blueprint()["services"] if s["type"] == "web"]
    return service


def fly_config() -> dict[str, Any]:
    return tomllib.loads((ROOT / "fly.toml").read_text())


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_cmd() -> list[str]:
    (cmd,) = [rest for word, rest in dockerfile() if word == "CMD"]
    return json.loads(cmd)  # exec form: no shell, SIGTERM reaches the edge itself


def systemd_unit() -> dict[str, dict[str, list[str]]]:
    """Sections → key → values (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (ROOT / "deploy" / "relay-edge.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def systemd_exec() -> list[str]:
    """ExecStart as argv, the program named by its basename (the unit gives the venv's full path)."""
    argv = shlex.split(systemd_unit()["Service"]["ExecStart"][0])
    assert argv[0].startswith("/"), "systemd wants an absolute ExecStart path"
    return [Path(argv[0]).name, *argv[1:]]


def env_file(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )
    return {k: v for k, v in pairs}


def fly_edge_env() -> dict[str, str]:
    """What the edge's process sees on Fly: the image's ENV, then fly.toml's [env]."""
    return {**dockerfile_env(), **fly_config()["env"]}


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


# --- schemas and documented fields ---------------------------------------------------------------


def schema(name: str) -> dict[str, Any]:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the platform schemas live in ../shared/reference beside the repo")
    return json.loads(path.read_text())


def validate(document: Any, schema_doc: dict[str, Any]) -> None:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema_doc)
    cls.check_schema(schema_doc)
    errors = sorted(cls(schema_doc).iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_render_yaml_validates_against_render_schema() -> None:
    validate(render_blueprint(), schema("render-blueprint.schema.json"))


def test_render_service_uses_documented_fields() -> None:
    svc = render_service()
    assert svc["runtime"] == "python" and "env" not in svc  # `env:` is the rejected old key
    assert 'pip install ".[client]"' in svc["buildCommand"]
    start = shlex.split(svc["startCommand"])
    assert start[:2] == ["relay-client", "serve"]
    assert "$PORT" in svc["startCommand"]  # the only public port on Render
    assert svc["healthCheckPath"] == "/healthz"
    assert 1 <= svc["maxShutdownDelaySeconds"] <= 300
    env = {e["key"]: e for e in svc["envVars"]}
    for item in env.values():  # exactly one of value / generateValue / sync: false
        assert len({"value", "generateValue", "sync"} & item.keys()) == 1, item
    assert env["RELAY_SECRET"] == {"key": "RELAY_SECRET", "generateValue": True}
    assert env["RTMP_HOST"]["sync"] is False and env["RTMP_PORT"]["sync"] is False


def test_fly_toml_validates_against_fly_schema() -> None:
    validate(fly_config(), schema("fly.schema.json"))


def test_fly_services_match_the_platform_rules() -> None:
    fly = fly_config()
    assert fly["kill_signal"] == "SIGTERM"
    assert isinstance(fly["kill_timeout"], int) and 5 < fly["kill_timeout"] <= 300
    (rtmp,) = [s for s in fly["services"] if s["protocol"] == "tcp" and s["internal_port"] == 1935]
    assert rtmp["ports"] == [{"port": 1935}]  # raw TCP: no handlers at all
    assert rtmp["auto_stop_machines"] == "off"  # a string, and never under a live publisher
    http = fly["http_service"]
    assert http["auto_stop_machines"] == "off" and http["force_https"] is True
    assert [c["path"] for c in http["checks"]] == ["/healthz"]
    env = fly_edge_env()
    assert port_of(env["RELAY_RTMP_LISTEN"]) == rtmp["internal_port"]
    assert port_of(env["RELAY_HTTP_LISTEN"]) == http["internal_port"]
    assert env["RELAY_UPSTREAM"].startswith("wss://")  # Render answers ws:// with a 301
    assert "RELAY_SECRET" not in env  # a secret: `fly secrets set`, never in the file


def test_dockerfile_is_small_edge_only_and_non_root() -> None:
    steps = dockerfile()
    # Two stages on the same slim base: the compiled core's build, then the image.
    assert [rest for word, rest in steps if word == "FROM"] == [
        "python:3.11-slim AS accel",
        "python:3.11-slim",
    ]
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert 'pip install ".[edge]"' in runs
    assert "[client]" not in runs and " av" not in runs
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("STOPSIGNAL", "SIGTERM") in steps
    assert dockerfile_cmd() == ["relay-edge", "serve"]
    exposed = {p for word, rest in steps if word == "EXPOSE" for p in rest.split()}
    assert exposed == {"1935", "8080"}
    ignore = [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln[:1] not in ("#", "")
    ]
    # Everything is excluded, then exactly what the COPY lines need comes back.
    assert ignore[0] == "*"
    from_context = [rest for word, rest in steps if word == "COPY" and not rest.startswith("--from=")]
    copied = {p for rest in from_context for p in rest.split()[:-1]}
    assert {f"!{p}" for p in copied} <= set(ignore), (copied, ignore)
    # The compiled core is built in its own stage (a C compiler) and only its build is copied over;
    # a build from the context (another machine's) never goes in.
    assert "python scripts/build_accel.py" in runs and "relay_edge/compiled" in ignore
    assert ("COPY", "--from=accel /src/relay_edge/compiled ./relay_edge/compiled") in steps
    # The image installs the edge's dependencies only: no PyAV, no numpy.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["edge"]
    assert not [d for d in deps if re.match(r"(av|numpy)\b", d)]


def test_edge_imports_without_pyav() -> None:
    code = "import sys; import relay_edge.cli, relay_edge.edge, relay_edge.web; print('av' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_systemd_unit() -> None:
    unit = systemd_unit()
    service = unit["Service"]
    assert service["EnvironmentFile"] == ["/etc/rtmp-relay/edge.env"]
    assert systemd_exec() == ["relay-edge", "serve"]
    assert service["Restart"] == ["always"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert 5 <= int(service["TimeoutStopSec"][0]) <= 300
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "DynamicUser": "yes",
    }.items():
        assert service[key] == [value], key
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "ufw allow 1935/tcp" in (ROOT / "deploy" / "relay-edge.service").read_text()


# --- every command and variable the files use exists ---------------------------------------------


def _envvars(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            names.add(envvar)
        elif envvar:
            names.update(envvar)
    return names


def _parse(group: click.Group, argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse ``argv`` the way the console script would; unknown options or a bad value fail."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx = group.make_context(argv[0], argv[1:2])
    command = group.get_command(ctx, argv[1])
    assert command is not None, f"{argv[0]} has no command {argv[1]!r}"
    command.make_context(argv[1], argv[2:], parent=ctx)


APP_SIDE_ONLY = {"PYTHON_VERSION", "RTMP_HOST", "RTMP_PORT"}  # for Render and the user's code


def test_render_start_command_and_env_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = render_service()
    argv = shlex.split(svc["startCommand"].replace("$PORT", "10000"))
    env = {e["key"]: str(e.get("value", "x")) for e in svc["envVars"]}
    _parse(client_cli.main, argv, env, monkeypatch)
    unknown = set(env) - APP_SIDE_ONLY - _envvars(client_cli.serve)
    assert not unknown, f"render.yaml sets variables relay-client serve never reads: {unknown}"


def test_edge_commands_and_env_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    for argv, env in [
        (dockerfile_cmd(), {**fly_edge_env(), "RELAY_SECRET": "x"}),
        (systemd_exec(), env_file(ROOT / "deploy" / "edge.env.example")),
    ]:
        _parse(edge_cli.main, argv, env, monkeypatch)
        unknown = {k for k in env if k.startswith("RELAY_")} - _envvars(edge_cli.serve)
        assert not unknown, f"{argv}: variables relay-edge serve never reads: {unknown}"


def test_console_scripts_answer_help() -> None:
    for argv in (["relay-edge", "serve"], ["relay-client", "serve"], ["relay-client", "test"]):
        out = subprocess.run([str(BIN / argv[0]), *argv[1:], "--help"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "--secret" in out.stdout
    help_text = subprocess.run([str(BIN / "relay-client"), "test", "--help"], capture_output=True, text=True)
    assert "--edge" in help_text.stdout and "--app" in help_text.stdout


# --- running them ---------------------------------------------------------------------------------


class Service:
    """A deploy file's command as a subprocess, its output in a file (never a full pipe)."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log: Path, shell: bool = False
    ) -> None:
        self.name = name
        self.log = log
        self._fh = log.open("wb")
        base = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(log.parent), "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(
            ["bash", "-c", argv[0]] if shell else argv,
            env={**base, **env},
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float) -> tuple[int, float]:
        """SIGTERM, as Render and Fly send it; the exit code and the seconds it took."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"{self.name} still running {timeout} s after SIGTERM:\n{self.output()}"
            ) from None
        return code, time.monotonic() - t0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._fh.close()


def wait_http(url: str, timeout: float, service: Service) -> dict[str, Any] | str:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                body = r.read().decode()
                return json.loads(body) if "json" in r.headers.get("Content-Type", "") else body
        except OSError:
            if service.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{url} not answering; {service.name} said:\n{service.output()}"
                ) from None
            time.sleep(0.1)


def relay_status(port: int, service: Service) -> dict[str, Any]:
    """``service``'s ``/api/rtmp/status`` document (edge or app), waiting up to 5 s for it."""
    doc = wait_http(f"http://127.0.0.1:{port}/api/rtmp/status", 5, service)
    assert isinstance(doc, dict)
    return doc


def start_pair(tmp: Path, out_dir: Path | None) -> tuple[Service, Service, dict[str, Any]]:
    """The app as render.yaml starts it, and the edge as the Dockerfile + fly.toml start it, on loopback.

    What changes from the platforms: listen addresses (loopback, free ports) and the upstream URL
    (Render's proxy terminates wss://; here the app is reached directly on ws://).
    """
    svc = render_service()
    secret = secrets.token_urlsafe(32)  # generateValue: true
    app_port, rtmp_port, http_port = free_port(), free_port(), free_port()
    app_env = {e["key"]: str(e["value"]) for e in svc["envVars"] if "value" in e}
    app_env |= {"RELAY_SECRET": secret, "PORT": str(app_port)}
    app_env |= {"RTMP_HOST": "127.0.0.1", "RTMP_PORT": str(rtmp_port)}  # the sync: false ones
    if out_dir is not None:
        app_env["RELAY_OUT"] = str(out_dir)
    app = Service("relay-client serve", [svc["startCommand"]], app_env, tmp / "app.log", shell=True)
    edge_env = fly_edge_env() | {
        "RELAY_SECRET": secret,  # fly secrets set RELAY_SECRET=<the app's>
        "RELAY_RTMP_LISTEN": f"127.0.0.1:{rtmp_port}",
        "RELAY_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "RELAY_UPSTREAM": f"ws://127.0.0.1:{app_port}{svc['startCommand'].split('--path ')[1].split()[0]}",
    }
    edge = Service("relay-edge serve", dockerfile_cmd(), edge_env, tmp / "edge.log")
    info = {"secret": secret, "app_port": app_port, "rtmp_port": rtmp_port, "http_port": http_port}
    return app, edge, info


@pytest.mark.slow
async def test_deploy_commands_stream_end_to_end(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    app, edge, info = start_pair(tmp_path, out_dir)
    try:
        assert wait_http(f"http://127.0.0.1:{info['app_port']}/healthz", 20, app) == "ok\n"
        assert wait_http(f"http://127.0.0.1:{info['http_port']}/healthz", 20, edge) == "ok\n"
        deadline = time.monotonic() + 10
        while not wait_http(f"http://127.0.0.1:{info['http_port']}/api/rtmp/status", 5, edge)["links"]:  # type: ignore[index]
            assert time.monotonic() < deadline, f"no link:\n{edge.output()}\n{app.output()}"
            time.sleep(0.1)
        # The URL the app builds from RTMP_HOST and RTMP_PORT, with a key minted from the shared secret.
        key = keys.mint_key(info["secret"], "deploy", ttl=300, now=time.time())
        url = f"rtmp://127.0.0.1:{info['rtmp_port']}/live/{key}"
        async with await publishers.ffmpeg_tone(url, seconds=3, frequency=660) as pub:
            await pub.wait_ok(30)
        stats_path = out_dir / "deploy.json"  # written when the app ends the stream
        deadline = time.monotonic() + 30
        while not stats_path.exists():
            assert time.monotonic() < deadline, f"no NAME.json\nAPP:\n{app.output()}\nEDGE:\n{edge.output()}"
            time.sleep(0.1)
        stats = json.loads(stats_path.read_text())
        with wave.open(str(out_dir / "deploy.wav"), "rb") as w:
            rate, pcm = w.getframerate(), w.readframes(w.getnframes())
        assert rate == 16000
        assert abs(len(pcm) / 2 / rate - 3.0) < 0.15
        assert dominant_frequency(pcm, rate, 1) == pytest.approx(660, abs=2.0)
        assert stats["gaps"] == 0 and stats["codecs"]["audio"]
        # Graceful stop as the platforms do it: SIGTERM, then the platform's own deadline.
        code, edge_took = edge.terminate(fly_config()["kill_timeout"])
        assert code == 0, edge.output()
        code, app_took = app.terminate(render_service()["maxShutdownDelaySeconds"])
        assert code == 0, app.output()
        print(f"\ndeploy pair: 660 Hz through; SIGTERM exits: edge {edge_took:.2f} s, app {app_took:.2f} s")
        assert "RTMP server started on port" in edge.output()
        assert info["secret"] not in edge.output() + app.output()
    finally:
        app.stop()
        edge.stop()
