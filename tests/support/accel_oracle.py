"""What the pure and the compiled core must agree on, byte for byte (relay_edge/accel.py).

    python -m tests.support.accel_oracle AUDIO.flv

Prints one line per check: its name, how many cases it ran and a SHA-256 of everything they
produced. ``tests/test_accel.py`` runs it with ``RELAY_PURE=1`` and without, and requires the
same lines. The checks:

- ``session``: the fuzz corpus of the RTMP server session and chunk reader, fed in parts as the
  fuzzers feed it: every event, every byte to send back, every error;
- ``wire``: the link's fuzz corpus, decoded (frames or the error), and re-encoded;
- ``edge-128`` / ``edge-4096``: a real edge (``bench.edgepump``) fed 20 publishers of AAC at
  that chunk size: every link message it sends, with the Acks of each fed back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from relay_edge import accel, wire
from relay_edge.errors import ProtocolError, WireError

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
sys.path.insert(0, str(ROOT / "fuzz"))

import fuzz_session  # noqa: E402  (fuzz/: the session fuzzer's feeding, shared)


def show(value: Any) -> str:
    """A value as text with no addresses in it (a memoryview's repr has one)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = ", ".join(f"{f.name}={show(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return f"{type(value).__name__}({inner})"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


def session_case(data: bytes) -> Iterator[str]:
    try:
        yield from (show(out) for out in fuzz_session.outputs(data))
    except ProtocolError as exc:
        yield f"{type(exc).__name__}: {exc}"


def wire_case(data: bytes) -> Iterator[str]:
    try:
        frames = wire.decode_message(data)
    except WireError as exc:
        yield f"WireError: {exc}"
        return
    yield show(frames)
    yield wire.encode_many(frames).hex()


def edge_case(flv: Path, chunk: int) -> Iterator[str]:
    from bench import edgepump
    from bench.ingest import publisher_bytes
    from relay_edge import keys
    from tests.support.media import read_tags

    tags = read_tags(flv)
    # The keys differ between runs (they carry their expiry); the link never carries a key.
    streams = [
        publisher_bytes(tags, 2.0, chunk, keys.mint_key(edgepump.SECRET, f"s{i}", now=time.time()))
        for i in range(20)
    ]
    kept: list[bytes] = []
    secrets.token_hex = lambda n=6: "0" * 2 * n  # the edge's instance id, in every stream's uid

    async def run() -> int:
        return edgepump.run_once(streams, 3, kept)[1]

    yield f"tags {asyncio.run(run())}"
    yield from (m.hex() for m in kept)


def digest(name: str, cases: list[Callable[[], Iterator[str]]]) -> str:
    h = hashlib.sha256()
    for case in cases:
        for line in case():
            h.update(line.encode() + b"\n")
    return f"{name} {len(cases)} {h.hexdigest()}"


def corpus(*names: str) -> list[bytes]:
    return [p.read_bytes() for n in names for p in sorted((CORPUS / n).iterdir())]


def main(argv: list[str]) -> int:
    flv = Path(argv[0])
    print(f"# core: {accel.running()} ({accel.state()})")
    print(digest("session", [lambda d=d: session_case(d) for d in corpus("session", "chunk")]))
    print(digest("wire", [lambda d=d: wire_case(d) for d in corpus("wire")]))
    for chunk in (128, 4096):
        print(digest(f"edge-{chunk}", [lambda c=chunk: edge_case(flv, c)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
