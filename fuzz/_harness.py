"""Shared plumbing for the atheris harnesses: instrumented imports, a fixed clock, the allowed errors.

Every harness feeds libFuzzer's bytes to one parser and lets only that
parser's documented errors through; anything else (an IndexError, a
RecursionError, a MemoryError, a failed round-trip assertion) is a finding and
crashes the run with the input saved as ``crash-*``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["relay_edge"]):
    import relay_edge  # noqa: F401  (instrumented here so every harness gets coverage feedback)
    from relay_edge import auth, flv, keys, wire  # noqa: F401
    from relay_edge.rtmp import amf0, chunk, handshake, session  # noqa: F401

from relay_edge.limits import Limits  # noqa: E402  (after the instrumented imports)

# Small limits so the fuzzer reaches every bound in a few bytes instead of megabytes.
FUZZ_LIMITS = Limits(
    max_chunk_size=4096,
    max_message_size=64 * 1024,
    max_partial_bytes=128 * 1024,
    max_chunk_streams=8,
    max_message_streams=4,
    amf_max_depth=16,
    amf_max_string=1024,
    amf_max_items=64,
    ws_max_message=256 * 1024,
    wire_max_str=1024,
    wire_max_items=64,
    wire_max_frames=64,
)
NOW = 1_700_000_000.0
SECRET = "fuzz-secret-0123456789"


def main(test_one: Callable[[bytes], None]) -> None:
    """Run ``test_one`` under libFuzzer with the command line's options (see fuzz/run)."""
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


def splits(data: bytes) -> list[bytes]:
    """``data`` cut into pieces of a size its last byte picks: the same bytes, fed in parts.

    1..17 bytes for short inputs (split headers are where chunk parsers break),
    64..1088 for inputs over 1 KiB so long inputs stay fast.
    """
    if not data:
        return [data]
    step = (data[-1] % 17 + 1) * (1 if len(data) < 1024 else 64)
    return [data[i : i + step] for i in range(0, len(data), step)]
