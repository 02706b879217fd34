"""Alembic upgrades on PostgreSQL take an advisory lock: pods starting together migrate one at a time."""
from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from safeharbor_common.db import MIGRATION_LOCK_KEY, upgrade_database

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REVISION = '''
revision = "0001"
down_revision = None
from alembic import op
import sqlalchemy as sa
def upgrade() -> None:
    op.create_table("things", sa.Column("id", sa.Integer, primary_key=True))
'''


@pytest.fixture
def database() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            raise
        pytest.skip("!!! PostgreSQL unreachable: the migration lock is NOT tested")
    name = f"sh_db_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _scripts(tmp_path: Path) -> Path:
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text("from safeharbor_common.db import run_migrations\nrun_migrations(None)\n")
    (tmp_path / "versions/0001_things.py").write_text(REVISION)
    return tmp_path


def test_an_upgrade_waits_for_the_migration_lock_then_runs(database: str, tmp_path: Path) -> None:
    import psycopg

    scripts = _scripts(tmp_path)
    with psycopg.connect(database, autocommit=True) as holder, psycopg.connect(database, autocommit=True) as probe:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))  # another pod is migrating
        errors: list[BaseException] = []

        def migrate() -> None:
            try:
                upgrade_database(database, scripts)
            except BaseException as exc:  # handed to the test thread
                errors.append(exc)

        worker = threading.Thread(target=migrate)
        worker.start()
        worker.join(2.0)
        assert worker.is_alive(), "the upgrade ran while another process held the migration lock"
        assert probe.execute("SELECT to_regclass('things')").fetchone() == (None,)
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        worker.join(60)
        assert not worker.is_alive() and not errors, errors
        assert probe.execute("SELECT to_regclass('things')").fetchone() == ("things",)
        # Released: the next upgrade (the next pod) finds the schema at head and returns.
        upgrade_database(database, scripts)
        held = probe.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                             "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()
        assert held == (0,)
