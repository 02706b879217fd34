"""Issue 13's findings that show through the WSGI application itself: limits before routing, refused attempts
keep their actor, fixed metric labels, /metrics only on the internal listener, trusted proxies, and the
protocol details (Connection-named headers, one request id, internal Location, anchored routes).

The findings that need a real server (stalled bodies, slow and broken upstreams) are in test_served_gateway.py.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import FakeAudit, FakeUpstream, Signer, served_app
from prometheus_client import generate_latest


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def limited(gateway_config: dict[str, Any]) -> Iterator[Any]:
    """A gateway whose per-IP limit is 3 and per-user limit 2 a window, with a fake audit emitter."""
    config = {**gateway_config, "ENVIRON": {**gateway_config["ENVIRON"], "RATE_LIMIT_PER_IP": "3",
                                             "RATE_LIMIT_PER_USER": "2"}}
    app = served_app(config)
    app.extensions["forwarder"].audit = FakeAudit()
    yield app
    app.extensions["revocations"].stop()


# -- finding 5: anonymous traffic is limited and cannot grow the metrics ------------------------------


@pytest.mark.parametrize("make_request", [
    lambda c: c.get("/v1/nowhere"),  # unknown path
    lambda c: c.delete("/v1/auth/login"),  # wrong method
    lambda c: c.get("/v1/auth/me", headers=_auth("not-a-token")),  # bad token
    lambda c: c.post("/v1/auth/login", data=b"{}", content_type="application/json"),  # public route
], ids=["unknown-path", "wrong-method", "bad-token", "public"])
def test_the_ip_limit_counts_every_request_before_routing_and_tokens(limited: Any, make_request: Any) -> None:
    client = limited.test_client()
    statuses = [make_request(client).status_code for _ in range(5)]
    assert statuses[3:] == [429, 429], statuses
    assert all(status != 429 for status in statuses[:3])


def test_rate_limited_refusals_are_audited_sparsely(limited: Any) -> None:
    """An attacker cannot turn refusals into an audit-log flood: the 1st, 2nd, 4th, 8th... refusal of a
    window is written, each with how many there have been so far."""
    client = limited.test_client()
    for _ in range(3 + 20):
        client.get("/v1/nowhere")
    audit: FakeAudit = limited.extensions["forwarder"].audit
    refused = [e for e in audit.events if e["outcome"] == "429"]
    assert [e["meta"]["refusals_in_window"] for e in refused] == [1, 2, 4, 8, 16]
    assert len(audit.events) == 3 + 5


def test_metrics_labels_come_from_fixed_sets(client: Any, gateway: Any) -> None:
    for i in range(60):
        client.open("/v1/nowhere", method=f"M{i}THOD")
    text = generate_latest(gateway.extensions["metrics"].registry).decode()
    assert "M1THOD" not in text and 'method="OTHER"' in text


def test_metrics_are_refused_on_the_public_listener(client: Any) -> None:
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


# -- finding 7: refused attempts keep their actor --------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "role", "status"), [
    ("GET", "/v1/audit/entries", "patient", 403),  # role rule
    ("GET", "/v1/nowhere", "clinician", 404),
    ("DELETE", "/v1/auth/login", "clinician", 405),
])
def test_refused_attempts_are_audited_with_the_sessions_user(
    client: Any, audit: FakeAudit, signer: Signer, method: str, path: str, role: str, status: int
) -> None:
    response = client.open(path, method=method, headers=_auth(signer.token(sub="user-7", role=role)))
    assert response.status_code == status
    (event,) = audit.events
    assert (event["actor"], event["role"], event["outcome"]) == ("user-7", role, str(status))
    assert event["meta"]["sid"] == "sess-1"


def test_a_user_over_their_limit_is_audited_as_themselves(limited: Any, signer: Signer) -> None:
    client = limited.test_client()
    token = signer.token(sub="user-9", role="clinician")
    statuses = [client.get("/v1/auth/me", headers=_auth(token)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    refused = limited.extensions["forwarder"].audit.events[-1]
    assert (refused["actor"], refused["outcome"]) == ("user-9", "429")


def test_an_invalid_token_is_audited_as_anonymous(client: Any, audit: FakeAudit) -> None:
    client.get("/v1/nowhere", headers=_auth("forged.token.value"))
    assert audit.events[0]["actor"] == "anonymous"


# -- trusted proxies ------------------------------------------------------------------------------------


def _proxied(gateway_config: dict[str, Any], trusted: str) -> Any:
    config = {**gateway_config, "ENVIRON": {**gateway_config["ENVIRON"], "TRUSTED_PROXIES": trusted}}
    return served_app(config)


@pytest.mark.parametrize(("trusted", "peer", "forwarded", "client_ip"), [
    ("10.0.0.0/8", "10.0.0.5", "203.0.113.7, 10.0.0.9", "203.0.113.7"),  # rightmost untrusted hop
    ("10.0.0.0/8", "10.0.0.5", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # a forged left part is ignored
    ("10.0.0.0/8", "198.51.100.1", "203.0.113.7", "198.51.100.1"),  # peer not trusted: XFF ignored
    ("", "10.0.0.5", "203.0.113.7", "10.0.0.5"),  # nothing trusted by default
    ("10.0.0.0/8", "10.0.0.5", "not-an-ip", "10.0.0.5"),  # garbage: the proxy's own address
])
def test_client_ip_comes_from_x_forwarded_for_only_through_trusted_proxies(
    gateway_config: dict[str, Any], signer: Signer, trusted: str, peer: str, forwarded: str, client_ip: str
) -> None:
    app = _proxied(gateway_config, trusted)
    try:
        response = app.test_client().get("/v1/auth/me", headers={**_auth(signer.token()),
                                                                 "X-Forwarded-For": forwarded},
                                         environ_base={"REMOTE_ADDR": peer})
        seen = response.get_json()["headers"]
        assert seen["x-safeharbor-client-ip"] == client_ip
        assert "x-forwarded-for" not in seen
    finally:
        app.extensions["revocations"].stop()


def test_a_bad_trusted_proxies_setting_refuses_to_start(gateway_config: dict[str, Any]) -> None:
    from safeharbor_common.config import ConfigError

    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        _proxied(gateway_config, "10.0.0.0/8, nonsense")


def test_ipv6_clients_share_a_limit_per_64(limited: Any) -> None:
    client = limited.test_client()
    statuses = [client.get("/v1/nowhere", environ_base={"REMOTE_ADDR": f"2001:db8:1:2::{i:x}"}).status_code
                for i in range(5)]
    assert statuses[3:] == [429, 429]


# -- finding 6: protocol details --------------------------------------------------------------------------


def test_headers_named_in_connection_are_not_forwarded(client: Any, signer: Signer) -> None:
    response = client.get("/v1/auth/me", headers={**_auth(signer.token()), "Connection": "keep-alive, X-Hop",
                                                  "X-Hop": "1", "Expect": "100-continue", "X-Kept": "2"})
    seen = response.get_json()["headers"]
    assert "x-hop" not in seen and "expect" not in seen and seen["x-kept"] == "2"


def test_headers_a_service_names_in_connection_are_not_relayed(client: Any, signer: Signer) -> None:
    response = client.get("/v1/users/hop", headers=_auth(signer.token(role="admin")))
    assert response.status_code == 200 and "X-Internal-Hop" not in response.headers


def test_a_service_sees_only_the_gateways_request_id(client: Any, signer: Signer) -> None:
    response = client.get("/v1/auth/me", headers={**_auth(signer.token()), "x-request-id": "client-chosen-id-1"})
    seen = response.get_json()
    assert seen["request_ids"] == [response.headers["X-Request-ID"]]


def test_internal_locations_are_not_relayed(client: Any, signer: Signer, upstream: FakeUpstream) -> None:
    response = client.get("/v1/users/moved", headers=_auth(signer.token(role="admin")))
    assert response.status_code == 302
    assert response.headers["Location"] == "/v1/users/elsewhere?x=1"
    assert upstream.url not in str(response.headers)


@pytest.mark.parametrize("path", ["/v1/auth/login%0A", "/v1/auth/me%0A", "/v1/users/abc%0A"])
def test_routes_are_anchored_at_the_very_end(client: Any, audit: FakeAudit, signer: Signer,
                                             upstream: FakeUpstream, path: str) -> None:
    response = client.open(path, method="POST" if "login" in path else "GET",
                           headers=_auth(signer.token(role="admin")))
    assert response.status_code == 404
    assert upstream.seen == [] and audit.events[0]["action"] == "gateway.unrouted"
