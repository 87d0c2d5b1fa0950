"""The compiled core (relay_edge/accel.py) against the pure one: the same bytes out, and never stale.

The rest of the suite runs whichever core ``scripts/setup`` left (compiled wherever a C compiler
is, as in CI); here each check runs in two processes, ``RELAY_PURE=1`` and not, on the same input.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from relay_edge import accel
from relay_edge.edge import Edge, EdgeConfig
from tests.support.media import tone_flv

ROOT = Path(__file__).resolve().parents[1]
SECRET = "accel-test-secret-accel-test-secret-0123"
BUILDABLE = shutil.which("cc") is not None and Path(sysconfig.get_paths()["include"], "Python.h").exists()


def _run(args: list[str], pure: bool, cwd: Path = ROOT, **env: str) -> str:
    environ = {**os.environ, "RELAY_PURE": "1" if pure else "", **env}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.skipif(not BUILDABLE, reason="no C compiler or Python headers: the pure core is all there is")
def test_the_compiled_core_runs_where_it_can_be_built() -> None:
    # scripts/setup builds it; a stale or missing build would leave the suite testing the pure core only.
    assert accel.state() == "compiled", accel.state()
    assert accel.running() == "compiled"
    assert Edge(EdgeConfig(secret=SECRET, http_listen=None)).status()["core"] == "compiled"


def test_both_cores_give_the_same_bytes(tmp_path: Path) -> None:
    audio = tone_flv(tmp_path / "tone.flv", seconds=2)
    args = ["-m", "tests.support.accel_oracle", str(audio)]
    compiled, pure = _run(args, pure=False), _run(args, pure=True)
    assert pure.startswith("# core: pure")
    if BUILDABLE:
        assert compiled.startswith("# core: compiled"), compiled
    checks = [line.split() for line in pure.splitlines()[1:]]
    assert [c[0] for c in checks] == ["session", "wire", "edge-128", "edge-4096"]
    assert int(checks[0][1]) >= 40 and int(checks[1][1]) >= 10  # the fuzz corpora, not an empty dir
    assert compiled.splitlines()[1:] == pure.splitlines()[1:]


@pytest.mark.parametrize("seed", [7, 42, 426])
def test_the_simulation_traces_are_the_same_bytes(seed: int) -> None:
    # Every core input and output of a seed's run, edges and apps, drops and partitions included.
    args = ["-m", "sim", "--seed", str(seed), "--trace"]
    compiled, pure = _run(args, pure=False), _run(args, pure=True)
    assert compiled.count("\n") > 500 and compiled.rstrip().endswith("0 violations")
    assert compiled == pure


@pytest.mark.skipif(not BUILDABLE, reason="no C compiler or Python headers: nothing compiled to go stale")
def test_a_build_that_no_longer_matches_its_sources_is_not_used(tmp_path: Path) -> None:
    copy = tmp_path / "relay_edge"
    shutil.copytree(ROOT / "relay_edge", copy, ignore=shutil.ignore_patterns("__pycache__"))
    probe = ["-c", "from relay_edge import accel; print(accel.state()); print(accel.running())"]

    def state() -> list[str]:
        return _run(probe, pure=False, cwd=tmp_path, PYTHONPATH=str(tmp_path)).splitlines()

    assert state() == ["compiled", "compiled"]
    manifest = copy / "compiled" / "manifest.json"
    built = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**built, "build": "cpython-27-plan9-pdp11"}))
    assert state() == [
        f"pure: compiled core built for cpython-27-plan9-pdp11, this is {accel.build_tag()}",
        "pure",
    ]
    manifest.write_text(json.dumps(built))
    with (copy / "outbox.py").open("a") as f:
        f.write("# edited after the build\n")
    assert state() == ["pure: compiled core is stale (outbox.py changed since; run scripts/accel)", "pure"]
    manifest.unlink()
    assert state() == ["pure: no compiled core (scripts/accel builds one)", "pure"]


def test_the_pure_core_carries_a_real_stream_end_to_end() -> None:
    # The suite's own end-to-end tests run the compiled core where it is built; this is the pure
    # one's: `relay-client test` (edge, app and a real RTMP publisher) in a RELAY_PURE=1 process.
    code = (
        "import sys; from relay_edge import accel; print(accel.running(), file=sys.stderr); "
        "from relay_client.cli import main; sys.argv = ['relay-client', 'test', '--json']; main()"
    )
    environ = {**os.environ, "RELAY_PURE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.stderr.startswith("pure\n"), done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["ok"] and [s["ok"] for s in report["steps"]] == [True] * 8, done.stdout
    assert report["frequency_hz"] == pytest.approx(440, abs=1) and report["gaps"] == 0
    assert report["duration_s"] > 2.5
