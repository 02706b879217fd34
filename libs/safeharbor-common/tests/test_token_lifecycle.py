"""Issue 14, findings 3 and 4: JWKS refreshed on a max-age timer with unpublished keys (and the tokens cached
for them) dropped; a token without a scope refused; services refuse revoked sessions and retired tokens
through the same feed as the gateway, and fail closed when it is stale."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, jsonify, request
from jwt.algorithms import OKPAlgorithm
from safeharbor_common import service_identity, tokens, web
from safeharbor_common.errors import SessionExpired, Unauthenticated
from safeharbor_common.revocation import RevocationList
from safeharbor_common.service_identity import ServiceTokenSigner, generate_keypair, load_private_key
from safeharbor_common.tokens import JwksAnswer, JwksCache, TokenVerifier, cache_max_age, require_session
from werkzeug.serving import make_server

ISS, AUD = "safeharbor-auth", "safeharbor"


class Keys:
    def __init__(self) -> None:
        self.private = {"k1": Ed25519PrivateKey.generate(), "k2": Ed25519PrivateKey.generate()}
        self.published = ["k1"]
        self.max_age: float | None = 30.0
        self.fetches = 0

    def jwk(self, kid: str) -> dict[str, Any]:
        jwk = dict(OKPAlgorithm.to_jwk(self.private[kid].public_key(), as_dict=True))
        return {**jwk, "kid": kid, "alg": "EdDSA", "use": "sig"}

    def fetch(self) -> JwksAnswer:
        self.fetches += 1
        return JwksAnswer(document={"keys": [self.jwk(k) for k in self.published]}, max_age=self.max_age)

    def token(self, kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body: dict[str, Any] = {"iss": ISS, "aud": AUD, "sub": "u1", "sid": "s1", "jti": uuid.uuid4().hex,
                                "iat": now, "exp": now + 600, "role": "patient", "scope": "full"}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.private[kid], algorithm="EdDSA", headers={"kid": kid})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_control_max_age_is_read() -> None:
    assert cache_max_age("public, max-age=30") == 30
    assert cache_max_age("max-age=0") == 0
    assert cache_max_age("no-store") == 0
    assert cache_max_age("public") is None and cache_max_age(None) is None


def test_unpublished_key_is_dropped_with_its_cached_tokens_when_max_age_runs_out() -> None:
    keys, clock = Keys(), Clock()
    cache = JwksCache(keys.fetch, clock=clock)
    verifier = TokenVerifier(keys=cache, issuer=ISS, audience=AUD)
    cache.ensure_started = lambda: None  # type: ignore[method-assign]  # the test drives the timer
    old = keys.token("k1")
    assert verifier.verify(old).sub == "u1"  # now cached by its string
    keys.published = ["k2"]  # k1 retired (or compromised) at the issuer
    clock.now += 29
    assert cache.refresh_if_due() is False  # max-age (30 s) not over: nothing fetched
    assert verifier.verify(old).sub == "u1"
    clock.now += 2
    assert cache.refresh_if_due() is True
    with pytest.raises(Unauthenticated):
        verifier.verify(old)  # neither the key nor the cached verification survive
    assert verifier.verify(keys.token("k2")).sub == "u1"


def test_max_age_of_the_answer_sets_the_period() -> None:
    keys, clock = Keys(), Clock()
    keys.max_age = 5
    cache = JwksCache(keys.fetch, clock=clock)
    assert cache.get("k1") is not None and keys.fetches == 1
    clock.now += 4
    assert cache.refresh_if_due() is False
    clock.now += 1.5
    assert cache.refresh_if_due() is True and keys.fetches == 2


def test_the_timer_refuses_a_retired_key_within_max_age_plus_five_seconds() -> None:
    keys = Keys()
    keys.max_age = 1
    cache = JwksCache(keys.fetch)
    verifier = TokenVerifier(keys=cache, issuer=ISS, audience=AUD)
    old = keys.token("k1")
    verifier.verify(old)
    keys.published = ["k2"]
    retired_at = time.monotonic()
    try:
        while True:
            try:
                verifier.verify(old)
            except Unauthenticated:
                break
            assert time.monotonic() - retired_at < 1 + 5, "retired key still trusted after max-age + 5 s"
            time.sleep(0.05)
    finally:
        cache.stop()


def test_unreachable_jwks_keeps_the_keys_it_had() -> None:
    keys, clock = Keys(), Clock()
    cache = JwksCache(keys.fetch, clock=clock)
    assert cache.get("k1") is not None

    def down() -> JwksAnswer:
        raise OSError("down")

    cache._fetch = down  # type: ignore[assignment]
    clock.now += 31
    cache.refresh_if_due()
    assert cache.get("k1") is not None


@pytest.mark.parametrize("scope", [None, "", "admin"])
def test_token_without_a_known_scope_is_refused(scope: str | None) -> None:
    keys = Keys()
    verifier = TokenVerifier(keys=JwksCache(keys.fetch), issuer=ISS, audience=AUD)
    with pytest.raises(Unauthenticated):
        verifier.verify(keys.token(scope=scope))


def test_expired_cached_token_is_session_expired() -> None:
    keys = Keys()
    verifier = TokenVerifier(keys=JwksCache(keys.fetch), issuer=ISS, audience=AUD, leeway=0)
    with pytest.raises(SessionExpired):
        verifier.verify(keys.token(exp=int(time.time()) - 10))


# -- revocation inside a service ---------------------------------------------------------------------------


class Feed:
    """auth-service's internal revocation feed, served on a real socket."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = {"revoked": [], "retired": [], "cursor": "0"}
        self.up = True
        self.reuse_reports: list[dict[str, Any]] = []
        app = Flask("feed")

        @app.post("/internal/v1/revocations/reuse")
        def reuse() -> Any:
            self.reuse_reports.append(dict(request.get_json()))
            return jsonify({"revoked": True})

        @app.get("/internal/v1/revocations")
        def feed() -> Any:
            if not self.up:
                return jsonify({"error": "down"}), 503
            return jsonify(self.body)

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/internal/v1/revocations"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def feed() -> Iterator[Feed]:
    served = Feed()
    yield served
    served.server.shutdown()


