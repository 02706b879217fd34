"""HIPAA §164.312 controls: the catalogue every service and the report agree on, and the internal endpoint.

Each service measures its own controls from its running process and database (never from documents)
and serves them at `GET /internal/v1/compliance/controls` to audit-service only, which aggregates them
into the signed report (`safeharbor_audit.compliance`). The catalogue lives here because both sides must
name the same controls: a control a service does not report is shown as failed, never left out.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from flask import Blueprint, Flask, Response, current_app, jsonify

from . import web
from .service_identity import require_service

_log = logging.getLogger("safeharbor.compliance")

CONTROLS_PATH = "/internal/v1/compliance/controls"
CONTROLS_VERSION = 1
Status = Literal["pass", "warn", "fail"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail")
# What a service measures for one control: a status and the evidence behind it (ids, counts, settings; no PHI).
Check = Callable[[], tuple[Status, Mapping[str, Any]]]

SAFEGUARDS: dict[str, str] = {
    "164.312(a)(1)": "Access control",
    "164.312(a)(2)(i)": "Unique user identification",
    "164.312(a)(2)(ii)": "Emergency access procedure",
    "164.312(a)(2)(iii)": "Automatic logoff",
    "164.312(a)(2)(iv)": "Encryption and decryption",
    "164.312(b)": "Audit controls",
    "164.312(c)(1)": "Integrity",
    "164.312(c)(2)": "Mechanism to authenticate ePHI",
    "164.312(d)": "Person or entity authentication",
    "164.312(e)(1)": "Transmission security",
    "164.312(e)(2)(i)": "Integrity controls",
    "164.312(e)(2)(ii)": "Encryption",
}


@dataclass(frozen=True)
class ControlSpec:
    id: str
    service: str
    safeguards: tuple[str, ...]
    title: str


def _c(control_id: str, safeguards: str, title: str) -> ControlSpec:
    return ControlSpec(control_id, control_id.split(".", 1)[0], tuple(safeguards.split()), title)


A1, A2I, A2II, A2III, A2IV, B, C1, C2, D, E1, E2I, E2II = SAFEGUARDS

CATALOGUE: tuple[ControlSpec, ...] = (
    _c("auth.unique_users", A2I, "Every account has its own unique, case-insensitive user name"),
    _c("auth.role_map", A1, "Stream holds the role to channel-type map (least privilege)"),
    _c("auth.automatic_logoff", A2III, "Idle timeout and absolute session lifetime in force"),
    _c("auth.mfa", f"{D} {A1}", "Roles that reach PHI or administer must use MFA; who is not enrolled"),
    _c("auth.lockout", D, "Login lockout thresholds"),
    _c("auth.password_hashing", D, "argon2id parameters at or above the OWASP floor"),
    _c("auth.session_signing", f"{D} {C2}", "Session tokens signed with an active Ed25519 key"),
    _c("auth.break_glass", A2II, "Break-glass sessions time-boxed; open ones and reviews overdue"),
    _c("auth.deprovisioning", A1, "Deprovisioning jobs (Stream, keys) pending or failing"),
    _c("gateway.transport", f"{E1} {E2II}", "TLS and HSTS at the gateway, or a trusted TLS edge in front"),
    _c("gateway.revocation_feed", f"{A1} {A2III}", "Revocation feed fresh (a revoked session refused within 1 s)"),
    _c("gateway.rate_limits", D, "Rate limits per address and per user"),
    _c("gateway.trusted_proxies", B, "Client addresses believed only from trusted proxies"),
    _c("gateway.body_deadline", E1, "Request bodies must arrive within a deadline"),
    _c("keydir.log_verifies", f"{C1} {C2} {E2I}", "Key transparency log recomputes to its signed checkpoints"),
    _c("keydir.checkpoint_age", f"{C1} {E2I}", "Latest signed key-log checkpoint covers the log"),
    _c("audit.log_verifies", f"{B} {C1}", "Audit log recomputes to its signed checkpoints (last verify)"),
    _c("audit.checkpoint_age", f"{B} {C1}", "Latest signed audit checkpoint is recent and covers the log"),
    _c("audit.retention", B, "Audit retention of at least six years in force (database and setting)"),
    _c("audit.phi_encryption", f"{A2IV} {E2II}", "PHI fields of audit entries sealed to a configured key"),
    _c("push.templates_in_sync", f"{E1} {A1}", "Stream's push templates are the approved ones (no drift)"),
    _c("push.templates_phi_safe", f"{E2II} {A1}", "Approved push templates pass the PHI lint"),
)
CONTROLS: dict[str, ControlSpec] = {spec.id: spec for spec in CATALOGUE}
SERVICES: tuple[str, ...] = tuple(dict.fromkeys(spec.service for spec in CATALOGUE))

# What software cannot see: listed in every report as not checked (never as pass).
ORGANISATIONAL: tuple[tuple[str, str, str], ...] = (
    ("org.baa_stream", "164.308(b)(1) / 164.314(a)", "Business associate agreement with Stream (and every "
     "other vendor that holds ePHI)"),
    ("org.device_encryption", "164.310(d)(1) / 164.312(a)(2)(iv)", "Encryption of the devices that run the "
     "apps and hold decrypted messages"),
    ("org.backups", "164.308(a)(7)(ii)(A)", "Data backup plan and tested restores of the databases"),
    ("org.workforce_training", "164.308(a)(5)", "Security awareness training of the workforce"),
    ("org.risk_analysis", "164.308(a)(1)(ii)(A)", "Risk analysis and risk management"),
    ("org.emergency_procedure", "164.312(a)(2)(ii)", "The written procedure that says who may break the glass "
     "and when (SafeHarbor enforces and audits it, the organisation writes it)"),
)


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def measure(checks: Mapping[str, Check]) -> list[dict[str, Any]]:
    """Runs each check on its own: one that raises is that control failing (its error type as evidence)."""
    measured: list[dict[str, Any]] = []
    for control_id, check in checks.items():
        if control_id not in CONTROLS:
            raise KeyError(f"{control_id} is not in the compliance catalogue")
        try:
            status, evidence = check()
        except Exception as exc:  # noqa: BLE001 - a broken measurement is a failed control, not a 500
            _log.warning("compliance check failed", extra={"fields": {"control": control_id,
                                                                      "error": type(exc).__name__}})
            status, evidence = "fail", {"error": f"the measurement raised {type(exc).__name__}"}
        measured.append({"id": control_id, "status": status, "evidence": dict(evidence),
                         "measured_at": now_rfc3339()})
    return measured


def init_app(app: Flask, checks: Callable[[], Mapping[str, Check]]) -> None:
    """Serves this service's controls at CONTROLS_PATH, to audit-service's identity only."""
    bp = Blueprint("compliance_controls", __name__)

    @bp.get(CONTROLS_PATH)
    @require_service("audit")
    @web.api_doc(summary="HIPAA §164.312 controls of this service, measured now", auth="service")
    def controls() -> Response:
        return jsonify({
            "service": current_app.config["SERVICE_NAME"],
            "version": CONTROLS_VERSION,
            "controls": measure(checks()),
        })

    app.register_blueprint(bp)


def status_at_most(value: float, *, pass_max: float, warn_max: float) -> Status:
    """pass up to `pass_max`, warn up to `warn_max`, fail above."""
    if value <= pass_max:
        return "pass"
    return "warn" if value <= warn_max else "fail"
