"""What a forwarded request makes the client wait for: the audit event is committed before the answer leaves
(an acknowledged request always has its event); the access log and metrics are written after the server has
sent it (PEP 3333's close()), so they are not part of the client's wait."""
from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from conftest import FakeAudit, FakeUpstream, Signer
from prometheus_client import generate_latest
from werkzeug.test import EnvironBuilder


def _access_logged(caplog: pytest.LogCaptureFixture) -> bool:
    return any(r.name == "safeharbor.web" and r.getMessage() == "request" for r in caplog.records)


def _counted(gateway: Any) -> bool:
    text = generate_latest(gateway.extensions["metrics"].registry).decode()
    return 'http_requests_total{' in text and 'route="auth.me"' in text


def test_access_log_and_metrics_follow_the_answer_the_audit_event_precedes_it(
    gateway: Any, audit: FakeAudit, signer: Signer, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="safeharbor.web")
    environ = EnvironBuilder(path="/v1/auth/me", headers={"Authorization": f"Bearer {signer.token()}"}).get_environ()
    at_start: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        at_start.update(status=status, audited=len(audit.events), logged=_access_logged(caplog),
                        counted=_counted(gateway))

    body = gateway.wsgi_app(environ, start_response)
    assert b"".join(body)
    assert at_start == {"status": "200 OK", "audited": 1, "logged": False, "counted": False}
    assert not _access_logged(caplog)
    body.close()  # the server has sent the answer
    assert _access_logged(caplog) and _counted(gateway)
    assert len(audit.events) == 1


def test_a_token_verified_before_costs_one_counter_round_trip(
    gateway: Any, signer: Signer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With Redis each count is a network round trip: a known token's user is counted together with the IP.
    A token never seen still meets the per-IP limit alone first (nothing spent on it before that)."""
    limiter = gateway.extensions["rate_limiter"]
    calls: list[list[str]] = []
    count = limiter.count

    def recording(hits: list[tuple[str, str, Any]]) -> Any:
        calls.append([scope for scope, _, _ in hits])
        return count(hits)

    monkeypatch.setattr(limiter, "count", recording)
    client = gateway.test_client()
    token = signer.token()
    assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert calls == [["ip"], ["user"]]  # first sight: the IP before the signature check, the user after
    calls.clear()
    assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert calls == [["ip", "user"]]
    calls.clear()
    assert client.get("/v1/auth/me", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert calls == [["ip"]]


def test_the_audit_event_is_sealed_while_the_service_works(
    gateway: Any, audit: FakeAudit, signer: Signer, upstream: FakeUpstream,
) -> None:
    """The event's id, time and sealed PHI (most of its cost) are made after the request went to the service
    and before its answer is read; after the answer only the outcome is added and the event committed."""
    seen_by_service: list[int] = []
    prepare = audit.prepare

    def recording(**fields: Any) -> Any:
        deadline = time.monotonic() + 2  # had it run before the send, the service would never have it
        while not upstream.seen and time.monotonic() < deadline:
            time.sleep(0.005)
        seen_by_service.append(len(upstream.seen))
        return prepare(**fields)

    audit.prepare = recording  # type: ignore[method-assign]
    answer = gateway.test_client().get("/v1/auth/me", headers={"Authorization": f"Bearer {signer.token()}",
                                                               "User-Agent": "UA-under-test"})
    assert answer.status_code == 200
    assert seen_by_service == [1]
    assert audit.prepared == [{"ip": "127.0.0.1", "user_agent": "UA-under-test"}]
    event = audit.events[0]
    assert event["prepared"] is not None and event["ip"] is None and event["user_agent"] is None
    assert event["outcome"] == "200" and event["action"] == "gateway.auth.me"


def test_a_request_refused_before_forwarding_is_sealed_at_once(gateway: Any, audit: FakeAudit) -> None:
    answer = gateway.test_client().get("/v1/auth/me", headers={"User-Agent": "UA-refused"})
    assert answer.status_code == 401
    assert audit.prepared == [] and audit.events[0]["prepared"] is None
    assert audit.events[0]["user_agent"] == "UA-refused"
