"""Logins, tokens, sessions, refresh, logout, idle and absolute expiry, key rotation, JWKS."""
from __future__ import annotations

import jwt
from flask import Flask

from .conftest import PASSWORD, AppFactory, Factory, audit_of, bearer, clock_of, error_code


def test_login_shape_matches_api(app: Flask, factory: Factory) -> None:
    account = factory.user(role="billing")
    body = factory.login(account)
    assert set(body) >= {
        "access_token", "token_type", "expires_at", "idle_timeout_s", "absolute_expires_at", "session_id", "user",
    }
    assert body["token_type"] == "Bearer"
    assert body["idle_timeout_s"] == 600
    assert body["user"] == {"id": account.id, "name": "Test Person", "role": "billing", "mfa_enrolled": False}
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "EdDSA" and header["kid"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"iss", "aud", "sub", "exp", "iat", "jti", "sid", "role", "scope"} <= set(claims)
    assert claims["sub"] == account.id and claims["sid"] == body["session_id"]
    assert claims["role"] == "billing" and claims["scope"] == "full"
    assert 600 <= claims["exp"] - claims["iat"] <= 601  # whole seconds, rounded up
    assert "auth.login.success" in audit_of(app).actions()


def test_me_refresh_logout(factory: Factory) -> None:
    account = factory.user(role="patient")
    body = factory.login(account)
    token = body["access_token"]
    me = factory.client.get("/v1/auth/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.get_json()["user"]["id"] == account.id
    assert me.get_json()["session"]["id"] == body["session_id"]
    assert me.get_json()["session"]["break_glass"] is None

    refreshed = factory.client.post("/v1/auth/refresh", headers=bearer(token))
    assert refreshed.status_code == 200
    assert refreshed.get_json()["session_id"] == body["session_id"]
    assert refreshed.get_json()["access_token"] != token
    first = jwt.decode(token, options={"verify_signature": False})
    second = jwt.decode(refreshed.get_json()["access_token"], options={"verify_signature": False})
    assert second["auth_time"] == first["auth_time"] <= first["iat"]

    out = factory.client.post("/v1/auth/logout", headers=bearer(refreshed.get_json()["access_token"]))
    assert out.status_code == 204
    for old in (token, refreshed.get_json()["access_token"]):
        again = factory.client.get("/v1/auth/me", headers=bearer(old))
        assert again.status_code == 401
        assert error_code(again) == "session_revoked"
    assert factory.client.post("/v1/auth/refresh", headers=bearer(token)).status_code == 401


def test_no_token_and_garbage_token(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/v1/auth/me")
    assert response.status_code == 401 and error_code(response) == "unauthenticated"
    response = client.get("/v1/auth/me", headers=bearer("not.a.jwt"))
    assert response.status_code == 401 and error_code(response) == "unauthenticated"


def test_expired_token_is_session_expired(make_app: AppFactory) -> None:
    app = make_app(SESSION_IDLE_TIMEOUT="1", JWT_LEEWAY="0")
    factory = Factory(app)
    account = factory.user(role="billing")
    token = factory.login(account)["access_token"]
    assert factory.client.get("/v1/auth/me", headers=bearer(token)).status_code == 200
    clock_of(app).advance(2.1)
    response = factory.client.get("/v1/auth/me", headers=bearer(token))
    assert response.status_code == 401
    assert error_code(response) == "session_expired"


def test_idle_timeout_ends_session_but_activity_slides_it(make_app: AppFactory) -> None:
    app = make_app(SESSION_IDLE_TIMEOUT="2", JWT_LEEWAY="0")
    factory = Factory(app)
    account = factory.user(role="billing")
    token = factory.login(account)["access_token"]
    # Active: refreshing within the idle timeout keeps the session alive past it.
    for _ in range(2):
        clock_of(app).advance(1.2)
        response = factory.client.post("/v1/auth/refresh", headers=bearer(token))
        assert response.status_code == 200, response.get_json()
        token = response.get_json()["access_token"]
    # Idle: no refresh for longer than the timeout; refresh is refused.
    clock_of(app).advance(3.1)
    response = factory.client.post("/v1/auth/refresh", headers=bearer(token))
    assert response.status_code == 401
    assert error_code(response) == "session_expired"


def test_refresh_after_absolute_lifetime_refused(make_app: AppFactory) -> None:
    app = make_app(SESSION_IDLE_TIMEOUT="3", SESSION_MAX_LIFETIME="4", JWT_LEEWAY="0")
    factory = Factory(app)
    account = factory.user(role="billing")
    body = factory.login(account)
    token = body["access_token"]
    clock_of(app).advance(2.0)
    refreshed = factory.client.post("/v1/auth/refresh", headers=bearer(token))
    assert refreshed.status_code == 200
    # The new token ends at the absolute end, not at now + idle timeout.
    assert refreshed.get_json()["expires_at"] == body["absolute_expires_at"]
    token = refreshed.get_json()["access_token"]
    clock_of(app).advance(3.1)  # past the absolute end (whole seconds, rounded up) though within the idle timeout
    response = factory.client.post("/v1/auth/refresh", headers=bearer(token))
    assert response.status_code == 401
    assert error_code(response) == "session_expired"


def test_refresh_with_leeway_after_absolute_end_refused_by_session_row(make_app: AppFactory) -> None:
    # With the verifier's leeway the token still verifies; the session's absolute end decides.
    app = make_app(SESSION_IDLE_TIMEOUT="1", SESSION_MAX_LIFETIME="1", JWT_LEEWAY="30")
    factory = Factory(app)
    token = factory.login(factory.user(role="patient"))["access_token"]
    clock_of(app).advance(2.2)
    response = factory.client.post("/v1/auth/refresh", headers=bearer(token))
    assert response.status_code == 401
    assert error_code(response) == "session_expired"


def test_key_rotation_keeps_old_tokens_verifiable(make_app: AppFactory) -> None:
    app = make_app()
    factory = Factory(app)
    account = factory.user(role="billing")
    old_token = factory.login(account)["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    with app.app_context():
        new_kid = app.extensions["auth"].keys.rotate(immediately=True).kid
    app.extensions["auth"].keys._cache_at = float("-inf")  # as another worker would after its cache time
    new_token = factory.login(account)["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid != old_kid
    published = {k["kid"] for k in factory.client.get("/.well-known/jwks.json").get_json()["keys"]}
    assert {old_kid, new_kid} <= published
    # Both verify here, and in a second app (another replica) that only knows the JWKS.
    other = Factory(make_app())
    for token in (old_token, new_token):
        assert factory.client.get("/v1/auth/me", headers=bearer(token)).status_code == 200
        assert other.client.get("/v1/auth/me", headers=bearer(token)).status_code == 200


def test_rotation_prepublishes_then_retires(make_app: AppFactory) -> None:
    app = make_app(SIGNING_KEY_PREPUBLISH="2", SESSION_IDLE_TIMEOUT="1", JWT_LEEWAY="0")
    keys = app.extensions["auth"].keys
    first = keys.active().kid
    new = keys.rotate()
    assert keys.active().kid == first  # published, not signing yet
    assert new.kid in {k["kid"] for k in keys.jwks()["keys"]}
    clock_of(app).advance(2.1)
    keys._cache_at = float("-inf")
    assert keys.active().kid == new.kid
    # The old key stays published for idle timeout + leeway + signer cache after retirement.
    assert first in {k["kid"] for k in keys.jwks()["keys"]}


def test_jwks_shape(client) -> None:  # type: ignore[no-untyped-def]
    keys = client.get("/.well-known/jwks.json").get_json()["keys"]
    assert keys and all(k["kty"] == "OKP" and k["crv"] == "Ed25519" and k["alg"] == "EdDSA" and k["use"] == "sig"
                        for k in keys)
    assert all("d" not in k for k in keys)


def test_private_key_encrypted_at_rest(app: Flask) -> None:
    from safeharbor_auth.models import SigningKey
    from sqlalchemy import select

    with app.extensions["auth"].engine.connect() as conn:
        rows = conn.execute(select(SigningKey.private_key_enc, SigningKey.kid)).all()
    assert rows
    for blob, _kid in rows:
        assert len(blob) == 1 + 12 + 32 + 16  # version, nonce, sealed seed, tag


def test_malformed_json_and_oversized_body(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/v1/auth/login", data="{not json", content_type="application/json")
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    response = client.post("/v1/auth/login", json={"username": "x"})
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    assert "password" in response.get_json()["error"]["message"]
    response = client.post("/v1/auth/login", json={"username": 5, "password": "y"})
    assert response.status_code == 400 and "username" in response.get_json()["error"]["message"]
    response = client.post("/v1/auth/login", data="username=a", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    big = '{"username": "a", "password": "' + "x" * (70 * 1024) + '"}'
    response = client.post("/v1/auth/login", data=big, content_type="application/json")
    assert response.status_code == 413 and error_code(response) == "payload_too_large"
    assert "Traceback" not in response.get_data(as_text=True)


def test_unknown_route_and_method(client) -> None:  # type: ignore[no-untyped-def]
    assert error_code(client.get("/v1/nope")) == "not_found"
    response = client.get("/v1/auth/login")
    assert response.status_code == 405


def test_password_is_rehashed_when_parameters_change(make_app: AppFactory) -> None:
    app = make_app()
    factory = Factory(app)
    account = factory.user(role="billing")
    stronger = Factory(make_app(ARGON2_MEMORY_KIB="2048", ARGON2_TIME_COST="2"))
    stronger.login(account)
    from safeharbor_auth.models import User
    from sqlalchemy import select

    with app.extensions["auth"].engine.connect() as conn:
        stored = conn.execute(select(User.password_hash).where(User.id == account.id)).scalar_one()
    assert "m=2048,t=2" in stored
    assert PASSWORD not in stored


def test_last_seen_is_updated_on_use(app: Flask, factory: Factory) -> None:
    from datetime import timedelta

    from safeharbor_auth.models import Session
    from sqlalchemy import select, update

    body = factory.login(factory.user(role="patient"))
    engine = app.extensions["auth"].engine
    with engine.begin() as conn:
        old = conn.execute(select(Session.last_seen).where(Session.id == body["session_id"])).scalar_one()
        conn.execute(update(Session).where(Session.id == body["session_id"])
                     .values(last_seen=old - timedelta(minutes=5)))
    assert factory.client.get("/v1/auth/me", headers=bearer(body["access_token"])).status_code == 200
    with engine.connect() as conn:
        seen = conn.execute(select(Session.last_seen).where(Session.id == body["session_id"])).scalar_one()
    assert seen.replace(tzinfo=None) >= old.replace(tzinfo=None) - timedelta(seconds=1)
