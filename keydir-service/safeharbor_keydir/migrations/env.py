from __future__ import annotations

from alembic import context
from safeharbor_common.db import create_db_engine
from safeharbor_keydir.models import metadata

_configured = context.config.get_main_option("sqlalchemy.url")
if not _configured:
    raise RuntimeError("sqlalchemy.url is required (set by safeharbor_common.db.upgrade_database)")
url: str = _configured


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # Default pool, disposed below: create_db_engine sets pool_size for PostgreSQL, which NullPool refuses.
    engine = create_db_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
