"""Tables. The transparency log (leaves, Merkle nodes, checkpoints) is append-only: the migration adds
database triggers that refuse updates and deletes there. `devices` is the one mutable table: the current
state of each device, derived from the log and changed only inside the sequencer's transaction.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class LogHead(Base):
    """One row (id = 1): the sequencer's state and its lock (FOR UPDATE / BEGIN IMMEDIATE)."""

    __tablename__ = "log_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    frontier: Mapped[str] = mapped_column(Text, nullable=False)  # JSON hex perfect-subtree hashes, largest first
    checkpoint_size: Mapped[int] = mapped_column(BigInteger, nullable=False)


class LogLeaf(Base):
    """Leaf `leaf_index` of the log: the canonical JSON of a key record or a revocation."""

    __tablename__ = "log_leaves"

    leaf_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # "key" or "revocation"
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    device_id: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    appended_at: Mapped[datetime] = mapped_column(DateTime(timezone=False), nullable=False)  # naive UTC

    __table_args__ = (Index("ix_log_leaves_user_leaf", "user_id", "leaf_index"),)


class KeyRecord(Base):
    """Index over the key leaves: one row per (user, device, version); the record itself is the leaf."""

    __tablename__ = "key_records"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    device_id: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    enc_pub: Mapped[str] = mapped_column(String(64), nullable=False)
    sig_pub: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False), nullable=False)  # naive UTC
    record_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    leaf_index: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)

    __table_args__ = (
        # The compare-and-swap on version: two racing registrations can never both become version n.
        UniqueConstraint("user_id", "device_id", "version", name="uq_key_records_user_device_version"),
        Index("ix_key_records_sig_pub", "sig_pub"),
        Index("ix_key_records_enc_pub", "enc_pub"),
    )


class Device(Base):
    """Current state of one device of one user (changed only by the sequencer)."""

    __tablename__ = "devices"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    current_version: Mapped[int] = mapped_column(Integer, nullable=False)
    current_leaf_index: Mapped[int] = mapped_column(BigInteger, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False), nullable=True)
    revocation_leaf_index: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class MerkleNode(Base):
    """Every perfect subtree hash of the tree (level 0 = leaf hashes): O(log n) proofs."""

    __tablename__ = "merkle_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)


class Checkpoint(Base):
    """A signed checkpoint per append (the latest is what lookups return)."""

    __tablename__ = "checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)


class KeyBackup(Base):
    """One uploaded version of a user's encrypted private-key backup (opaque to the server)."""

    __tablename__ = "key_backups"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    backup_version: Mapped[int] = mapped_column(Integer, nullable=False)
    key_version: Mapped[int] = mapped_column(Integer, nullable=False)
    blob: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False), nullable=False)

    __table_args__ = (UniqueConstraint("user_id", "backup_version", name="uq_key_backups_user_version"),)


class BackupRead(Base):
    """Backup retrievals (and refused attempts) per user: the rate limit's window, shared by all workers."""

    __tablename__ = "backup_reads"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    at: Mapped[float] = mapped_column(Float, nullable=False)

    __table_args__ = (Index("ix_backup_reads_user_at", "user_id", "at"),)


metadata = Base.metadata
