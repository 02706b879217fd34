"""push templates, approved versions, drift state, leases

Revision ID: 0001_push_templates
Revises:
Create Date: 2025-01-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from safeharbor_push.models import UtcDateTime

revision = "0001_push_templates"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_template_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("template_sha256", sa.String(64), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("findings_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("applied_at", UtcDateTime(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("rolled_back_from", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_push_template_versions"),
        sa.UniqueConstraint("provider", "kind", "version", name="uq_push_template_versions_provider"),
    )
    op.create_table(
        "push_approved",
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("approved_at", UtcDateTime(), nullable=False),
        sa.Column("approved_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("provider", "kind", name="pk_push_approved"),
        sa.ForeignKeyConstraint(
            ["provider", "kind", "version"],
            ["push_template_versions.provider", "push_template_versions.kind", "push_template_versions.version"],
            name="fk_push_approved_provider_push_template_versions",
        ),
    )
    drift = op.create_table(
        "push_drift_state",
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("in_drift", sa.Boolean(), nullable=False),
        sa.Column("since", UtcDateTime(), nullable=True),
        sa.Column("approved_version", sa.Integer(), nullable=True),
        sa.Column("stream_sha256", sa.String(64), nullable=True),
        sa.Column("checked_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("provider", "kind", name="pk_push_drift_state"),
    )
    op.bulk_insert(
        drift,
        [
            {"provider": provider, "kind": kind, "in_drift": False}
            for provider, kind in (("apn", "notification"), ("firebase", "notification"), ("firebase", "data"),
                                   ("firebase", "apn"))
        ],
    )
    leases = op.create_table(
        "push_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_push_leases"),
    )
    op.bulk_insert(
        leases,
        [
            {"name": "drift-checker", "holder": None, "expires_at": 0.0},
            {"name": "apply", "holder": None, "expires_at": 0.0},
        ],
    )


def downgrade() -> None:
    op.drop_table("push_leases")
    op.drop_table("push_drift_state")
    op.drop_table("push_approved")
    op.drop_table("push_template_versions")
