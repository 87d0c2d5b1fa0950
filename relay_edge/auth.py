"""Link authentication, sans-I/O: the dialer proves it knows RELAY_SECRET without sending it.

The dialer sends ``X-Relay-Proof: 1.ROLE.TIMESTAMP.NONCE.SIGNATURE`` with the
WebSocket upgrade request; the acceptor checks it before upgrading (fresh,
never seen, right role, right signature) and answers, in its Hello, with
:func:`acceptor_proof` of that header, so the dialer knows it reached a peer
holding the same secret. ``docs/PROTOCOL.md`` has the exact messages and test
vectors.

Every purpose signs with its own key, derived from the secret with a label
(:func:`derive_key`), so a link proof can never pass for an acceptor proof or
a stream-key signature. Comparisons are constant-time; error messages never
contain the secret or a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from collections import deque
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .errors import AuthError
from .limits import DEFAULT_LIMITS

PROOF_HEADER = "X-Relay-Proof"
# 2: the signature also covers the target (host and path) the dialer dialed; a version-1
# proof (unbound) is refused as "unsupported proof version 1".
PROOF_VERSION = "2"
ROLES = ("edge", "client")

# Labels for derive_key: one key per purpose.
LINK_PROOF = "link-proof"
ACCEPTOR_PROOF = "acceptor-proof"
STREAM_KEY = "stream-key"

# Shortest RELAY_SECRET the CLIs start with. `openssl rand -base64 32` gives 44
# characters (256 bits); a short, human-made secret can be guessed offline from
# one captured stream key or link proof, which are HMACs of known text.
MIN_SECRET_CHARS = 32

NONCE_SIZE = 16  # 128 random bits: collisions are not a concern
# Proofs this long or longer are malformed before we parse them: the real
# thing is under 100 characters.
MAX_PROOF_CHARS = 256

_PROOF_RE = re.compile(
    r"2\.(?P<role>[a-z]{1,16})\.(?P<ts>0|[1-9][0-9]{0,11})"
    r"\.(?P<nonce>[A-Za-z0-9_-]{11,86})\.(?P<sig>[A-Za-z0-9_-]{43})"
)


def check_secret(secret: str) -> None:
    """ValueError, saying how to make a good one, if ``secret`` is shorter than MIN_SECRET_CHARS."""
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(
            f"RELAY_SECRET has {len(secret)} characters; at least {MIN_SECRET_CHARS} are needed. "
            "Make one with: openssl rand -base64 32 (and set the same value on the edge and the app)"
        )


def b64url(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url`; raises ValueError unless ``text`` is its canonical output."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not URL-safe base64") from None
    if b64url(data) != text:  # unused low bits set: another spelling of the same bytes
        raise ValueError("not canonical URL-safe base64")
    return data


def derive_key(secret: str, label: str) -> bytes:
    """The HMAC-SHA256 key for one purpose: ``HMAC(secret, "rtmp-relay/" + label)``."""
    if not secret:
        raise ValueError("the relay secret must not be empty")
    return hmac.new(secret.encode("utf-8"), b"rtmp-relay/" + label.encode("ascii"), hashlib.sha256).digest()


def _proof_message(body: str, target: str) -> bytes:
    # body is "VERSION.ROLE.TIMESTAMP.NONCE", exactly as sent; target is not sent, each side
    # knows it (the dialer from its URL, the acceptor from itself): see link_target.
    return b"rtmp-relay link proof\n" + body.encode("ascii") + b"\n" + target.encode("utf-8", "surrogatepass")


def target_of(host: str, path: str) -> str:
    """``"HOST/PATH"`` as a proof is bound to: the host lowercased without its port, the path as is.

    The port is left out because a TLS-terminating proxy's public port (443) is not the
    port the acceptor listens on.
    """
    hostname = urlsplit("//" + host).hostname or "" if host else ""
    return f"{hostname.lower()}{path or '/'}"


def link_target(url: str) -> str:
    """The target a dialer binds its proof to: ``wss://App.example:443/relay?x`` -> ``app.example/relay``."""
    parts = urlsplit(url)
    return target_of(parts.netloc.rpartition("@")[2], unquote(parts.path))


@dataclass(frozen=True, slots=True)
class Proof:
    """What a verified proof says: the dialer's role, its clock and its nonce."""

    role: str
    timestamp: int
    nonce: bytes


def make_proof(secret: str, role: str, now: float, nonce: bytes | None = None, *, target: str = "") -> str:
    """The ``X-Relay-Proof`` header value a dialer of ``role`` sends at ``now`` to ``target``.

    ``target`` is :func:`link_target` of the URL dialed: the acceptor checks the proof against
    its own host and path, so a proof captured at a TLS-terminating proxy can't be replayed to
    another host. ``nonce`` defaults to 16 random bytes; pass one only for test vectors.
    """
    if role not in ROLES:
        raise ValueError(f"role must be 'edge' or 'client', not {role!r}")
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_SIZE)
    if not 8 <= len(nonce) <= 64:
        raise ValueError(f"nonce must be 8 to 64 bytes, not {len(nonce)}")
    timestamp = math.floor(now)
    if not 0 <= timestamp < 10**12:  # the verifier's grammar: 1 to 12 digits
        raise ValueError(f"now must be unix seconds, not {now}")
    body = f"{PROOF_VERSION}.{role}.{timestamp}.{b64url(nonce)}"
    signature = hmac.new(
        derive_key(secret, LINK_PROOF), _proof_message(body, target), hashlib.sha256
    ).digest()
    return f"{body}.{b64url(signature)}"


