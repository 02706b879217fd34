"""What a forwarded request makes the client wait for: the audit event is committed before the answer leaves
(an acknowledged request always has its event); the access log and metrics are written after the server has
sent it (PEP 3333's close()), so they are not part of the client's wait."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import FakeAudit, Signer
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