def _service_app(keys: Keys, revocations: RevocationList | None, **config: Any) -> Flask:
    seed, _ = generate_keypair()
    app = Flask("svc")
    settings: dict[str, Any] = {"SERVICE_NAME": "keydir", "SERVICE_PRIVATE_KEY": seed, "SERVICE_PUBLIC_KEYS": "",
                                "JWKS_FETCHER": keys.fetch, "JWT_ISSUER": ISS, "JWT_AUDIENCE": AUD,
                                "REVOCATION_LIST": revocations}
    app.config.update({**settings, **config})
    web.init_app(app, service_name="keydir")
    service_identity.init_app(app)
    tokens.init_app(app)

    @app.get("/v1/thing")
    @require_session()
    def thing() -> Any:
        return jsonify({"ok": True})

    return app


def _list(feed: Feed, **kwargs: Any) -> RevocationList:
    seed, _ = generate_keypair()
    signer = ServiceTokenSigner(name="keydir", private_key=load_private_key(seed))
    return RevocationList(feed_url=feed.url, signer=signer, **kwargs)


def _call(app: Flask, token: str) -> tuple[int, str | None]:
    response = app.test_client().get("/v1/thing", headers={"Authorization": f"Bearer {token}"})
    body = response.get_json()
    return response.status_code, (body.get("error") or {}).get("code")


def test_service_refuses_a_revoked_session_and_a_retired_token(feed: Feed) -> None:
    keys = Keys()
    revocations = _list(feed, poll_interval=0.05)
    app = _service_app(keys, revocations)
    try:
        live, replaced, ended = keys.token(sid="s-live"), keys.token(sid="s-live"), keys.token(sid="s-ended")
        for token in (live, replaced, ended):
            assert _call(app, token) == (200, None)
        replaced_jti = jwt.decode(replaced, options={"verify_signature": False})["jti"]
        feed.body = {
            "revoked": [{"sid": "s-ended", "until": "2999-01-01T00:00:00Z"}],
            "retired": [{"jti": replaced_jti, "sid": "s-live", "from": "2000-01-01T00:00:00Z",
                         "until": "2999-01-01T00:00:00Z"}],
            "cursor": "1",
        }
        deadline = time.monotonic() + 1.0
        while _call(app, ended) != (401, "session_revoked"):
            assert time.monotonic() < deadline, "revocation not seen within 1 s"
            time.sleep(0.02)
        assert _call(app, replaced) == (401, "session_revoked")
        assert _call(app, live) == (200, None)
        # The retired token was reuse: auth-service is told (once), so it ends the whole session.
        deadline = time.monotonic() + 2.0
        while not feed.reuse_reports:
            assert time.monotonic() < deadline, "reuse not reported to auth-service"
            time.sleep(0.02)
        assert _call(app, replaced) == (401, "session_revoked")
        time.sleep(0.1)
        assert feed.reuse_reports == [{"sid": "s-live", "jti": replaced_jti}]
    finally:
        revocations.stop()


def test_retired_token_in_its_grace_still_works(feed: Feed) -> None:
    keys = Keys()
    token = keys.token()
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    feed.body["retired"] = [{"jti": jti, "sid": "s1", "from": "2999-01-01T00:00:00Z",
                             "until": "2999-01-01T00:05:00Z"}]
    revocations = _list(feed)
    app = _service_app(keys, revocations)
    try:
        assert _call(app, token) == (200, None)
    finally:
        revocations.stop()


def test_service_fails_closed_when_the_feed_is_stale(feed: Feed) -> None:
    keys = Keys()
    revocations = _list(feed, poll_interval=0.05, max_staleness=0.3)
    app = _service_app(keys, revocations)
    token = keys.token()
    try:
        assert _call(app, token) == (200, None)
        feed.up = False
        deadline = time.monotonic() + 3.0
        while _call(app, token) != (503, "service_unavailable"):
            assert time.monotonic() < deadline, "stale feed still trusted"
            time.sleep(0.05)
        feed.up = True
        deadline = time.monotonic() + 3.0
        while _call(app, token) != (200, None):
            assert time.monotonic() < deadline, "did not recover when the feed came back"
            time.sleep(0.05)
    finally:
        revocations.stop()


def test_services_without_keys_in_process_read_the_feed_by_default() -> None:
    keys = Keys()
    app = _service_app(keys, None, JWKS_FETCHER=None, JWKS_URL="http://127.0.0.1:9/jwks",
                       AUTH_SERVICE_URL="http://127.0.0.1:9")
    assert isinstance(app.extensions.get("revocation_list"), RevocationList)
    # auth-service owns the sessions table, so it reads no feed.
    seed, _ = generate_keypair()
    auth = Flask("auth")
    auth.config.update(SERVICE_NAME="auth", SERVICE_PRIVATE_KEY=seed, JWKS_URL="http://127.0.0.1:9/jwks",
                       JWT_ISSUER=ISS, JWT_AUDIENCE=AUD, AUTH_SERVICE_URL="http://127.0.0.1:9")
    service_identity.init_app(auth)
    tokens.init_app(auth)
    assert "revocation_list" not in auth.extensions
