"""Signed stream keys ``NAME.EXPIRY.SIGNATURE``, publish-name parsing and safe file names.

A publisher streams to ``rtmp://RTMP_HOST:RTMP_PORT/live/KEY``. The edge
accepts the publish only if KEY verifies with RELAY_SECRET; from then on the
stream is known by NAME alone (on the link, in status pages, in file names),
so the signature never travels further than the edge.

- NAME: 1 to 64 characters of ``A-Z a-z 0-9 _ -`` (no dots, so the key splits
  unambiguously).
- EXPIRY: unix seconds, decimal, no sign or leading zeros.
- SIGNATURE: URL-safe base64, unpadded, of the first 128 bits of
  HMAC-SHA256(derive_key(secret, "stream-key"), "NAME.EXPIRY").
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable
from urllib.parse import parse_qsl

from .auth import STREAM_KEY, b64url, derive_key
from .errors import AuthError

DEFAULT_TTL = 86400.0
SIGNATURE_BYTES = 16  # 128 bits: forging one is 2**128 guesses at the edge
MAX_EXPIRY = 10**12 - 1  # 12 digits: year 33658, keeps the key short and parsing bounded
MAX_NAME = 64
# A publish name carries at most this many ?query fields; more are ignored.
MAX_QUERY_FIELDS = 32

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY_RE = re.compile(
    r"(?P<name>[A-Za-z0-9_-]{1,64})\.(?P<expiry>0|[1-9][0-9]{0,11})\.(?P<sig>[A-Za-z0-9_-]{22})"
)
_MAX_KEY_CHARS = 64 + 1 + 12 + 1 + 22


def is_valid_name(name: str) -> bool:
    """True if ``name`` can be the NAME of a stream key."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def _signature(secret: str, name: str, expiry: int) -> str:
    message = f"{name}.{expiry}".encode("ascii")
    mac = hmac.new(derive_key(secret, STREAM_KEY), message, hashlib.sha256).digest()
    return b64url(mac[:SIGNATURE_BYTES])


def mint_key(secret: str, name: str, ttl: float = DEFAULT_TTL, *, now: float) -> str:
    """A stream key for ``name`` valid for ``ttl`` seconds from ``now``.

    Raises ValueError for a NAME outside ``[A-Za-z0-9_-]{1,64}`` or a
    non-positive ``ttl``.
    """
    if not is_valid_name(name):
        raise ValueError(f"stream name must be 1-{MAX_NAME} characters of A-Z a-z 0-9 _ -, not {name!r}")
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, not {ttl}")
    expiry = int(now + ttl)
    if expiry > MAX_EXPIRY:
        raise ValueError(f"expiry {expiry} is past {MAX_EXPIRY}")
    return f"{name}.{expiry}.{_signature(secret, name, expiry)}"


def verify_key(secret: str, key: str, now: float, *, live: Callable[[str], int | None] | None = None) -> str:
    """The NAME of a valid, unexpired ``key``; raises :class:`AuthError` saying why not.

    Checked in this order: form, signature, expiry, so a tampered expiry
    reads "bad signature". Messages name the stream but never the signature.

    ``live(NAME)`` gives the EXPIRY of the key NAME's live stream was published
    with (None if none is live): that same key is accepted even once expired, as
    it continues the stream. LiveKit's egress retries with the URL it started
    with for as long as its session lasts; a new stream still needs a valid key.
    """
    match = _KEY_RE.fullmatch(key) if isinstance(key, str) and len(key) <= _MAX_KEY_CHARS else None
    if match is None:
        raise _malformed(key)
    name, expiry = match["name"], int(match["expiry"])
    expected = _signature(secret, name, expiry)
    if not hmac.compare_digest(expected.encode("ascii"), match["sig"].encode("ascii")):
        raise AuthError(f"bad signature on stream key for {name!r}")
    if now >= expiry and (live is None or live(name) != expiry):
        raise AuthError(f"stream key for {name!r} expired {now - expiry:.0f} s ago")
    return name


def key_expiry(key: str) -> int | None:
    """EXPIRY of a ``NAME.EXPIRY.SIGNATURE`` key (unverified), None for anything else."""
    match = _KEY_RE.fullmatch(key) if len(key) <= _MAX_KEY_CHARS else None
    return int(match["expiry"]) if match else None


def _malformed(key: object) -> AuthError:
    if is_valid_name(key):  # type: ignore[arg-type]
        return AuthError(f"stream key {key!r} is not signed: expected NAME.EXPIRY.SIGNATURE")
    return AuthError(
        f"malformed stream key: expected NAME.EXPIRY.SIGNATURE with NAME 1-{MAX_NAME} of A-Za-z0-9_-"
    )


def split_publish_name(raw: str) -> tuple[str, dict[str, str]]:
    """``"KEY?a=1&b=2"`` -> ``("KEY", {"a": "1", "b": "2"})``.

    RTMP publishers may append a query to the stream name (OBS and ffmpeg pass
    it through). Values are percent-decoded; a repeated field keeps its last
    value; past :data:`MAX_QUERY_FIELDS` fields the rest is ignored.
    """
    name, _, query = raw.partition("?")
    fields = "&".join(query.split("&", MAX_QUERY_FIELDS)[:MAX_QUERY_FIELDS])
    return name, dict(parse_qsl(fields, keep_blank_values=True))


# --- file names ------------------------------------------------------------------------

MAX_FILENAME = MAX_NAME
_HASH_CHARS = 12  # hex digits of SHA-256: 48 bits keep distinct names apart
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]|\.{2,}")
# Device names Windows refuses as a file name with any extension.
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))]
)


def safe_filename(name: str) -> str:
    """``name`` made safe as one file name component; never empty, at most 64 characters.

    Names already made only of ``A-Z a-z 0-9 . _ -`` (no leading dot or dash,
    no "..", not a Windows device name, at most 64 characters) come back
    unchanged. Anything else is NFKC-normalised, every other character becomes
    "_", and ``~`` plus 12 hex digits of the SHA-256 of the original name are
    appended. Unchanged names never contain "~", so distinct names stay
    distinct. (Names differing only in case collide on case-insensitive file
    systems.)
    """
    cleaned = _UNSAFE.sub("_", unicodedata.normalize("NFKC", name))
    cleaned = cleaned.lstrip(".-").rstrip(".")
    if cleaned.partition(".")[0].upper() in _RESERVED:
        cleaned = "_" + cleaned
    if cleaned == name and 0 < len(name) <= MAX_FILENAME:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    base = cleaned[: MAX_FILENAME - 1 - _HASH_CHARS].rstrip(".") or "stream"
    return f"{base}~{digest}"
