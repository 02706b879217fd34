"""The gateway's revocation feed: contents, cursor, service identity, Redis publication; PostgreSQL leg."""
from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from flask import Flask
from safeharbor_common.service_identity import ServiceTokenSigner, generate_keypair, load_private_key

from .conftest import AppFactory, Factory, Peers, bearer, clock_of, error_code


def _feed(factory: Factory, peers: Peers, since: str | None = None) -> dict:  # type: ignore[type-arg]
    path = "/internal/v1/revocations" + (f"?since={since}" if since is not None else "")
    response = factory.client.get(path, headers=peers.gateway_headers())
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def test_feed_lists_revoked_sessions_with_until(factory: Factory, peers: Peers) -> None:
    account = factory.user(role="patient")
    live = factory.login(account)
    ended = factory.login(account)
    assert factory.client.post("/v1/auth/logout", headers=bearer(ended["access_token"])).status_code == 204
    body = _feed(factory, peers, "0")
    sids = {item["sid"] for item in body["revoked"]}
    assert ended["session_id"] in sids and live["session_id"] not in sids
    item = next(i for i in body["revoked"] if i["sid"] == ended["session_id"])
    until = datetime.fromisoformat(item["until"].replace("Z", "+00:00"))
    token_exp = datetime.fromisoformat(ended["expires_at"].replace("Z", "+00:00"))
    assert until >= token_exp  # remembered at least as long as the token could be used
    assert body["cursor"].isdigit()
    # Absent `since` is the same as 0.
    assert ended["session_id"] in {i["sid"] for i in _feed(factory, peers)["revoked"]}


def test_feed_cursor_returns_only_newer_revocations(factory: Factory, peers: Peers) -> None:
    account = factory.user(role="patient")
    first = factory.login(account)
    factory.client.post("/v1/auth/logout", headers=bearer(first["access_token"]))
    cursor = _feed(factory, peers, "0")["cursor"]
    later_cursor = str(int(time.time() * 1000) + 1)
    second = factory.login(account)
    factory.client.post("/v1/auth/logout", headers=bearer(second["access_token"]))
    newer = {i["sid"] for i in _feed(factory, peers, cursor)["revoked"]}
    assert second["session_id"] in newer
    assert _feed(factory, peers, str(int(later_cursor) + 60_000))["revoked"] == []


def test_feed_leaves_out_sessions_whose_tokens_expired(make_app: AppFactory, peers: Peers) -> None:
    app = make_app(SESSION_IDLE_TIMEOUT="1", JWT_LEEWAY="0")
    factory = Factory(app)
    account = factory.user(role="patient")
    body = factory.login(account)
    factory.client.post("/v1/auth/logout", headers=bearer(body["access_token"]))
    assert body["session_id"] in {i["sid"] for i in _feed(factory, peers, "0")["revoked"]}
    clock_of(app).advance(2.2)  # token times are whole seconds, rounded up
    assert body["session_id"] not in {i["sid"] for i in _feed(factory, peers, "0")["revoked"]}


def test_feed_requires_a_verifier_identity(factory: Factory, peers: Peers) -> None:
    assert error_code(factory.client.get("/internal/v1/revocations")) == "unauthenticated"
    stranger_seed, _ = generate_keypair()
    forged = ServiceTokenSigner(name="gateway", private_key=load_private_key(stranger_seed)).headers_for("auth")
    assert factory.client.get("/internal/v1/revocations", headers=forged).status_code == 401
    # Services reached directly check revocation through the same feed as the gateway (issue 14, finding 4).
    keydir = ServiceTokenSigner(name="keydir", private_key=load_private_key(peers.keydir_seed)).headers_for("auth")
    response = factory.client.get("/internal/v1/revocations", headers=keydir)
    assert response.status_code == 200 and "revoked" in response.get_json()
    # A user's token is not a service identity.
    token = factory.token(factory.user(role="patient"))
    assert factory.client.get("/internal/v1/revocations", headers=bearer(token)).status_code == 401


def test_feed_rejects_a_bad_cursor(factory: Factory, peers: Peers) -> None:
    for bad in ("yesterday", "-5", "1" * 40):
        response = factory.client.get(f"/internal/v1/revocations?since={bad}", headers=peers.gateway_headers())
        assert response.status_code == 400 and error_code(response) == "invalid_request"


def test_deactivation_and_admin_revocation_appear_in_feed(factory: Factory, peers: Peers) -> None:
    admin = factory.user(role="admin")
    token = factory.token(admin)
    a = factory.user(role="patient")
    b = factory.user(role="billing")
    a_session = factory.login(a)["session_id"]
    b_session = factory.login(b)["session_id"]
    factory.client.post(f"/v1/users/{a.id}/deactivate", headers=bearer(token))
    factory.client.delete(f"/v1/users/{b.id}/sessions/{b_session}", headers=bearer(token))
    sids = {i["sid"] for i in _feed(factory, peers, "0")["revoked"]}
    assert {a_session, b_session} <= sids


def test_revocations_published_on_redis(make_app: AppFactory) -> None:
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/13"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("Redis not reachable")
    factory = Factory(make_app(REDIS_URL=url))
    pubsub = client.pubsub()
    pubsub.subscribe("safeharbor:revocations")
    confirmed = pubsub.get_message(timeout=3)  # the server's confirmation: subscribed from here on
    assert confirmed is not None and confirmed["type"] == "subscribe"
    body = factory.login(factory.user(role="patient"))
    factory.client.post("/v1/auth/logout", headers=bearer(body["access_token"]))
    deadline = time.time() + 3
    seen = []
    while time.time() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message":
            seen.append(json.loads(message["data"]))
            if any(m["sid"] == body["session_id"] for m in seen):
                break
    pubsub.close()
    item = next(m for m in seen if m["sid"] == body["session_id"])
    assert set(item) == {"sid", "until"}


def test_postgres_sessions_revocation_and_replay(make_app: AppFactory, pg_url: str, peers: Peers) -> None:
    """The same flows on PostgreSQL (row locks, timestamps with zones, conditional updates)."""
    factory = Factory(make_app(DATABASE_URL=pg_url))
    account = factory.user(role="clinician")
    code = account.totp()
    ok = factory.client.post("/v1/auth/login", json={"username": account.username, "password": account.password,
                                                      "otp": code})
    assert ok.status_code == 200
    replay = factory.client.post("/v1/auth/login", json={"username": account.username,
                                                          "password": account.password, "otp": code})
    assert error_code(replay) == "mfa_invalid"
    token = ok.get_json()["access_token"]
    assert factory.client.post("/v1/auth/refresh", headers=bearer(token)).status_code == 200
    factory.client.post("/v1/auth/logout", headers=bearer(token))
    assert ok.get_json()["session_id"] in {i["sid"] for i in _feed(factory, peers, "0")["revoked"]}
    for _ in range(5):
        factory.client.post("/v1/auth/login", json={"username": account.username, "password": "Nope-nope-123"})
    locked = factory.client.post("/v1/auth/login", json={"username": account.username, "password": "Nope-nope-123"})
    assert locked.status_code == 429 and error_code(locked) == "locked_out"


def test_feed_is_fast_enough_to_poll(factory: Factory, peers: Peers, app: Flask) -> None:
    account = factory.user(role="patient")
    for _ in range(20):
        body = factory.login(account)
        factory.client.post("/v1/auth/logout", headers=bearer(body["access_token"]))
    started = time.perf_counter()
    for _ in range(20):
        _feed(factory, peers, str(int(time.time() * 1000) - 5000))
    assert (time.perf_counter() - started) / 20 < 0.05
