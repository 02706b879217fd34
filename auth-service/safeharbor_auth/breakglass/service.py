"""Break-glass service functions: open (second factor, Stream membership, a session that ends at the
deadline), list, review, and the sweep that closes what expired or whose session ended."""
from __future__ import annotations

import logging
import uuid

from safeharbor_common.errors import MfaInvalid, NotFound
from safeharbor_common.roles import Role
from safeharbor_common.tokens import SCOPE_BREAK_GLASS, SessionClaims
from sqlalchemy import or_, select, update

from ..accounts import iso
from ..channels.service import stream_of
from ..context import AuthContext
from ..deprovisioning.handlers import stream_user_fields
from ..errors import BreakGlassNotAllowed, BreakGlassNotFound, ChannelTypeNotAllowed
from ..jobs import STREAM_BG_REMOVE, enqueue
from ..mfa.factors import SecondFactor, verify_second_factor
from ..models import BreakGlass, Session, User
from ..revocations import rfc3339
from ..roles import may_use
from ..sessions.service import Revoked, after_revocation, revoke_in
from ..sessions.tokens import issue_token, new_session, whole_second_after
from ..stream import member_ids
from .schemas import BreakGlassList, BreakGlassOpened, BreakGlassRead

_log = logging.getLogger("safeharbor.auth.breakglass")


def _reason_context(bg_id: str) -> str:
    return f"break-glass-reason:{bg_id}"


def _note_context(bg_id: str) -> str:
    return f"break-glass-note:{bg_id}"


def _read(ctx: AuthContext, row: BreakGlass) -> BreakGlassRead:
    return BreakGlassRead(
        id=row.id,
        user_id=row.user_id,
        session_id=row.session_id,
        channel_cid=row.channel_cid,
        reason=ctx.cipher.decrypt_text(row.reason_enc, context=_reason_context(row.id)),
        opened_at=rfc3339(row.opened_at),
        expires_at=rfc3339(row.expires_at),
        closed_at=iso(row.closed_at),
        close_reason=row.close_reason,
        status="closed" if row.closed_at is not None else "open",
        reviewed_at=iso(row.reviewed_at),
        reviewed_by=row.reviewed_by,
        review_note=(
            ctx.cipher.decrypt_text(row.review_note_enc, context=_note_context(row.id))
            if row.review_note_enc is not None else None
        ),
    )


def open_break_glass(
    *, ctx: AuthContext, user: User, channel_cid: str, reason: str, otp: str, ip: str | None
) -> BreakGlassOpened:
    if not user.mfa_enrolled:
        raise BreakGlassNotAllowed()
    cid = channel_cid
    if not may_use(user.role, cid.partition(":")[0]):
        raise ChannelTypeNotAllowed()
    reservation = ctx.throttler.reserve(username=user.username, ip=ip)  # counted before the code is checked
    now = ctx.clock.now()
    with ctx.db() as db, db.begin():
        fresh = db.get(User, user.id)
        factor = verify_second_factor(ctx=ctx, db=db, user=fresh, code=otp, now=now) if fresh else None
    if factor is None:
        ctx.throttler.failed(reservation)
        ctx.audit.record(action="auth.break_glass.open", actor=user.id, role=user.role, resource=cid,
                         outcome="failure", severity="high", meta={"reason": "mfa_invalid", "channel_cid": cid})
        raise MfaInvalid()
    ctx.throttler.not_a_guess(reservation)

    stream = stream_of(ctx=ctx)
    channel = stream.find_channel(cid)
    if channel is None:
        raise NotFound("Channel not found.")
    added = user.id not in member_ids(channel)
    if added:
        stream.upsert_users([stream_user_fields(user)])  # Stream adds only users it knows
        stream.add_member(cid=cid, user_id=user.id)
    bg_id = str(uuid.uuid4())
    deadline = whole_second_after(now, ctx.settings.break_glass_ttl)
    try:
        with ctx.db() as db, db.begin():
            session = new_session(user=user, scope=SCOPE_BREAK_GLASS, now=now, absolute=deadline,
                                  break_glass_id=bg_id, break_glass_cid=cid)
            db.add(session)
            db.flush()
            db.add(BreakGlass(
                id=bg_id, user_id=user.id, session_id=session.id, channel_cid=cid,
                reason_enc=ctx.cipher.encrypt_text(reason, context=_reason_context(bg_id)),
                opened_at=now, expires_at=deadline, stream_member_added=added,
            ))
            token = issue_token(ctx=ctx, session=session, user=user, now=now)
    except Exception:
        if added:  # no break-glass record: take the membership back
            try:
                stream.remove_member(cid=cid, user_id=user.id)
            except Exception:  # noqa: BLE001 - logged; the original error is what the caller sees
                _log.warning("could not undo break-glass membership", extra={"fields": {"cid": cid}})
        raise
    ctx.audit.record(action="auth.break_glass.open", actor=user.id, role=user.role, resource=cid, outcome="success",
                     severity="high", meta={"break_glass_id": bg_id, "channel_cid": cid, "session_id": session.id,
                                            "expires_at": rfc3339(deadline), "reason_length": len(reason)})
    if factor is not SecondFactor.NONE:
        ctx.audit.record(action="auth.mfa.use", actor=user.id, role=user.role, resource=f"user:{user.id}",
                         outcome="success", meta={"method": factor.value, "break_glass_id": bg_id})
    return BreakGlassOpened(break_glass_id=bg_id, access_token=token.token, expires_at=rfc3339(token.expires_at),
                            deadline=rfc3339(deadline), session_id=session.id)


