"""Verification names the first bad sequence number for edited, deleted, reordered and truncated logs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from safeharbor_audit.store import AuditLog
from safeharbor_protocol import merkle
from safeharbor_protocol.canonical import canonical_json
from sqlalchemy import Connection, text

from .conftest import AuditEnv, Ingest, make_event

SIZE = 40


def drop_guards(conn: Connection) -> None:
    """The attacker has database superuser rights: the append-only triggers go first."""
    if conn.dialect.name == "sqlite":
        for name in ("audit_entries_no_update", "audit_entries_retention", "merkle_nodes_no_update"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    else:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_entries_append_only ON audit_entries")
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS merkle_nodes_append_only ON merkle_nodes")


@pytest.fixture
def filled(app: Flask, ingest: Ingest) -> AuditLog:
    log: AuditLog = app.extensions["audit_log"]
    for start in range(0, SIZE, 10):
        assert ingest([make_event(resource=f"/r/{i}") for i in range(start, start + 10)]).status_code == 200
        log.checkpoint_if_due(force=True)  # several signed checkpoints along the way
    report = log.verify()
    assert report.ok and report.size == SIZE and report.checkpoint_size == SIZE, report
    return log


def tamper(log: AuditLog, action: Callable[[Connection], Any]) -> None:
    with log.engine.begin() as conn:
        drop_guards(conn)
        action(conn)


def test_database_refuses_updates_and_young_deletes(filled: AuditLog) -> None:
    for statement in (
        "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 3",
        "DELETE FROM audit_entries WHERE seq = 3",
        "UPDATE merkle_nodes SET hash = hash WHERE level = 0 AND idx = 0",
    ):
        with pytest.raises(Exception, match=r"append-only|retention"), filled.engine.begin() as conn:
            conn.exec_driver_sql(statement)
    assert filled.verify().ok


def test_edited_entry_is_named(filled: AuditLog) -> None:
    def edit(conn: Connection) -> None:
        row = conn.execute(text("SELECT canonical FROM audit_entries WHERE seq = 17")).one()
        entry = json.loads(row[0])
        entry["outcome"] = "403"
        conn.execute(text("UPDATE audit_entries SET canonical = :c WHERE seq = 17"), {"c": canonical_json(entry)})

    tamper(filled, edit)
    report = filled.verify()
    assert not report.ok and report.first_bad_seq == 17, report


def test_an_edited_entry_that_no_longer_fits_the_schema_is_listed_as_stored(
    filled: AuditLog, client: Any, audit_env: AuditEnv
) -> None:
    """Auditors page through a tampered log to see what changed: an entry of the wrong shape is no 500."""
    def edit(conn: Connection) -> None:
        row = conn.execute(text("SELECT canonical FROM audit_entries WHERE seq = 5")).one()
        entry = json.loads(row[0])
        entry["role"], entry["meta"] = 7, ["not", "an", "object"]
        del entry["outcome"]
        conn.execute(text("UPDATE audit_entries SET canonical = :c WHERE seq = 5"), {"c": canonical_json(entry)})

    tamper(filled, edit)
    response = client.get("/v1/audit/entries?limit=10", headers=audit_env.bearer("admin"))
    assert response.status_code == 200
    entries = response.get_json()["entries"]
    assert len(entries) == 10 and entries[5]["role"] == 7 and entries[5]["meta"] == ["not", "an", "object"]
    assert "outcome" not in entries[5] and entries[4]["outcome"] == "200"


def test_edited_indexed_column_is_named(filled: AuditLog) -> None:
    tamper(filled, lambda c: c.exec_driver_sql("UPDATE audit_entries SET actor = 'someone-else' WHERE seq = 9"))
    report = filled.verify()
    assert report.first_bad_seq == 9, report


@pytest.mark.parametrize("nodes_too", [False, True])
def test_rewritten_suffix_with_recomputed_hashes_is_caught_by_checkpoints(filled: AuditLog, nodes_too: bool) -> None:
    """A careful attacker edits seq 25 and recomputes every later hash and prev: the chain is whole again.
    The stored Merkle leaf of 25 then differs (named: 25). If the attacker rewrites the nodes and the head
    too, only the signed checkpoints disagree: the first entry not covered by a matching one is named."""

    def rewrite(conn: Connection) -> None:
        rows = conn.execute(text("SELECT seq, canonical FROM audit_entries WHERE seq >= 24 ORDER BY seq")).all()
        prev = None
        for seq, canonical in rows:
            entry = json.loads(canonical)
            if seq == 25:
                entry["actor"] = "nobody"
                conn.execute(text("UPDATE audit_entries SET actor = 'nobody' WHERE seq = 25"))
            if prev is not None:
                entry["prev"] = prev.hex()
            new = canonical_json(entry)
            prev = hashlib.sha256(new).digest()
            conn.execute(
                text("UPDATE audit_entries SET canonical = :c, hash = :h WHERE seq = :s"),
                {"c": new, "h": prev, "s": seq},
            )
        if nodes_too:
            hashes = [bytes(h) for (h,) in conn.execute(text("SELECT hash FROM audit_entries ORDER BY seq"))]
            conn.exec_driver_sql("DELETE FROM merkle_nodes")
            compact = merkle.CompactRange()
            for h in hashes:
                for node, value in compact.append(merkle.leaf_hash(h)):
                    conn.execute(text("INSERT INTO merkle_nodes (level, idx, hash) VALUES (:l, :i, :h)"),
                                 {"l": node.level, "i": node.index, "h": value})
            conn.execute(text("UPDATE log_head SET last_hash = :h, frontier = :f"),
                         {"h": hashes[-1], "f": json.dumps([f.hex() for f in compact.frontier])})

    tamper(filled, rewrite)
    report = filled.verify()
    # checkpoints at 10, 20 match; 30 doesn't
    assert not report.ok and report.first_bad_seq == (20 if nodes_too else 25), report


def test_deleted_entry_is_named(filled: AuditLog) -> None:
    tamper(filled, lambda c: c.exec_driver_sql("DELETE FROM audit_entries WHERE seq = 12"))
    report = filled.verify()
    assert not report.ok and report.first_bad_seq == 12, report


def test_reordered_entries_are_named(filled: AuditLog) -> None:
    def swap(conn: Connection) -> None:
        conn.exec_driver_sql("UPDATE audit_entries SET seq = -1 WHERE seq = 30")
        conn.exec_driver_sql("UPDATE audit_entries SET seq = 30 WHERE seq = 31")
        conn.exec_driver_sql("UPDATE audit_entries SET seq = 31 WHERE seq = -1")

    tamper(filled, swap)
    report = filled.verify()
    assert not report.ok and report.first_bad_seq == 30, report


def test_truncated_log_is_named(filled: AuditLog) -> None:
    tamper(filled, lambda c: c.exec_driver_sql("DELETE FROM audit_entries WHERE seq >= 33"))
    report = filled.verify()
    assert not report.ok and report.first_bad_seq == 33, report


def test_truncation_with_rewritten_head_is_caught_by_checkpoint(filled: AuditLog) -> None:
    def truncate(conn: Connection) -> None:
        conn.exec_driver_sql("DELETE FROM audit_entries WHERE seq >= 35")
        conn.exec_driver_sql("UPDATE log_head SET size = 35")

    tamper(filled, truncate)
    report = filled.verify()
    assert not report.ok and report.first_bad_seq == 35, report


def test_forged_checkpoint_is_refused(filled: AuditLog) -> None:
    def forge(conn: Connection) -> None:
        note = conn.execute(text("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1")).scalar_one()
        conn.execute(
            text("UPDATE checkpoints SET note = :n WHERE size = 40"), {"n": note.replace("\n40\n", "\n41\n")}
        )

    tamper(filled, forge)
    report = filled.verify()
    assert not report.ok and "signature" in (report.problem or "")


def test_cli_verify(filled: AuditLog, audit_env: AuditEnv) -> None:
    env = {**audit_env.environ, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "safeharbor_audit.manage", "verify"]
    good = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["ok"] is True
    tamper(filled, lambda c: c.exec_driver_sql("DELETE FROM audit_entries WHERE seq = 5"))
    bad = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1 and json.loads(bad.stdout)["first_bad_seq"] == 5


def test_verify_endpoint_reports_tampering(app: Flask, filled: AuditLog, audit_env: AuditEnv) -> None:
    tamper(filled, lambda c: c.exec_driver_sql("DELETE FROM audit_entries WHERE seq = 2"))
    report = app.test_client().get("/v1/audit/verify", headers=audit_env.bearer("auditor")).get_json()
    assert report["ok"] is False and report["first_bad_seq"] == 2 and report["size"] == 2
    time.sleep(0)  # keeps the fixture order explicit


def test_appends_during_verification_are_not_tampering(filled: AuditLog, ingest: Ingest, monkeypatch: Any) -> None:
    """An append committed between reading the head and scanning the entries is not a discrepancy."""
    from safeharbor_audit import verify as verify_module

    real_head = verify_module.read_head
    appended = {"done": False}

    def head_then_append(conn: Any, sqlite: bool) -> Any:
        state = real_head(conn, sqlite)
        if not appended["done"]:
            appended["done"] = True
            assert ingest([make_event(resource="/late/1"), make_event(resource="/late/2")]).status_code == 200
            filled.checkpoint_if_due(force=True)  # a checkpoint past the head read, too
        return state

    monkeypatch.setattr(verify_module, "read_head", head_then_append)
    report = filled.verify()
    assert appended["done"] and report.ok and report.size == SIZE, report
    monkeypatch.undo()
    assert filled.verify().size == SIZE + 2


def test_entry_written_past_the_head_is_named(filled: AuditLog) -> None:
    def smuggle(conn: Connection) -> None:
        row = conn.execute(text("SELECT * FROM audit_entries WHERE seq = 5")).mappings().one()
        values = dict(row)
        values["seq"] = SIZE + 3
        values["event_id"] = "smuggled-event"
        columns = ", ".join(values)
        conn.execute(text(f"INSERT INTO audit_entries ({columns}) VALUES ({', '.join(':' + c for c in values)})"),
                     values)

    tamper(filled, smuggle)
    report = filled.verify()
    assert not report.ok and report.first_bad_seq == SIZE, report
