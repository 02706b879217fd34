"""Domain logic: lint, apply to Stream with read-back, versions and rollback, drift checks.

Every change to Stream's push settings (apply, rollback, the periodic drift check's read) runs inside a
database transaction that first locks the "apply" lease row, so changes serialise across workers and
replicas and a check never mistakes an apply in flight for drift.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, overload

from flask import Flask
from safeharbor_common.audit_recorder import recorder_of
from safeharbor_common.errors import Conflict
from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .compare import same_template, sha256_hex
from .defaults import DEFAULT_TEMPLATES
from .errors import ReadBackMismatch, StreamFailure, TemplateRefused, VersionNotApproved, VersionNotFound
from .lint import PROVIDER_KINDS, Finding, LintResult, lint_template
from .models import (
    LEASE_APPLY,
    STATUS_APPLIED,
    STATUS_FAILED,
    ApprovedTemplate,
    DriftState,
    Lease,
    TemplateVersion,
)
from .schemas import DriftRead, FindingRead, ProviderStatus, SlotStatus, StatusResponse, TemplateList, TemplateRead
from .stream import SLOTS

SYSTEM_ACTOR_ID = "svc:push"


class PushSettingsClient(Protocol):
    def apply(self, *, provider: str, kind: str, template: str) -> None: ...

    def read(self) -> dict[tuple[str, str], str | None]: ...


@dataclass(frozen=True)
class Actor:
    """Who asked for a change (ids only), for the version row and the audit trail."""

    user_id: str
    role: str | None = None
    request_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None


SYSTEM_ACTOR = Actor(SYSTEM_ACTOR_ID)


@dataclass
class PushContext:
    app: Flask
    engine: Engine
    sessions: sessionmaker[Session]
    stream: PushSettingsClient

    @staticmethod
    def holder() -> str:
        """This process's lease holder id (pid-specific, so forked workers differ)."""
        return f"{socket.gethostname()}:{os.getpid()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def rfc3339(value: datetime) -> str: ...


@overload
def rfc3339(value: datetime | None) -> str | None: ...


