"""Build the optional compiled core (see relay_edge/accel.py) with mypyc.

    python scripts/build_accel.py            build relay_edge/compiled/ unless it is current
    python scripts/build_accel.py --force    build it anyway
    python scripts/build_accel.py --clean    remove it: the pure-Python core runs

Needs mypy (the ``accel`` extra), a C compiler and the Python headers. The build goes to a
staging directory and replaces ``relay_edge/compiled/`` only once it is complete, with a
manifest of the sources it was built from (their SHA-256), so an edited source never runs
against an old build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relay_edge import accel  # noqa: E402  (only accel itself: no compiled module is imported)


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import Distribution

    digests = accel.source_digests()
    staging = accel.COMPILED.with_name("compiled.new")
    shutil.rmtree(staging, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(ROOT)  # mypy names the modules by their paths from here
        extensions = mypycify(
            ["--config-file", str(ROOT / "pyproject.toml"), *accel.MODULES],
            group_name="relay_edge.core",  # the shared library lives inside the package
            target_dir=tmp,
            opt_level="3",
        )
        # build_ext alone: setup() would read pyproject.toml with the venv's older setuptools.
        command = Distribution({"name": "rtmp-relay-accel", "ext_modules": extensions}).get_command_obj(
            "build_ext"
        )
        command.build_lib, command.build_temp = str(staging), tmp
        command.ensure_finalized()
        command.run()
    if accel.source_digests() != digests:
        shutil.rmtree(staging)
        raise SystemExit("build_accel: a source changed during the build; run it again")
    manifest = {"build": accel.build_tag(), "sources": digests}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(accel.COMPILED, ignore_errors=True)
    staging.rename(accel.COMPILED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="build even if the build is current")
    parser.add_argument("--clean", action="store_true", help="remove the build")
    args = parser.parse_args()
    if args.clean:
        shutil.rmtree(accel.COMPILED, ignore_errors=True)
        print("build_accel: removed; the pure-Python core runs")
        return 0
    if accel.build_problem() is None and not args.force:
        print("build_accel: the compiled core is current")
        return 0
    build()
    print(f"build_accel: built {len(accel.MODULES)} modules into {accel.COMPILED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
