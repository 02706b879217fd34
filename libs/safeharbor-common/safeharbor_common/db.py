"""Engine creation and Alembic upgrades, the same in every service.

SQLite (the embedded default) gets WAL, a busy timeout and foreign keys; PostgreSQL URLs are used as given
(the `postgresql://` scheme is mapped to the psycopg 3 driver).
"""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalise_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:  # NullPool and friends take no sizing arguments
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


# pg_advisory_lock's key for migrations (an advisory lock is per database, so one key serves every service).
MIGRATION_LOCK_KEY = 0x5AFE_4A7B_0001


def upgrade_database(url: str, script_location: str | Path, revision: str = "head") -> None:
    """Runs Alembic migrations in `script_location` against `url`.

    On PostgreSQL under an advisory lock held for the whole upgrade: pods that start together (each runs the
    migration in an init container, deploy/k8s) migrate one at a time, and the later ones find the schema at
    head instead of racing to create the same tables.
    """
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    if make_url(normalise_url(url)).get_backend_name() != "postgresql":
        command.upgrade(config, revision)
        return
    engine = create_db_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as lock:
            lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            lock.commit()  # the lock is the session's, not the transaction's: no transaction stays open
            try:
                command.upgrade(config, revision)
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                lock.commit()
    finally:
        engine.dispose()


def run_migrations(target_metadata: Any) -> None:
    """The body of every service's Alembic `env.py`: the URL comes from `upgrade_database`.

    Batch mode lets SQLite alter tables by copy; one short-lived connection, disposed at the end.
    """
    from alembic import context
    from sqlalchemy.pool import NullPool

    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url is required (set by safeharbor_common.db.upgrade_database)")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_db_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


_immediate_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def enable_sqlite_immediate(engine: Engine) -> Engine:
    """SQLite: a transaction begun with execution option `sqlite_immediate=True` takes the write lock at
    BEGIN (BEGIN IMMEDIATE), so two processes can't both read the same log head; plain reads stay deferred.
    Other databases are left alone (they lock the head row with SELECT ... FOR UPDATE). Idempotent: a
    second call on the same engine adds nothing (two listeners would each emit BEGIN)."""
    if engine.dialect.name == "sqlite" and engine not in _immediate_engines:
        _immediate_engines.add(engine)

        @event.listens_for(engine, "connect")
        def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
