"""The HIPAA §164.312 compliance report (issue 17): audit-service's own controls, the aggregation of every
service's, the Ed25519 signature, the audit entry naming the report's hash, kept reports and the schedule.

Why here: audit-service already signs (checkpoints), already serves auditors, and is where the report's hash
must be recorded; hosting the aggregation anywhere else would add a service that writes to the log through
the ingest path and a second signing key holder. It calls each peer's internal controls endpoint with its
own service identity (the peers accept only `audit`); a peer that does not answer, or answers wrongly, makes
every control of the catalogue that it owns fail, never vanish.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from safeharbor_common import audit_phi, compliance
from safeharbor_common.compliance import CATALOGUE, CONTROLS, CONTROLS_PATH, Check, Status
from safeharbor_common.config import EnvReader
from safeharbor_common.internal_http import internal_session
from safeharbor_common.service_identity import ServiceTokenSigner, load_private_key
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import compliance_report
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from .config import MIN_RETENTION_DAYS
from .models import audit_retention, compliance_reports
from .phi import PhiDecryptionError
from .schemas import ReportEntry, SignedReport
from .store import AuditLog, NewEvent

_log = logging.getLogger("safeharbor.audit.compliance")

SIGNING_INFO = b"safeharbor compliance report signing key v1"
FIRST_SCHEDULED_DELAY_S = 30.0  # let the peers finish starting before the first scheduled report
PHI_SAMPLE = 500  # the most recent entries whose PHI envelopes are opened by the audit.phi_encryption check
PEER_SETTINGS = {"auth": "AUTH_SERVICE_URL", "keydir": "KEYDIR_SERVICE_URL", "push": "PUSH_SERVICE_URL",
                 "gateway": "GATEWAY_INTERNAL_URL"}
PEER_DEFAULTS = {"auth": "http://127.0.0.1:8101", "keydir": "http://127.0.0.1:8102",
                 "push": "http://127.0.0.1:8104", "gateway": "http://127.0.0.1:9180"}


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """This module's settings (validated at start like the rest of audit-service's)."""
    env = EnvReader(environ)
    key = env.optional_secret("COMPLIANCE_SIGNING_KEY")
    return {
        **{setting: env.str(setting, PEER_DEFAULTS[name]).rstrip("/") for name, setting in PEER_SETTINGS.items()},
        "COMPLIANCE_PEER_TIMEOUT": env.float("COMPLIANCE_PEER_TIMEOUT", 5.0, minimum=0.1),
        # One kept report per this many seconds (daily); 0 turns the schedule off in this process.
        "COMPLIANCE_REPORT_INTERVAL": env.int("COMPLIANCE_REPORT_INTERVAL", 86400, minimum=0),
        "COMPLIANCE_SIGNING_KEY": load_private_key(key.reveal(), setting="COMPLIANCE_SIGNING_KEY") if key else None,
    }


class ReportSigner:
    """Ed25519, C2SP signed-note form like the checkpoints; the key is its own (by default derived from the
    log's signing key by HKDF), so a report signature can never be taken for a checkpoint signature."""

    def __init__(self, *, log_key: Ed25519PrivateKey, origin: str, key: Ed25519PrivateKey | None = None) -> None:
        if key is None:
            seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SIGNING_INFO).derive(
                log_key.private_bytes_raw())
            key = Ed25519PrivateKey.from_private_bytes(seed)
        self._key = key
        self.key_name = origin.rstrip("/") + "/compliance"
        self.verifier_key = cp.verifier_key_string(self.key_name, key.public_key())

    def sign(self, report: Mapping[str, Any]) -> SignedReport:
        digest = compliance_report.report_sha256(report)
        text = compliance_report.report_note_text(self.key_name, str(report["report_id"]), digest)
        signature = cp.sign_note(text, [(self.key_name, self._key)])
        return SignedReport(report=dict(report), sha256=digest, signature=signature, verifier_key=self.verifier_key)


# -- audit-service's own controls --------------------------------------------------------------------------


def log_verifies(log: AuditLog) -> tuple[Status, Mapping[str, Any]]:
    started = time.monotonic()
    report = log.verify()  # total: never raises for what is stored
    return ("pass" if report.ok else "fail"), {
        "ok": report.ok, "size": report.size, "first_bad_seq": report.first_bad_seq,
        "checkpoint_size": report.checkpoint_size, "verified_at": compliance.now_rfc3339(),
        "duration_s": round(time.monotonic() - started, 3),
    }


