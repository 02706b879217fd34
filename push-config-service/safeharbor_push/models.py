"""Tables of push-config-service (SQLAlchemy 2 typed models; Alembic migrations in migrations/).

- push_template_versions: every template version anyone applied (or tried to), with author, time, the
  linter's finding count, and whether Stream confirmed it (`status` applied | failed). Templates the
  linter refused are never stored (they may contain PHI-looking text); their refusal is audited.
- push_approved: the approved version per (provider, kind): the last one Stream confirmed.
- push_drift_state: per (provider, kind), whether Stream currently differs from the approved version,
  so drift is audited once per episode rather than at every check.
- push_leases: named lease rows. "drift-checker" elects the one process that runs the periodic check;
  "apply" is locked (UPDATE) at the start of every apply so changes to Stream's settings serialise.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Integer,
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
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

STATUS_APPLIED = "applied"
STATUS_FAILED = "failed"
LEASE_DRIFT = "drift-checker"
LEASE_APPLY = "apply"


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite returns naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = metadata


class TemplateVersion(Base):
    __tablename__ = "push_template_versions"
    __table_args__ = (UniqueConstraint("provider", "kind", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(Text)
    template_sha256: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    findings_count: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rolled_back_from: Mapped[int | None] = mapped_column(Integer, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ApprovedTemplate(Base):
    __tablename__ = "push_approved"
    __table_args__ = (
        ForeignKeyConstraint(
            ["provider", "kind", "version"],
            ["push_template_versions.provider", "push_template_versions.kind", "push_template_versions.version"],
        ),
    )

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    approved_at: Mapped[datetime] = mapped_column(UtcDateTime())
    approved_by: Mapped[str] = mapped_column(String(128))


class DriftState(Base):
    __tablename__ = "push_drift_state"

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    in_drift: Mapped[bool] = mapped_column(Boolean, default=False)
    since: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    approved_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stream_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class Lease(Base):
    __tablename__ = "push_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)  # epoch seconds: simple on every backend
