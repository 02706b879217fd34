"""Sessions' service functions: tokens, the live session behind a token, refresh, logout, revocation.

Keyword-only, each takes the context (`ctx`) first. Write transactions are short and never hold a lock while
hashing a password or calling another service; audit events and Redis publications follow the commit they
describe.
"""
from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from safeharbor_common.errors import Forbidden, SessionExpired, SessionRevoked, Unauthenticated
from safeharbor_common.tokens import SCOPE_FULL, SCOPE_MFA_ENROLLMENT, SessionClaims
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from ..accounts import ACTIVE, iso, role_name, user_or_404, user_read
from ..context import AuthContext
from ..errors import SessionNotFound
from ..jobs import STREAM_REVOKE_TOKENS, enqueue, try_user_jobs_now
from ..models import BreakGlass, RetiredToken, Session, User
from ..revocations import feed, rfc3339
from .schemas import LoginResponse, MeResponse, MeSession, RevocationFeed, SessionList, SessionRead, SessionUser
from .tokens import IssuedToken, issue_token, new_session, stream_cutoff, whole_second_after

LAST_SEEN_GRANULARITY = timedelta(seconds=30)

Revoked = tuple[str, str, datetime]  # (session id, user id, last token exp)


# -- representations ------------------------------------------------------------------------------------


def _session_read(s: Session, *, now: datetime) -> SessionRead:
    return SessionRead(
        id=s.id,
        user_id=s.user_id,
        scope=s.scope,
        created_at=rfc3339(s.created_at),
        last_seen=rfc3339(s.last_seen),
        absolute_expires_at=rfc3339(s.absolute_expires_at),
        token_expires_at=rfc3339(s.token_expires_at),
        revoked_at=iso(s.revoked_at),
        revoke_reason=s.revoke_reason,
        active=s.revoked_at is None and s.token_expires_at > now and s.absolute_expires_at > now,
    )


# -- new sessions ---------------------------------------------------------------------------------------


def session_response(*, ctx: AuthContext, session: Session, user: User, token: IssuedToken) -> LoginResponse:
    return LoginResponse(
        access_token=token.token,
        token_type="Bearer",
        expires_at=rfc3339(token.expires_at),
        idle_timeout_s=ctx.idle_timeout,
        absolute_expires_at=rfc3339(session.absolute_expires_at),
        session_id=session.id,
        scope=session.scope,
        user=SessionUser(id=user.id, name=user.name, role=role_name(user), mfa_enrolled=user.mfa_enrolled),
    )


def mfa_required_for(*, ctx: AuthContext, role: str) -> bool:
    return role in ctx.settings.mfa_required_roles


def open_login_session(*, ctx: AuthContext, db: OrmSession, user: User, now: datetime) -> tuple[Session, IssuedToken]:
    """A session for a proven login, in the caller's transaction: full, or enrolment-only (no refresh, one idle
    window at most) when the role needs MFA the user has not enrolled yet."""
    scope = SCOPE_FULL
    absolute = whole_second_after(now, ctx.max_lifetime)
    if not user.mfa_enrolled and mfa_required_for(ctx=ctx, role=user.role):
        scope = SCOPE_MFA_ENROLLMENT
        absolute = whole_second_after(now, ctx.idle_timeout)
    session = new_session(user=user, scope=scope, now=now, absolute=absolute)
    db.add(session)
    return session, issue_token(ctx=ctx, session=session, user=user, now=now)


# -- the session behind a verified token ----------------------------------------------------------------


def current(*, ctx: AuthContext, claims: SessionClaims) -> tuple[Session, User]:
    """The live session and user behind a verified token, or the 401 that explains why not."""
    now = ctx.clock.now()
    with ctx.db() as db:
        session = db.get(Session, claims.sid)
        user = db.get(User, claims.sub)
        if session is None or user is None or session.user_id != user.id:
            raise Unauthenticated("Invalid token.")
        if session.revoked_at is not None or user.status != ACTIVE:
            raise SessionRevoked()
        if session.absolute_expires_at <= now:
            raise SessionExpired()
        retired = db.get(RetiredToken, claims.jti)
        reused = retired is not None and retired.refuse_from <= now
        if not reused and session.last_seen + LAST_SEEN_GRANULARITY < now:
            db.execute(update(Session).where(Session.id == session.id).values(last_seen=now))
            db.commit()
            session.last_seen = now
    if reused:
        _token_reused(ctx, session=session, user=user, jti=claims.jti)
    return session, user


