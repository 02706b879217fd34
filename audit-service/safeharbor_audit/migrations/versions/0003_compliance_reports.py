"""Kept compliance reports (issue 17).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compliance_reports",
        sa.Column("report_id", sa.String(36), primary_key=True, autoincrement=False),
        sa.Column("generated_at", sa.Float, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("slot", sa.BigInteger, unique=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("statuses", sa.Text, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
    )
    op.create_index("ix_compliance_reports_generated_at", "compliance_reports", ["generated_at"])


def downgrade() -> None:
    op.drop_table("compliance_reports")
