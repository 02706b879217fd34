"""Several processes (each with several threads) append at once: one order, no gaps, no forks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from safeharbor_audit.app import build_log
from safeharbor_audit.config import load_config

from .conftest import AuditEnv

WORKER = r"""
import json, sys, threading, time, uuid
from datetime import UTC, datetime
from safeharbor_audit.app import build_log
from safeharbor_audit.config import load_config
from safeharbor_audit.store import NewEvent

environ, tag, threads, batches, per_batch = json.loads(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:6])
log = build_log(load_config(environ))
shared_ids = [str(uuid.uuid5(uuid.NAMESPACE_OID, f"shared-{i}")) for i in range(per_batch)]

def run(n):
    for b in range(batches):
        events = [NewEvent(event_id=str(uuid.uuid4()), ts=datetime.now(UTC), source="gateway", actor=f"{tag}-{n}",
                           action="load.test", outcome="200", ip="192.0.2.1", meta={"b": b, "i": i})
                  for i in range(per_batch)]
        log.append(events)
    # Every process also sends the same events: exactly one copy may land.
    log.append([NewEvent(event_id=e, ts=datetime.now(UTC), source="gateway", actor="shared", action="load.shared",
                         outcome="200") for e in shared_ids])

started = time.perf_counter()
workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print(json.dumps({"elapsed": time.perf_counter() - started}))
"""

PROCESSES, THREADS, BATCHES, PER_BATCH = 4, 4, 10, 20


def test_concurrent_appends_from_several_processes(audit_env: AuditEnv, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    started = time.perf_counter()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                json.dumps(audit_env.environ),
                f"p{n}",
                str(THREADS),
                str(BATCHES),
                str(PER_BATCH),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(PROCESSES)
    ]
    for child in children:
        _out, err = child.communicate(timeout=240)
        assert child.returncode == 0, err.decode()[-2000:]
    elapsed = time.perf_counter() - started
    expected = PROCESSES * THREADS * BATCHES * PER_BATCH + PER_BATCH
    log = build_log(load_config(audit_env.environ))
    with log.engine.connect() as conn:
        seqs = [int(r[0]) for r in conn.exec_driver_sql("SELECT seq FROM audit_entries ORDER BY seq")]
        shared = conn.exec_driver_sql("SELECT COUNT(*) FROM audit_entries WHERE action = 'load.shared'").scalar()
    assert seqs == list(range(expected))  # no gap, no duplicate sequence number
    assert shared == PER_BATCH  # the same event ids from every process: recorded once
    assert int(log.head().size) == expected
    report = log.verify()
    assert report.ok and report.size == expected, report
    print(
        json.dumps(
            {
                "backend": log.engine.dialect.name,
                "entries": expected,
                "seconds": round(elapsed, 2),
                "appends_per_s_including_startup": round(expected / elapsed),
            }
        )
    )
    log.engine.dispose()