def rfc3339(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value is not None else None


def _resource(provider: str, kind: str) -> str:
    return f"push-template:{provider}/{kind}"


def _audit(ctx: PushContext, actor: Actor, **kwargs: Any) -> None:
    # Request id, address and user agent come from the request the recorder runs in (none for the drift job).
    recorder_of(ctx.app).record(actor=actor.user_id, role=actor.role, **kwargs)


def _lock_apply(session: Session) -> None:
    # The first statement of the transaction: a row lock on PostgreSQL, the write lock on SQLite.
    session.execute(
        update(Lease).where(Lease.name == LEASE_APPLY).values(holder=PushContext.holder(), expires_at=time.time())
    )


# --- lint ------------------------------------------------------------------------------------------


def lint(*, provider: str, kind: str, template: str) -> LintResult:
    return lint_template(template, provider=provider, kind=kind)


# --- apply and rollback ----------------------------------------------------------------------------


def apply_template(
    *,
    ctx: PushContext,
    provider: str,
    kind: str,
    template: str,
    actor: Actor,
    rolled_back_from: int | None = None,
) -> TemplateVersion:
    """Lints, stores a new version, applies it to Stream, reads it back and approves it.

    A template with findings is refused (nothing stored). A Stream error or a read-back that differs
    leaves the new version stored as `failed` and the approved version unchanged."""
    action = "push.template.rollback" if rolled_back_from is not None else "push.template.apply"
    resource = _resource(provider, kind)
    result = lint_template(template, provider=provider, kind=kind)
    if not result.ok:
        _audit(
            ctx,
            actor,
            action=action,
            resource=resource,
            outcome="failure",
            meta={
                "provider": provider,
                "kind": kind,
                "reason": "phi_in_template",
                "findings_count": len(result.findings),
                # Rule and position only: the offending text may itself be PHI.
                "findings": [{"rule": f.rule, "line": f.line, "column": f.column} for f in result.findings[:50]],
                "rolled_back_from": rolled_back_from,
            },
        )
        raise TemplateRefused([f.as_dict() for f in result.findings])

    failure: Exception | None = None
    try:
        with ctx.sessions.begin() as session:
            _lock_apply(session)
            latest = session.scalar(
                select(func.max(TemplateVersion.version)).where(
                    TemplateVersion.provider == provider, TemplateVersion.kind == kind
                )
            )
            now = utcnow()
            row = TemplateVersion(
                provider=provider,
                kind=kind,
                version=(latest or 0) + 1,
                template=template,
                template_sha256=sha256_hex(template),
                author=actor.user_id,
                created_at=now,
                findings_count=len(result.findings),
                status=STATUS_FAILED,  # until Stream confirms
                rolled_back_from=rolled_back_from,
                request_id=actor.request_id,
            )
            session.add(row)
            session.flush()
            was_drifting = False
            try:
                ctx.stream.apply(provider=provider, kind=kind, template=template)
                observed = ctx.stream.read()
            except StreamFailure as exc:
                row.error_code = exc.code  # upstream_error (Stream refused) or service_unavailable (unreachable)
                failure = exc
            else:
                if not same_template(observed.get((provider, kind)), template):
                    row.error_code = "read_back_mismatch"
                    failure = ReadBackMismatch(provider=provider, kind=kind)
                else:
                    row.status = STATUS_APPLIED
                    row.applied_at = now
                    _approve(session, row, actor, now)
                    was_drifting = _reset_drift(session, row, observed.get((provider, kind)), now)
            meta: dict[str, Any] = {
                "provider": provider,
                "kind": kind,
                "version": row.version,
                "template_sha256": row.template_sha256,
                "findings_count": row.findings_count,
                "rolled_back_from": rolled_back_from,
            }
            if failure is None:
                _audit(ctx, actor, action=action, resource=resource, outcome="success", meta=meta)
                if was_drifting:
                    _audit(
                        ctx,
                        actor,
                        action="push.drift.resolved",
                        resource=resource,
                        outcome="success",
                        meta={"provider": provider, "kind": kind, "approved_version": row.version, "by": "apply"},
                    )
            else:
                meta["error"] = row.error_code
                _audit(ctx, actor, action=action, resource=resource, outcome="failure", meta=meta)
    except IntegrityError as exc:  # the apply lock makes this unreachable unless the lock row is missing
        raise Conflict("A concurrent change created the same version; retry.") from exc
    if failure is not None:
        raise failure
    return row


def _approve(session: Session, row: TemplateVersion, actor: Actor, now: datetime) -> None:
    approved = session.get(ApprovedTemplate, (row.provider, row.kind))
    if approved is None:
        session.add(
            ApprovedTemplate(
                provider=row.provider, kind=row.kind, version=row.version, approved_at=now, approved_by=actor.user_id
            )
        )
    else:
        approved.version = row.version
        approved.approved_at = now
        approved.approved_by = actor.user_id


def _reset_drift(session: Session, row: TemplateVersion, observed: str | None, now: datetime) -> bool:
    """Marks the slot in sync after a confirmed apply; True if it had been drifting."""
    state = session.get(DriftState, (row.provider, row.kind))
    if state is None:
        state = DriftState(provider=row.provider, kind=row.kind, in_drift=False)
        session.add(state)
    was_drifting = bool(state.in_drift)
    state.in_drift = False
    state.since = None
    state.approved_version = row.version
    state.stream_sha256 = sha256_hex(observed)
    state.checked_at = now
    return was_drifting


def rollback(*, ctx: PushContext, provider: str, kind: str, version: int, actor: Actor) -> TemplateVersion:
    """Re-applies a previously approved version as a new version (linted again: rules may have tightened)."""
    with ctx.sessions() as session:
        previous = session.scalar(
            select(TemplateVersion).where(
                TemplateVersion.provider == provider,
                TemplateVersion.kind == kind,
                TemplateVersion.version == version,
            )
        )
        if previous is None:
            raise VersionNotFound(provider=provider, kind=kind, version=version)
        if previous.status != STATUS_APPLIED:
            raise VersionNotApproved(provider=provider, kind=kind, version=version)
        template = previous.template
    return apply_template(
        ctx=ctx, provider=provider, kind=kind, template=template, actor=actor, rolled_back_from=version
    )


def unapproved_slots(*, ctx: PushContext) -> list[tuple[str, str]]:
    """Slots Stream has no approved SafeHarbor template for (Stream's own defaults there leak PHI)."""
    with ctx.sessions() as session:
        approved = {(a.provider, a.kind) for a in session.scalars(select(ApprovedTemplate))}
    return [slot for slot in SLOTS if slot not in approved]


def apply_defaults(*, ctx: PushContext, actor: Actor = SYSTEM_ACTOR, force: bool = False) -> list[TemplateVersion]:
    """Applies the generic templates to every slot without an approved version (all slots with force)."""
    applied = []
    for slot in SLOTS if force else unapproved_slots(ctx=ctx):
        provider, kind = slot
        applied.append(
            apply_template(ctx=ctx, provider=provider, kind=kind, template=DEFAULT_TEMPLATES[slot], actor=actor)
        )
    return applied


# --- reads -----------------------------------------------------------------------------------------


def list_templates(
    *, ctx: PushContext, provider: str | None = None, kind: str | None = None, limit: int = 100
) -> TemplateList:
    """Versions newest first, the approved version per provider and kind, and the generic defaults."""
    with ctx.sessions() as session:
        query = select(TemplateVersion)
        if provider is not None:
            query = query.where(TemplateVersion.provider == provider)
        if kind is not None:
            query = query.where(TemplateVersion.kind == kind)
        query = query.order_by(TemplateVersion.provider, TemplateVersion.kind, TemplateVersion.version.desc()).limit(
            limit
        )
        rows = list(session.scalars(query))
        approved = {(a.provider, a.kind): a.version for a in session.scalars(select(ApprovedTemplate))}
    approved_doc: dict[str, dict[str, int]] = {}
    for (p, k), version in approved.items():
        approved_doc.setdefault(p, {})[k] = version
    defaults: dict[str, dict[str, str]] = {}
    for (p, k), template in DEFAULT_TEMPLATES.items():
        defaults.setdefault(p, {})[k] = template
    return TemplateList(
        templates=[_template_read(r, approved_version=approved.get((r.provider, r.kind))) for r in rows],
        approved=approved_doc,
        defaults=defaults,
    )


def _template_read(row: TemplateVersion, *, approved_version: int | None) -> TemplateRead:
    return TemplateRead.model_validate({
        "provider": row.provider,
        "kind": row.kind,
        "version": row.version,
        "status": row.status,
        "approved": approved_version == row.version,
        "author": row.author,
        "created_at": rfc3339(row.created_at),
        "applied_at": rfc3339(row.applied_at),
        "findings_count": row.findings_count,
        "template_sha256": row.template_sha256,
        "error_code": row.error_code,
        "rolled_back_from": row.rolled_back_from,
        "template": row.template,
    })


# --- drift -----------------------------------------------------------------------------------------


def acquire_lease(*, ctx: PushContext, name: str, holder: str, ttl: float) -> bool:
    """True when `holder` holds (or renewed) the named lease for `ttl` seconds."""
    now = time.time()
    with ctx.engine.begin() as conn:
        result = conn.execute(
            update(Lease)
            .where(Lease.name == name, or_(Lease.holder == holder, Lease.holder.is_(None), Lease.expires_at < now))
            .values(holder=holder, expires_at=now + ttl)
        )
        return result.rowcount == 1


def check_drift(*, ctx: PushContext) -> StatusResponse:
    """Compares every approved template with Stream's current settings; records drift episodes.

    The first check that sees a slot differ records a high-severity `push.drift.detected` event; the one
    that sees it back in sync records `push.drift.resolved`. Returns the status document."""
    events: list[dict[str, Any]] = []
    with ctx.sessions.begin() as session:
        _lock_apply(session)
        observed = ctx.stream.read()
        now = utcnow()
        approved_rows = {
            (a.provider, a.kind): (a, v)
            for a, v in session.execute(
                select(ApprovedTemplate, TemplateVersion).join(
                    TemplateVersion,
                    (TemplateVersion.provider == ApprovedTemplate.provider)
                    & (TemplateVersion.kind == ApprovedTemplate.kind)
                    & (TemplateVersion.version == ApprovedTemplate.version),
                )
            )
        }
        states = {(s.provider, s.kind): s for s in session.scalars(select(DriftState))}
        slots: dict[tuple[str, str], SlotStatus] = {}
        for slot in SLOTS:
            provider, kind = slot
            stream_text = observed.get(slot)
            stream_lint = lint_template(stream_text or "", provider=provider, kind=kind)
            pair = approved_rows.get(slot)
            version = pair[1] if pair else None
            in_sync = version is not None and same_template(stream_text, version.template)
            state = states.get(slot)
            if state is None:
                state = DriftState(provider=provider, kind=kind, in_drift=False)
                session.add(state)
            if version is not None:
                meta = {
                    "provider": provider,
                    "kind": kind,
                    "approved_version": version.version,
                    "approved_sha256": version.template_sha256,
                    "stream_sha256": sha256_hex(stream_text),
                    "stream_findings_count": len(stream_lint.findings),
                    "stream_rules": sorted({f.rule for f in stream_lint.findings}),
                }
                if not in_sync and not state.in_drift:
                    state.in_drift = True
                    state.since = now
                    events.append(
                        {"action": "push.drift.detected", "severity": "high", "outcome": "failure", "meta": meta}
                    )
                elif in_sync and state.in_drift:
                    state.in_drift = False
                    state.since = None
                    events.append(
                        {"action": "push.drift.resolved", "severity": "info", "outcome": "success", "meta": meta}
                    )
                state.approved_version = version.version
                state.stream_sha256 = sha256_hex(stream_text)
                state.checked_at = now
            slots[slot] = SlotStatus(
                approved_version=version.version if version is not None else None,
                managed=version is not None,
                in_sync=in_sync,
                approved_sha256=version.template_sha256 if version is not None else None,
                approved_at=rfc3339(pair[0].approved_at) if pair else None,
                stream_template=stream_text,
                stream_sha256=sha256_hex(stream_text) if stream_text is not None else None,
                stream_phi_safe=stream_lint.ok,
                stream_findings=[_finding_read(f) for f in stream_lint.findings],
                drift=DriftRead(in_drift=bool(state.in_drift), since=rfc3339(state.since)),
            )
        for event in events:
            provider, kind = event["meta"]["provider"], event["meta"]["kind"]
            _audit(ctx, SYSTEM_ACTOR, resource=_resource(provider, kind), **event)
    return _status_document(slots, now)


def _finding_read(finding: Finding) -> FindingRead:
    return FindingRead(rule=finding.rule, text=finding.text, line=finding.line, column=finding.column,
                       message=finding.message, path=finding.path)


def _status_document(slots: dict[tuple[str, str], SlotStatus], now: datetime) -> StatusResponse:
    providers: dict[str, ProviderStatus] = {}
    for provider, kinds in PROVIDER_KINDS.items():
        entries = {kind: slots[(provider, kind)] for kind in kinds}
        managed = [e for e in entries.values() if e.managed]
        providers[provider] = ProviderStatus(
            # The provider's main template; every kind is detailed under "kinds".
            approved_version=entries["notification"].approved_version,
            in_sync=bool(managed) and all(e.in_sync for e in managed),
            phi_safe=all(e.stream_phi_safe for e in entries.values()),
            drift=any(e.drift.in_drift for e in entries.values()),
            kinds=entries,
        )
    return StatusResponse(providers=providers, checked_at=rfc3339(now))