class ProofVerifier:
    """Checks ``X-Relay-Proof`` values on the accepting side and refuses replays.

    Holds the nonces of accepted proofs for ``2 * max_skew`` seconds: a proof
    stamped up to ``max_skew`` in the future stays fresh that long after we
    first see it. At most ``max_remembered`` (``Limits.auth_max_remembered``) are held; past that,
    new proofs are refused until old ones expire (evicting one instead would
    let it be replayed).
    """

    def __init__(
        self,
        secret: str,
        max_skew: float = DEFAULT_LIMITS.auth_max_skew,
        max_remembered: int = DEFAULT_LIMITS.auth_max_remembered,
    ) -> None:
        self._key = derive_key(secret, LINK_PROOF)
        self.max_skew = max_skew
        self.max_remembered = max_remembered
        self._seen: set[bytes] = set()
        self._expiry: deque[tuple[float, bytes]] = deque()

    def __repr__(self) -> str:  # the key stays out of logs
        return f"ProofVerifier(max_skew={self.max_skew}, remembered={len(self._seen)})"

    def verify(self, value: str, now: float, *, role: str | None = None, target: str = "") -> Proof:
        """Check a proof at ``now`` for ``target`` (our host and path, :func:`target_of`); with
        ``role``, also that the dialer claims that role. A proof made for another target reads
        "bad signature".

        Raises :class:`AuthError` ("malformed proof", "bad signature",
        "stale proof: ...", "replayed proof", ...). Remembers the proof on success.
        """
        proof, body, signature = _parse_proof(value)
        expected = hmac.new(self._key, _proof_message(body, target), hashlib.sha256).digest()
        if not hmac.compare_digest(b64url(expected).encode("ascii"), signature.encode("ascii")):
            raise AuthError("bad signature")
        if role is not None and proof.role != role:
            raise AuthError(f"proof is for role {proof.role!r}, expected {role!r}")
        skew = now - proof.timestamp
        if abs(skew) > self.max_skew:
            raise AuthError(f"stale proof: {abs(skew):.0f} s from our clock, limit {self.max_skew:g} s")
        self._remember(proof.nonce, now)
        return proof

    def _remember(self, nonce: bytes, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            self._seen.discard(expiry.popleft()[1])
        if nonce in self._seen:
            raise AuthError("replayed proof")
        if len(self._seen) >= self.max_remembered:
            raise AuthError(
                f"too many links: {len(self._seen)} proofs in the last {2 * self.max_skew:g} s, "
                f"limit {self.max_remembered}"
            )
        self._seen.add(nonce)
        expiry.append((now + 2 * self.max_skew, nonce))


def _parse_proof(value: object) -> tuple[Proof, str, str]:
    """``(proof, signed body, signature text)``; AuthError if it isn't one."""
    if not isinstance(value, str) or len(value) > MAX_PROOF_CHARS:
        raise AuthError("malformed proof")
    version = value.partition(".")[0]
    if version != PROOF_VERSION and version.isascii() and version.isdigit() and len(version) <= 3:
        # A later format may differ past the version: say so rather than "malformed".
        raise AuthError(f"unsupported proof version {version}, we speak {PROOF_VERSION}")
    match = _PROOF_RE.fullmatch(value)
    if match is None:
        raise AuthError("malformed proof")
    if match["role"] not in ROLES:
        raise AuthError("malformed proof: unknown role")
    try:
        nonce = b64url_decode(match["nonce"])
    except ValueError:
        raise AuthError("malformed proof") from None
    body = value[: match.start("sig") - 1]
    return Proof(match["role"], int(match["ts"]), nonce), body, match["sig"]


def acceptor_proof(secret: str, dialer_proof: str) -> str:
    """What the acceptor puts in its Hello.proof: an HMAC of the dialer's proof.

    It is fresh because the dialer's proof was (its nonce is single-use), and
    it has its own key, so echoing the dialer's proof can never produce it.
    """
    message = b"rtmp-relay acceptor proof\n" + dialer_proof.encode("utf-8", "surrogatepass")
    return b64url(hmac.new(derive_key(secret, ACCEPTOR_PROOF), message, hashlib.sha256).digest())


def verify_acceptor_proof(secret: str, dialer_proof: str, value: str) -> None:
    """The dialer's check of the acceptor's Hello.proof; raises :class:`AuthError`."""
    if not value:
        raise AuthError("the acceptor sent no proof")
    expected = acceptor_proof(secret, dialer_proof).encode("ascii")
    if not hmac.compare_digest(expected, value.encode("utf-8", "surrogatepass")):
        raise AuthError("bad acceptor proof: the peer does not hold our secret")
