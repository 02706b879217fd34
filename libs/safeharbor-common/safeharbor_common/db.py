"""Engine creation and Alembic upgrades, the same in every service.

SQLite (the embedded default) gets WAL, a busy timeout and foreign keys; PostgreSQL URLs are used as given
(the `postgresql://` scheme is mapped to the psycopg 3 driver).
"""
from __future__ import annotations

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


def upgrade_database(url: str, script_location: str | Path, revision: str = "head") -> None:
    """Runs Alembic migrations in `script_location` against `url`."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    command.upgrade(config, revision)


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


def enable_sqlite_immediate(engine: Engine) -> Engine:
    """SQLite: a transaction begun with execution option `sqlite_immediate=True` takes the write lock at
    BEGIN (BEGIN IMMEDIATE), so two processes can't both read the same log head; plain reads stay deferred.
    Other databases are left alone (they lock the head row with SELECT ... FOR UPDATE)."""
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
