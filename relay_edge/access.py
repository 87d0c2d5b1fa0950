"""The static allow-list: publishers that can't take a new signed key per session.

``--allow-key NAME=STATICKEY`` (or ``RELAY_ALLOW_KEYS="NAME=KEY,NAME2=KEY2"``)
lets a publisher stream to ``rtmp://HOST:PORT/live/STATICKEY``; the stream is
then known as NAME, exactly as if it had published a signed key for NAME.

Static keys are secrets: they are compared in constant time (every entry is
compared, so the time taken doesn't say which one matched or how far a guess
got), held as SHA-256 digests so their length doesn't leak through the
comparison either, and never logged or shown in a ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

# A static key shorter than this is too easy to guess over the network.
MIN_STATIC_KEY = 16


def parse_allow_keys(values: Iterable[str]) -> dict[str, str]:
    """``["NAME=KEY", ...]`` (each may also be comma- or space-separated) -> ``{NAME: KEY}``.

    Raises ValueError naming the entry (by NAME only) for a missing ``=``, an
    empty NAME, a key shorter than :data:`MIN_STATIC_KEY` or a repeated NAME.
    """
    out: dict[str, str] = {}
    for value in values:
        for entry in value.replace(",", " ").split():
            name, sep, key = entry.partition("=")
            if not sep or not name:
                raise ValueError("allow-key entries must be NAME=STATICKEY")
            if len(key) < MIN_STATIC_KEY:
                raise ValueError(f"static key for {name!r} is shorter than {MIN_STATIC_KEY} characters")
            if name in out:
                raise ValueError(f"stream name {name!r} appears twice in the allow-list")
            out[name] = key
    return out


class AllowList:
    """Static keys by stream name; :meth:`match` finds the NAME of a presented key."""

    def __init__(self, entries: Mapping[str, str]) -> None:
        self._entries = [(name, _digest(key)) for name, key in entries.items()]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:  # names only, never keys
        return f"AllowList({len(self._entries)} entries)"

    def match(self, key: str) -> str | None:
        """The NAME whose static key is ``key``, or None. Constant time in ``key``."""
        presented = _digest(key)
        found: str | None = None
        for name, digest in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
