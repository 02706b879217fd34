"""Retention by setting: the database enforces AUDIT_RETENTION_DAYS; purge archives (signed, verified)
before deleting; older checkpoints' proofs still verify; verify-archive checks an archive alone."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from safeharbor_audit import retention, service
from safeharbor_audit.config import load_config
from safeharbor_audit.store import AuditLog
from safeharbor_common.config import ConfigError
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import merkle
from sqlalchemy import text

from .conftest import AuditEnv, Ingest, make_event
from .test_tamper import drop_guards, tamper

OLD, YOUNG = 12, 5


def _ts(days_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).isoformat(timespec="microseconds")[:-6] + "Z"


@pytest.fixture
def aged(app: Flask, ingest: Ingest) -> tuple[AuditLog, list[str]]:
    """12 entries 100 days old, then 5 from today; signed checkpoints at 6, 12 and 17."""
    log: AuditLog = app.extensions["audit_log"]
    notes = []
    for batch in ([_ts(100)] * 6, [_ts(100)] * 6, [_ts(0.01)] * YOUNG):
        assert ingest([make_event(ts=t) for t in batch]).status_code == 200
        log.checkpoint_if_due(force=True)
        notes.append(str(log.latest_checkpoint().note))
    return log, notes


def test_production_refuses_less_than_six_years(audit_env: AuditEnv) -> None:
    with pytest.raises(ConfigError):
        load_config({**audit_env.environ, "SAFEHARBOR_ENV": "production", "AUDIT_RETENTION_DAYS": "30"})
    assert load_config({**audit_env.environ, "AUDIT_RETENTION_DAYS": "30"})["AUDIT_RETENTION_DAYS"] == 30


def test_the_database_enforces_the_setting(aged: tuple[AuditLog, list[str]]) -> None:
    log, _ = aged
    with pytest.raises(Exception, match="retention"), log.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_entries WHERE seq = 0")  # 100 days < the default 2192
    retention.set_retention_days(log, 30)
    with pytest.raises(Exception, match="retention"), log.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM audit_entries WHERE seq = {OLD}")  # today's entry
    with log.engine.begin() as conn:
        assert conn.exec_driver_sql("DELETE FROM audit_entries WHERE seq = 0").rowcount == 1


def test_purge_archives_verifies_then_deletes(aged: tuple[AuditLog, list[str]], tmp_path: Path) -> None:
    log, notes = aged
    old_checkpoint = cp.verify_checkpoint(notes[1], log.verifier_key)
    assert old_checkpoint.size == OLD
    result = retention.purge(log=log, retention_days=30, archive_dir=tmp_path)
    assert (result.purged_from, result.purged_to) == (0, OLD) and result.archive is not None
    archive = json.loads(result.archive.read_text())
    report = retention.verify_archive(archive, verifier_key=log.verifier_key)
    assert report.purged_from == 0 and report.purged_to == OLD
    with log.engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(text("SELECT seq FROM audit_entries ORDER BY seq"))]
    assert seqs[0] == OLD and len(seqs) == YOUNG + 1  # today's and the purge record
    assert log.verify().ok, log.verify()
    # Proofs against the older checkpoints still verify, for purged entries too (nodes are kept).
    archived = {seq: bytes.fromhex(h) for seq, _, h in archive["entries"]}
    answer = service.inclusion_proof(log=log, index=3, size=OLD)
    merkle.verify_inclusion(merkle.leaf_hash(archived[3]), 3, OLD, [bytes.fromhex(p) for p in answer.proof],
                            old_checkpoint.root)
    latest = cp.verify_checkpoint(str(log.latest_checkpoint().note), log.verifier_key)
    proof = service.consistency_proof(log=log, size1=OLD, size2=latest.size).proof
    merkle.verify_consistency(OLD, latest.size, [bytes.fromhex(p) for p in proof], old_checkpoint.root, latest.root)
    # A second purge with nothing old left removes nothing.
    assert retention.purge(log=log, retention_days=30, archive_dir=tmp_path).archive is None


def test_a_damaged_archive_does_not_verify(aged: tuple[AuditLog, list[str]], tmp_path: Path) -> None:
    log, _ = aged
    archive = retention.build_archive(log=log, start=0, end=OLD, note=str(log.latest_checkpoint().note))
    retention.verify_archive(archive, verifier_key=log.verifier_key)
    entry = json.loads(base64.b64decode(archive["entries"][4][1]))
    entry["outcome"] = "403"
    edited = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    damaged: dict[str, dict[str, Any]] = {
        "entry edited": {**archive, "entries": [*archive["entries"][:4], [4, base64.b64encode(edited).decode(),
                                                                         archive["entries"][4][2]],
                                                *archive["entries"][5:]]},
        "entry dropped": {**archive, "entries": archive["entries"][:-1]},
        "range widened": {**archive, "to": OLD + 1},
        "node edited": {**archive, "right": [[archive["right"][0][0], archive["right"][0][1], "00" * 32]]},
        "signature removed": {k: v for k, v in archive.items() if k != "signature"},
        "garbage": {"format": retention.ARCHIVE_FORMAT, "entries": 5},
    }
    for name, bad in damaged.items():
        with pytest.raises(retention.ArchiveError):
            retention.verify_archive(bad, verifier_key=log.verifier_key)
            pytest.fail(name)
    other_key = cp.verifier_key_string(log.origin, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(retention.ArchiveError):
        retention.verify_archive(archive, verifier_key=other_key)


def test_cli_purge_and_verify_archive(aged: tuple[AuditLog, list[str]], audit_env: AuditEnv, tmp_path: Path) -> None:
    env = {**audit_env.environ, "AUDIT_RETENTION_DAYS": "30", "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "safeharbor_audit.manage"]
    done = subprocess.run([*run, "purge", "--archive-dir", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    path = Path(json.loads(done.stdout)["archive"])
    good = subprocess.run([*run, "verify-archive", str(path)], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert good.returncode == 0 and json.loads(good.stdout)["ok"] is True
    assert json.loads(good.stdout).keys() == {"ok", "from", "to", "checkpoint_size", "last_hash"}
    archive = json.loads(path.read_text())
    archive["entries"] = archive["entries"][1:]
    path.write_text(json.dumps(archive))
    key = aged[0].verifier_key
    bad = subprocess.run([*run, "verify-archive", str(path), "--key", key], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 1 and json.loads(bad.stdout)["ok"] is False


def test_entries_removed_without_a_purge_record_are_named(aged: tuple[AuditLog, list[str]], tmp_path: Path) -> None:
    log, _ = aged
    retention.purge(log=log, retention_days=30, archive_dir=tmp_path)

    def remove_more(conn: Any) -> None:
        drop_guards(conn)
        conn.exec_driver_sql(f"DELETE FROM audit_entries WHERE seq < {OLD + 2}")
        conn.exec_driver_sql(f"UPDATE log_head SET pruned_before = {OLD + 2}")

    tamper(log, remove_more)
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 0, report


def test_archives_of_any_range_rebuild_the_root(app: Flask, ingest: Ingest) -> None:
    """The archived nodes left and right of a range, joined with its entries, give the checkpoint's root."""
    log: AuditLog = app.extensions["audit_log"]
    assert ingest([make_event() for _ in range(37)]).status_code == 200
    log.checkpoint_if_due(force=True)
    note = str(log.latest_checkpoint().note)
    for start, end in ((0, 37), (0, 1), (5, 6), (7, 16), (8, 16), (13, 29), (31, 37), (36, 37), (1, 36)):
        archive = retention.build_archive(log=log, start=start, end=end, note=note)
        assert retention.verify_archive(archive, verifier_key=log.verifier_key).purged_to == end
