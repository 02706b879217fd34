"""The HTTP API against the Stream emulator (real stream-chat SDK on both sides)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from safeharbor_push.defaults import DEFAULT_TEMPLATES
from safeharbor_push.models import TemplateVersion

from .conftest import AppFactory, Emulator, RecordingAudit, auth

SAFE_APN = (
    '{"aps": {"alert": {"title": "New secure message", "body": "Open the app to view."}, '
    '"badge": {{ unread_count }}}, "stream": {"id": "{{ message.id }}"}}'
)
SAFE_APN_2 = '{"aps": {"alert": "You have a new message", "sound": "default"}, "id": "{{message.id}}"}'
UNSAFE_APN = '{"aps": {"alert": {"title": "{{ sender.name }}", "body": "{{ truncate message.text 100 }}"}}}'


def put(client: FlaskClient, template: str, provider: str = "apn", kind: str = "notification", **kw: Any) -> Any:
    return client.put(
        "/v1/push/templates",
        json={"provider": provider, "kind": kind, "template": template},
        headers=kw.pop("headers", None) or auth("admin", sub="admin-1"),
    )


def status(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/v1/push/status", headers=auth())
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


# --- lint ------------------------------------------------------------------------------------------


def test_lint_returns_findings_without_saving(client: FlaskClient, app: Flask) -> None:
    response = client.post(
        "/v1/push/lint",
        json={"provider": "apn", "kind": "notification", "template": UNSAFE_APN},
        headers=auth(),
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] is False
    assert [(f["rule"], f["text"], f["line"], f["column"]) for f in body["findings"]] == [
        ("phi-variable", "sender.name", 1, 33),
        ("phi-variable", "message.text", 1, 71),
    ]
    ok = client.post(
        "/v1/push/lint", json={"provider": "apn", "kind": "notification", "template": SAFE_APN}, headers=auth()
    ).get_json()
    assert ok == {"ok": True, "findings": []}
    with app.extensions["push"].sessions() as session:
        assert session.query(TemplateVersion).count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "apn", "kind": "data", "template": "{}"}, "kind"),
        ({"provider": "huawei", "kind": "notification", "template": "{}"}, "provider"),
        ({"provider": "apn", "kind": "notification"}, "template"),
        ({"provider": "apn", "kind": "notification", "template": 5}, "template"),
        ({"provider": "apn", "kind": "notification", "template": "x" * 20000}, "template"),
        ({"provider": "apn", "kind": "notification", "template": "{}", "extra": 1}, "extra"),
    ],
)
def test_lint_rejects_bad_bodies_naming_the_field(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/v1/push/lint", json=body, headers=auth())
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request"
    assert error["field"] == field


def test_malformed_json_is_400(client: FlaskClient) -> None:
    response = client.post("/v1/push/lint", data="{not json", headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"


ROUTES = [
    ("post", "/v1/push/lint", {"provider": "apn", "kind": "notification", "template": "{}"}),
    ("get", "/v1/push/templates", None),
    ("put", "/v1/push/templates", {"provider": "apn", "kind": "notification", "template": SAFE_APN}),
    ("post", "/v1/push/templates/rollback", {"provider": "apn", "kind": "notification", "version": 1}),
    ("get", "/v1/push/status", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("role", ["clinician", "billing", "patient", "auditor"])
def test_non_admin_is_refused(client: FlaskClient, method: str, path: str, body: Any, role: str) -> None:
    response = getattr(client, method)(path, json=body, headers=auth(role))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_unauthenticated_and_limited_scopes_are_refused(client: FlaskClient, method: str, path: str, body: Any) -> None:
    assert getattr(client, method)(path, json=body).status_code == 401
    bad = getattr(client, method)(path, json=body, headers={"Authorization": "Bearer not-a-jwt"})
    assert bad.status_code == 401
    assert bad.get_json()["error"]["code"] == "unauthenticated"
    expired = getattr(client, method)(path, json=body, headers=auth(ttl=-60))
    assert expired.get_json()["error"]["code"] == "session_expired"
    enrolment = getattr(client, method)(path, json=body, headers=auth(scope="mfa_enrollment"))
    assert enrolment.status_code == 403
    assert enrolment.get_json()["error"]["code"] == "mfa_enrollment_required"


# --- apply -----------------------------------------------------------------------------------------


def test_put_applies_to_stream_and_reads_back(
    client: FlaskClient, emulator: Emulator, audit_log: RecordingAudit
) -> None:
    response = put(client, SAFE_APN)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["version"] == 1 and body["applied"] is True
    assert body["author"] == "admin-1" and body["applied_at"]
    # Stream (read back through the real SDK) holds exactly the template.
    settings = emulator.sdk().get_app_settings()
    assert settings["app"]["push_notifications"]["apn"]["notification_template"] == SAFE_APN

    second = put(client, SAFE_APN_2)
    assert second.get_json()["version"] == 2
    listing = client.get("/v1/push/templates", headers=auth()).get_json()
    assert listing["approved"] == {"apn": {"notification": 2}}
    assert [(t["version"], t["status"], t["approved"]) for t in listing["templates"]] == [
        (2, "applied", True),
        (1, "applied", False),
    ]
    assert listing["templates"][1]["template"] == SAFE_APN
    assert listing["defaults"]["apn"]["notification"] == DEFAULT_TEMPLATES[("apn", "notification")]

    events = audit_log.actions("push.template.apply")
    assert [(e["outcome"], e["meta"]["version"], e["actor"]) for e in events] == [
        ("success", 1, "admin-1"),
        ("success", 2, "admin-1"),
    ]
    assert "template" not in events[0]["meta"]

    report = status(client)
    apn = report["providers"]["apn"]
    assert apn["approved_version"] == 2 and apn["in_sync"] is True and apn["phi_safe"] is True
    assert apn["kinds"]["notification"]["stream_template"] == SAFE_APN_2


def test_firebase_kinds_apply_to_their_own_fields(client: FlaskClient, emulator: Emulator) -> None:
    for kind in ("notification", "data", "apn"):
        assert put(client, DEFAULT_TEMPLATES[("firebase", kind)], provider="firebase", kind=kind).status_code == 201
    firebase = emulator.push_settings()["firebase"]
    assert firebase["notification_template"] == DEFAULT_TEMPLATES[("firebase", "notification")]
    assert firebase["data_template"] == DEFAULT_TEMPLATES[("firebase", "data")]
    assert firebase["apn_template"] == DEFAULT_TEMPLATES[("firebase", "apn")]
    report = status(client)["providers"]["firebase"]
    assert report["in_sync"] is True
    assert {k: v["approved_version"] for k, v in report["kinds"].items()} == {"notification": 1, "data": 1, "apn": 1}


def test_phi_template_is_refused_with_every_finding(
    client: FlaskClient, emulator: Emulator, app: Flask, audit_log: RecordingAudit
) -> None:
    response = put(client, UNSAFE_APN)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "phi_in_template"
    assert [f["rule"] for f in error["findings"]] == ["phi-variable", "phi-variable"]
    assert emulator.push_settings()["apn"]["notification_template"] == ""
    with app.extensions["push"].sessions() as session:
        assert session.query(TemplateVersion).count() == 0
    (event,) = audit_log.actions("push.template.apply")
    assert event["outcome"] == "failure"
    assert event["meta"]["findings"] == [
        {"rule": "phi-variable", "line": 1, "column": 33},
        {"rule": "phi-variable", "line": 1, "column": 71},
    ]
    assert "sender.name" not in str(event)  # positions only: the offending text may be PHI


def test_stream_error_is_502_and_no_version_claims_to_be_applied(
    client: FlaskClient, emulator: Emulator, audit_log: RecordingAudit
) -> None:
    assert put(client, SAFE_APN).status_code == 201
    emulator.outage(True)
    try:
        response = put(client, SAFE_APN_2)
    finally:
        emulator.outage(False)
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "upstream_error"
    assert "Traceback" not in response.get_data(as_text=True)
    listing = client.get("/v1/push/templates", headers=auth()).get_json()
    assert listing["approved"] == {"apn": {"notification": 1}}
    failed = listing["templates"][0]
    assert (failed["version"], failed["status"], failed["applied_at"], failed["error_code"]) == (
        2,
        "failed",
        None,
        "upstream_error",
    )
    assert audit_log.actions("push.template.apply")[-1]["outcome"] == "failure"
    # A failed version cannot be rolled back to.
    rollback = client.post(
        "/v1/push/templates/rollback", json={"provider": "apn", "kind": "notification", "version": 2}, headers=auth()
    )
    assert rollback.status_code == 422
    assert status(client)["providers"]["apn"]["in_sync"] is True


def test_status_when_stream_answers_an_error_is_502(client: FlaskClient, emulator: Emulator) -> None:
    emulator.outage(True)
    try:
        response = client.get("/v1/push/status", headers=auth())
    finally:
        emulator.outage(False)
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "upstream_error"


def _closed_port_url() -> str:
    """A loopback URL nothing listens on: connection refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_apply_when_stream_is_unreachable_is_503_and_not_approved(make_app: AppFactory) -> None:
    app = make_app(ENVIRON_EXTRA={"STREAM_CHAT_URL": _closed_port_url()})
    client = app.test_client()
    response = put(client, SAFE_APN)
    assert response.status_code == 503, response.get_json()
    error = response.get_json()["error"]
    assert (error["code"], error["operation"]) == ("service_unavailable", "update_app_settings")
    listing = client.get("/v1/push/templates", headers=auth()).get_json()
    assert listing["approved"] == {}
    assert (listing["templates"][0]["status"], listing["templates"][0]["error_code"]) == (
        "failed",
        "service_unavailable",
    )


