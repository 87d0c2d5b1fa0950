"""The optional compiled core: mypyc builds of the per-tag modules, used when present and current.

``scripts/accel`` compiles :data:`MODULES` (the same source, unchanged) with mypyc into
``relay_edge/compiled/``, with a manifest of each source's SHA-256. At import, the two package
``__init__`` files put those builds first on their ``__path__``, but only when every source
still matches its manifest entry and the build is for this interpreter: a stale build never
runs. ``RELAY_PURE=1`` keeps the pure-Python path. :func:`state` says which one runs, and why;
``relay-edge serve`` logs it and ``/api/rtmp/status`` shows it.

The pure path is the reference: ``tests/test_accel.py`` runs both on the same inputs (the
simulation's traces, an edge's link messages, the chunk reader and session on the fuzz corpus)
and requires identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
COMPILED = PACKAGE / "compiled"
MANIFEST = COMPILED / "manifest.json"

#: The per-tag path, from the publisher's bytes to the link's messages and its acks.
MODULES = (
    "relay_edge/rtmp/chunk.py",
    "relay_edge/rtmp/events.py",
    "relay_edge/rtmp/messages.py",
    "relay_edge/rtmp/session.py",
    "relay_edge/edgecore.py",
    "relay_edge/coresink.py",
    "relay_edge/edgestream.py",
    "relay_edge/flv.py",
    "relay_edge/linkevents.py",
    "relay_edge/msgpack_reader.py",
    "relay_edge/outbox.py",
    "relay_edge/wire.py",
)


def source_digests() -> dict[str, str]:
    """SHA-256 of each module's source, as the manifest records them."""
    root = PACKAGE.parent
    return {m: hashlib.sha256((root / m).read_bytes()).hexdigest() for m in MODULES}


def build_tag() -> str:
    """What a build must match: the interpreter's ABI (``cpython-311``) and platform."""
    return f"{sys.implementation.cache_tag}-{sys.platform}-{os.uname().machine}"


@cache
def state() -> str:
    """``"compiled"``, or ``"pure: <why>"`` (RELAY_PURE=1, not built, stale...)."""
    if os.environ.get("RELAY_PURE", "") not in ("", "0"):
        return "pure: RELAY_PURE is set"
    problem = build_problem()
    return f"pure: {problem}" if problem else "compiled"


def build_problem() -> str | None:
    """Why the build in ``relay_edge/compiled/`` can't run here, or None if it is current."""
    try:
        manifest = json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return "no compiled core (scripts/accel builds one)"
    except (OSError, ValueError) as exc:
        return f"unreadable {MANIFEST.name}: {exc}"
    if manifest.get("build") != build_tag():
        return f"compiled core built for {manifest.get('build')}, this is {build_tag()}"
    built = manifest.get("sources", {})
    stale = [m for m, digest in source_digests().items() if built.get(m) != digest]
    if stale:
        names = ", ".join(Path(m).name for m in stale)
        return f"compiled core is stale ({names} changed since; run scripts/accel)"
    return None


def use_compiled(path: list[str], subpackage: str = "") -> None:
    """Put the compiled modules of ``relay_edge[.subpackage]`` first on its ``__path__``."""
    if state() == "compiled":
        path.insert(0, str(COMPILED / "relay_edge" / subpackage))


def running() -> str:
    """Which core the imported modules are: ``"compiled"`` or ``"pure"`` (checks, not trusts)."""
    from . import edgecore

    return "pure" if str(edgecore.__file__).endswith(".py") else "compiled"
