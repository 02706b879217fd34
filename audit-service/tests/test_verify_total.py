"""Verify is total: whatever an attacker writes into any column of the log's tables, verification answers
(never raises) and names the first bad sequence number, or the bad checkpoint.

Property-based: random columns of random rows get random values of every type the backend can store
(SQLite stores any type in any column; PostgreSQL only values of the column's type). Each example starts
from a fresh copy of one verified log (a file copy on SQLite, a template database on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safeharbor_audit.app import build_log
from safeharbor_audit.config import load_config
from safeharbor_audit.store import AuditLog
from safeharbor_audit.verify import VerifyReport

from .conftest import PG_ADMIN_URL, AuditEnv, Ingest, build_app, make_env, make_event, migrate, postgres_available
from .test_tamper import drop_guards

SIZE = 37  # not a power of two: a partial right edge, several node levels
ENTRY_COLUMNS = ("seq", "ts", "event_id", "source", "actor", "role", "action", "resource", "outcome",
                 "request_id", "severity", "canonical", "hash")
NODE_COLUMNS = ("level", "idx", "hash")
CHECKPOINT_COLUMNS = ("size", "root", "note")
HEAD_COLUMNS = ("size", "last_hash", "frontier", "pruned_before")
TEXT = {"ts", "event_id", "source", "actor", "role", "action", "resource", "outcome", "request_id", "severity",
        "frontier", "note"}
BINARY = {"canonical", "hash", "root", "last_hash"}

any_value = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.booleans(),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(["", "0", "-1", "null", "{}", "[]", '{"seq": 3}', "2026-11-24 10:00:00.000000", "\x00"]),
)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return value


def _pg_value(column: str, value: Any) -> Any:
    """The nearest value PostgreSQL stores in that column (its types are enforced)."""
    if value is None:
        return None
    if column in BINARY:
        return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
    if column == "ts":
        if isinstance(value, datetime):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            with contextlib.suppress(OverflowError, ValueError, OSError):
                return datetime(2026, 1, 1) + timedelta(seconds=float(value) % 1e9)
        return datetime(1999, 1, 1)
    if column in TEXT:
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        return text.replace("\x00", "")
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        return int(max(-(2**62), min(2**62, value)))
    if isinstance(value, bytes):
        return len(value)
    return len(str(value))


class LogCopies:
    """One verified log, copied afresh for every example."""

    def __init__(self, env: AuditEnv, backend: str, base: str) -> None:
        self.env, self.backend, self.base = env, backend, base

    @contextlib.contextmanager
    def copy(self) -> Iterator[tuple[AuditLog, Any]]:
        if self.backend == "sqlite":
            path = Path(self.base).with_name(f"copy-{uuid.uuid4().hex[:8]}.db")
            with contextlib.closing(sqlite3.connect(self.base)) as src, \
                    contextlib.closing(sqlite3.connect(path)) as dst:
                src.backup(dst)
            url = f"sqlite:///{path}"
        else:
            import psycopg

            name = f"audit_copy_{uuid.uuid4().hex[:10]}"
            _close_sessions(self.base)
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.base}"')
            url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        log = build_log(load_config({**self.env.environ, "DATABASE_URL": url}))
        raw = log.engine.raw_connection()
        try:
            yield log, raw
        finally:
            raw.close()
            log.engine.dispose()
            if self.backend == "sqlite":
                path.unlink()
            else:
                import psycopg

                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fill(app: Flask, ingest: Ingest) -> None:
    log: AuditLog = app.extensions["audit_log"]
    for start in range(0, SIZE, 8):
        events = [make_event(resource=f"/r/{i}", role=None if i % 5 == 0 else "clinician", ip=None if i % 7 else "x")
                  for i in range(start, min(SIZE, start + 8))]
        assert ingest(events).status_code == 200
        log.checkpoint_if_due(force=True)
    report = log.verify()
    assert report.ok and report.size == SIZE, report


@pytest.fixture(params=["sqlite", "postgres"])
def copies(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogCopies]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/base.db"
        base = str(tmp_path / "base.db")
    else:
        if not postgres_available():
            pytest.skip("PostgreSQL is not reachable")
        import psycopg

        base = f"audit_base_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{base}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + base
    env = make_env(url)
    migrate(env.environ)
    app = build_app(env)
    client = app.test_client()

    def ingest(events: list[dict[str, Any]]) -> Any:
        return client.post("/internal/v1/audit/events", json={"events": events}, headers=env.service_headers())

    _fill(app, ingest)
    log: AuditLog = app.extensions["audit_log"]
    log.stop_ticker()
    with log.engine.begin() as conn:
        drop_guards(conn)  # the attacker is the database's superuser
    log.engine.dispose()
    yield LogCopies(env, request.param, base)
    if request.param == "postgres":
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{base}" WITH (FORCE)')


def _close_sessions(database: str) -> None:
    """Ends every other session on `database`: PostgreSQL copies a template only when nobody is connected.

    The app's pools are disposed by now, but a backend whose client has gone (the verify pool's worker
    processes, the checkpoint ticker's last connection) can outlive it for a moment on a busy machine.
    """
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        for _ in range(100):
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.05)
    raise AssertionError(f"sessions on {database} did not end")


def _rows(raw: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    cursor = raw.cursor()
    cursor.execute(sql, params)
    rows = [tuple(r) for r in cursor.fetchall()]
    cursor.close()
    return rows


def _write(raw: Any, backend: str, sql: str, params: tuple[Any, ...]) -> bool:
    """Runs one tampering statement; False when the database refuses the value (constraint, type)."""
    if backend == "postgres":
        sql = sql.replace("?", "%s")
    cursor = raw.cursor()
    try:
        cursor.execute(sql, params)
        raw.commit()
        return True
    except Exception:
        raw.rollback()
        return False
    finally:
        cursor.close()


def _check(report: VerifyReport, expected_seq: int | None) -> None:
    assert isinstance(report, VerifyReport)
    assert not report.ok, report
    if expected_seq is not None:
        assert report.first_bad_seq == expected_seq, report
    else:
        assert report.first_bad_seq is not None or report.bad_checkpoint is not None, report


# Ranges of 4 and 8 entries exercise how ranges join (chain, upper nodes, checkpoint roots); 16: one range.
range_levels = st.sampled_from([2, 3, 16])
edits = st.one_of(
    st.tuples(st.just("audit_entries"), st.sampled_from(ENTRY_COLUMNS), st.integers(0, SIZE - 1), any_value),
    st.tuples(st.just("merkle_nodes"), st.sampled_from(NODE_COLUMNS), st.integers(0, 2 * SIZE), any_value),
    st.tuples(st.just("checkpoints"), st.sampled_from(CHECKPOINT_COLUMNS), st.integers(0, 10), any_value),
    st.tuples(st.just("log_head"), st.sampled_from(HEAD_COLUMNS), st.just(0), any_value),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(edit=edits, range_level=range_levels)
def test_any_value_in_any_column_is_reported_never_raised(
    copies: LogCopies, edit: tuple[str, str, int, Any], range_level: int
) -> None:
    table, column, which, value = edit
    with copies.copy() as (log, raw):
        value = _pg_value(column, value) if copies.backend == "postgres" else _sqlite_value(value)
        key = {"audit_entries": "seq", "merkle_nodes": "level, idx", "checkpoints": "id", "log_head": "id"}[table]
        typeof = f", typeof({column})" if copies.backend == "sqlite" else ""
        rows = _rows(raw, f"SELECT {key}, {column}{typeof} FROM {table} ORDER BY {key}")
        target = rows[which % len(rows)]
        width = len(key.split(","))
        keys, old = target[:width], target[width:]
        where = " AND ".join(f"{k.strip()} = ?" for k in key.split(","))
        assume(_write(raw, copies.backend, f"UPDATE {table} SET {column} = ? WHERE {where}", (value, *keys)))
        # What was stored (after the column's type affinity or cast) may equal the old value: no tampering.
        new_keys = (value, *keys[1:]) if key.startswith(column) else keys
        if key == "level, idx" and column == "idx":
            new_keys = (keys[0], value)
        after = _rows(raw, f"SELECT {column}{typeof} FROM {table} WHERE {where}".replace("?", "%s")
                      if copies.backend == "postgres" else f"SELECT {column}{typeof} FROM {table} WHERE {where}",
                      new_keys)
        if after and after[0] == old and type(after[0][0]) is type(old[0]):
            assert log.verify(range_level=range_level).ok
            return
        report = log.verify(range_level=range_level)
        if table == "audit_entries":
            _check(report, int(keys[0]))
        elif table == "merkle_nodes":
            level, idx = int(keys[0]), int(keys[1])
            _check(report, idx << level)
        else:
            _check(report, None)


row_operations = st.sampled_from(["delete", "swap", "duplicate", "delete_node", "extra_node", "delete_checkpoint"])


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(operation=row_operations, seq=st.integers(0, SIZE - 2), range_level=range_levels)
def test_deleted_duplicated_and_reordered_rows_are_reported(
    copies: LogCopies, operation: str, seq: int, range_level: int
) -> None:
    b = copies.backend
    with copies.copy() as (log, raw):
        expected: int | None = seq
        if operation == "delete":
            assert _write(raw, b, "DELETE FROM audit_entries WHERE seq = ?", (seq,))
        elif operation == "swap":
            for a_, b_ in ((seq, -1), (seq + 1, seq), (-1, seq + 1)):
                assert _write(raw, b, "UPDATE audit_entries SET seq = ? WHERE seq = ?", (b_, a_))
        elif operation == "duplicate":
            columns = ", ".join(c for c in ENTRY_COLUMNS if c not in ("seq", "event_id"))
            assert _write(raw, b, f"INSERT INTO audit_entries (seq, event_id, {columns}) SELECT ?, ?, {columns} "
                                  "FROM audit_entries WHERE seq = ?", (SIZE, str(uuid.uuid4()), seq))
            expected = SIZE
        elif operation == "delete_node":
            assert _write(raw, b, "DELETE FROM merkle_nodes WHERE level = 0 AND idx = ?", (seq,))
        elif operation == "extra_node":
            assert _write(raw, b, "INSERT INTO merkle_nodes (level, idx, hash) VALUES (0, ?, ?)",
                          (SIZE + seq, b"\x01" * 32))
            expected = SIZE
        else:
            rows = _rows(raw, "SELECT id FROM checkpoints ORDER BY id")
            assert _write(raw, b, "DELETE FROM checkpoints WHERE id = ?", (rows[seq % len(rows)][0],))
            report = log.verify(range_level=range_level)
            # Losing a checkpoint hides nothing (the others still sign the tree), unless it was the latest.
            assert report.first_bad_seq is None
            return
        _check(log.verify(range_level=range_level), expected)


def test_verify_endpoint_answers_200_for_a_garbage_timestamp(copies: LogCopies) -> None:
    with copies.copy() as (log, raw):
        if copies.backend == "sqlite":
            assert _write(raw, "sqlite", "UPDATE audit_entries SET ts = ? WHERE seq = 4", ("not a time",))
        else:
            assert _write(raw, "postgres", "UPDATE audit_entries SET ts = 'infinity' WHERE seq = 4", ())
        app = build_app(AuditEnv({**copies.env.environ, "DATABASE_URL": str(log.engine.url.render_as_string(False))},
                                 copies.env.session_key, copies.env.signers))
        response = app.test_client().get("/v1/audit/verify", headers=copies.env.bearer("auditor"))
        app.extensions["audit_log"].stop_ticker()
        app.extensions["audit_log"].engine.dispose()
        assert response.status_code == 200
        body = response.get_json()
        assert body["ok"] is False and body["first_bad_seq"] == 4, body



def test_process_pool_gives_the_same_report(copies: LogCopies) -> None:
    with copies.copy() as (log, raw):
        good = log.verify(workers=2, range_level=2)
        assert good.ok and good.size == SIZE and good.root == log.verify().root, good
        assert _write(raw, copies.backend, "UPDATE audit_entries SET outcome = ? WHERE seq = ?", ("500", 21))
        pooled, alone = log.verify(workers=2, range_level=2), log.verify(workers=1, range_level=2)
        assert pooled == alone and pooled.first_bad_seq == 21, pooled
