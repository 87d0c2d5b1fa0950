"""Fuzz stream keys, publish names, file names and link proofs: text a publisher or dialer controls."""

from __future__ import annotations

import _harness

from relay_edge import auth, keys
from relay_edge.errors import AuthError

SECRET = _harness.SECRET


def test_one(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    key, query = keys.split_publish_name(text)
    assert len(query) <= keys.MAX_QUERY_FIELDS
    try:
        name = keys.verify_key(SECRET, key, _harness.NOW)
    except AuthError as exc:
        assert SECRET not in str(exc)
    else:  # a forgery would need the secret: only keys we minted verify
        assert keys.is_valid_name(name)
    safe = keys.safe_filename(text)
    assert 0 < len(safe) <= keys.MAX_FILENAME
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert safe not in (".", "..") and not safe.startswith((".", "-"))
    verifier = auth.ProofVerifier(SECRET)
    try:
        verifier.verify(text, _harness.NOW)
    except AuthError as exc:
        assert SECRET not in str(exc)


if __name__ == "__main__":
    _harness.main(test_one)
