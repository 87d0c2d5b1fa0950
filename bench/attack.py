"""The pre-auth attack of issue #13 against the relay and nginx-rtmp: RSS, /healthz latency, closes.

    .venv/bin/python -m bench.attack relay nginx [--seconds 20] [--python-path DIR]

``--python-path`` runs the relay from another source tree (e.g. ``git archive main``) for a
before/after comparison. Loopback only; the attack is bounded in connections and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from tests.support.attack import scenario


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="+", choices=["relay", "nginx"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--python-path", default=None, help="run the relay from this source tree")
    args = parser.parse_args()
    for target in args.targets:
        with tempfile.TemporaryDirectory(prefix=f"attack-{target}-") as tmp:
            outcome = await scenario(Path(tmp), target, seconds=args.seconds, python_path=args.python_path)
            print(outcome.line(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
