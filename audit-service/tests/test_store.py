"""The batch append path writes rows with COPY on PostgreSQL and executemany on SQLite: both store exactly
the values given, in the sequencer's transaction (all or nothing), with tree nodes that answer proofs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from safeharbor_audit import store
from safeharbor_audit.models import audit_entries, log_head, merkle_nodes
from safeharbor_audit.store import AuditLog, NewEvent, format_ts
from safeharbor_common.translog import store as translog_store
from safeharbor_protocol import merkle
from safeharbor_protocol.canonical import canonical_json
from sqlalchemy import func, select

# Characters COPY's text format and SQL quoting care about, plus non-ASCII and a supplementary plane one.
AWKWARD = "tab\there\nnew\\line\r'quote\"double,comma é 😀 \x01"


def awkward_event(i: int, **overrides: Any) -> NewEvent:
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "ts": datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC) + timedelta(seconds=i),
        "source": "gateway",
        "actor": f"{AWKWARD} {i}",
        "action": "gateway.request",
        "outcome": "200",
        "role": "clinician",
        "resource": f"/r/{i}\t{AWKWARD}",
        "request_id": AWKWARD,
        "severity": "high" if i % 2 else "info",
        "ip": "203.0.113.7",
        "user_agent": AWKWARD,
        "meta": {"latency_ms": 1.25, "n": i, "nested": {"list": [1, "x", None, True]}, "text": AWKWARD},
    }
    fields.update(overrides)
    return NewEvent(**fields)


def audit_log(app: Flask) -> AuditLog:
    log: AuditLog = app.extensions["audit_log"]
    return log


def rows_by_seq(log: AuditLog) -> dict[int, Any]:
    with log.engine.connect() as conn:
        return {int(r.seq): r for r in conn.execute(select(audit_entries).order_by(audit_entries.c.seq))}


def test_rows_store_exactly_the_given_values(app: Flask) -> None:
    log = audit_log(app)
    events = [awkward_event(i) for i in range(7)]
    # Nullable columns empty, a non-UTC time zone, an empty meta, no PHI at all.
    events.append(
        awkward_event(
            7,
            role=None,
            resource=None,
            request_id=None,
            ip=None,
            user_agent=None,
            meta={},
            ts=datetime(2026, 11, 24, 14, 0, 0, 0, tzinfo=timezone(timedelta(hours=2))),  # 12:00 UTC
        )
    )
    result = log.append(events)
    assert result.accepted == len(events)
    rows = rows_by_seq(log)
    assert sorted(rows) == list(range(len(events)))
    prev = store.GENESIS_PREV
    for seq, ev in enumerate(events):
        row = rows[seq]
        assert result.seqs[ev.event_id] == seq
        for column in ("event_id", "source", "actor", "role", "action", "resource", "outcome", "request_id"):
            assert getattr(row, column) == getattr(ev, column), column
        assert row.severity == ev.severity
        assert row.ts == ev.ts.astimezone(UTC).replace(tzinfo=None)
        entry = json.loads(bytes(row.canonical))
        assert canonical_json(entry) == bytes(row.canonical)
        assert entry["ts"] == format_ts(ev.ts) == ev.ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert entry["meta"] == ev.meta
        assert entry["prev"] == prev.hex()
        assert (entry["phi"] is None) == (ev.ip is None and ev.user_agent is None)
        if entry["phi"] is not None:
            assert log.cipher.open(entry["phi"], event_id=ev.event_id) == {"ip": ev.ip, "user_agent": ev.user_agent}
        prev = bytes(row.hash)
    # ts range queries (what /v1/audit/entries filters on) see the stored times.
    with log.engine.connect() as conn:
        since = datetime(2026, 11, 24, 10, 0, 3, tzinfo=UTC).replace(tzinfo=None)
        count = conn.execute(select(func.count()).where(audit_entries.c.ts >= since)).scalar_one()
        if conn.dialect.name == "sqlite":  # bytes went in as given: BLOBs, as SQLAlchemy would store them
            kinds = conn.exec_driver_sql("SELECT DISTINCT typeof(canonical), typeof(hash) FROM audit_entries").all()
            assert [tuple(k) for k in kinds] == [("blob", "blob")]
    assert count == len(events) - 3
    assert log.verify().ok


def test_tree_nodes_match_a_reference_tree_and_answer_proofs(app: Flask) -> None:
    log = audit_log(app)
    reference = merkle.MemoryNodeStore()
    for size in (1, 2, 5, 13, 1, 40):  # odd batch sizes: nodes completed across batch boundaries
        log.append([awkward_event(i) for i in range(size)])
    rows = rows_by_seq(log)
    for seq in sorted(rows):
        reference.append_data(bytes(rows[seq].hash))
    with log.engine.connect() as conn:
        stored = {
            merkle.NodeID(int(level), int(idx)): bytes(h)
            for level, idx, h in conn.execute(select(merkle_nodes.c.level, merkle_nodes.c.idx, merkle_nodes.c.hash))
        }
        head = conn.execute(select(log_head)).one()
    assert stored == reference.nodes
    size = int(head.size)
    assert size == len(rows) == 62
    root = merkle.root(size, log.read_nodes)
    leaves = [merkle.leaf_hash(bytes(rows[seq].hash)) for seq in sorted(rows)]
    assert root == reference.root() == merkle.reference_root(leaves)
    for index in (0, 17, size - 1):
        proof = merkle.inclusion_proof(index, size, log.read_nodes)
        merkle.verify_inclusion(merkle.leaf_hash(bytes(rows[index].hash)), index, size, proof, root)
    merkle.verify_consistency(13, size, merkle.consistency_proof(13, size, log.read_nodes), reference.root(13), root)
    assert log.verify().ok


def test_a_failing_batch_commits_nothing(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    log = audit_log(app)
    log.append([awkward_event(i) for i in range(3)])
    before = log.head()
    real = store._bulk_insert

    @contextmanager
    def fail_on_nodes(conn: Any, table: Any, columns: Any) -> Iterator[Any]:
        if table is merkle_nodes:  # the entries went in already, in the same transaction
            raise RuntimeError("disk full")
        with real(conn, table, columns) as write:
            yield write

    monkeypatch.setattr(store, "_bulk_insert", fail_on_nodes)
    monkeypatch.setattr(translog_store, "bulk_insert", fail_on_nodes)  # the shared store writes the nodes
    lost = [awkward_event(i) for i in range(5)]
    with pytest.raises(RuntimeError, match="disk full"):
        log.append(lost)
    monkeypatch.setattr(store, "_bulk_insert", real)
    monkeypatch.setattr(translog_store, "bulk_insert", real)
    assert log.head() == before
    assert len(rows_by_seq(log)) == 3
    # Nothing half-written blocks the next batch, and the same events can be retried.
    assert log.append(lost).accepted == 5
    assert log.verify().ok and log.verify().size == 8


def test_a_failure_midway_through_the_rows_aborts_the_copy(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    log = audit_log(app)
    log.append([awkward_event(0)])
    before = log.head()
    real = log._stored_entry
    calls = 0

    def flaky(ev: NewEvent, *, seq: int, prev: bytes) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 300:  # several COPY buffers (32 KiB) were sent already
            raise RuntimeError("key service gone")
        return real(ev, seq=seq, prev=prev)

    monkeypatch.setattr(log, "_stored_entry", flaky)
    events = [awkward_event(i) for i in range(400)]
    with pytest.raises(RuntimeError, match="key service gone"):
        log.append(events)
    assert log.head() == before
    assert len(rows_by_seq(log)) == 1
    assert log.append(events).accepted == 400
    report = log.verify()
    assert report.ok and report.size == 401


def test_a_row_the_database_refuses_rolls_the_whole_batch_back(app: Flask, database_url: str) -> None:
    log = audit_log(app)
    log.append([awkward_event(0)])
    before = log.head()
    # Refused by the database itself, after earlier rows of the same COPY / executemany were sent: a NULL
    # in a NOT NULL column, and on PostgreSQL (SQLite ignores lengths) a value too long for its column.
    refused: list[dict[str, Any]] = [{"outcome": None}]
    if database_url.startswith("postgresql"):
        refused.append({"source": "s" * 40})
    for overrides in refused:
        with pytest.raises(Exception, match=r"(?i)null|too long"):
            log.append([awkward_event(1), awkward_event(2, **overrides)])
        assert log.head() == before
        assert len(rows_by_seq(log)) == 1
    assert log.append([awkward_event(3)]).accepted == 1
    assert log.verify().ok


def test_duplicates_within_and_across_batches(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    log = audit_log(app)
    look_ups: list[int] = []
    real = log._existing_event_ids

    def counting(conn: Any, ids: list[str]) -> set[str]:
        look_ups.append(len(ids))
        return real(conn, ids)

    monkeypatch.setattr(log, "_existing_event_ids", counting)
    first = awkward_event(0)
    result = log.append([first, awkward_event(1), first])
    assert (result.accepted, result.duplicates) == (2, 1)
    assert look_ups == []  # no duplicate in the log: written without looking ids up
    # A resent event among new ones: the unique constraint refuses the first attempt, which rolls back
    # whole; the retry looks ids up and appends the new ones, gapless.
    again = [awkward_event(2), first, awkward_event(3)]
    result = log.append(again)
    assert (result.accepted, result.duplicates) == (2, 1)
    assert result.seqs == {again[0].event_id: 2, again[2].event_id: 3}
    assert look_ups == [3]
    # For a while after a duplicate, batches look ids up first (a retrying shipper resends a backlog).
    result = log.append([first])
    assert (result.accepted, result.duplicates) == (0, 1)
    assert look_ups == [3, 1]
    log._look_up_until = 0.0
    assert log.append([awkward_event(4)]).accepted == 1
    assert look_ups == [3, 1]
    report = log.verify()
    assert report.ok and report.size == 5