def checkpoint_age(log: AuditLog) -> tuple[Status, Mapping[str, Any]]:
    head = log.head()
    latest = log.latest_checkpoint()
    signed = cp.verify_checkpoint(str(latest.note), log.verifier_key, origin=log.origin)
    behind = int(head.size) - signed.size
    age = time.time() - float(latest.created_at)
    # Entries not yet covered are normal for one interval; more means the checkpointer is not running.
    late = behind > 0 and age > 3 * log.checkpoint_interval + 5
    return ("fail" if late else "pass"), {"head_size": int(head.size), "checkpoint_size": signed.size,
                                          "entries_not_covered": behind, "checkpoint_age_s": round(age, 1),
                                          "checkpoint_interval_s": log.checkpoint_interval,
                                          "verifier_key": log.verifier_key}


def retention(log: AuditLog, setting_days: int) -> tuple[Status, Mapping[str, Any]]:
    with log.engine.connect() as conn:
        stored = conn.execute(select(audit_retention.c.days).where(audit_retention.c.id == 1)).scalar_one_or_none()
    days = [setting_days] + ([int(stored)] if stored is not None else [])
    status: Status = "pass" if stored is not None and min(days) >= MIN_RETENTION_DAYS else "fail"
    return status, {"setting_days": setting_days, "enforced_by_database_days": stored,
                    "minimum_days": MIN_RETENTION_DAYS, "delete_path_before_retention": "refused by trigger"}


def phi_encryption(log: AuditLog) -> tuple[Status, Mapping[str, Any]]:
    """The key is set and works now, and the latest entries hold PHI only sealed, in envelopes it opens."""
    probe_id = str(uuid.uuid4())
    sealed = log.cipher.seal({"ip": "192.0.2.1"}, event_id=probe_id)
    round_trip = log.cipher.open(sealed, event_id=probe_id).get("ip") == "192.0.2.1"
    head = int(log.head().size)
    clear = unopened = with_phi = 0
    for row in log.entries_after(max(-1, head - PHI_SAMPLE - 1), PHI_SAMPLE):
        stored = json.loads(bytes(row.canonical))
        if stored.get("ip") or stored.get("user_agent"):
            clear += 1
        if stored.get("phi") is not None:
            with_phi += 1
            try:
                log.cipher.open(stored["phi"], event_id=stored["event_id"])
            except PhiDecryptionError:
                unopened += 1
    status: Status = "fail" if clear or not round_trip else ("warn" if unopened else "pass")
    return status, {"key_id": log.cipher.public_key.kid, "algorithm": audit_phi.ALGORITHM,
                    "seal_open_self_test": round_trip, "entries_sampled": min(head, PHI_SAMPLE),
                    "entries_with_sealed_phi": with_phi, "entries_with_clear_phi": clear,
                    "envelopes_not_opening": unopened}


def own_checks(log: AuditLog, config: Mapping[str, Any]) -> dict[str, Check]:
    days = int(config["AUDIT_RETENTION_DAYS"])
    return {
        "audit.log_verifies": lambda: log_verifies(log),
        "audit.checkpoint_age": lambda: checkpoint_age(log),
        "audit.retention": lambda: retention(log, days),
        "audit.phi_encryption": lambda: phi_encryption(log),
    }


# -- aggregation, signature, audit entry, keeping --------------------------------------------------------


def _valid_control(item: Any, service: str) -> bool:
    return (isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"] in CONTROLS
            and CONTROLS[item["id"]].service == service and item.get("status") in compliance.STATUSES
            and isinstance(item.get("evidence"), dict) and isinstance(item.get("measured_at"), str))


@dataclass(frozen=True)
class PeerAnswer:
    controls: dict[str, dict[str, Any]]
    error: str | None = None


Fetch = Callable[[str], PeerAnswer]


