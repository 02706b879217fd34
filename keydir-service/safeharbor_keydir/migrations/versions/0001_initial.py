"""Key directory, transparency log, backups; append-only triggers on the log.

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

_APPEND_ONLY = ("log_leaves", "merkle_nodes", "checkpoints", "key_records")


def _id_column() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "log_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("frontier", sa.Text, nullable=False),
        sa.Column("checkpoint_size", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(
        sa.table(
            "log_head",
            sa.column("id", sa.Integer),
            sa.column("size", sa.BigInteger),
            sa.column("frontier", sa.Text),
            sa.column("checkpoint_size", sa.BigInteger),
        ),
        [{"id": 1, "size": 0, "frontier": "[]", "checkpoint_size": -1}],
    )
    op.create_table(
        "log_leaves",
        sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("appended_at", sa.DateTime(timezone=False), nullable=False),
    )
    op.create_index("ix_log_leaves_user_leaf", "log_leaves", ["user_id", "leaf_index"])
    op.create_table(
        "key_records",
        _id_column(),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("enc_pub", sa.String(64), nullable=False),
        sa.Column("sig_pub", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.Column("leaf_index", sa.BigInteger, nullable=False, unique=True),
        sa.UniqueConstraint("user_id", "device_id", "version", name="uq_key_records_user_device_version"),
    )
    op.create_index("ix_key_records_sig_pub", "key_records", ["sig_pub"])
    op.create_index("ix_key_records_enc_pub", "key_records", ["enc_pub"])
    op.create_table(
        "devices",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("current_version", sa.Integer, nullable=False),
        sa.Column("current_leaf_index", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("revocation_leaf_index", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "key_backups",
        _id_column(),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("backup_version", sa.Integer, nullable=False),
        sa.Column("key_version", sa.Integer, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.UniqueConstraint("user_id", "backup_version", name="uq_key_backups_user_version"),
    )
    op.create_table(
        "backup_reads",
        _id_column(),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_backup_reads_user_at", "backup_reads", ["user_id", "at"])

    # The database itself refuses to rewrite or remove published leaves, nodes, checkpoints and records:
    # a bug or a careless script can't; only someone who drops the triggers can (and clients holding an
    # older checkpoint detect it through a failing consistency proof).
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """CREATE FUNCTION keydir_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"""
        )
        for table in _APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION keydir_append_only()"
            )
    else:
        for table in _APPEND_ONLY:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )


def downgrade() -> None:
    for table in ("backup_reads", "key_backups", "checkpoints", "merkle_nodes", "devices", "key_records",
                  "log_leaves", "log_head"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS keydir_append_only()")
