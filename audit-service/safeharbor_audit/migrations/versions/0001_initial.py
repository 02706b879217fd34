"""Audit log tables, append-only triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The database itself refuses to rewrite entries or Merkle nodes, and to delete entries younger than six
# years: a bug or a careless script can't; only someone who drops the triggers can (and verify sees it).
_SQLITE_TRIGGERS = [
    """CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
       BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END""",
    """CREATE TRIGGER audit_entries_retention BEFORE DELETE ON audit_entries
       WHEN old.ts > datetime('now', '-2192 days')
       BEGIN SELECT RAISE(ABORT, 'audit entries younger than the retention period cannot be deleted'); END""",
    """CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
       BEGIN SELECT RAISE(ABORT, 'merkle nodes are append-only'); END""",
]
_PG_TRIGGERS = [
    """CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'UPDATE' THEN
           RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
         END IF;
         IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_entries'
            AND OLD.ts > (now() AT TIME ZONE 'utc') - interval '2192 days' THEN
           RAISE EXCEPTION 'audit entries younger than the retention period cannot be deleted';
         END IF;
         RETURN OLD;
       END $$""",
    """CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
       FOR EACH ROW EXECUTE FUNCTION audit_append_only()""",
    """CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE ON merkle_nodes
       FOR EACH ROW EXECUTE FUNCTION audit_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "log_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("frontier", sa.Text, nullable=False),
        sa.Column("checkpoint_size", sa.BigInteger, nullable=False),
        sa.Column("checkpoint_at", sa.Float, nullable=False),
        sa.Column("pruned_before", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("ts", sa.DateTime(timezone=False), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(512), nullable=False),
        sa.Column("role", sa.String(32)),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("resource", sa.String(512)),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(512)),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("canonical", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_index("ix_audit_entries_ts", "audit_entries", ["ts"])
    op.create_index("ix_audit_entries_actor_seq", "audit_entries", ["actor", "seq"])
    op.create_index("ix_audit_entries_action_seq", "audit_entries", ["action", "seq"])
    op.create_index("ix_audit_entries_resource_seq", "audit_entries", ["resource", "seq"])
    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_checkpoints_size", "checkpoints", ["size"])
    # The genesis head: empty tree, prev of entry 0 is 32 zero bytes.
    op.execute(
        sa.text(
            "INSERT INTO log_head (id, size, last_hash, frontier, checkpoint_size, checkpoint_at, pruned_before)"
            " VALUES (1, 0, :zero, '[]', -1, 0, 0)"
        ).bindparams(sa.bindparam("zero", b"\x00" * 32, type_=sa.LargeBinary))
    )
    dialect = op.get_bind().dialect.name
    for statement in _PG_TRIGGERS if dialect == "postgresql" else _SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the audit log is never downgraded: it would destroy the evidence")
