"""break-glass: remember whether opening added a Stream channel membership

Revision ID: 0002
Revises: 0001
Create Date: issue 3
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("break_glass", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("stream_member_added", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("break_glass", schema=None) as batch_op:
        batch_op.drop_column("stream_member_added")
