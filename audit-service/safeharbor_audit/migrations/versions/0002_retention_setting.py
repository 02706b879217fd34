"""Retention by setting: the delete trigger reads `audit_retention.days` (written by `manage purge` from
AUDIT_RETENTION_DAYS) instead of a hard-coded 2192.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SQLITE = [
    "DROP TRIGGER IF EXISTS audit_entries_retention",
    """CREATE TRIGGER audit_entries_retention BEFORE DELETE ON audit_entries
       WHEN old.ts > datetime('now', '-' || (SELECT days FROM audit_retention WHERE id = 1) || ' days')
       BEGIN SELECT RAISE(ABORT, 'audit entries younger than the retention period cannot be deleted'); END""",
]
_PG = [
    """CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'UPDATE' THEN
           RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
         END IF;
         IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_entries'
            AND OLD.ts > (now() AT TIME ZONE 'utc')
                - make_interval(days => (SELECT days FROM audit_retention WHERE id = 1)) THEN
           RAISE EXCEPTION 'audit entries younger than the retention period cannot be deleted';
         END IF;
         RETURN OLD;
       END $$""",
]


def upgrade() -> None:
    op.create_table(
        "audit_retention",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("days", sa.Integer, nullable=False),
    )
    op.execute("INSERT INTO audit_retention (id, days) VALUES (1, 2192)")
    for statement in _PG if op.get_bind().dialect.name == "postgresql" else _SQLITE:
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the audit log is never downgraded: it would destroy the evidence")
