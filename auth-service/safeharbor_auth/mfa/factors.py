"""Checking a second factor (login, break-glass): a TOTP code, once, or an unused recovery code."""
from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import or_, update
from sqlalchemy.orm import Session as OrmSession

from ..context import AuthContext
from ..models import RecoveryCode, User
from . import totp


class SecondFactor(Enum):
    """How a login was proven beyond the password (the value is what the audit trail says)."""

    NONE = "none"
    TOTP = "totp"
    RECOVERY = "recovery"


def verify_second_factor(
    *, ctx: AuthContext, db: OrmSession, user: User, code: str, now: datetime
) -> SecondFactor | None:
    """TOTP or RECOVERY when `code` is accepted (and consumed, in the caller's transaction), None otherwise."""
    if totp.looks_like_totp(code):
        if user.totp_secret_enc is None:
            return None
        secret = ctx.cipher.decrypt_text(user.totp_secret_enc, context=f"totp:{user.id}")
        step = totp.matching_step(secret, code, now=now.timestamp())
        if step is None:
            return None
        # Compare-and-set on the last used step: a code is accepted once, even across workers.
        result = db.execute(
            update(User)
            .where(User.id == user.id, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        return SecondFactor.TOTP if result.rowcount == 1 else None  # type: ignore[attr-defined]
    digest = ctx.cipher.code_hash(user.id, totp.normalise_recovery_code(code))
    result = db.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.code_hash == digest, RecoveryCode.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return SecondFactor.RECOVERY if result.rowcount == 1 else None  # type: ignore[attr-defined]
