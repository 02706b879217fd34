"""push-config-service's HIPAA §164.312 controls: Stream holds the approved, PHI-safe templates (issue 17)."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, current_app
from safeharbor_common import compliance
from safeharbor_common.compliance import Check, Status
from sqlalchemy import select

from .lint import lint_template
from .models import ApprovedTemplate, DriftState, TemplateVersion
from .service import PushContext, rfc3339
from .stream import SLOTS


def templates_in_sync(ctx: PushContext, interval: float) -> tuple[Status, Mapping[str, Any]]:
    """What the drift checker last saw in Stream, and whether it is still looking (its last check's age)."""
    now = datetime.now(UTC)
    stale_after = timedelta(seconds=max(3 * interval, 300.0))
    with ctx.sessions() as session:
        approved = {(a.provider, a.kind): a.version for a in session.scalars(select(ApprovedTemplate))}
        states = {(s.provider, s.kind): s for s in session.scalars(select(DriftState))}
    slots: dict[str, Any] = {}
    worst: Status = "pass"
    for provider, kind in SLOTS:
        state = states.get((provider, kind))
        checked = state.checked_at if state else None
        if (provider, kind) not in approved or (state is not None and state.in_drift):
            status: Status = "fail"
        elif checked is None or now - checked > stale_after:
            status = "warn"  # no recent look at Stream: in sync as far as anyone knows
        else:
            status = "pass"
        worst = max(worst, status, key=compliance.STATUSES.index)
        slots[f"{provider}/{kind}"] = {
            "approved_version": approved.get((provider, kind)),
            "in_drift": bool(state.in_drift) if state else None,
            "drift_since": rfc3339(state.since) if state else None,
            "last_checked_at": rfc3339(checked),
        }
    return worst, {"slots": slots, "drift_check_interval_s": interval}


def templates_phi_safe(ctx: PushContext) -> tuple[Status, Mapping[str, Any]]:
    """The linter run again, now, on every approved template (a rule added since approval counts)."""
    with ctx.sessions() as session:
        rows = session.execute(select(TemplateVersion).join(
            ApprovedTemplate,
            (TemplateVersion.provider == ApprovedTemplate.provider) & (TemplateVersion.kind == ApprovedTemplate.kind)
            & (TemplateVersion.version == ApprovedTemplate.version))).scalars().all()
    findings = {f"{r.provider}/{r.kind}": sorted({f.rule for f in lint_template(r.template, provider=r.provider,
                                                                                 kind=r.kind).findings})
                for r in rows}
    dirty = {slot: rules for slot, rules in findings.items() if rules}
    status: Status = "fail" if dirty or len(rows) < len(SLOTS) else "pass"
    return status, {"approved_templates": len(rows), "slots": len(SLOTS), "findings_by_slot": dirty}


def checks() -> dict[str, Check]:
    ctx: PushContext = current_app.extensions["push"]
    interval = float(current_app.config["PUSH_DRIFT_INTERVAL"])
    return {"push.templates_in_sync": lambda: templates_in_sync(ctx, interval),
            "push.templates_phi_safe": lambda: templates_phi_safe(ctx)}


def init_app(app: Flask) -> None:
    compliance.init_app(app, checks)
