from __future__ import annotations

from alembic import context
from safeharbor_auth.models import metadata
from safeharbor_common.db import create_db_engine
from sqlalchemy import pool

url = context.config.get_main_option("sqlalchemy.url") or ""
assert url, "sqlalchemy.url is required"


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # safeharbor_common.db adds pool_size/max_overflow for PostgreSQL, which NullPool refuses; a default
    # pool disposed right after the migration is equivalent here.
    engine = create_db_engine(url) if url.startswith("postgres") else create_db_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