def report_token_reuse(*, ctx: AuthContext, sid: str, jti: str, reporter: str) -> bool:
    """A verifier (gateway, keydir, audit, push) refused a retired token of `sid`: reuse, so the session ends.
    Believed only for a token this service retired for that very session, past its grace. True if it ended."""
    now = ctx.clock.now()
    with ctx.db() as db:
        retired = db.get(RetiredToken, jti)
        session = db.get(Session, sid)
        user = db.get(User, session.user_id) if session is not None else None
    if retired is None or retired.session_id != sid or retired.refuse_from > now or session is None \
            or user is None or session.revoked_at is not None:
        return False
    try:
        _token_reused(ctx, session=session, user=user, jti=jti, seen_by=reporter)
    except SessionRevoked:
        return True
    return True


def _token_reused(ctx: AuthContext, *, session: Session, user: User, jti: str, seen_by: str = "auth") -> None:
    """A token replaced by refresh came back after its grace: it was copied. End the session (every token
    of it, the thief's and the owner's) and raise the alarm."""
    ctx.audit.record(
        action="auth.session.token_reuse",
        actor=user.id,
        role=user.role,
        resource=f"session:{session.id}",
        outcome="failure",
        severity="alert",
        meta={"session_id": session.id, "jti": jti, "alert": True, "seen_by": seen_by},
    )
    revoke_sessions(ctx=ctx, ids=[session.id], reason="token_reuse", actor="svc:auth", actor_role=None)
    raise SessionRevoked()


# -- refresh, me, logout --------------------------------------------------------------------------------


def refresh(*, ctx: AuthContext, claims: SessionClaims, session: Session, user: User) -> LoginResponse:
    now = ctx.clock.now()
    if session.scope == SCOPE_MFA_ENROLLMENT:
        raise Forbidden("Enrolment sessions cannot be refreshed.")
    try:
        fresh, token = _rotate(ctx, claims=claims, session_id=session.id, user=user, now=now)
    except IntegrityError:
        # A concurrent refresh with the same token retired it first: answer with its successor.
        fresh, token = _rotate(ctx, claims=claims, session_id=session.id, user=user, now=now)
    return session_response(ctx=ctx, session=fresh, user=user, token=token)


def _rotate(
    ctx: AuthContext, *, claims: SessionClaims, session_id: str, user: User, now: datetime
) -> tuple[Session, IssuedToken]:
    """Issues the next token and retires the presented one (refused after the grace, reuse after that)."""
    with ctx.db() as db, db.begin():
        fresh = db.get(Session, session_id, with_for_update=True)
        if fresh is None or fresh.revoked_at is not None:
            raise SessionRevoked()
        if fresh.absolute_expires_at <= now:
            raise SessionExpired()
        fresh.last_seen = now
        retired = db.get(RetiredToken, claims.jti)
        token = issue_token(ctx=ctx, session=fresh, user=user, now=now, again=retired)
        if retired is None:
            # A whole second (the feed's times are), rounded down: the grace never exceeds the setting, and
            # auth-service and the services reading the feed refuse the token from the same instant.
            refuse_from = datetime.fromtimestamp(
                math.floor(now.timestamp()) + ctx.settings.session_refresh_grace, UTC
            )
            db.add(RetiredToken(
                jti=claims.jti, session_id=fresh.id, retired_at=now, refuse_from=refuse_from,
                expires_at=datetime.fromtimestamp(claims.exp, UTC), successor_jti=token.jti,
                successor_iat=token.iat, successor_exp=int(token.expires_at.timestamp()),
            ))
            db.flush()
            if random.random() < 0.01:  # keep the table small: a retired token past its exp needs no record
                db.execute(delete(RetiredToken).where(
                    RetiredToken.expires_at < now - timedelta(seconds=ctx.leeway + 60)
                ))
    return fresh, token


def me(*, ctx: AuthContext, claims: SessionClaims, session: Session, user: User) -> MeResponse:
    break_glass = None
    if session.break_glass_id:
        with ctx.db() as db:
            bg = db.get(BreakGlass, session.break_glass_id)
        if bg is not None:
            break_glass = {"id": bg.id, "channel_cid": bg.channel_cid, "expires_at": rfc3339(bg.expires_at)}
    return MeResponse(
        user=user_read(user),
        session=MeSession(
            id=session.id,
            expires_at=rfc3339(datetime.fromtimestamp(claims.exp, UTC)),
            idle_timeout_s=ctx.idle_timeout,
            absolute_expires_at=rfc3339(session.absolute_expires_at),
            break_glass=break_glass,
            scope=session.scope,
        ),
    )


