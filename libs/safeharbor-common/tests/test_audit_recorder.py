"""The one audit recorder: what it fills in from the request, and when a failure stops the caller."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, g
from safeharbor_common import audit_recorder
from safeharbor_common.audit_recorder import AuditRecorder, AuditUnavailable, recorder_of
from safeharbor_common.errors import SafeHarborError


class _Emitter:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = fail

    def emit(self, **event: Any) -> str:
        if self.fail:
            raise OSError("outbox disk full")
        self.events.append(event)
        return "id"


class _Session:
    sub, role = "u-1", "clinician"


def _app(emitter: _Emitter | None, **options: Any) -> Flask:
    app = Flask(__name__)
    if emitter is not None:
        app.extensions["audit"] = emitter
    audit_recorder.init_app(app, **options)
    return app


def test_in_a_request_the_session_and_request_are_filled_in() -> None:
    emitter = _Emitter()
    app = _app(emitter)
    with app.test_request_context(headers={"X-Request-ID": "req-12345678", "User-Agent": "ua"}):
        g.session = _Session()
        recorder_of().record(action="keys.key.registered", resource="keys/u-1/d", meta={"n": 1})
    [event] = emitter.events
    assert event["actor"] == "u-1" and event["role"] == "clinician" and event["outcome"] == "success"
    assert event["request_id"] == "req-12345678" and event["user_agent"] == "ua" and event["meta"] == {"n": 1}


def test_outside_a_request_the_given_actor_and_no_request_fields() -> None:
    emitter = _Emitter()
    app = _app(emitter)
    recorder_of(app).record(action="push.drift.detected", actor="svc:push", outcome="failure")
    assert emitter.events[0]["actor"] == "svc:push" and emitter.events[0]["request_id"] is None
    with app.test_request_context():
        recorder_of().record(action="x")  # no session, no calling service
    assert emitter.events[1]["actor"] == "anonymous"


def test_fails_closed_by_default_with_a_typed_503() -> None:
    app = _app(_Emitter(fail=True))
    with pytest.raises(AuditUnavailable) as caught:
        recorder_of(app).record(action="auth.login", actor="u-1")
    assert caught.value.status == 503 and isinstance(caught.value.__cause__, OSError)


def test_fail_open_recorder_logs_and_goes_on_unless_the_event_is_required() -> None:
    class KeydirUnavailable(SafeHarborError):
        status, code, default_message = 503, "service_unavailable", "no audit"

    app = _app(_Emitter(fail=True), fail_closed=False, unavailable=KeydirUnavailable)
    recorder_of(app).record(action="keys.backup.stored", actor="u-1")  # logged, not raised
    with pytest.raises(KeydirUnavailable):
        recorder_of(app).record(action="keys.backup.read", actor="u-1", required=True)


def test_auditing_switched_off_writes_nothing_and_refuses_only_required_events() -> None:
    app = _app(None)
    recorder_of(app).record(action="auth.login", actor="u-1")
    with pytest.raises(AuditUnavailable):
        recorder_of(app).record(action="keys.backup.read", actor="u-1", required=True)


def test_an_app_without_a_recorder_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        recorder_of(Flask(__name__))
    assert isinstance(AuditRecorder(lambda: None), AuditRecorder)
