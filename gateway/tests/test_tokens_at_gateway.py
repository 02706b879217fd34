"""Every way a session token can be wrong, each refused with the exact status and code."""
from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from conftest import Signer, served_app
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _get(client: Any, token: str, path: str = "/v1/auth/me") -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def _assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]


def test_valid_token_is_forwarded(client: Any, signer: Signer, upstream: Any) -> None:
    response = _get(client, signer.token())
    assert response.status_code == 200
    assert response.get_json()["path"] == "/v1/auth/me"


def test_no_token(client: Any) -> None:
    _assert_error(client.get("/v1/auth/me"), 401, "unauthenticated")


def test_alg_none_refused(client: Any, signer: Signer) -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT", "kid": signer.kid}).encode())
    payload = base64.urlsafe_b64encode(json.dumps(signer.claims()).encode())
    token = header.rstrip(b"=").decode() + "." + payload.rstrip(b"=").decode() + "."
    _assert_error(_get(client, token), 401, "unauthenticated")


def test_hs256_signed_with_the_public_key_refused(client: Any, signer: Signer) -> None:
    public_pem = signer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac

    header = {"alg": "HS256", "typ": "JWT", "kid": signer.kid}
    segments = [
        base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"="),
        base64.urlsafe_b64encode(json.dumps(signer.claims()).encode()).rstrip(b"="),
    ]
    signing_input = b".".join(segments)
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
    _assert_error(_get(client, token), 401, "unauthenticated")


def test_unknown_kid_refused(client: Any, signer: Signer) -> None:
    other = Signer(Ed25519PrivateKey.generate(), "kid-unknown")
    _assert_error(_get(client, other.token()), 401, "unauthenticated")


def test_right_kid_wrong_key_refused(client: Any, signer: Signer) -> None:
    forger = Signer(Ed25519PrivateKey.generate(), signer.kid)
    _assert_error(_get(client, forger.token()), 401, "unauthenticated")


def test_expired_token_is_session_expired(client: Any, signer: Signer) -> None:
    now = int(time.time())
    _assert_error(_get(client, signer.token(iat=now - 700, exp=now - 60)), 401, "session_expired")


def test_small_leeway_accepted(client: Any, signer: Signer) -> None:
    now = int(time.time())
    assert _get(client, signer.token(iat=now - 600, exp=now - 2)).status_code == 200


@pytest.mark.parametrize("claim,value", [("iss", "someone-else"), ("aud", "another-app")])
def test_wrong_issuer_or_audience(client: Any, signer: Signer, claim: str, value: str) -> None:
    _assert_error(_get(client, signer.token(**{claim: value})), 401, "unauthenticated")


def test_tampered_payload_refused(client: Any, signer: Signer) -> None:
    header, _payload, signature = signer.token(role="patient").split(".")
    forged = base64.urlsafe_b64encode(json.dumps(signer.claims(role="admin")).encode()).rstrip(b"=").decode()
    _assert_error(_get(client, f"{header}.{forged}.{signature}", "/v1/users"), 401, "unauthenticated")


@pytest.mark.parametrize("claim", ["sub", "exp", "sid", "iat", "jti", "iss", "aud"])
def test_missing_required_claim(client: Any, signer: Signer, claim: str) -> None:
    _assert_error(_get(client, signer.token(**{claim: None})), 401, "unauthenticated")


def test_garbage_token(client: Any) -> None:
    _assert_error(_get(client, "not.a.jwt"), 401, "unauthenticated")
    _assert_error(_get(client, "x" * 5000), 401, "unauthenticated")


def test_jwks_refreshed_on_unknown_kid_once_per_cooldown(gateway_config: dict[str, Any], signer: Signer) -> None:

    calls = {"n": 0}
    rotated = Signer(Ed25519PrivateKey.generate(), "kid-2")

    def fetch() -> dict[str, Any]:
        calls["n"] += 1
        # After the first fetch the issuer has rotated: both keys published.
        keys = signer.jwks()["keys"] + (rotated.jwks()["keys"] if calls["n"] > 1 else [])
        return {"keys": keys}

    app = served_app({**gateway_config, "JWKS_FETCHER": fetch, "JWKS_REFRESH_COOLDOWN": 3600})
    client = app.test_client()
    assert _get(client, signer.token()).status_code == 200
    assert calls["n"] == 1
    # rotated kid unknown → one refresh, then accepted
    assert _get(client, rotated.token()).status_code == 200
    assert calls["n"] == 2
    # another unknown kid inside the cooldown does not refetch
    stranger = Signer(Ed25519PrivateKey.generate(), "kid-3")
    _assert_error(_get(client, stranger.token()), 401, "unauthenticated")
    assert calls["n"] == 2
    app.extensions["revocations"].stop()


def test_verified_tokens_are_cached(gateway: Any, client: Any, signer: Signer, monkeypatch: Any) -> None:
    token = signer.token()
    assert _get(client, token).status_code == 200
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    assert _get(client, token).status_code == 200
