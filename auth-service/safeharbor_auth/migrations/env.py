"""Alembic environment: the shared runner with this service's tables."""
from __future__ import annotations

from safeharbor_auth.models import metadata
from safeharbor_common.db import run_migrations

run_migrations(metadata)