def list_break_glass(*, ctx: AuthContext, status: str | None) -> BreakGlassList:
    query = select(BreakGlass).order_by(BreakGlass.opened_at.desc()).limit(500)
    if status == "open":
        query = query.where(BreakGlass.closed_at.is_(None))
    elif status == "closed":
        query = query.where(BreakGlass.closed_at.is_not(None))
    with ctx.db() as db:
        return BreakGlassList(break_glass=[_read(ctx, r) for r in db.scalars(query).all()])


def review_break_glass(*, ctx: AuthContext, reviewer: SessionClaims, bg_id: str, note: str) -> BreakGlassRead:
    now = ctx.clock.now()
    with ctx.db() as db, db.begin():
        row = db.get(BreakGlass, bg_id, with_for_update=True)
        if row is None:
            raise BreakGlassNotFound()
        row.reviewed_at = now
        row.reviewed_by = reviewer.sub
        row.review_note_enc = ctx.cipher.encrypt_text(note, context=_note_context(row.id))
    ctx.audit.record(action="auth.break_glass.review", actor=reviewer.sub, role=reviewer.role,
                     resource=row.channel_cid, outcome="success", meta={"break_glass_id": row.id})
    return _read(ctx, row)


def sweep_break_glass(*, ctx: AuthContext) -> int:
    """Closes break-glass sessions past their deadline or whose session ended; exactly one process records
    each closing (conditional update). Returns how many this call closed."""
    now = ctx.clock.now()
    with ctx.db() as db:
        due = db.execute(
            select(BreakGlass.id, BreakGlass.session_id)
            .join(Session, Session.id == BreakGlass.session_id)
            .where(BreakGlass.closed_at.is_(None),
                   or_(BreakGlass.expires_at <= now, Session.revoked_at.is_not(None)))
        ).all()
    closed = 0
    for bg_id, _session_id in due:
        revoked: list[Revoked] = []
        with ctx.db() as db, db.begin():
            row = db.get(BreakGlass, bg_id)
            if row is None or row.closed_at is not None:
                continue
            reason = "expired" if row.expires_at <= now else "session_ended"
            result = db.execute(
                update(BreakGlass).where(BreakGlass.id == bg_id, BreakGlass.closed_at.is_(None))
                .values(closed_at=now, close_reason=reason).execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue
            revoked = revoke_in(ctx=ctx, db=db, ids=[row.session_id], user_id=None, reason="break_glass_closed",
                                now=now)
            if row.stream_member_added:
                enqueue(db, user_id=row.user_id, kind=STREAM_BG_REMOVE, now=now, payload={"cid": row.channel_cid})
        after_revocation(ctx=ctx, revoked=revoked, reason="break_glass_closed", actor="svc:auth", actor_role=None)
        ctx.audit.record(action="auth.break_glass.close", actor=row.user_id, role=Role.CLINICIAN.value,
                         resource=row.channel_cid, outcome="success", severity="high",
                         meta={"break_glass_id": row.id, "reason": reason, "session_id": row.session_id})
        closed += 1
    if closed and ctx.jobs is not None:
        ctx.jobs.wake()
    return closed
