"""auth-service tables (SQLAlchemy 2 typed models). No other service reads them."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone, so it is restored on the way out)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored: datetime = value
        if stored.tzinfo is None:
            return stored.replace(tzinfo=UTC)
        return stored.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)  # stored lower-case
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    # Whole epoch second before which this user's Stream tokens are revoked; new ones are issued no earlier.
    stream_tokens_from: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | deactivated
    password_hash: Mapped[str] = mapped_column(String(255))
    mfa_enrolled: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    totp_pending_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # The last accepted TOTP time step: a code is accepted only for a later step (no replay).
    totp_last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deactivated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))  # HMAC-SHA256 hex; codes are random, 50 bits
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("user_id", "code_hash", name="uq_recovery_codes_user_code"),)


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(32))  # full | mfa_enrollment | break_glass
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime)
    absolute_expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The latest `exp` of any token issued for this session: how long a revocation must be remembered.
    token_expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, index=True)
    revoke_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    break_glass_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    break_glass_cid: Mapped[str | None] = mapped_column(String(200), nullable=True)


class RetiredToken(Base):
    """An access token replaced by refresh: refused from `refuse_from` (the end of a short grace for
    requests in flight) until `expires_at`; presenting it later is reuse and ends the session."""

    __tablename__ = "retired_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    retired_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    refuse_from: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The token that replaced it, so a refresh retried within the grace gets the same one (no fork).
    successor_jti: Mapped[str] = mapped_column(String(64))
    successor_iat: Mapped[int] = mapped_column(Integer)
    successor_exp: Mapped[int] = mapped_column(Integer)


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))  # base64url raw Ed25519
    private_key_enc: Mapped[bytes] = mapped_column(LargeBinary)  # AES-256-GCM under AUTH_DATA_KEY
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Published from creation; signs from `active_from` (so verifiers can fetch it first).
    active_from: Mapped[datetime] = mapped_column(UtcDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    publish_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class LoginThrottle(Base):
    """Brute-force state per key (`user:<username>`, `ip:<addr>`, `global:<minute>`)."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[float] = mapped_column(default=0.0)
    locked_until: Mapped[float] = mapped_column(default=0.0)


class Job(Base):
    """Durable retry queue for work outside this database (Stream, keydir)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text, default="{}")  # JSON: ids and times only
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(36), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)  # codes, never PHI
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    __table_args__ = (Index("ix_jobs_status_next", "status", "next_attempt_at"),)


class BreakGlass(Base):
    __tablename__ = "break_glass"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[str] = mapped_column(String(36))
    channel_cid: Mapped[str] = mapped_column(String(200))
    reason_enc: Mapped[bytes] = mapped_column(LargeBinary)  # free text may hold PHI: encrypted
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, index=True)
    close_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    review_note_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Whether opening added the clinician to the channel (then closing takes the membership back).
    stream_member_added: Mapped[bool] = mapped_column(Boolean, default=False)


metadata = Base.metadata
__all__ = [
    "BreakGlass",
    "Job",
    "LoginThrottle",
    "RecoveryCode",
    "RetiredToken",
    "Session",
    "SigningKey",
    "User",
    "metadata",
]
