"""MFA's service functions: TOTP enrolment (start, confirm with a code; recovery codes once)."""
from __future__ import annotations

from safeharbor_common.errors import MfaInvalid, SessionRevoked
from safeharbor_common.tokens import SCOPE_FULL, SCOPE_MFA_ENROLLMENT
from sqlalchemy import delete, update

from ..accounts import ACTIVE
from ..context import AuthContext
from ..errors import MfaAlreadyEnrolled, NoPendingEnrollment, UserNotFound
from ..models import RecoveryCode, Session, User
from ..sessions.service import revoke_sessions, session_response
from ..sessions.tokens import issue_token, new_session, whole_second_after
from . import totp
from .schemas import TotpConfirmResponse, TotpEnrollResponse, TotpRecoveryCodes


def totp_enroll(*, ctx: AuthContext, user: User) -> TotpEnrollResponse:
    if user.mfa_enrolled:
        raise MfaAlreadyEnrolled()
    secret = totp.new_secret()
    with ctx.db() as db, db.begin():
        db.execute(
            update(User)
            .where(User.id == user.id)
            .values(totp_pending_enc=ctx.cipher.encrypt_text(secret, context=f"totp-pending:{user.id}"))
        )
    ctx.audit.record(
        action="auth.mfa.enroll.start", actor=user.id, role=user.role, resource=f"user:{user.id}", outcome="success"
    )
    return TotpEnrollResponse(secret=secret, otpauth_uri=totp.provisioning_uri(secret, username=user.username))


def totp_confirm(
    *, ctx: AuthContext, session: Session, user: User, code: str
) -> TotpRecoveryCodes | TotpConfirmResponse:
    now = ctx.clock.now()
    codes = totp.new_recovery_codes()
    outcome = "ok"
    with ctx.db() as db, db.begin():
        fresh = db.get(User, user.id, with_for_update=True)
        if fresh is None:
            raise UserNotFound()
        if fresh.mfa_enrolled:
            raise MfaAlreadyEnrolled()
        if fresh.totp_pending_enc is None:
            raise NoPendingEnrollment()
        secret = ctx.cipher.decrypt_text(fresh.totp_pending_enc, context=f"totp-pending:{fresh.id}")
        step = totp.matching_step(secret, code, now=now.timestamp())
        if step is None:
            outcome = "invalid"
        else:
            fresh.totp_secret_enc = ctx.cipher.encrypt_text(secret, context=f"totp:{fresh.id}")
            fresh.totp_pending_enc = None
            fresh.totp_last_step = step  # the confirming code cannot log in afterwards
            fresh.mfa_enrolled = True
            fresh.updated_at = now
            db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == fresh.id))
            for one in codes:
                db.add(RecoveryCode(user_id=fresh.id, code_hash=ctx.cipher.code_hash(fresh.id, one), created_at=now))
    if outcome == "invalid":
        ctx.audit.record(
            action="auth.mfa.enroll.confirm", actor=user.id, role=user.role, resource=f"user:{user.id}",
            outcome="failure", meta={"reason": "mfa_invalid"},
        )
        raise MfaInvalid()
    ctx.audit.record(
        action="auth.mfa.enroll.confirm", actor=user.id, role=user.role, resource=f"user:{user.id}",
        outcome="success", meta={"recovery_codes": len(codes)},
    )
    if session.scope != SCOPE_MFA_ENROLLMENT:
        return TotpRecoveryCodes(recovery_codes=codes)
    # The enrolment session's job is done. The user has just proved the password (to get it) and the new
    # factor (this code): that is a full login, so it ends with a full session, not a second login that
    # would have to wait for the next TOTP step (the confirming code's step is spent).
    revoke_sessions(ctx=ctx, ids=[session.id], reason="mfa_enrolled", actor=user.id, actor_role=user.role)
    with ctx.db() as db, db.begin():
        fresh = db.get(User, user.id)
        if fresh is None or fresh.status != ACTIVE:
            raise SessionRevoked()
        full = new_session(user=fresh, scope=SCOPE_FULL, now=now, absolute=whole_second_after(now, ctx.max_lifetime))
        db.add(full)
        token = issue_token(ctx=ctx, session=full, user=fresh, now=now)
    ctx.audit.record(
        action="auth.login.success", actor=fresh.id, role=fresh.role, resource=f"user:{fresh.id}",
        outcome="success", meta={"session_id": full.id, "scope": full.scope, "mfa": "totp_enrolment"},
    )
    return TotpConfirmResponse(recovery_codes=codes,
                               **dict(session_response(ctx=ctx, session=full, user=fresh, token=token)))
