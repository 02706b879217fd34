"""Issue 14, finding 1: refresh rotates the access token, retires the old one after a short grace, and a
retired token presented again revokes the whole session (reuse detection), audited as an alert."""
from __future__ import annotations

import jwt
from flask import Flask

from .conftest import AppFactory, Factory, Peers, audit_of, bearer, error_code


def _claims(token: str) -> dict:  # type: ignore[type-arg]
    return dict(jwt.decode(token, options={"verify_signature": False}))


def _refresh(factory: Factory, token: str) -> str:
    response = factory.client.post("/v1/auth/refresh", headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["access_token"])


def test_refreshed_token_is_retired_and_its_reuse_ends_the_session(make_app: AppFactory) -> None:
    app = make_app(SESSION_REFRESH_GRACE="0")
    factory = Factory(app)
    account = factory.user(role="patient")
    first = factory.login(account)["access_token"]
    second = _refresh(factory, first)
    assert _claims(second)["jti"] != _claims(first)["jti"]
    assert factory.client.get("/v1/auth/me", headers=bearer(second)).status_code == 200

    # The old token is retired (grace 0): presenting it is reuse, which ends the session for everyone.
    reused = factory.client.post("/v1/auth/refresh", headers=bearer(first))
    assert reused.status_code == 401 and error_code(reused) == "session_revoked"
    after = factory.client.get("/v1/auth/me", headers=bearer(second))
    assert after.status_code == 401 and error_code(after) == "session_revoked"
    alerts = audit_of(app).of("auth.session.token_reuse")
    assert len(alerts) == 1
    assert alerts[0]["severity"] == "alert" and alerts[0]["meta"]["alert"] is True
    assert alerts[0]["meta"]["session_id"] == _claims(first)["sid"]
    revokes = audit_of(app).of("auth.session.revoke")
    assert any(e["meta"]["reason"] == "token_reuse" for e in revokes)


def test_retired_token_works_during_the_grace_and_a_retried_refresh_gets_the_same_successor(
    factory: Factory,
) -> None:
    account = factory.user(role="patient")
    first = factory.login(account)["access_token"]
    second = _refresh(factory, first)
    # In flight: the previous token still works for a few seconds...
    assert factory.client.get("/v1/auth/me", headers=bearer(first)).status_code == 200
    # ...and a retried refresh with it (the answer was lost) returns the same successor, not a fork.
    again = _refresh(factory, first)
    assert _claims(again)["jti"] == _claims(second)["jti"]
    third = _refresh(factory, second)
    assert _claims(third)["jti"] not in {_claims(first)["jti"], _claims(second)["jti"]}


def test_grace_is_at_most_five_seconds(make_app: AppFactory) -> None:
    import pytest
    from safeharbor_common.config import ConfigError

    with pytest.raises(ConfigError):
        make_app(SESSION_REFRESH_GRACE="6")


def test_feed_lists_retired_tokens_for_the_other_verifiers(make_app: AppFactory, peers: Peers) -> None:
    app: Flask = make_app(SESSION_REFRESH_GRACE="2")
    factory = Factory(app)
    account = factory.user(role="patient")
    body = factory.login(account)
    _refresh(factory, body["access_token"])
    feed = factory.client.get("/internal/v1/revocations?since=0", headers=peers.gateway_headers()).get_json()
    retired = {item["jti"]: item for item in feed["retired"]}
    old = _claims(body["access_token"])
    assert old["jti"] in retired
    item = retired[old["jti"]]
    assert item["sid"] == body["session_id"]
    # Refused from the end of the grace until the token would have expired anyway.
    assert item["from"] <= item["until"]
    # The session itself is alive: not in the revoked list.
    assert body["session_id"] not in {i["sid"] for i in feed["revoked"]}


def test_withdrawn_signing_key_is_refused_once_the_jwks_is_refreshed(make_app: AppFactory) -> None:
    """Issue 14, finding 3 at auth-service: a compromised key is withdrawn from the JWKS; the verifier (here
    auth-service's own) drops it and what it had cached for it at its next refresh."""
    app = make_app()
    factory = Factory(app)
    account = factory.user(role="billing")
    old_token = factory.login(account)["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    assert factory.client.get("/v1/auth/me", headers=bearer(old_token)).status_code == 200  # cached as verified
    with app.app_context():
        app.extensions["auth"].keys.rotate(withdraw=True)
    app.extensions["auth"].keys._cache_at = float("-inf")  # as another worker would after its cache time
    published = {k["kid"] for k in factory.client.get("/.well-known/jwks.json").get_json()["keys"]}
    assert old_kid not in published
    cache = app.extensions["token_verifier"]._keys
    cache._next_due = float("-inf")  # the timer's max-age has run out
    assert cache.refresh_if_due()
    refused = factory.client.get("/v1/auth/me", headers=bearer(old_token))
    assert refused.status_code == 401 and error_code(refused) == "unauthenticated"
    assert factory.client.get("/v1/auth/me", headers=bearer(factory.token(account))).status_code == 200


def test_a_verifier_reporting_reuse_ends_the_session(make_app: AppFactory, peers: Peers) -> None:
    """The gateway and the services refuse a retired token themselves (it may never reach auth-service), so
    they report it; auth-service believes a report only for a token it retired for that session."""
    from safeharbor_common.service_identity import ServiceTokenSigner, load_private_key

    app = make_app(SESSION_REFRESH_GRACE="0")
    factory = Factory(app)
    account = factory.user(role="patient")
    body = factory.login(account)
    second = _refresh(factory, body["access_token"])
    keydir = ServiceTokenSigner(name="keydir", private_key=load_private_key(peers.keydir_seed)).headers_for("auth")
    # Not a token retired for this session: nothing happens.
    bogus = factory.client.post("/internal/v1/revocations/reuse", headers=keydir,
                                json={"sid": body["session_id"], "jti": "0" * 32})
    assert bogus.status_code == 200 and bogus.get_json() == {"revoked": False}
    assert factory.client.get("/v1/auth/me", headers=bearer(second)).status_code == 200
    # Without a service identity: refused.
    assert factory.client.post("/internal/v1/revocations/reuse",
                               json={"sid": body["session_id"], "jti": "x"}).status_code == 401
    reported = factory.client.post("/internal/v1/revocations/reuse", headers=keydir,
                                   json={"sid": body["session_id"], "jti": _claims(body["access_token"])["jti"]})
    assert reported.status_code == 200 and reported.get_json() == {"revoked": True}
    ended = factory.client.get("/v1/auth/me", headers=bearer(second))
    assert ended.status_code == 401 and error_code(ended) == "session_revoked"
    alert = audit_of(app).of("auth.session.token_reuse")
    assert len(alert) == 1 and alert[0]["meta"]["seen_by"] == "keydir"
