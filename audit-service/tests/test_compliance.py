"""The compliance report (issue 17): aggregation, signature, audit entry, failing peers, alerts, the schedule."""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from safeharbor_audit.compliance import ComplianceReporter, PeerAnswer
from safeharbor_audit.store import AuditLog
from safeharbor_common import compliance
from safeharbor_protocol import compliance_report
from sqlalchemy import Connection

from .conftest import AuditEnv, Ingest, make_event
from .test_tamper import tamper


def peer(statuses: dict[str, str] | None = None, *,
         silent: frozenset[str] = frozenset()) -> Callable[[str], PeerAnswer]:
    """A stand-in for the peers' endpoints: every catalogue control of the service, pass unless told."""
    statuses = statuses or {}

    def fetch(service: str) -> PeerAnswer:
        if service in silent:
            return PeerAnswer({}, "did not answer (ConnectionError)")
        return PeerAnswer({
            spec.id: {"id": spec.id, "status": statuses.get(spec.id, "pass"), "evidence": {"probe": spec.id},
                      "measured_at": compliance.now_rfc3339()}
            for spec in compliance.CATALOGUE if spec.service == service
        })

    return fetch


@pytest.fixture
def reporter(app: Flask) -> ComplianceReporter:
    reporter: ComplianceReporter = app.extensions["compliance"]
    reporter.fetch = peer()
    return reporter


