"""The gateway in front of the real services: identity only from tokens, roles, revocation, errors."""
from __future__ import annotations

import time

from conftest import DEMO_PASSWORD, Api


def test_login_shape_and_me(api: Api) -> None:
    body = api.login("sam")  # billing: no MFA needed
    assert body["token_type"] == "Bearer"
    assert body["idle_timeout_s"] == 600
    for field in ("access_token", "expires_at", "absolute_expires_at", "session_id"):
        assert body[field]
    assert body["user"]["role"] == "billing" and body["user"]["mfa_enrolled"] is False
    me = api.call("GET", "/v1/auth/me", token=body["access_token"])
    assert me.status_code == 200
    assert me.json()["session"]["id"] == body["session_id"]


def test_forged_identity_header_is_ignored(api: Api) -> None:
    token = api.token("pat")
    me = api.call("GET", "/v1/auth/me", token=token, headers={"X-User-Id": "admin", "X-User-Role": "admin"})
    assert me.json()["user"]["role"] == "patient"
    refused = api.call("GET", "/v1/users", headers={"X-User-Id": "admin", "X-Forwarded-User": "admin"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"


def test_patient_calling_admin_route(api: Api) -> None:
    response = api.call("GET", "/v1/users", token=api.token("pat"))
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


def test_logout_seen_by_gateway_within_one_second(api: Api) -> None:
    token = api.token("sam")
    assert api.call("GET", "/v1/auth/me", token=token).status_code == 200
    assert api.call("POST", "/v1/auth/logout", token=token).status_code == 204
    started = time.monotonic()
    while True:
        response = api.call("GET", "/v1/keys?users=x", token=token)
        if response.status_code == 401:
            break
        assert time.monotonic() - started < 1.0, f"still accepted: {response.status_code}"
        time.sleep(0.05)
    assert response.json()["error"]["code"] == "session_revoked"


def test_unknown_user_and_wrong_password_indistinguishable(api: Api) -> None:
    unknown = api.call("POST", "/v1/auth/login", json={"username": "nobody-here", "password": "Wrong-pass-123"})
    wrong = api.call("POST", "/v1/auth/login", json={"username": "pat", "password": "Wrong-pass-123"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json()["error"]["code"] == wrong.json()["error"]["code"] == "invalid_credentials"
    assert unknown.json()["error"]["message"] == wrong.json()["error"]["message"]


def test_malformed_json_and_oversized_body(api: Api) -> None:
    bad = api.call("POST", "/v1/auth/login", data="{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
    big = api.call("POST", "/v1/auth/login", data=b"x" * (2 * 1024 * 1024),
                   headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"


def test_expired_and_garbage_tokens(api: Api) -> None:
    garbage = api.call("GET", "/v1/auth/me", token="a.b.c")
    assert garbage.status_code == 401 and garbage.json()["error"]["code"] == "unauthenticated"


def test_every_response_has_a_request_id(api: Api) -> None:
    for response in (api.call("GET", "/nope"), api.call("GET", "/.well-known/jwks.json"),
                     api.call("POST", "/v1/auth/login", json={"username": "sam", "password": DEMO_PASSWORD})):
        assert len(response.headers["X-Request-ID"]) >= 8


def test_jwks_through_gateway(api: Api) -> None:
    keys = api.call("GET", "/.well-known/jwks.json").json()["keys"]
    assert keys and all(k["kty"] == "OKP" and k["crv"] == "Ed25519" and "d" not in k for k in keys)
