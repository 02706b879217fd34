"""session endings: retired (refreshed) access tokens; per-user Stream token cutoff

Revision ID: 0003
Revises: 0002
Create Date: issue 14
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
        "retired_tokens",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refuse_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("successor_jti", sa.String(64), nullable=False),
        sa.Column("successor_iat", sa.Integer(), nullable=False),
        sa.Column("successor_exp", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name="fk_retired_tokens_session_id_sessions",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("jti", name="pk_retired_tokens"),
    )
    op.create_index("ix_retired_tokens_session_id", "retired_tokens", ["session_id"])
    op.create_index("ix_retired_tokens_retired_at", "retired_tokens", ["retired_at"])
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stream_tokens_from", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("stream_tokens_from")
    op.drop_index("ix_retired_tokens_retired_at", table_name="retired_tokens")
    op.drop_index("ix_retired_tokens_session_id", table_name="retired_tokens")
    op.drop_table("retired_tokens")
