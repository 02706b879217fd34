"""Alembic environment: the shared runner with this service's tables."""
from __future__ import annotations

from safeharbor_common.db import run_migrations
from safeharbor_auth.models import metadata

run_migrations(metadata)