def test_status_when_stream_times_out_is_503(make_app: AppFactory) -> None:
    # A socket that listens but never answers: the connection is queued, the read times out.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        app = make_app(ENVIRON_EXTRA={"STREAM_CHAT_URL": f"http://127.0.0.1:{port}", "STREAM_TIMEOUT": "0.3"})
        response = app.test_client().get("/v1/push/status", headers=auth())
    assert response.status_code == 503, response.get_json()
    error = response.get_json()["error"]
    assert (error["code"], error["operation"]) == ("service_unavailable", "get_app_settings")
    assert "Traceback" not in response.get_data(as_text=True)


class _LossyStream:
    """Stream accepting the PATCH but reading back something else (a misbehaving upstream)."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], str | None] = {}

    def apply(self, *, provider: str, kind: str, template: str) -> None:
        self.stored[(provider, kind)] = template[:-1]

    def read(self) -> dict[tuple[str, str], str | None]:
        return dict(self.stored)


def test_read_back_mismatch_is_502_and_not_approved(make_app: AppFactory) -> None:
    app = make_app(STREAM_CLIENT=_LossyStream())
    client = app.test_client()
    response = put(client, SAFE_APN)
    assert response.status_code == 502
    assert response.get_json()["error"]["operation"] == "read_back"
    listing = client.get("/v1/push/templates", headers=auth()).get_json()
    assert listing["approved"] == {}
    assert listing["templates"][0]["error_code"] == "read_back_mismatch"


def test_read_back_ignores_formatting_stream_may_apply(client: FlaskClient, emulator: Emulator) -> None:
    assert put(client, SAFE_APN).status_code == 201
    reformatted = (
        '{\n  "stream": {"id": "{{message.id}}"},\n  "aps": {\n    "badge": {{unread_count}},\n'
        '    "alert": {"body": "Open the app to view.", "title": "New secure message"}\n  }\n}'
    )
    emulator.sdk().update_app_settings(apn_config={"notification_template": reformatted})
    assert status(client)["providers"]["apn"]["in_sync"] is True


# --- rollback --------------------------------------------------------------------------------------


def test_rollback_reapplies_a_previous_version_as_a_new_one(
    client: FlaskClient, emulator: Emulator, audit_log: RecordingAudit
) -> None:
    put(client, SAFE_APN)
    put(client, SAFE_APN_2)
    response = client.post(
        "/v1/push/templates/rollback",
        json={"provider": "apn", "kind": "notification", "version": 1},
        headers=auth(sub="admin-2"),
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["version"], body["rolled_back_from"], body["author"]) == (3, 1, "admin-2")
    assert emulator.push_settings()["apn"]["notification_template"] == SAFE_APN
    (event,) = audit_log.actions("push.template.rollback")
    assert event["meta"]["rolled_back_from"] == 1 and event["outcome"] == "success"
    missing = client.post(
        "/v1/push/templates/rollback", json={"provider": "apn", "kind": "notification", "version": 9}, headers=auth()
    )
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"


# --- drift -----------------------------------------------------------------------------------------


def test_drift_in_stream_is_detected_once_per_episode(
    client: FlaskClient, emulator: Emulator, audit_log: RecordingAudit
) -> None:
    put(client, SAFE_APN)
    # Someone edits Stream's settings outside SafeHarbor (dashboard, another script).
    emulator.sdk().update_app_settings(apn_config={"notification_template": UNSAFE_APN})
    report = status(client)["providers"]["apn"]
    assert report["in_sync"] is False and report["drift"] is True and report["phi_safe"] is False
    slot = report["kinds"]["notification"]
    assert slot["approved_version"] == 1 and slot["stream_template"] == UNSAFE_APN
    assert {f["rule"] for f in slot["stream_findings"]} == {"phi-variable"}
    assert slot["drift"]["in_drift"] is True and slot["drift"]["since"]
    status(client)
    (event,) = audit_log.actions("push.drift.detected")
    assert event["severity"] == "high" and event["actor"] == "svc:push"
    assert event["meta"]["approved_version"] == 1 and event["meta"]["stream_rules"] == ["phi-variable"]
    assert "sender.name" not in str(event)

    # Rolling back to the approved version ends the episode.
    client.post(
        "/v1/push/templates/rollback", json={"provider": "apn", "kind": "notification", "version": 1}, headers=auth()
    )
    assert status(client)["providers"]["apn"]["in_sync"] is True
    assert len(audit_log.actions("push.drift.resolved")) == 1
    # A new change outside SafeHarbor is a new episode.
    emulator.sdk().update_app_settings(apn_config={"notification_template": SAFE_APN_2})
    status(client)
    assert len(audit_log.actions("push.drift.detected")) == 2


def test_unmanaged_slots_report_streams_default_as_unsafe(client: FlaskClient) -> None:
    report = status(client)["providers"]
    apn = report["apn"]
    assert apn["approved_version"] is None and apn["in_sync"] is False and apn["phi_safe"] is False
    assert apn["kinds"]["notification"]["stream_findings"][0]["rule"] == "empty-template"


def test_periodic_checker_records_drift_from_one_worker_only(
    make_app: AppFactory, emulator: Emulator, audit_log: RecordingAudit
) -> None:
    first = make_app()
    put(first.test_client(), SAFE_APN)
    # Two "workers" of the same deployment (one database), each with its checker thread.
    workers = [
        make_app(PUSH_DRIFT_CHECK_ENABLED=True, PUSH_DRIFT_INTERVAL=0.1, PUSH_DRIFT_LEASE_SECONDS=30) for _ in range(2)
    ]
    for worker in workers:
        worker.extensions["push_drift"].ensure_started()
    emulator.sdk().update_app_settings(apn_config={"notification_template": SAFE_APN_2})
    deadline = time.monotonic() + 10
    while not audit_log.actions("push.drift.detected") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert len(audit_log.actions("push.drift.detected")) == 1
    # The lease (30 s) stays with the first worker that took it: the other never checks.
    checks = sorted(w.extensions["push_drift"].checks for w in workers)
    assert checks[0] == 0 and checks[1] >= 1


def test_lease_is_held_by_one_holder_until_it_expires(app: Flask) -> None:
    from safeharbor_push.models import LEASE_DRIFT
    from safeharbor_push.service import acquire_lease

    ctx = app.extensions["push"]
    assert acquire_lease(ctx=ctx, name=LEASE_DRIFT, holder="host-a:1", ttl=0.5)
    assert acquire_lease(ctx=ctx, name=LEASE_DRIFT, holder="host-a:1", ttl=0.5)  # renewal
    assert not acquire_lease(ctx=ctx, name=LEASE_DRIFT, holder="host-b:2", ttl=0.5)
    time.sleep(0.6)
    assert acquire_lease(ctx=ctx, name=LEASE_DRIFT, holder="host-b:2", ttl=0.5)
    assert not acquire_lease(ctx=ctx, name=LEASE_DRIFT, holder="host-a:1", ttl=0.5)


def test_concurrent_puts_get_distinct_versions_and_stay_in_sync(client: FlaskClient, app: Flask) -> None:
    templates = [SAFE_APN, SAFE_APN_2, DEFAULT_TEMPLATES[("apn", "notification")]]
    results: list[int] = []

    def worker(template: str) -> None:
        local = app.test_client()
        response = put(local, template)
        results.append(response.status_code)

    threads = [threading.Thread(target=worker, args=(t,)) for t in templates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [201, 201, 201]
    listing = client.get("/v1/push/templates", headers=auth()).get_json()
    assert sorted(t["version"] for t in listing["templates"]) == [1, 2, 3]
    assert listing["approved"] == {"apn": {"notification": 3}}
    assert status(client)["providers"]["apn"]["in_sync"] is True


def test_apply_defaults_makes_every_slot_generic_and_in_sync(app: Flask, client: FlaskClient) -> None:
    from safeharbor_push.service import apply_defaults

    rows = apply_defaults(ctx=app.extensions["push"])
    assert len(rows) == 4
    assert apply_defaults(ctx=app.extensions["push"]) == []
    report = status(client)["providers"]
    for provider in ("apn", "firebase"):
        assert report[provider]["in_sync"] is True and report[provider]["phi_safe"] is True


def test_health_ready_metrics_openapi(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    status(client)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "push_template_in_sync" in metrics
    paths = client.get("/openapi.json").get_json()["paths"]
    assert {"/v1/push/lint", "/v1/push/templates", "/v1/push/templates/rollback", "/v1/push/status"} <= set(paths)


@pytest.mark.parametrize("version", [0, 2**31, 382913694025671010942976])
def test_rollback_version_out_of_range_is_a_400(client: FlaskClient, version: int) -> None:
    """Found by schemathesis: a version past 64 bits overflowed the database driver (500)."""
    response = client.post(
        "/v1/push/templates/rollback",
        json={"provider": "firebase", "kind": "notification", "version": version},
        headers=auth(),
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"
