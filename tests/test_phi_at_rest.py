"""No PHI in clear in any file of a running stack: a marker sent as a request's User-Agent reaches the
audit trail (auditors read it decrypted) yet appears in no database file, outbox, WAL, log or table."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import Api

pytestmark = pytest.mark.owned_stack  # reads the stack's files and databases


def _every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _postgres_rows(urls: dict[str, str]) -> bytes:
    """Every row of every table of the stack's PostgreSQL databases, as text."""
    import psycopg

    dump = []
    for url in urls.values():
        with psycopg.connect(url) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")]
            for table in tables:
                dump += [str(r[0]).encode() for r in conn.execute(f'SELECT t::text FROM "{table}" t')]
    return b"\n".join(dump)


def test_a_phi_marker_is_stored_nowhere_in_clear(api: Api, stack: Any, backend: str) -> None:
    marker = f"PHI-MARKER-{uuid.uuid4().hex}"
    auditor = api.token("audra")
    sam = api.token("sam")
    found: dict[str, Any] | None = None
    deadline = time.monotonic() + 30
    # Emitters fetch audit-service's PHI key at start; until they have it they withhold PHI, so ask again
    # until one entry carries the marker (sealed by the gateway, opened for the auditor).
    while found is None and time.monotonic() < deadline:
        request_id = api.call("GET", "/v1/auth/me", token=sam, headers={"User-Agent": marker}).headers["X-Request-ID"]
        api.call("POST", "/v1/auth/login", json={"username": "sam", "password": "wrong"},
                 headers={"User-Agent": marker})
        for _ in range(20):
            entries = api.call("GET", f"/v1/audit/entries?request_id={request_id}", token=auditor).json()["entries"]
            found = next((e for e in entries if e.get("user_agent") == marker), None)
            if found is not None or any(e["meta"].get("phi_withheld") for e in entries):
                break
            time.sleep(0.2)
    assert found is not None, "no audit entry carries the marker"
    needle = marker.encode()
    in_clear = [str(p) for p in _every_file(stack.settings.var_dir) if needle in p.read_bytes()]
    assert in_clear == [], in_clear
    if backend == "postgres":
        assert needle not in _postgres_rows(stack.settings.database_urls)
