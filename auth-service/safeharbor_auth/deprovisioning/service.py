"""Deprovisioning's service functions: deactivation ends every session and queues the Stream and keydir
follow-ups; reactivation gives new credentials only; the state of those follow-ups as an admin sees it."""
from __future__ import annotations

import json

from safeharbor_common.roles import Role
from safeharbor_common.tokens import SessionClaims
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session as OrmSession

from ..accounts import ACTIVE, DEACTIVATED, iso, other_active_admins, user_or_404, user_read
from ..context import AuthContext
from ..errors import DeprovisioningPending, LastAdmin, SelfDeactivation
from ..jobs import KEYDIR_REVOKE, STREAM_DEACTIVATE, STREAM_REACTIVATE, enqueue, try_user_jobs_now
from ..models import Job, Session, User
from ..revocations import rfc3339
from ..sessions.service import after_revocation, revoke_in
from ..sessions.tokens import stream_cutoff
from ..users.schemas import UserDetail
from .schemas import DeactivateResponse, Deprovisioning, JobRead


def _job_read(job: Job) -> JobRead:
    return JobRead(
        id=job.id,
        kind=job.kind,
        status=job.status,
        attempts=job.attempts,
        last_error=job.last_error,
        next_attempt_at=iso(job.next_attempt_at) if job.status == "pending" else None,
        created_at=rfc3339(job.created_at),
        done_at=iso(job.done_at),
    )


def deprovisioning_state(*, db: OrmSession, user: User) -> Deprovisioning | None:
    """The follow-ups of a deactivation as an admin sees them; None for an active user who never had any."""
    jobs = _follow_up_jobs(db, user)
    if not jobs and user.status == ACTIVE:
        return None
    return _state(db, user, jobs)


def _follow_up_jobs(db: OrmSession, user: User) -> list[Job]:
    return list(db.scalars(
        select(Job)
        .where(Job.user_id == user.id, Job.kind.in_((STREAM_DEACTIVATE, STREAM_REACTIVATE, KEYDIR_REVOKE)))
        .order_by(Job.created_at.desc())
    ).all())


def _state(db: OrmSession, user: User, jobs: list[Job]) -> Deprovisioning:
    def latest(kind: str) -> Job | None:
        return next((j for j in jobs if j.kind == kind), None)

    stream_job = latest(STREAM_DEACTIVATE)
    keys_job = latest(KEYDIR_REVOKE)
    live_sessions = db.scalar(
        select(func.count()).select_from(Session).where(Session.user_id == user.id, Session.revoked_at.is_(None))
    )
    return Deprovisioning(
        sessions="done" if user.status == ACTIVE or not live_sessions else "pending",
        stream="done" if stream_job is not None and stream_job.status == "done" else "pending",
        keys="done" if keys_job is not None and keys_job.status == "done" else "pending",
        jobs=[_job_read(j) for j in jobs[:20]],
    )


def user_detail(*, db: OrmSession, user: User) -> UserDetail:
    """The user and, even when null, their deprovisioning state (what an admin reads)."""
    return UserDetail(**dict(user_read(user)), deprovisioning=deprovisioning_state(db=db, user=user))


def deactivate_user(*, ctx: AuthContext, actor: SessionClaims, user_id: str) -> DeactivateResponse:
    now = ctx.clock.now()
    with ctx.db() as db, db.begin():
        user = user_or_404(db, user_id, lock=True)
        if user.id == actor.sub:
            raise SelfDeactivation()
        if user.role == Role.ADMIN.value and user.status == ACTIVE and other_active_admins(db, user.id) == 0:
            raise LastAdmin()
        was_active = user.status == ACTIVE
        revoked = revoke_in(ctx=ctx, db=db, ids=None, user_id=user.id, reason="deactivated", now=now)
        if was_active:
            user.status = DEACTIVATED
            user.deactivated_at = now
            user.updated_at = now
            # A reactivation still waiting in the queue is moot now.
            db.execute(
                update(Job)
                .where(Job.user_id == user.id, Job.kind == STREAM_REACTIVATE, Job.status == "pending")
                .values(status="cancelled", done_at=now)
            )
            enqueue(db, user_id=user.id, kind=STREAM_DEACTIVATE, now=now, payload={"revoke_before": stream_cutoff(now)})
            enqueue(db, user_id=user.id, kind=KEYDIR_REVOKE, now=now, payload={"reason": "user_deactivated"})
    after_revocation(ctx=ctx, revoked=revoked, reason="deactivated", actor=actor.sub, actor_role=actor.role)
    if was_active:
        ctx.audit.record(
            action="user.deactivate",
            actor=actor.sub,
            role=actor.role,
            resource=f"user:{user_id}",
            outcome="success",
            severity="high",
            meta={"user_id": user_id, "sessions_revoked": len(revoked)},
        )
    try_user_jobs_now(ctx, user_id)
    with ctx.db() as db:
        user = user_or_404(db, user_id)
        # Always the state, even for a user a concurrent reactivation left active with no follow-up jobs.
        state = _state(db, user, _follow_up_jobs(db, user))
    return DeactivateResponse(id=user_id, status=DEACTIVATED, deprovisioning=state)


def reactivate_user(*, ctx: AuthContext, actor: SessionClaims, user_id: str) -> UserDetail:
    now = ctx.clock.now()
    with ctx.db() as db, db.begin():
        user = user_or_404(db, user_id, lock=True)
        if user.status == ACTIVE:
            return user_detail(db=db, user=user)
        pending_keys = db.scalar(
            select(func.count()).select_from(Job).where(
                Job.user_id == user.id, Job.kind == KEYDIR_REVOKE, Job.status == "pending"
            )
        )
        if pending_keys:
            # Revoking "all keys" later would also revoke keys registered after the reactivation.
            raise DeprovisioningPending()
        pending_stream = db.scalars(
            select(Job).where(Job.user_id == user.id, Job.kind == STREAM_DEACTIVATE, Job.status == "pending")
        ).all()
        revoke_before = float(user.stream_tokens_from or (user.deactivated_at or now).timestamp())
        for job in pending_stream:
            job.status = "cancelled"
            job.done_at = now
            revoke_before = float(json.loads(job.payload or "{}").get("revoke_before", revoke_before))
        user.status = ACTIVE
        user.deactivated_at = None
        user.updated_at = now
        if ctx.stream is not None or pending_stream:
            # Old Stream tokens stay revoked; the user gets new ones through new sessions.
            enqueue(db, user_id=user.id, kind=STREAM_REACTIVATE, now=now, payload={"revoke_before": revoke_before})
    ctx.audit.record(
        action="user.reactivate",
        actor=actor.sub,
        role=actor.role,
        resource=f"user:{user_id}",
        outcome="success",
        severity="high",
        meta={"user_id": user_id},
    )
    try_user_jobs_now(ctx, user_id)
    with ctx.db() as db:
        return user_detail(db=db, user=user_or_404(db, user_id))