def logout(*, ctx: AuthContext, session: Session, user: User) -> None:
    revoke_sessions(ctx=ctx, ids=[session.id], reason="logout", actor=user.id, actor_role=user.role)


# -- ending sessions ------------------------------------------------------------------------------------


def revoke_sessions(
    *,
    ctx: AuthContext,
    ids: list[str] | None = None,
    user_id: str | None = None,
    reason: str,
    actor: str,
    actor_role: str | None,
) -> list[str]:
    """Ends sessions (by id, or every live one of a user); published on Redis and audited. Returns ids."""
    now = ctx.clock.now()
    with ctx.db() as db, db.begin():
        revoked = revoke_in(ctx=ctx, db=db, ids=ids, user_id=user_id, reason=reason, now=now)
    after_revocation(ctx=ctx, revoked=revoked, reason=reason, actor=actor, actor_role=actor_role)
    return [sid for sid, _, _ in revoked]


def revoke_in(
    *, ctx: AuthContext, db: OrmSession, ids: list[str] | None, user_id: str | None, reason: str, now: datetime
) -> list[Revoked]:
    """Ends sessions in the caller's transaction; `after_revocation` must follow its commit."""
    query = select(Session).where(Session.revoked_at.is_(None))
    if ids is not None:
        query = query.where(Session.id.in_(ids))
    if user_id is not None:
        query = query.where(Session.user_id == user_id)
    rows = db.scalars(query.with_for_update()).all()
    for row in rows:
        row.revoked_at = now
        row.revoke_reason = reason
    if rows:
        _end_stream_access(ctx, db, user_ids=sorted({row.user_id for row in rows}), now=now)
    return [(row.id, row.user_id, row.token_expires_at) for row in rows]


def _end_stream_access(ctx: AuthContext, db: OrmSession, *, user_ids: list[str], now: datetime) -> None:
    """Every end of a session ends Stream access: the user's Stream tokens from before it are revoked (a durable
    job, tried at once by after_revocation), and later credentials are issued after the cutoff."""
    for user in db.scalars(select(User).where(User.id.in_(user_ids))).all():
        # Strictly after the previous cutoff: tokens issued since then carry iat = that cutoff at the least.
        cutoff = max(stream_cutoff(now), (user.stream_tokens_from or 0) + 1)
        user.stream_tokens_from = cutoff
        if ctx.stream is not None:
            enqueue(db, user_id=user.id, kind=STREAM_REVOKE_TOKENS, now=now, payload={"revoke_before": cutoff})


def after_revocation(
    *, ctx: AuthContext, revoked: list[Revoked], reason: str, actor: str, actor_role: str | None
) -> None:
    """After the commit that ended sessions: publish, audit, and try the Stream revocations now."""
    ctx.publisher.publish([(sid, until) for sid, _, until in revoked], leeway=ctx.leeway)
    for sid, owner, _ in revoked:
        ctx.audit.record(
            action="auth.session.revoke",
            actor=actor,
            role=actor_role,
            resource=f"session:{sid}",
            outcome="success",
            meta={"session_id": sid, "user_id": owner, "reason": reason},
        )
    if ctx.stream is not None:
        for owner in sorted({owner for _, owner, _ in revoked}):
            try_user_jobs_now(ctx, owner)  # revoke the Stream tokens now when Stream answers; the job retries


def revocation_feed(*, ctx: AuthContext, since_ms: int) -> RevocationFeed:
    return feed(ctx.engine, since_ms=since_ms, leeway=ctx.leeway, now=ctx.clock.now())


# -- a user's sessions (admin) --------------------------------------------------------------------------


def list_sessions(*, ctx: AuthContext, user_id: str) -> SessionList:
    now = ctx.clock.now()
    with ctx.db() as db:
        user_or_404(db, user_id)
        rows = db.scalars(
            select(Session).where(Session.user_id == user_id).order_by(Session.created_at.desc()).limit(200)
        ).all()
        return SessionList(sessions=[_session_read(s, now=now) for s in rows])


def revoke_user_session(*, ctx: AuthContext, actor: SessionClaims, user_id: str, session_id: str) -> None:
    with ctx.db() as db:
        user_or_404(db, user_id)
        session = db.get(Session, session_id)
        if session is None or session.user_id != user_id:
            raise SessionNotFound()
    revoke_sessions(ctx=ctx, ids=[session_id], reason="admin_revoked", actor=actor.sub, actor_role=actor.role)