class ComplianceReporter:
    def __init__(self, *, log: AuditLog, signer: ReportSigner, checks: Callable[[], Mapping[str, Check]],
                 peers: Mapping[str, str], identity: ServiceTokenSigner, timeout: float, interval: int) -> None:
        self.log = log
        self.signer = signer
        self.checks = checks
        self.peers = dict(peers)
        self.identity = identity
        self.timeout = timeout
        self.interval = interval
        self.fetch: Fetch = self._fetch  # tests replace it to simulate a peer
        self._http = internal_session()
        self._scheduler_pid = -1
        self._scheduler_lock = threading.Lock()
        self._stop = threading.Event()

    # -- measuring

    def _fetch(self, service: str) -> PeerAnswer:
        url = self.peers[service] + CONTROLS_PATH
        try:
            response = self._http.get(url, headers=self.identity.headers_for(service), timeout=(1.0, self.timeout))
        except requests.RequestException as exc:
            return PeerAnswer({}, f"did not answer ({type(exc).__name__})")
        if response.status_code != 200:
            return PeerAnswer({}, f"answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            return PeerAnswer({}, "answered something that is not JSON")
        if not isinstance(body, dict) or body.get("version") != compliance.CONTROLS_VERSION \
                or not isinstance(body.get("controls"), list):
            return PeerAnswer({}, "answered an unknown document version")
        return PeerAnswer({item["id"]: item for item in body["controls"] if _valid_control(item, service)})

    def measure(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        services = [name for name in compliance.SERVICES if name != "audit"]
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            futures = {name: pool.submit(self.fetch, name) for name in services}
            answers = {name: f.result() for name, f in futures.items()}
        answers["audit"] = PeerAnswer({m["id"]: m for m in compliance.measure(self.checks())})
        controls: list[dict[str, Any]] = []
        for spec in CATALOGUE:
            answer = answers[spec.service]
            found = answer.controls.get(spec.id)
            if found is None:
                found = {"status": "fail", "measured_at": compliance.now_rfc3339(), "evidence": {
                    "error": f"{spec.service} {answer.error}" if answer.error else f"{spec.service} did not report it"}}
            controls.append({"id": spec.id, "service": spec.service, "safeguards": list(spec.safeguards),
                             "title": spec.title, "status": found["status"], "evidence": found["evidence"],
                             "measured_at": found["measured_at"]})
        reached = {name: {"answered": a.error is None, "error": a.error} for name, a in answers.items()}
        return controls, reached

    def build(self, *, trigger: str) -> dict[str, Any]:
        controls, services = self.measure()
        safeguards = []
        for safeguard, name in compliance.SAFEGUARDS.items():
            mine = [c for c in controls if safeguard in c["safeguards"]]
            worst = max((c["status"] for c in mine), key=compliance.STATUSES.index, default="fail")
            safeguards.append({"id": safeguard, "name": name, "status": worst, "controls": [c["id"] for c in mine]})
        organisational = [{"id": i, "reference": ref, "title": title, "status": "not_checked"}
                          for i, ref, title in compliance.ORGANISATIONAL]
        summary: dict[str, int] = {s: sum(1 for c in controls if c["status"] == s) for s in compliance.STATUSES}
        summary["not_checked"] = len(organisational)
        return {"format": compliance_report.REPORT_FORMAT, "report_id": str(uuid.uuid4()),
                "generated_at": compliance.now_rfc3339(), "trigger": trigger, "rule": "45 CFR 164.312",
                "summary": summary, "services": services, "safeguards": safeguards, "controls": controls,
                "organisational": organisational}

    # -- producing

    def produce(self, *, trigger: str, actor: str, role: str | None = None, request_id: str | None = None,
                slot: int | None = None) -> SignedReport | None:
        """Measures, signs, keeps and records a report; None when another worker already kept this slot's."""
        document = self.signer.sign(self.build(trigger=trigger))
        report = document.report
        statuses = {c["id"]: c["status"] for c in report["controls"]}
        previous = self._previous_statuses()
        try:
            with self.log.engine.begin() as conn:
                conn.execute(insert(compliance_reports).values(
                    report_id=report["report_id"], generated_at=time.time(), trigger=trigger, slot=slot,
                    sha256=document.sha256, statuses=json.dumps(statuses), document=json.dumps(document.model_dump())))
        except IntegrityError:
            if slot is None:
                raise
            return None
        events = [self._event(actor=actor, role=role, request_id=request_id, action="compliance.report.signed",
                              outcome="success", severity="info",
                              meta={"report_id": report["report_id"], "sha256": document.sha256,
                                    "trigger": trigger, "summary": report["summary"]})]
        for control in report["controls"]:
            before = previous.get(control["id"]) if previous is not None else None
            if control["status"] == "fail" and before != "fail":
                events.append(self._alert(control, before, report["report_id"], "compliance.control.failed"))
            elif before == "fail" and control["status"] != "fail":
                events.append(self._alert(control, before, report["report_id"], "compliance.control.recovered"))
        result = self.log.append(events)
        entry = ReportEntry(event_id=events[0].event_id, seq=result.seqs.get(events[0].event_id))
        return document.model_copy(update={"audit_entry": entry})

    def _event(self, **fields: Any) -> NewEvent:
        return NewEvent(event_id=str(uuid.uuid4()), ts=datetime.now(UTC), source="audit",
                        resource="/v1/compliance/report", **fields)

    def _alert(self, control: Mapping[str, Any], before: str | None, report_id: str, action: str) -> NewEvent:
        failed = action.endswith("failed")
        return self._event(actor="svc:audit", role=None, request_id=None, action=action,
                           outcome="failure" if failed else "success", severity="alert" if failed else "info",
                           meta={"control": control["id"], "service": control["service"],
                                 "safeguards": control["safeguards"], "status": control["status"],
                                 "previous_status": before, "report_id": report_id})

    def _previous_statuses(self) -> dict[str, str] | None:
        with self.log.engine.connect() as conn:
            row = conn.execute(select(compliance_reports.c.statuses)
                               .order_by(compliance_reports.c.generated_at.desc()).limit(1)).first()
        return None if row is None else dict(json.loads(row.statuses))

    def latest(self, *, trigger: str | None = None) -> SignedReport | None:
        query = select(compliance_reports.c.document).order_by(compliance_reports.c.generated_at.desc()).limit(1)
        if trigger:
            query = query.where(compliance_reports.c.trigger == trigger)
        with self.log.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else SignedReport.model_validate(json.loads(row.document))

    # -- the schedule

    def run_if_due(self, now: float | None = None) -> SignedReport | None:
        """Keeps this period's scheduled report unless one is kept already (by any worker or replica)."""
        if self.interval <= 0:
            return None
        slot = math.floor((time.time() if now is None else now) / self.interval)
        with self.log.engine.connect() as conn:
            kept = conn.execute(select(compliance_reports.c.report_id).where(compliance_reports.c.slot == slot)).first()
        if kept is not None:
            return None
        return self.produce(trigger="schedule", actor="svc:audit", slot=slot)

    def ensure_scheduler(self) -> None:
        """Per process (fork-safe, like the checkpoint ticker): a thread that looks every minute or so."""
        if self.interval <= 0 or self._scheduler_pid == os.getpid():
            return
        with self._scheduler_lock:
            if self._scheduler_pid == os.getpid():
                return
            self._scheduler_pid = os.getpid()
            self._stop = threading.Event()
            threading.Thread(target=self._schedule_loop, args=(self._stop,), name="compliance-schedule",
                             daemon=True).start()

    def stop_scheduler(self) -> None:
        self._stop.set()
        self._scheduler_pid = -1

    def _schedule_loop(self, stop: threading.Event) -> None:
        if stop.wait(min(FIRST_SCHEDULED_DELAY_S, self.interval)):
            return
        while True:
            try:
                self.run_if_due()
            except Exception as exc:  # noqa: BLE001 - retried at the next look
                _log.warning("scheduled compliance report failed", extra={"fields": {"error": type(exc).__name__}})
            if stop.wait(min(60.0, max(self.interval / 4, 0.5))):
                return


def build_reporter(*, log: AuditLog, config: Mapping[str, Any], identity: ServiceTokenSigner) -> ComplianceReporter:
    return ComplianceReporter(
        log=log,
        signer=ReportSigner(log_key=config["AUDIT_SIGNING_KEY"], origin=config["AUDIT_LOG_ORIGIN"],
                            key=config.get("COMPLIANCE_SIGNING_KEY")),
        checks=lambda: own_checks(log, config),
        peers={name: config[setting] for name, setting in PEER_SETTINGS.items()},
        identity=identity,
        timeout=float(config["COMPLIANCE_PEER_TIMEOUT"]),
        interval=int(config["COMPLIANCE_REPORT_INTERVAL"]),
    )
