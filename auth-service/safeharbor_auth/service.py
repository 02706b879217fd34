"""Domain logic of auth-service: logins, sessions, tokens, MFA, users, revocation.

Views stay thin and call these keyword-only functions. Write transactions are short and never hold a
lock while hashing a password or calling another service; audit events and Redis publications follow the
commit they describe.
"""
from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from flask import g
from safeharbor_common.errors import (
    Forbidden,
    InvalidCredentials,
    MfaInvalid,
    MfaRequired,
    SessionExpired,
    SessionRevoked,
    Unauthenticated,
)
from safeharbor_common.roles import Role
from safeharbor_common.tokens import SCOPE_BREAK_GLASS, SCOPE_FULL, SCOPE_MFA_ENROLLMENT, SessionClaims
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from . import mfa
from .context import AuthContext as AuthServices
from .context import services
from .errors import (
    DeprovisioningPending,
    LastAdmin,
    LoginRateLimited,
    MemberNotFound,
    MfaAlreadyEnrolled,
    NoPendingEnrollment,
    SelfDeactivation,
    SessionNotFound,
    TooManyFailedLogins,
    UsernameTaken,
    UserNotFound,
)
from .models import BreakGlass, Job, RecoveryCode, RetiredToken, Session, User
from .passwords import check_policy
from .revocations import feed, rfc3339
from .throttle import Reservation

ACTIVE = "active"
DEACTIVATED = "deactivated"
LAST_SEEN_GRANULARITY = timedelta(seconds=30)


def utcnow() -> datetime:
    return services().clock.now()


def iso(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


def _db(svc: AuthServices) -> OrmSession:
    return OrmSession(svc.engine, expire_on_commit=False)


def normalise_username(username: str) -> str:
    return username.strip().lower()


# -- representations ------------------------------------------------------------------------------------


def user_read(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "name": user.name,
        "role": user.role,
        "status": user.status,
        "mfa_enrolled": user.mfa_enrolled,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.updated_at),
        "deactivated_at": iso(user.deactivated_at),
    }


