"""Tables. The log is append-only: entries and Merkle nodes are inserted, never updated (the migration
adds database triggers that refuse updates, and deletes of entries younger than the retention setting)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()

# One row (id = 1): the sequencer's state and its lock. Appenders lock it (FOR UPDATE / BEGIN IMMEDIATE).
log_head = Table(
    "log_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("last_hash", LargeBinary(32), nullable=False),
    Column("frontier", Text, nullable=False),  # JSON list of hex perfect-subtree hashes, largest first
    Column("checkpoint_size", BigInteger, nullable=False),
    Column("checkpoint_at", Float, nullable=False),
    Column("pruned_before", BigInteger, nullable=False, default=0),
)

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("ts", DateTime(timezone=False), nullable=False),  # naive UTC, for range queries
    Column("source", String(32), nullable=False),
    Column("actor", String(512), nullable=False),
    Column("role", String(32)),
    Column("action", String(128), nullable=False),
    Column("resource", String(512)),
    Column("outcome", String(64), nullable=False),
    Column("request_id", String(512)),
    Column("severity", String(8), nullable=False),
    Column("canonical", LargeBinary, nullable=False),  # RFC 8785 bytes of the stored entry, prev included
    Column("hash", LargeBinary(32), nullable=False),  # SHA-256(canonical) = Merkle leaf data
    Index("ix_audit_entries_ts", "ts"),
    Index("ix_audit_entries_actor_seq", "actor", "seq"),
    Index("ix_audit_entries_action_seq", "action", "seq"),
    Index("ix_audit_entries_resource_seq", "resource", "seq"),
)

# Every perfect subtree hash of the Merkle tree (level 0 = leaf hashes): O(log n) proofs.
merkle_nodes = Table(
    "merkle_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_checkpoints_size", "size"),
)

# One row (id = 1): the retention period (days) the delete trigger enforces; written by `manage purge`.
audit_retention = Table(
    "audit_retention",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("days", Integer, nullable=False),
)

# Signed HIPAA §164.312 compliance reports, kept (issue 17; safeharbor_audit.compliance). Inserted, never
# updated; `slot` (the scheduled period's number) is unique, so one worker of many keeps each daily report.
compliance_reports = Table(
    "compliance_reports",
    metadata,
    Column("report_id", String(36), primary_key=True, autoincrement=False),
    Column("generated_at", Float, nullable=False),
    Column("trigger", String(16), nullable=False),  # request | schedule
    Column("slot", BigInteger, unique=True),
    Column("sha256", String(64), nullable=False),
    Column("statuses", Text, nullable=False),  # JSON {control id: status}, for the next report's comparison
    Column("document", Text, nullable=False),  # JSON {report, sha256, signature, verifier_key}
    Index("ix_compliance_reports_generated_at", "generated_at"),
)