def get_report(client: FlaskClient, env: AuditEnv, role: str = "auditor") -> dict[str, Any]:
    response = client.get("/v1/compliance/report", headers=env.bearer(role))
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def entries(client: FlaskClient, env: AuditEnv, action: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/audit/entries?action={action}&limit=1000", headers=env.bearer("auditor"))
    assert response.status_code == 200
    return list(response.get_json()["entries"])


def test_report_is_signed_every_control_measured_and_its_hash_audited(
    client: FlaskClient, audit_env: AuditEnv, reporter: ComplianceReporter
) -> None:
    document = get_report(client, audit_env)
    key = client.get("/v1/compliance/report/key", headers=audit_env.bearer("admin")).get_data(as_text=True).strip()
    assert compliance_report.verify_report(document, key) == document["sha256"]

    report = document["report"]
    assert [c["id"] for c in report["controls"]] == [s.id for s in compliance.CATALOGUE]
    assert all(c["measured_at"] and c["evidence"] for c in report["controls"])
    own = {c["id"]: c for c in report["controls"] if c["service"] == "audit"}
    assert {i: c["status"] for i, c in own.items()} == dict.fromkeys(own, "pass"), own
    assert own["audit.log_verifies"]["evidence"]["ok"] is True
    assert {o["status"] for o in report["organisational"]} == {"not_checked"}
    assert {o["id"] for o in report["organisational"]} >= {"org.baa_stream", "org.device_encryption", "org.backups",
                                                          "org.workforce_training"}
    assert [s["id"] for s in report["safeguards"]] == list(compliance.SAFEGUARDS)
    assert all(s["controls"] for s in report["safeguards"]), "every safeguard has a live check"

    [entry] = entries(client, audit_env, "compliance.report.signed")
    assert entry["meta"]["sha256"] == document["sha256"] and entry["meta"]["report_id"] == report["report_id"]
    assert entry["seq"] == document["audit_entry"]["seq"]

    changed = copy.deepcopy(document)
    changed["report"]["controls"][0]["status"] = "pass" if changed["report"]["controls"][0]["status"] != "pass" \
        else "warn"
    with pytest.raises(compliance_report.ReportSignatureError):
        compliance_report.verify_report(changed, key)


def test_only_auditors_and_admins(client: FlaskClient, audit_env: AuditEnv, reporter: ComplianceReporter) -> None:
    assert client.get("/v1/compliance/report", headers=audit_env.bearer("patient")).status_code == 403
    assert client.get("/v1/compliance/report").status_code == 401
    assert get_report(client, audit_env, "admin")["report"]["trigger"] == "request"


def test_a_service_that_does_not_answer_fails_its_controls(
    client: FlaskClient, audit_env: AuditEnv, reporter: ComplianceReporter
) -> None:
    reporter.fetch = peer(silent=frozenset({"push"}))
    report = get_report(client, audit_env)["report"]
    push = [c for c in report["controls"] if c["service"] == "push"]
    assert push and all(c["status"] == "fail" and "did not answer" in c["evidence"]["error"] for c in push)
    assert report["services"]["push"] == {"answered": False, "error": "did not answer (ConnectionError)"}
    assert all(c["status"] == "pass" for c in report["controls"] if c["service"] not in ("push", "audit"))


def test_unreachable_peers_over_http_fail_not_vanish(client: FlaskClient, audit_env: AuditEnv, app: Flask) -> None:
    reporter: ComplianceReporter = app.extensions["compliance"]
    reporter.peers = dict.fromkeys(reporter.peers, "http://127.0.0.1:9")  # the real fetch; nothing listens
    report = get_report(client, audit_env)["report"]
    assert len(report["controls"]) == len(compliance.CATALOGUE)
    assert {c["status"] for c in report["controls"] if c["service"] != "audit"} == {"fail"}
    assert report["summary"]["fail"] == sum(1 for s in compliance.CATALOGUE if s.service != "audit")


def test_a_peer_cannot_report_another_services_control(
    client: FlaskClient, audit_env: AuditEnv, reporter: ComplianceReporter
) -> None:
    honest = peer()

    def fetch(service: str) -> PeerAnswer:
        answer = honest(service)
        if service == "push":  # push claims auth's logoff control passes, and leaves out its own
            return PeerAnswer({"auth.automatic_logoff": {"id": "auth.automatic_logoff", "status": "pass",
                                                         "evidence": {}, "measured_at": "now"}})
        if service == "auth":
            answer.controls.pop("auth.automatic_logoff")
        return answer

    reporter.fetch = fetch
    controls = {c["id"]: c for c in get_report(client, audit_env)["report"]["controls"]}
    assert controls["auth.automatic_logoff"]["status"] == "fail"
    assert controls["push.templates_in_sync"]["status"] == "fail"


def test_tampered_audit_log_turns_its_line_to_fail(
    client: FlaskClient, audit_env: AuditEnv, app: Flask, ingest: Ingest, reporter: ComplianceReporter
) -> None:
    log: AuditLog = app.extensions["audit_log"]
    assert ingest([make_event(resource=f"/r/{i}") for i in range(10)]).status_code == 200
    log.checkpoint_if_due(force=True)
    before = {c["id"]: c for c in get_report(client, audit_env)["report"]["controls"]}
    assert before["audit.log_verifies"]["status"] == "pass"

    def edit(conn: Connection) -> None:
        conn.exec_driver_sql("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 3")

    tamper(log, edit)
    after = {c["id"]: c for c in get_report(client, audit_env)["report"]["controls"]}
    assert after["audit.log_verifies"]["status"] == "fail"
    assert after["audit.log_verifies"]["evidence"]["first_bad_seq"] == 3


def test_a_control_turning_to_fail_writes_an_alert_entry(
    client: FlaskClient, audit_env: AuditEnv, reporter: ComplianceReporter
) -> None:
    get_report(client, audit_env)
    reporter.fetch = peer({"auth.automatic_logoff": "fail"})
    failing = get_report(client, audit_env)
    [alert] = entries(client, audit_env, "compliance.control.failed")
    assert alert["severity"] == "alert" and alert["outcome"] == "failure"
    assert alert["meta"]["control"] == "auth.automatic_logoff" and alert["meta"]["previous_status"] == "pass"
    assert alert["meta"]["report_id"] == failing["report"]["report_id"]

    get_report(client, audit_env)  # still failing: no second alert
    assert len(entries(client, audit_env, "compliance.control.failed")) == 1
    reporter.fetch = peer()
    get_report(client, audit_env)
    [recovered] = entries(client, audit_env, "compliance.control.recovered")
    assert recovered["severity"] == "info" and recovered["meta"]["previous_status"] == "fail"


def test_daily_report_is_kept_once_per_period(
    client: FlaskClient, audit_env: AuditEnv, reporter: ComplianceReporter
) -> None:
    reporter.interval = 86400
    day = 20_000 * 86400.0
    kept = reporter.run_if_due(now=day + 60)
    assert kept is not None and kept.report["trigger"] == "schedule"
    assert reporter.run_if_due(now=day + 3600) is None  # the same day: another worker's look finds it kept
    assert reporter.run_if_due(now=day + 86400 + 1) is not None  # the next day

    get_report(client, audit_env)  # an on-demand report does not replace the daily one as "latest daily"
    response = client.get("/v1/compliance/report/latest?trigger=schedule", headers=audit_env.bearer("auditor"))
    assert response.status_code == 200
    latest = response.get_json()
    assert latest["report"]["trigger"] == "schedule"
    key = client.get("/v1/compliance/report/key", headers=audit_env.bearer("auditor")).get_data(as_text=True)
    compliance_report.verify_report(latest, key.strip())
    assert len(entries(client, audit_env, "compliance.report.signed")) == 3
    assert entries(client, audit_env, "audit.read.compliance")


def test_alert_entries_export_with_the_highest_siem_severity(
    client: FlaskClient, audit_env: AuditEnv, reporter: ComplianceReporter
) -> None:
    get_report(client, audit_env)
    reporter.fetch = peer({"keydir.log_verifies": "fail"})
    get_report(client, audit_env)
    for fmt, marker in (("cef", "|compliance.control.failed|10|"), ("syslog", "<105>1 ")):
        lines = client.get(f"/v1/audit/export?format={fmt}", headers=audit_env.bearer("auditor")).get_data(True)
        [alert] = [line for line in lines.splitlines() if "compliance.control.failed" in line]
        assert marker in alert, alert