def session_read(s: Session, *, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    return {
        "id": s.id,
        "user_id": s.user_id,
        "scope": s.scope,
        "created_at": iso(s.created_at),
        "last_seen": iso(s.last_seen),
        "absolute_expires_at": iso(s.absolute_expires_at),
        "token_expires_at": iso(s.token_expires_at),
        "revoked_at": iso(s.revoked_at),
        "revoke_reason": s.revoke_reason,
        "active": s.revoked_at is None and s.token_expires_at > now and s.absolute_expires_at > now,
    }


# -- tokens and sessions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime
    jti: str
    iat: int


def _issue_token(
    svc: AuthServices, *, session: Session, user: User, now: datetime, again: RetiredToken | None = None
) -> IssuedToken:
    """Signs an access token: exp = min(now + idle timeout, the session's absolute end).

    `again`: sign once more the token that replaced this retired one (same jti, iat and exp), for a refresh
    retried within the grace.
    """
    iat = int(now.timestamp())
    # Rounded up to the second, so the idle window is never shorter than configured.
    exp = min(math.ceil(now.timestamp() + svc.idle_timeout), math.ceil(session.absolute_expires_at.timestamp()))
    jti = uuid.uuid4().hex
    if again is not None:
        jti, iat, exp = again.successor_jti, again.successor_iat, again.successor_exp
    claims: dict[str, Any] = {
        "iss": svc.config["JWT_ISSUER"],
        "aud": svc.config["JWT_AUDIENCE"],
        "sub": user.id,
        "iat": iat,
        "exp": exp,
        "jti": jti,
        "sid": session.id,
        "role": user.role,
        "scope": session.scope,
        # When the password was last proven; refresh keeps it, so "fresh login" checks (key backup
        # retrieval) cannot be satisfied by sliding an old session.
        "auth_time": int(session.created_at.timestamp()),
    }
    if session.scope == SCOPE_BREAK_GLASS and session.break_glass_id:
        claims["bg"] = session.break_glass_id
        claims["bg_cid"] = session.break_glass_cid or ""
    expires_at = datetime.fromtimestamp(exp, UTC)
    session.token_expires_at = max(session.token_expires_at, expires_at)
    return IssuedToken(token=svc.keys.sign(claims), expires_at=expires_at, jti=jti, iat=iat)


def whole_second_after(now: datetime, seconds: int) -> datetime:
    """`now + seconds` rounded up to a whole second (token times are whole seconds)."""
    return datetime.fromtimestamp(math.ceil((now + timedelta(seconds=seconds)).timestamp()), UTC)


def _new_session(
    *,
    user: User,
    scope: str,
    now: datetime,
    absolute: datetime,
    break_glass_id: str | None = None,
    break_glass_cid: str | None = None,
) -> Session:
    return Session(
        id=str(uuid.uuid4()),
        user_id=user.id,
        scope=scope,
        created_at=now,
        last_seen=now,
        absolute_expires_at=absolute,
        token_expires_at=now,
        break_glass_id=break_glass_id,
        break_glass_cid=break_glass_cid,
    )


def _session_response(svc: AuthServices, *, session: Session, user: User, token: IssuedToken) -> dict[str, Any]:
    return {
        "access_token": token.token,
        "token_type": "Bearer",
        "expires_at": rfc3339(token.expires_at),
        "idle_timeout_s": svc.idle_timeout,
        "absolute_expires_at": rfc3339(session.absolute_expires_at),
        "session_id": session.id,
        "scope": session.scope,
        "user": {"id": user.id, "name": user.name, "role": user.role, "mfa_enrolled": user.mfa_enrolled},
    }


def mfa_required_for(svc: AuthServices, role: str) -> bool:
    return role in svc.config["MFA_REQUIRED_ROLES"]


# -- login ----------------------------------------------------------------------------------------------


def _login_failed(
    svc: AuthServices, *, reservation: Reservation, user: User | None, reason: str
) -> None:
    lockouts = svc.throttler.failed(reservation)
    actor = user.id if user is not None else "anonymous"
    role = user.role if user is not None else None
    services().audit.record(
        action="auth.login.failure",
        actor=actor,
        role=role,
        resource=f"user:{user.id}" if user is not None else None,
        outcome="failure",
        meta={"reason": reason},
    )
    for lockout in lockouts:
        services().audit.record(
            action="auth.lockout",
            actor=actor,
            role=role,
            resource=f"user:{user.id}" if user is not None else None,
            outcome="locked",
            severity="high",
            meta={"layer": lockout.layer, "retry_after": lockout.retry_after, "failures": lockout.failures},
        )


def login(*, username: str, password: str, otp: str | None, ip: str | None) -> dict[str, Any]:
    svc = services()
    name = normalise_username(username)
    try:
        # Counted before the password is looked at: parallel guesses cannot all pass a check made first.
        reservation = svc.throttler.reserve(username=name, ip=ip)
    except (TooManyFailedLogins, LoginRateLimited) as exc:
        services().audit.record(
            action="auth.login.failure",
            actor="anonymous",
            outcome="failure",
            meta={"reason": exc.code, "retry_after": exc.retry_after},
        )
        raise

    with _db(svc) as db:
        user = db.scalar(select(User).where(User.username == name))
    if user is None:
        svc.passwords.verify_dummy(password)  # same cost as a wrong password: no user enumeration by time
        password_ok = False
    else:
        password_ok = svc.passwords.verify(user.password_hash, password)
    if user is None or not password_ok or user.status != ACTIVE:
        _login_failed(
            svc,
            reservation=reservation,
            user=user,
            reason="unknown_user" if user is None else ("deactivated" if password_ok else "wrong_password"),
        )
        raise InvalidCredentials()

    if user.mfa_enrolled and not otp:
        svc.throttler.not_a_guess(reservation)
        services().audit.record(
            action="auth.login.failure", actor=user.id, role=user.role, resource=f"user:{user.id}",
            outcome="failure", meta={"reason": "mfa_required"},
        )
        raise MfaRequired()

    new_hash = svc.passwords.hash(password) if svc.passwords.needs_rehash(user.password_hash) else None
    now = utcnow()
    factor = "none"
    with _db(svc) as db, db.begin():
        fresh = db.get(User, user.id)
        if fresh is None or fresh.status != ACTIVE:
            factor = "invalid_user"
        elif fresh.mfa_enrolled:
            factor = _verify_second_factor(svc, db, user=fresh, code=otp or "", now=now) or "invalid"
        if factor in ("none", "totp", "recovery") and fresh is not None:
            if new_hash is not None:
                fresh.password_hash = new_hash
            scope = SCOPE_FULL
            absolute = whole_second_after(now, svc.max_lifetime)
            if not fresh.mfa_enrolled and mfa_required_for(svc, fresh.role):
                # Enough to enrol and nothing else; no refresh, so one idle window at most.
                scope = SCOPE_MFA_ENROLLMENT
                absolute = whole_second_after(now, svc.idle_timeout)
            session = _new_session(user=fresh, scope=scope, now=now, absolute=absolute)
            db.add(session)
            token = _issue_token(svc, session=session, user=fresh, now=now)
            user = fresh
    if factor == "invalid_user":
        _login_failed(svc, reservation=reservation, user=user, reason="deactivated")
        raise InvalidCredentials()
    if factor == "invalid":
        _login_failed(svc, reservation=reservation, user=user, reason="mfa_invalid")
        raise MfaInvalid()

    svc.throttler.succeeded(reservation)
    services().audit.record(
        action="auth.login.success",
        actor=user.id,
        role=user.role,
        resource=f"user:{user.id}",
        outcome="success",
        meta={"session_id": session.id, "scope": session.scope, "mfa": factor},
    )
    if factor in ("totp", "recovery"):
        services().audit.record(
            action="auth.mfa.use",
            actor=user.id,
            role=user.role,
            resource=f"user:{user.id}",
            outcome="success",
            meta={"method": factor, "session_id": session.id},
        )
    return _session_response(svc, session=session, user=user, token=token)


def _verify_second_factor(
    svc: AuthServices, db: OrmSession, *, user: User, code: str, now: datetime
) -> str | None:
    """"totp" or "recovery" when `code` is accepted (and consumed), None otherwise."""
    if mfa.looks_like_totp(code):
        if user.totp_secret_enc is None:
            return None
        secret = svc.cipher.decrypt_text(user.totp_secret_enc, context=f"totp:{user.id}")
        step = mfa.matching_step(secret, code, now=now.timestamp())
        if step is None:
            return None
        # Compare-and-set on the last used step: a code is accepted once, even across workers.
        result = db.execute(
            update(User)
            .where(User.id == user.id, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        return "totp" if result.rowcount == 1 else None  # type: ignore[attr-defined]
    digest = svc.cipher.code_hash(user.id, mfa.normalise_recovery_code(code))
    result = db.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.code_hash == digest, RecoveryCode.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return "recovery" if result.rowcount == 1 else None  # type: ignore[attr-defined]


# -- the session behind a verified token ----------------------------------------------------------------


def current(claims: SessionClaims) -> tuple[Session, User]:
    """The live session and user behind a verified token, or the 401 that explains why not."""
    cached = g.get("auth_current")
    if cached is not None and cached[0].id == claims.sid:
        return cast(tuple[Session, User], cached)
    svc = services()
    now = utcnow()
    with _db(svc) as db:
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
        _token_reused(session=session, user=user, jti=claims.jti)
    return session, user


def report_token_reuse(*, sid: str, jti: str, reporter: str) -> bool:
    """A verifier (gateway, keydir, audit, push) refused a retired token of `sid`: reuse, so the session ends.
    Believed only for a token this service retired for that very session, past its grace. True if it ended."""
    svc = services()
    now = utcnow()
    with _db(svc) as db:
        retired = db.get(RetiredToken, jti)
        session = db.get(Session, sid)
        user = db.get(User, session.user_id) if session is not None else None
    if retired is None or retired.session_id != sid or retired.refuse_from > now or session is None \
            or user is None or session.revoked_at is not None:
        return False
    try:
        _token_reused(session=session, user=user, jti=jti, seen_by=reporter)
    except SessionRevoked:
        return True
    return True


def _token_reused(*, session: Session, user: User, jti: str, seen_by: str = "auth") -> None:
    """A token replaced by refresh came back after its grace: it was copied. End the session (every token
    of it, the thief's and the owner's) and raise the alarm."""
    services().audit.record(
        action="auth.session.token_reuse",
        actor=user.id,
        role=user.role,
        resource=f"session:{session.id}",
        outcome="failure",
        severity="alert",
        meta={"session_id": session.id, "jti": jti, "alert": True, "seen_by": seen_by},
    )
    revoke_sessions(ids=[session.id], reason="token_reuse", actor="svc:auth", actor_role=None)
    raise SessionRevoked()


def refresh(*, claims: SessionClaims) -> dict[str, Any]:
    svc = services()
    session, user = current(claims)
    now = utcnow()
    if session.scope == SCOPE_MFA_ENROLLMENT:
        raise Forbidden("Enrolment sessions cannot be refreshed.")
    try:
        fresh, token = _rotate(svc, claims=claims, session_id=session.id, user=user, now=now)
    except IntegrityError:
        # A concurrent refresh with the same token retired it first: answer with its successor.
        fresh, token = _rotate(svc, claims=claims, session_id=session.id, user=user, now=now)
    return _session_response(svc, session=fresh, user=user, token=token)


def _rotate(
    svc: AuthServices, *, claims: SessionClaims, session_id: str, user: User, now: datetime
) -> tuple[Session, IssuedToken]:
    """Issues the next token and retires the presented one (refused after the grace, reuse after that)."""
    with _db(svc) as db, db.begin():
        fresh = db.get(Session, session_id, with_for_update=True)
        if fresh is None or fresh.revoked_at is not None:
            raise SessionRevoked()
        if fresh.absolute_expires_at <= now:
            raise SessionExpired()
        fresh.last_seen = now
        retired = db.get(RetiredToken, claims.jti)
        token = _issue_token(svc, session=fresh, user=user, now=now, again=retired)
        if retired is None:
            # A whole second (the feed's times are), rounded down: the grace never exceeds the setting, and
            # auth-service and the services reading the feed refuse the token from the same instant.
            refuse_from = datetime.fromtimestamp(
                math.floor(now.timestamp()) + int(svc.config["SESSION_REFRESH_GRACE"]), UTC
            )
            db.add(RetiredToken(
                jti=claims.jti, session_id=fresh.id, retired_at=now, refuse_from=refuse_from,
                expires_at=datetime.fromtimestamp(claims.exp, UTC), successor_jti=token.jti,
                successor_iat=token.iat, successor_exp=int(token.expires_at.timestamp()),
            ))
            db.flush()
            if random.random() < 0.01:  # keep the table small: a retired token past its exp needs no record
                db.execute(delete(RetiredToken).where(
                    RetiredToken.expires_at < now - timedelta(seconds=svc.leeway + 60)
                ))
    return fresh, token


def me(*, claims: SessionClaims) -> dict[str, Any]:
    svc = services()
    session, user = current(claims)
    break_glass = None
    if session.break_glass_id:
        with _db(svc) as db:
            bg = db.get(BreakGlass, session.break_glass_id)
        if bg is not None:
            break_glass = {"id": bg.id, "channel_cid": bg.channel_cid, "expires_at": rfc3339(bg.expires_at)}
    return {
        "user": user_read(user),
        "session": {
            "id": session.id,
            "expires_at": rfc3339(datetime.fromtimestamp(claims.exp, UTC)),
            "idle_timeout_s": svc.idle_timeout,
            "absolute_expires_at": rfc3339(session.absolute_expires_at),
            "break_glass": break_glass,
            "scope": session.scope,
        },
    }


def logout(*, claims: SessionClaims) -> None:
    session, user = current(claims)
    revoke_sessions(ids=[session.id], reason="logout", actor=user.id, actor_role=user.role)


def revoke_sessions(
    *, ids: list[str] | None = None, user_id: str | None = None, reason: str, actor: str, actor_role: str | None
) -> list[str]:
    """Ends sessions (by id, or every live one of a user); published on Redis and audited. Returns ids."""
    svc = services()
    now = utcnow()
    with _db(svc) as db, db.begin():
        revoked = _revoke_in(db, ids=ids, user_id=user_id, reason=reason, now=now)
    _after_revocation(svc, revoked, reason=reason, actor=actor, actor_role=actor_role)
    return [sid for sid, _, _ in revoked]


def _revoke_in(
    db: OrmSession, *, ids: list[str] | None, user_id: str | None, reason: str, now: datetime
) -> list[tuple[str, str, datetime]]:
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
        _end_stream_access(db, user_ids=sorted({row.user_id for row in rows}), now=now)
    return [(row.id, row.user_id, row.token_expires_at) for row in rows]


# Stream user tokens carry an `iat` this far in the past: Stream refuses a token "used before issue at" with
# no allowance for clock skew (the official Python SDK backdates the same way).
STREAM_IAT_BACKDATE = 5


def stream_iat(now: datetime, *, tokens_from: int | None) -> int:
    """`iat` of a Stream token issued at `now`: backdated, but never before the user's last cutoff."""
    return max(math.floor(now.timestamp()) - STREAM_IAT_BACKDATE, tokens_from or 0)


def stream_cutoff(now: datetime) -> int:
    """The Stream revocation time (`revoke_user_token`'s "before") for an end of session at `now`.

    Stream compares it with a token's whole-second `iat`. Every token issued up to `now` has
    iat <= floor(now) - backdate < cutoff, so it is revoked; a token issued afterwards gets iat = cutoff at
    least (stream_iat), still in the past, so it works at once: nobody waits for the clock to tick. A user's
    next cutoff is also past the previous one (_end_stream_access), which tokens issued since may carry.
    """
    return math.floor(now.timestamp()) - STREAM_IAT_BACKDATE + 1


def _end_stream_access(db: OrmSession, *, user_ids: list[str], now: datetime) -> None:
    """Every end of a session ends Stream access: the user's Stream tokens from before it are revoked (a durable
    job, tried at once by _after_revocation), and later credentials are issued after the cutoff."""
    stream_configured = services().stream is not None
    for user in db.scalars(select(User).where(User.id.in_(user_ids))).all():
        # Strictly after the previous cutoff: tokens issued since then carry iat = that cutoff at the least.
        cutoff = max(stream_cutoff(now), (user.stream_tokens_from or 0) + 1)
        user.stream_tokens_from = cutoff
        if stream_configured:
            _enqueue(db, user_id=user.id, kind=STREAM_REVOKE_TOKENS, now=now, payload={"revoke_before": cutoff})


def _after_revocation(
    svc: AuthServices,
    revoked: list[tuple[str, str, datetime]],
    *,
    reason: str,
    actor: str,
    actor_role: str | None,
) -> None:
    svc.publisher.publish([(sid, until) for sid, _, until in revoked], leeway=svc.leeway)
    for sid, owner, _ in revoked:
        services().audit.record(
            action="auth.session.revoke",
            actor=actor,
            role=actor_role,
            resource=f"session:{sid}",
            outcome="success",
            meta={"session_id": sid, "user_id": owner, "reason": reason},
        )
    if svc.stream is not None:
        for owner in sorted({owner for _, owner, _ in revoked}):
            _kick_jobs(svc, owner)  # revoke the Stream tokens now when Stream answers; the job retries if not


def revocation_feed(*, since_ms: int) -> dict[str, Any]:
    svc = services()
    return feed(svc.engine, since_ms=since_ms, leeway=svc.leeway, now=svc.clock.now())


# -- TOTP enrolment -------------------------------------------------------------------------------------


def totp_enroll(*, claims: SessionClaims) -> dict[str, Any]:
    svc = services()
    _, user = current(claims)
    if user.mfa_enrolled:
        raise MfaAlreadyEnrolled()
    secret = mfa.new_secret()
    with _db(svc) as db, db.begin():
        db.execute(
            update(User)
            .where(User.id == user.id)
            .values(totp_pending_enc=svc.cipher.encrypt_text(secret, context=f"totp-pending:{user.id}"))
        )
    services().audit.record(
        action="auth.mfa.enroll.start", actor=user.id, role=user.role, resource=f"user:{user.id}", outcome="success"
    )
    return {"secret": secret, "otpauth_uri": mfa.provisioning_uri(secret, username=user.username)}


def totp_confirm(*, claims: SessionClaims, code: str) -> dict[str, Any]:
    svc = services()
    session, user = current(claims)
    now = utcnow()
    codes = mfa.new_recovery_codes()
    outcome = "ok"
    with _db(svc) as db, db.begin():
        fresh = db.get(User, user.id, with_for_update=True)
        if fresh is None:
            raise UserNotFound()
        if fresh.mfa_enrolled:
            raise MfaAlreadyEnrolled()
        if fresh.totp_pending_enc is None:
            raise NoPendingEnrollment()
        secret = svc.cipher.decrypt_text(fresh.totp_pending_enc, context=f"totp-pending:{fresh.id}")
        step = mfa.matching_step(secret, code, now=now.timestamp())
        if step is None:
            outcome = "invalid"
        else:
            fresh.totp_secret_enc = svc.cipher.encrypt_text(secret, context=f"totp:{fresh.id}")
            fresh.totp_pending_enc = None
            fresh.totp_last_step = step  # the confirming code cannot log in afterwards
            fresh.mfa_enrolled = True
            fresh.updated_at = now
            db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == fresh.id))
            for one in codes:
                db.add(RecoveryCode(user_id=fresh.id, code_hash=svc.cipher.code_hash(fresh.id, one), created_at=now))
    if outcome == "invalid":
        services().audit.record(
            action="auth.mfa.enroll.confirm", actor=user.id, role=user.role, resource=f"user:{user.id}",
            outcome="failure", meta={"reason": "mfa_invalid"},
        )
        raise MfaInvalid()
    services().audit.record(
        action="auth.mfa.enroll.confirm", actor=user.id, role=user.role, resource=f"user:{user.id}",
        outcome="success", meta={"recovery_codes": len(codes)},
    )
    if session.scope != SCOPE_MFA_ENROLLMENT:
        return {"recovery_codes": codes}
    # The enrolment session's job is done. The user has just proved the password (to get it) and the new
    # factor (this code): that is a full login, so it ends with a full session, not a second login that
    # would have to wait for the next TOTP step (the confirming code's step is spent).
    revoke_sessions(ids=[session.id], reason="mfa_enrolled", actor=user.id, actor_role=user.role)
    with _db(svc) as db, db.begin():
        fresh = db.get(User, user.id)
        if fresh is None or fresh.status != ACTIVE:
            raise SessionRevoked()
        full = _new_session(user=fresh, scope=SCOPE_FULL, now=now, absolute=whole_second_after(now, svc.max_lifetime))
        db.add(full)
        token = _issue_token(svc, session=full, user=fresh, now=now)
    services().audit.record(
        action="auth.login.success", actor=fresh.id, role=fresh.role, resource=f"user:{fresh.id}",
        outcome="success", meta={"session_id": full.id, "scope": full.scope, "mfa": "totp_enrolment"},
    )
    return {"recovery_codes": codes, **_session_response(svc, session=full, user=fresh, token=token)}


# -- users ----------------------------------------------------------------------------------------------


def _actor_id(actor: SessionClaims | None) -> str:
    return actor.sub if actor is not None else "system"


def _actor_role(actor: SessionClaims | None) -> str | None:
    return actor.role if actor is not None else None


def create_user(
    *, actor: SessionClaims | None, username: str, name: str, role: str, password: str, mfa_check: bool = True
) -> dict[str, Any]:
    svc = services()
    Role(role)
    name_clean = name.strip()
    login_name = normalise_username(username)
    check_policy(password, username=login_name, name=name_clean)
    password_hash = svc.passwords.hash(password)
    now = utcnow()
    user = User(
        id=str(uuid.uuid4()),
        username=login_name,
        name=name_clean,
        role=role,
        status=ACTIVE,
        password_hash=password_hash,
        mfa_enrolled=False,
        created_at=now,
        updated_at=now,
    )
    try:
        with _db(svc) as db, db.begin():
            if db.scalar(select(User.id).where(User.username == login_name)) is not None:
                raise UsernameTaken()
            db.add(user)
    except IntegrityError as exc:  # a concurrent create of the same name
        raise UsernameTaken() from exc
    services().audit.record(
        action="user.create",
        actor=_actor_id(actor),
        role=_actor_role(actor),
        resource=f"user:{user.id}",
        outcome="success",
        meta={"user_id": user.id, "role": role},
    )
    return user_read(user)


def list_users(*, role: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
    svc = services()
    query = select(User).order_by(User.username)
    if role:
        query = query.where(User.role == role)
    if status:
        query = query.where(User.status == status)
    with _db(svc) as db:
        return [user_read(u) for u in db.scalars(query).all()]


def _user_or_404(db: OrmSession, user_id: str, *, lock: bool = False) -> User:
    user = db.get(User, user_id, with_for_update=lock) if _is_uuid(user_id) else None
    if user is None:
        raise UserNotFound()
    return user


def resolve_members(db: OrmSession, members: list[str]) -> list[str]:
    """Channel members as user ids: a user id stays as given, anything else is a username (the CLI lets
    people name colleagues); an unknown username is a MemberNotFound naming it."""
    names = {normalise_username(m) for m in members if not _is_uuid(m)}
    found = dict(db.execute(select(User.username, User.id).where(User.username.in_(names))).tuples().all())
    resolved = []
    for member in members:
        if _is_uuid(member):
            resolved.append(member)
        elif normalise_username(member) in found:
            resolved.append(found[normalise_username(member)])
        else:
            raise MemberNotFound(extra={"member": member[:64]})
    return resolved


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def get_user(*, user_id: str, include_deprovisioning: bool) -> dict[str, Any]:
    svc = services()
    with _db(svc) as db:
        user = _user_or_404(db, user_id)
        body = user_read(user)
        if include_deprovisioning:
            body["deprovisioning"] = deprovisioning_state(db, user)
    return body


def _other_active_admins(db: OrmSession, user_id: str) -> int:
    return int(
        db.scalar(
            select(func.count()).select_from(User).where(
                User.role == Role.ADMIN.value, User.status == ACTIVE, User.id != user_id
            )
        )
        or 0
    )


def update_user(*, actor: SessionClaims, user_id: str, name: str | None, role: str | None) -> dict[str, Any]:
    svc = services()
    now = utcnow()
    role_changed = False
    with _db(svc) as db, db.begin():
        user = _user_or_404(db, user_id, lock=True)
        if role is not None and role != user.role:
            if user.role == Role.ADMIN.value and user.status == ACTIVE and _other_active_admins(db, user.id) == 0:
                raise LastAdmin()
            user.role = role
            role_changed = True
        if name is not None:
            user.name = name.strip()
        user.updated_at = now
        revoked: list[tuple[str, str, datetime]] = []
        if role_changed:
            # Tokens carry the role: end the sessions that were granted under the old one.
            revoked = _revoke_in(db, ids=None, user_id=user.id, reason="role_changed", now=now)
        if (role_changed or name is not None) and svc.stream is not None:
            # A role change also takes the user out of channel types the new role may not use and revokes
            # Stream tokens minted before it (streaming.stream_job_handlers).
            _enqueue(db, user_id=user.id, kind="stream.sync_user", now=now,
                     payload={"role_changed": True,
                              "revoke_before": max(stream_cutoff(now), user.stream_tokens_from or 0)}
                     if role_changed else None)
    _after_revocation(svc, revoked, reason="role_changed", actor=actor.sub, actor_role=actor.role)
    services().audit.record(
        action="user.update",
        actor=actor.sub,
        role=actor.role,
        resource=f"user:{user.id}",
        outcome="success",
        meta={"user_id": user.id, "fields": [f for f, v in (("name", name), ("role", role)) if v is not None]},
    )
    _kick_jobs(svc, user.id)
    return get_user(user_id=user.id, include_deprovisioning=True)


# -- deprovisioning -------------------------------------------------------------------------------------

STREAM_DEACTIVATE = "stream.deactivate"
STREAM_REACTIVATE = "stream.reactivate"
STREAM_REVOKE_TOKENS = "stream.revoke_tokens"
KEYDIR_REVOKE = "keydir.revoke_all"


def _enqueue(
    db: OrmSession, *, user_id: str, kind: str, now: datetime, payload: dict[str, Any] | None = None
) -> Job:
    job = Job(
        id=str(uuid.uuid4()),
        user_id=user_id,
        kind=kind,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        payload=json.dumps(payload or {}),
    )
    db.add(job)
    return job


def deprovisioning_state(db: OrmSession, user: User) -> dict[str, Any] | None:
    jobs = db.scalars(
        select(Job)
        .where(Job.user_id == user.id, Job.kind.in_((STREAM_DEACTIVATE, STREAM_REACTIVATE, KEYDIR_REVOKE)))
        .order_by(Job.created_at.desc())
    ).all()
    if not jobs and user.status == ACTIVE:
        return None

    def latest(kind: str) -> Job | None:
        return next((j for j in jobs if j.kind == kind), None)

    stream_job = latest(STREAM_DEACTIVATE)
    keys_job = latest(KEYDIR_REVOKE)
    live_sessions = db.scalar(
        select(func.count()).select_from(Session).where(Session.user_id == user.id, Session.revoked_at.is_(None))
    )
    return {
        "sessions": "done" if user.status == ACTIVE or not live_sessions else "pending",
        "stream": "done" if stream_job is not None and stream_job.status == "done" else "pending",
        "keys": "done" if keys_job is not None and keys_job.status == "done" else "pending",
        "jobs": [job_read(j) for j in jobs[:20]],
    }


def job_read(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "attempts": job.attempts,
        "last_error": job.last_error,
        "next_attempt_at": iso(job.next_attempt_at) if job.status == "pending" else None,
        "created_at": iso(job.created_at),
        "done_at": iso(job.done_at),
    }


def _kick_jobs(svc: AuthServices, user_id: str) -> None:
    """Tries this user's pending jobs now, so a healthy Stream/keydir makes the answer say `done`."""
    if svc.jobs is not None:
        svc.jobs.run_due(user_id=user_id, budget_seconds=float(svc.config["STREAM_TIMEOUT"]) * 2)


def deactivate_user(*, actor: SessionClaims, user_id: str) -> dict[str, Any]:
    svc = services()
    now = utcnow()
    with _db(svc) as db, db.begin():
        user = _user_or_404(db, user_id, lock=True)
        if user.id == actor.sub:
            raise SelfDeactivation()
        if user.role == Role.ADMIN.value and user.status == ACTIVE and _other_active_admins(db, user.id) == 0:
            raise LastAdmin()
        was_active = user.status == ACTIVE
        revoked = _revoke_in(db, ids=None, user_id=user.id, reason="deactivated", now=now)
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
            _enqueue(db, user_id=user.id, kind=STREAM_DEACTIVATE, now=now,
                     payload={"revoke_before": stream_cutoff(now)})
            _enqueue(db, user_id=user.id, kind=KEYDIR_REVOKE, now=now, payload={"reason": "user_deactivated"})
    _after_revocation(svc, revoked, reason="deactivated", actor=actor.sub, actor_role=actor.role)
    if was_active:
        services().audit.record(
            action="user.deactivate",
            actor=actor.sub,
            role=actor.role,
            resource=f"user:{user_id}",
            outcome="success",
            severity="high",
            meta={"user_id": user_id, "sessions_revoked": len(revoked)},
        )
    _kick_jobs(svc, user_id)
    with _db(svc) as db:
        user = _user_or_404(db, user_id)
        state = deprovisioning_state(db, user) or {}
    return {"id": user_id, "status": DEACTIVATED, "deprovisioning": state}


def reactivate_user(*, actor: SessionClaims, user_id: str) -> dict[str, Any]:
    svc = services()
    now = utcnow()
    with _db(svc) as db, db.begin():
        user = _user_or_404(db, user_id, lock=True)
        if user.status == ACTIVE:
            return get_user_in(db, user)
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
        if svc.stream is not None or pending_stream:
            # Old Stream tokens stay revoked; the user gets new ones through new sessions.
            _enqueue(db, user_id=user.id, kind=STREAM_REACTIVATE, now=now, payload={"revoke_before": revoke_before})
    services().audit.record(
        action="user.reactivate",
        actor=actor.sub,
        role=actor.role,
        resource=f"user:{user_id}",
        outcome="success",
        severity="high",
        meta={"user_id": user_id},
    )
    _kick_jobs(svc, user_id)
    return get_user(user_id=user_id, include_deprovisioning=True)


def get_user_in(db: OrmSession, user: User) -> dict[str, Any]:
    body = user_read(user)
    body["deprovisioning"] = deprovisioning_state(db, user)
    return body


def list_sessions(*, user_id: str) -> list[dict[str, Any]]:
    svc = services()
    now = utcnow()
    with _db(svc) as db:
        _user_or_404(db, user_id)
        rows = db.scalars(
            select(Session).where(Session.user_id == user_id).order_by(Session.created_at.desc()).limit(200)
        ).all()
        return [session_read(s, now=now) for s in rows]


def revoke_user_session(*, actor: SessionClaims, user_id: str, session_id: str) -> None:
    svc = services()
    with _db(svc) as db:
        _user_or_404(db, user_id)
        session = db.get(Session, session_id)
        if session is None or session.user_id != user_id:
            raise SessionNotFound()
    revoke_sessions(ids=[session_id], reason="admin_revoked", actor=actor.sub, actor_role=actor.role)
