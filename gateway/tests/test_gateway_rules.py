"""Routing, identity-header stripping, role rules, revocation, limits and upstream failures."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import FakeUpstream, Signer, served_app
from safeharbor_common.service_identity import ServiceTokenVerifier, parse_public_keys
from werkzeug.test import EnvironBuilder


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_forged_identity_headers_never_reach_a_service(client: Any, signer: Signer) -> None:
    forged = {
        "X-User-Id": "admin-1",
        "X-User-Role": "admin",
        "X-Forwarded-User": "admin",
        "X-Actor": "admin",
        "X-Real-IP": "10.0.0.1",
        "X-Forwarded-For": "10.0.0.1",
        "X-SafeHarbor-Client-IP": "10.0.0.1",
        "X-Service-Token": "forged",
        "Remote-User": "admin",
    }
    response = client.get("/v1/auth/me", headers={**forged, **_auth(signer.token())})
    seen = response.get_json()["headers"]
    for name in forged:
        if name.lower() in ("x-safeharbor-client-ip", "x-service-token"):
            continue  # replaced by the gateway's own values below
        assert name.lower() not in seen, name
    assert seen["x-safeharbor-client-ip"] == "127.0.0.1"
    assert seen["x-service-token"] != "forged"


def test_forged_header_without_token_is_still_unauthenticated(client: Any) -> None:
    response = client.get("/v1/users", headers={"X-User-Id": "admin-1", "X-User-Role": "admin"})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthenticated"


def test_gateway_service_token_verifies_as_gateway(
    client: Any, signer: Signer, gateway_config: dict[str, Any]
) -> None:
    seen = client.get("/v1/auth/me", headers=_auth(signer.token())).get_json()["headers"]
    verifier = ServiceTokenVerifier(
        name="auth", trusted=parse_public_keys(f"gateway={gateway_config['GATEWAY_PUBLIC_KEY']}")
    )
    assert verifier.verify(seen["x-service-token"]) == "gateway"


def test_request_id_is_set_and_forwarded(client: Any, signer: Signer) -> None:
    response = client.get("/v1/auth/me", headers=_auth(signer.token()))
    rid = response.headers["X-Request-ID"]
    assert response.get_json()["headers"]["x-request-id"] == rid
    echoed = client.get("/v1/users/echo-request-id", headers=_auth(signer.token()))
    assert echoed.headers.getlist("X-Request-ID") == [echoed.get_json()["headers"]["x-request-id"]]


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/v1/users"), ("POST", "/v1/users"), ("PUT", "/v1/push/templates"), ("GET", "/v1/push/status"),
     ("GET", "/v1/break-glass")],
)
def test_patient_calling_admin_routes_is_forbidden(client: Any, signer: Signer, method: str, path: str) -> None:
    response = client.open(path, method=method, headers=_auth(signer.token(role="patient")), json={})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


def test_admin_reaches_admin_routes(client: Any, signer: Signer) -> None:
    assert client.get("/v1/users", headers=_auth(signer.token(role="admin"))).status_code == 200


@pytest.mark.parametrize("role,status", [("auditor", 200), ("admin", 200), ("clinician", 403), ("billing", 403)])
def test_audit_reads_for_auditors_and_admins_only(client: Any, signer: Signer, role: str, status: int) -> None:
    assert client.get("/v1/audit/entries", headers=_auth(signer.token(role=role))).status_code == status


def test_any_user_may_read_own_user_record_route(client: Any, signer: Signer) -> None:
    # The service decides self-or-admin; the gateway lets the request through.
    assert client.get("/v1/users/user-1", headers=_auth(signer.token(role="patient"))).status_code == 200


def test_enrolment_only_session(client: Any, signer: Signer) -> None:
    token = signer.token(scope="mfa_enrollment")
    response = client.get("/v1/keys?users=a", headers=_auth(token))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "mfa_enrollment_required"
    assert client.post("/v1/auth/mfa/totp/enroll", headers=_auth(token)).status_code == 200


def test_break_glass_session_limited_routes(client: Any, signer: Signer) -> None:
    token = signer.token(scope="break_glass")
    assert client.post("/v1/stream-credentials", headers=_auth(token)).status_code == 200
    assert client.post("/v1/keys", headers=_auth(token), json={}).status_code == 403


def test_internal_paths_are_never_routed(client: Any, signer: Signer) -> None:
    response = client.get("/internal/v1/revocations", headers=_auth(signer.token(role="admin")))
    assert response.status_code == 404


def test_public_routes_need_no_token(client: Any, upstream: FakeUpstream) -> None:
    assert client.post("/v1/auth/login", json={"username": "a", "password": "b"}).status_code == 200
    assert client.get("/.well-known/jwks.json").status_code == 200
    assert client.post("/v1/webhooks/stream", data=b"{}", headers={"X-Signature": "ab"}).status_code == 200
    # the webhook's signature header passes through untouched
    assert upstream.seen[-1]["headers"]["x-signature"] == "ab"


def test_unknown_path_and_wrong_method(client: Any, signer: Signer) -> None:
    assert client.get("/nope").get_json()["error"]["code"] == "not_found"
    response = client.delete("/v1/auth/login")
    assert response.status_code == 405


def test_revocation_seen_within_one_second(client: Any, signer: Signer, upstream: FakeUpstream) -> None:
    token = signer.token(sid="sess-revoke")
    assert client.get("/v1/auth/me", headers=_auth(token)).status_code == 200
    upstream.revoked.append({"sid": "sess-revoke", "until": time.time() + 600})
    revoked_at = time.monotonic()
    while True:
        response = client.get("/v1/auth/me", headers=_auth(token))
        if response.status_code == 401:
            break
        assert time.monotonic() - revoked_at < 1.0, "revocation not seen within 1 s"
        time.sleep(0.02)
    assert response.get_json()["error"]["code"] == "session_revoked"
    # other sessions are unaffected
    assert client.get("/v1/auth/me", headers=_auth(signer.token(sid="sess-other"))).status_code == 200


def test_stale_revocation_feed_fails_closed(gateway_config: dict[str, Any], signer: Signer,
                                            upstream: FakeUpstream) -> None:
    config = {**gateway_config, "ENVIRON": {**gateway_config["ENVIRON"], "REVOCATION_MAX_STALENESS": "0.5"}}
    app = served_app(config)
    client = app.test_client()
    assert client.get("/v1/auth/me", headers=_auth(signer.token())).status_code == 200
    upstream.feed_up = False
    time.sleep(1.0)
    response = client.get("/v1/auth/me", headers=_auth(signer.token()))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "service_unavailable"
    # public routes keep working
    assert client.post("/v1/auth/login", json={}).status_code == 200
    upstream.feed_up = True
    time.sleep(1.3)
    assert client.get("/v1/auth/me", headers=_auth(signer.token())).status_code == 200
    app.extensions["revocations"].stop()


def test_rate_limit_per_user(gateway_config: dict[str, Any], signer: Signer) -> None:
    config = {**gateway_config, "ENVIRON": {**gateway_config["ENVIRON"], "RATE_LIMIT_PER_USER": "3"}}
    app = served_app(config)
    client = app.test_client()
    token = signer.token()
    statuses = [client.get("/v1/auth/me", headers=_auth(token)).status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200]
    limited = client.get("/v1/auth/me", headers=_auth(token))
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    # another user is not limited
    assert client.get("/v1/auth/me", headers=_auth(signer.token(sub="user-2"))).status_code == 200
    app.extensions["revocations"].stop()


def test_rate_limit_per_ip(gateway_config: dict[str, Any]) -> None:
    config = {**gateway_config, "ENVIRON": {**gateway_config["ENVIRON"], "RATE_LIMIT_PER_IP": "2"}}
    app = served_app(config)
    client = app.test_client()
    codes = [client.post("/v1/auth/login", json={}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    app.extensions["revocations"].stop()


def test_oversized_body_refused(client: Any, signer: Signer, upstream: FakeUpstream) -> None:
    before = len(upstream.seen)
    response = client.post("/v1/keys", headers=_auth(signer.token()), data=b"x" * 4096,
                           content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert len(upstream.seen) == before  # nothing reached the service


@pytest.mark.parametrize("length", ["\u00b3", "9" * 19, "-1", "1e3"])
def test_content_length_that_is_not_a_small_number_is_refused(client: Any, signer: Signer, upstream: FakeUpstream,
                                                              length: str) -> None:
    # "\u00b3" (a latin-1 header value) passes str.isdigit() but not int(): a 400, never a 500.
    environ = EnvironBuilder(path="/v1/keys", method="POST", data=b"{}", content_type="application/json",
                             headers=_auth(signer.token())).get_environ()
    environ["CONTENT_LENGTH"] = length
    seen: list[str] = []
    body = b"".join(client.application(environ, lambda status, headers, exc_info=None: seen.append(status)))
    assert seen == ["400 Bad Request"] and json.loads(body)["error"]["code"] == "invalid_request"
    assert upstream.seen == []


def test_upstream_down_is_a_clean_503(gateway_config: dict[str, Any], signer: Signer) -> None:
    environ = {**gateway_config["ENVIRON"], "KEYDIR_SERVICE_URL": "http://127.0.0.1:9"}
    app = served_app({**gateway_config, "ENVIRON": environ})
    response = app.test_client().get("/v1/keys?users=a", headers=_auth(signer.token()))
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"]["code"] == "service_unavailable"
    assert "Traceback" not in response.get_data(as_text=True)
    app.extensions["revocations"].stop()


def test_several_instances_per_service_one_down(gateway_config: dict[str, Any], signer: Signer,
                                               upstream: FakeUpstream) -> None:
    """KEYDIR_SERVICE_URL may list several instances (issue 19): one down (refusing) is passed over."""
    environ = {**gateway_config["ENVIRON"],
               "KEYDIR_SERVICE_URL": f"http://127.0.0.1:9, {gateway_config['ENVIRON']['KEYDIR_SERVICE_URL']}"}
    app = served_app({**gateway_config, "ENVIRON": environ})
    try:
        statuses = [app.test_client().get("/v1/keys?users=a", headers=_auth(signer.token())).status_code
                    for _ in range(4)]
    finally:
        app.extensions["revocations"].stop()
    assert statuses == [200] * 4
    assert len(upstream.seen) == 4


def test_an_upstream_list_with_a_bad_url_refuses_to_start(gateway_config: dict[str, Any]) -> None:
    from safeharbor_common.config import ConfigError

    environ = {**gateway_config["ENVIRON"], "AUDIT_SERVICE_URL": "http://127.0.0.1:8103,ftp://x"}
    with pytest.raises(ConfigError, match="AUDIT_SERVICE_URL"):
        served_app({**gateway_config, "ENVIRON": environ})


def test_security_headers_and_cors(client: Any, signer: Signer) -> None:
    response = client.get("/v1/auth/me", headers={**_auth(signer.token()), "Origin": "https://app.example"})
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = client.get("/v1/auth/me", headers={**_auth(signer.token()), "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options("/v1/auth/login", headers={"Origin": "https://app.example"})
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


@pytest.fixture
def events(gateway: Any) -> list[dict[str, Any]]:
    """What the gateway emits, recorded instead of written to an outbox."""
    recorded: list[dict[str, Any]] = []

    class Recorder:
        def emit(self, **event: Any) -> str:
            recorded.append(event)
            return "id"

        def ensure_started(self) -> None:
            pass

    gateway.extensions["forwarder"].audit = Recorder()
    return recorded


def test_one_audit_event_per_request(client: Any, signer: Signer, events: list[dict[str, Any]]) -> None:
    client.get("/v1/auth/me", headers={**_auth(signer.token(sub="u-9", role="patient")), "X-User-Id": "admin"})
    client.get("/v1/users", headers={"X-User-Id": "admin"})
    assert len(events) == 2
    first, second = events
    assert first["actor"] == "u-9" and first["role"] == "patient" and first["outcome"] == "200"
    assert first["action"] == "gateway.auth.me"
    assert second["actor"] == "anonymous" and second["outcome"] == "401"
    assert first["request_id"] != second["request_id"]


@pytest.mark.parametrize("path", ["/v1/keys/../internal/v1/revocations", "/v1/keys/%2e%2e/internal/v1/x",
                                  "/v1/audit/./entries", "/v1/keys/a%2F..%2Finternal"])
def test_dot_segments_are_refused_before_any_service(client: Any, signer: Signer, upstream: FakeUpstream,
                                                      path: str) -> None:
    response = client.get(path, headers=_auth(signer.token(role="admin")))
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_request"
    assert upstream.seen == []


@pytest.mark.parametrize(("sent", "forwarded", "path"), [
    ("/v1/users/dr%20chen%3Ax", "/v1/users/dr%20chen:x", "/v1/users/dr chen:x"),
    ("/v1/users/100%25", "/v1/users/100%25", "/v1/users/100%"),
    ("/v1/users/%C3%A9t%C3%A9", "/v1/users/%C3%A9t%C3%A9", "/v1/users/\u00e9t\u00e9"),
    # An encoded slash is checked as a slash, so it is forwarded as one: the service routes what was checked.
    ("/v1/keys/a%2Fb", "/v1/keys/a/b", "/v1/keys/a/b"),
])
def test_path_is_forwarded_as_checked_encoded_again(client: Any, signer: Signer, sent: str, forwarded: str,
                                                     path: str) -> None:
    seen = client.get(f"{sent}?fields=a%26b", headers=_auth(signer.token(role="admin"))).get_json()
    assert seen["target"] == f"{forwarded}?fields=a%26b"
    assert seen["path"] == path and seen["query"] == "fields=a%26b"


def test_a_path_that_is_not_bytes_is_refused(client: Any, signer: Signer, upstream: FakeUpstream) -> None:
    # PEP 3333 servers hand PATH_INFO over as latin-1 characters; anything else is not a request path.
    environ = EnvironBuilder(path="/v1/users/x", headers=_auth(signer.token(role="admin"))).get_environ()
    environ["PATH_INFO"] = "/v1/users/\u4e2d"
    seen: list[str] = []
    body = b"".join(client.application(environ, lambda status, headers, exc_info=None: seen.append(status)))
    assert seen == ["400 Bad Request"] and json.loads(body)["error"]["code"] == "invalid_request"
    assert upstream.seen == []


def test_gateway_own_paths_carry_security_headers_and_are_audited(client: Any, events: list[dict[str, Any]]) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/openapi.json").status_code == 200
    assert [e["resource"] for e in events] == ["/openapi.json"]  # probes are not audited; the rest is
    assert events[0]["request_id"] is not None
