"""relay_edge.auth: the doc's vectors, proof checks in order, replay memory, acceptor proofs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_edge import auth
from relay_edge.auth import (
    ProofVerifier,
    acceptor_proof,
    b64url,
    b64url_decode,
    derive_key,
    make_proof,
    verify_acceptor_proof,
)
from relay_edge.errors import AuthError

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
SECRET = "correct horse battery staple"
NOW = 1_700_000_000.25
NONCE = bytes(range(16))


def doc_block(marker: str) -> Any:
    match = re.search(rf"<!-- {marker} -->\s*```json\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.S)
    assert match, f"no ```json block after <!-- {marker} --> in {DOC}"
    return json.loads(match.group(1))


VECTORS = doc_block("vectors:auth")


# --- the doc's vectors -------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["link-proof", "acceptor-proof", "stream-key"])
def test_doc_derived_keys(label: str) -> None:
    assert derive_key(VECTORS["secret"], label).hex() == VECTORS["derived_keys"][label]


def test_doc_proof_vector() -> None:
    v = VECTORS["proof"]
    value = make_proof(VECTORS["secret"], v["role"], v["now"], bytes.fromhex(v["nonce"]), target=v["target"])
    assert value == v["value"]
    body = value.rpartition(".")[0]
    assert auth._proof_message(body, v["target"]) == v["signed"].encode()
    proof = ProofVerifier(VECTORS["secret"]).verify(v["value"], v["now"], role=v["role"], target=v["target"])
    assert (proof.role, proof.timestamp, proof.nonce) == (v["role"], int(v["now"]), bytes.fromhex(v["nonce"]))


def test_doc_acceptor_proof_vector() -> None:
    dialer = VECTORS["proof"]["value"]
    expected = VECTORS["acceptor_proof"]["value"]
    assert VECTORS["acceptor_proof"]["signed"] == "rtmp-relay acceptor proof\n" + dialer
    assert acceptor_proof(VECTORS["secret"], dialer) == expected
    verify_acceptor_proof(VECTORS["secret"], dialer, expected)


def test_vectors_use_this_files_constants() -> None:
    assert (VECTORS["secret"], VECTORS["proof"]["now"], VECTORS["proof"]["nonce"]) == (
        SECRET,
        NOW,
        NONCE.hex(),
    )


# --- make_proof ------------------------------------------------------------------------------------


def test_proof_shape() -> None:
    value = make_proof(SECRET, "client", NOW)
    version, role, ts, nonce, sig = value.split(".")
    assert (version, role, ts) == ("2", "client", "1700000000")
    assert len(b64url_decode(nonce)) == auth.NONCE_SIZE and len(b64url_decode(sig)) == 32
    assert SECRET not in value
    assert make_proof(SECRET, "client", NOW) != value  # fresh nonce each time


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "admin"}, "role must be 'edge' or 'client'"),
        ({"secret": ""}, "the relay secret must not be empty"),
        ({"nonce": b"short"}, "nonce must be 8 to 64 bytes, not 5"),
        ({"nonce": bytes(65)}, "nonce must be 8 to 64 bytes, not 65"),
    ],
)
def test_make_proof_refuses_misuse(kwargs: dict[str, Any], message: str) -> None:
    args = {"secret": SECRET, "role": "edge", "now": NOW, "nonce": None, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        make_proof(**args)


# --- the target ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("wss://App.Example.com/relay", "app.example.com/relay"),
        ("wss://app.example.com:443/relay?x=1", "app.example.com/relay"),
        ("ws://127.0.0.1:8000/link", "127.0.0.1/link"),
        ("ws://[::1]:8000/link", "::1/link"),
        ("wss://app.example.com", "app.example.com/"),
        ("wss://app.example.com/a%20b", "app.example.com/a b"),
    ],
)
def test_link_target_is_host_without_port_and_path(url: str, target: str) -> None:
    assert auth.link_target(url) == target


def test_a_proof_verifies_only_for_its_target() -> None:
    value = make_proof(SECRET, "edge", NOW, NONCE, target="app-a.example.com/relay")
    for other in ("app-b.example.com/relay", "app-a.example.com/link", ""):
        with pytest.raises(AuthError, match="bad signature"):
            ProofVerifier(SECRET).verify(value, NOW, target=other)
    assert ProofVerifier(SECRET).verify(value, NOW, target="app-a.example.com/relay").nonce == NONCE


def test_the_acceptor_target_prefers_its_configured_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from relay_edge.web import acceptor_target

    monkeypatch.delenv("RELAY_PUBLIC_HOST", raising=False)
    monkeypatch.delenv("RENDER_EXTERNAL_URL", raising=False)
    assert acceptor_target("App.Example.com:8443", "/relay") == "app.example.com/relay"
    monkeypatch.setenv("RENDER_EXTERNAL_URL", "https://myapp.onrender.com")
    assert acceptor_target("replayed.example.com", "/relay") == "myapp.onrender.com/relay"  # not the Host
    monkeypatch.setenv("RELAY_PUBLIC_HOST", "relay.example.net")
    assert acceptor_target("replayed.example.com", "/relay") == "relay.example.net/relay"


# --- ProofVerifier: each check, in order -------------------------------------------------------


def proof(role: str = "edge", now: float = NOW, nonce: bytes = NONCE, secret: str = SECRET) -> str:
    return make_proof(secret, role, now, nonce)


def test_verify_returns_what_the_proof_says() -> None:
    got = ProofVerifier(SECRET).verify(proof(), NOW + 1)
    assert got == auth.Proof("edge", 1_700_000_000, NONCE)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (0, True),
        (60, True),
        (-60, True),
        (60.9, False),
        (61.0, False),
        (-59.75, True),
        (-60.25, False),
        (3600, False),
    ],
)
def test_skew_window_is_inclusive(offset: float, accepted: bool) -> None:
    # The proof carries int(NOW) = NOW - 0.25; the window is |now - timestamp| <= 60.
    verifier = ProofVerifier(SECRET, max_skew=60)
    now = int(NOW) + offset
    if accepted:
        verifier.verify(proof(), now)
    else:
        with pytest.raises(AuthError, match="stale proof"):
            verifier.verify(proof(), now)


def test_stale_message_carries_the_numbers() -> None:
    with pytest.raises(AuthError) as caught:
        ProofVerifier(SECRET).verify(proof(), int(NOW) + 75)
    assert str(caught.value) == "stale proof: 75 s from our clock, limit 60 s"
    with pytest.raises(AuthError, match=r"^stale proof: 90 s from our clock, limit 30 s$"):
        ProofVerifier(SECRET, max_skew=30).verify(proof(), int(NOW) - 90)


def test_replayed_proof_is_refused() -> None:
    verifier = ProofVerifier(SECRET)
    verifier.verify(proof(), NOW)
    with pytest.raises(AuthError, match=r"^replayed proof$"):
        verifier.verify(proof(), NOW + 30)
    # Same nonce is the replay, whoever re-signs it: a fresh nonce passes.
    verifier.verify(proof(nonce=bytes(16)), NOW + 30)


def test_replay_memory_expires_and_stays_bounded() -> None:
    verifier = ProofVerifier(SECRET, max_skew=60)
    for i in range(1000):
        now = NOW + i * 10  # one link every 10 s for nearly 3 hours
        verifier.verify(proof(now=now, nonce=i.to_bytes(16, "big")), now)
    assert len(verifier._seen) <= 2 * 60 / 10 + 1
    assert len(verifier._expiry) == len(verifier._seen)


def test_a_full_replay_memory_refuses_rather_than_forgets() -> None:
    verifier = ProofVerifier(SECRET, max_skew=60, max_remembered=3)
    for i in range(3):
        verifier.verify(proof(nonce=bytes([i]) * 16), NOW)
    with pytest.raises(AuthError, match=r"^too many links: 3 proofs in the last 120 s, limit 3$"):
        verifier.verify(proof(nonce=b"\x09" * 16), NOW)
    later = NOW + 121  # the first three expired
    verifier.verify(proof(now=later, nonce=b"\x09" * 16), later)


def test_wrong_secret_is_a_bad_signature() -> None:
    with pytest.raises(AuthError, match=r"^bad signature$"):
        ProofVerifier("another secret").verify(proof(), NOW)


def test_wrong_role_is_refused_after_the_signature() -> None:
    verifier = ProofVerifier(SECRET)
    with pytest.raises(AuthError, match=r"^proof is for role 'edge', expected 'client'$"):
        verifier.verify(proof(role="edge"), NOW, role="client")
    assert verifier.verify(proof(role="client"), NOW, role="client").role == "client"


def _swap(value: str, index: int, new: str) -> str:
    parts = value.split(".")
    parts[index] = new
    return ".".join(parts)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda p: _swap(p, 1, "client"), "bad signature"),  # role
        (lambda p: _swap(p, 2, "1700000001"), "bad signature"),  # timestamp
        (lambda p: _swap(p, 3, b64url(bytes(16))), "bad signature"),  # nonce
        (lambda p: _swap(p, 4, b64url(bytes(32))), "bad signature"),  # signature
        (lambda p: p[:-1] + ("A" if p[-1] != "A" else "B"), "bad signature"),
        (lambda p: _swap(p, 4, _swap(p, 4, "x").split(".")[4] * 43), "bad signature"),
        (lambda p: _swap(p, 0, "1"), "unsupported proof version 1, we speak 2"),  # unbound, before #13
        (lambda p: _swap(p, 0, "02"), "unsupported proof version 02, we speak 2"),
        (lambda p: _swap(p, 1, "admin"), "malformed proof: unknown role"),
        (lambda p: _swap(p, 2, "01700000000"), "malformed proof"),  # leading zero
        (lambda p: _swap(p, 2, "+1700000000"), "malformed proof"),
        (lambda p: _swap(p, 2, "１７００"), "malformed proof"),  # fullwidth digits
        (lambda p: _swap(p, 3, "AAECAwQFBgcICQoLDA0ODx"), "malformed proof"),  # non-canonical base64
        (lambda p: _swap(p, 3, "AAECAwQ"), "malformed proof"),  # nonce under 8 bytes
        (lambda p: _swap(p, 3, "AAECAwQFBgcICQoLDA0ODw=="), "malformed proof"),  # padding
        (lambda p: p + ".x", "malformed proof"),
        (lambda p: p + "\n", "malformed proof"),
        (lambda p: " " + p, "malformed proof"),
        (lambda p: p.rpartition(".")[0], "malformed proof"),
        (lambda p: p.replace(".", ":"), "malformed proof"),
        (lambda p: "", "malformed proof"),
        (lambda p: "x" * 10_000, "malformed proof"),
    ],
)
def test_tampered_or_malformed_proof_is_refused(tamper: Any, message: str) -> None:
    original = proof()
    with pytest.raises(AuthError) as caught:
        ProofVerifier(SECRET).verify(tamper(original), NOW)
    assert str(caught.value) == message
    assert SECRET not in str(caught.value)
    assert original.rpartition(".")[2] not in str(caught.value)


def test_verifier_repr_hides_the_key() -> None:
    verifier = ProofVerifier(SECRET)
    assert repr(verifier) == "ProofVerifier(max_skew=60.0, remembered=0)"


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300), st.floats(allow_nan=False, allow_infinity=False))
def test_arbitrary_text_raises_only_auth_error(value: str, now: float) -> None:
    with pytest.raises(AuthError):
        ProofVerifier(SECRET).verify(value, now)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(auth.ROLES),
    st.integers(0, 10**12 - 1),
    st.binary(min_size=8, max_size=64),
    st.text(min_size=1, max_size=50),
)
def test_any_proof_verifies_with_its_secret_only(role: str, ts: int, nonce: bytes, secret: str) -> None:
    value = make_proof(secret, role, ts, nonce)
    assert ProofVerifier(secret).verify(value, ts, role=role) == auth.Proof(role, ts, nonce)
    with pytest.raises(AuthError, match="bad signature"):
        ProofVerifier(secret + "x").verify(value, ts)


# --- acceptor proof ------------------------------------------------------------------------------


def test_acceptor_proof_verifies_for_its_dialer_proof_only() -> None:
    dialer = proof()
    answer = acceptor_proof(SECRET, dialer)
    verify_acceptor_proof(SECRET, dialer, answer)
    with pytest.raises(AuthError, match="bad acceptor proof"):
        verify_acceptor_proof(SECRET, proof(nonce=bytes(16)), answer)  # another dialer proof
    with pytest.raises(AuthError, match="bad acceptor proof"):
        verify_acceptor_proof(SECRET, dialer, acceptor_proof("other", dialer))  # another secret


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "the acceptor sent no proof"),
        ("x", "bad acceptor proof: the peer does not hold our secret"),
        ("é" * 43, "bad acceptor proof: the peer does not hold our secret"),  # non-ASCII: no TypeError
        ("\udcff", "bad acceptor proof: the peer does not hold our secret"),  # lone surrogate
    ],
)
def test_bad_acceptor_proofs_are_refused_cleanly(value: str, message: str) -> None:
    with pytest.raises(AuthError) as caught:
        verify_acceptor_proof(SECRET, proof(), value)
    assert str(caught.value) == message


def test_echoing_the_dialer_proof_or_its_signature_is_not_an_acceptor_proof() -> None:
    dialer = proof()
    for echo in (dialer, dialer.rpartition(".")[2]):
        with pytest.raises(AuthError):
            verify_acceptor_proof(SECRET, dialer, echo)


# --- helpers --------------------------------------------------------------------------------------


@given(st.binary(max_size=100))
def test_b64url_round_trips_without_padding(data: bytes) -> None:
    text = b64url(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == data


@pytest.mark.parametrize("text", ["A", "AB==", "AB=", "A+B/", "AB C", "AR"])
def test_b64url_decode_refuses_non_canonical_text(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


def test_purposes_have_distinct_keys() -> None:
    keys = {derive_key(SECRET, label) for label in (auth.LINK_PROOF, auth.ACCEPTOR_PROOF, auth.STREAM_KEY)}
    assert len(keys) == 3
