"""Audit verify: entries/s of a full verification of a 1,000,000-entry log against the machine's bare SHA-256
rate as the ceiling; inclusion and consistency proof latency at that size.

    .venv/bin/python bench/speed/audit_verify.py [--entries 1000000] [--runs 3] [--proofs 200] [--db PATH]
        [--baseline-tree DIR]

The log is built in a temporary SQLite database through audit-service's own code (`manage migrate`, then
`AuditLog.append` in batches of 5,000: the sequencer, hashing and Merkle nodes of production), not over
HTTP. Each event carries a PHI envelope of the real size, sealed once (emitters seal, so HPKE is no part of
the append or verify path; sealing 1M envelopes here would only slow the build). `--db PATH` keeps (or
reuses) the built database.
Each run times, on the same database: verify in one process (`workers=1`), verify with a process per core,
and, with `--baseline-tree DIR` (e.g. a `git worktree` of an earlier commit), that tree's verify in a
subprocess importing its packages first: before/after side by side, as ratios to the ceilings.
Ceilings, on the very canonical bytes of the log, held in memory:
- `sha256`: one `hashlib.sha256(canonical)` per entry (the chain hash alone);
- `sha256 + tree`: that plus the RFC 6962 leaf hash and the Merkle folding (`merkle.CompactRange`), i.e.
  every hash a full verification computes, with no database and no parsing.
Proofs: `service.inclusion_proof` / `service.consistency_proof` (what the HTTP views call), random indexes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ROOT, fmt, log, median, percentile, write_result

CHUNK = 5000


def audit_env(db_path: Path) -> dict[str, str]:
    from safeharbor_common.service_identity import generate_keypair
    from safeharbor_protocol.encoding import b64url_encode

    seed_file = db_path.with_suffix(".keys")
    if seed_file.exists():
        service_key, signing_key, data_key = seed_file.read_text().split()
    else:
        service_key, signing_key = generate_keypair()[0], generate_keypair()[0]
        data_key = b64url_encode(os.urandom(32))
        seed_file.write_text(f"{service_key} {signing_key} {data_key}\n")
    return {
        "DATABASE_URL": f"sqlite:///{db_path}",
        "SERVICE_PRIVATE_KEY": service_key,
        "SERVICE_PUBLIC_KEYS": "",
        "AUDIT_SIGNING_KEY": signing_key,
        "AUDIT_DATA_KEY": data_key,
        "AUDIT_DATA_KEY_ID": "bench-1",
        "AUDIT_CHECKPOINT_INTERVAL": "2",
    }


def build(db_path: Path, entries: int) -> float:
    from safeharbor_audit.app import build_log
    from safeharbor_audit.config import load_config
    from safeharbor_audit.store import NewEvent

    env = audit_env(db_path)
    subprocess.run([sys.executable, "-m", "safeharbor_audit.manage", "migrate"], cwd=ROOT, check=True,
                   env={**os.environ, **env}, capture_output=True)
    audit_log = build_log(load_config(env))
    have = int(audit_log.head().size)
    envelope = audit_log.cipher.seal({"ip": "127.0.0.1", "user_agent": "bench/1.0"}, event_id=str(uuid.uuid4()))
    started = time.perf_counter()
    actions = ("gateway.keys.lookup", "gateway.auth.me", "auth.login.success", "keys.key.registered")
    while have < entries:
        n = min(CHUNK, entries - have)
        now = datetime.now(UTC)
        batch = [
            NewEvent(event_id=str(uuid.uuid4()), ts=now, source="gateway", actor=f"user-{(have + i) % 997:04d}",
                     action=actions[(have + i) % 4], outcome="200", role="patient", resource="/v1/keys",
                     request_id=uuid.uuid4().hex, phi=envelope,
                     meta={"method": "GET", "latency_ms": 1.5, "sid": "s-0123456789abcdef"})
            for i in range(n)
        ]
        audit_log.append(batch)
        have += n
        if have % 100_000 == 0:
            log(f"built {have:,} entries ({fmt(have / (time.perf_counter() - started), 0)}/s)")
    audit_log.checkpoint_if_due(force=True)
    audit_log.engine.dispose()
    return time.perf_counter() - started


def ceilings(db_path: Path, sample: int) -> dict[str, Any]:
    import sqlite3

    from safeharbor_protocol import merkle

    with sqlite3.connect(db_path) as conn:
        rows = [bytes(r[0]) for r in conn.execute("SELECT canonical FROM audit_entries ORDER BY seq LIMIT ?",
                                                  (sample,))]
    mean_len = sum(map(len, rows)) / len(rows)
    sha = hashlib.sha256
    started = time.perf_counter()
    for data in rows:
        sha(data).digest()
    sha_rate = len(rows) / (time.perf_counter() - started)
    compact = merkle.CompactRange()
    started = time.perf_counter()
    for data in rows:
        compact.append(merkle.leaf_hash(sha(data).digest()))
    tree_rate = len(rows) / (time.perf_counter() - started)
    blob = b"".join(rows)
    started = time.perf_counter()
    sha(blob).digest()
    mb_s = len(blob) / (time.perf_counter() - started) / 1e6
    return {"mean_entry_bytes": mean_len, "sha256_entries_per_s": sha_rate,
            "sha256_plus_tree_entries_per_s": tree_rate, "sha256_bulk_mb_per_s": mb_s, "sample": len(rows)}


_BASELINE = """
import json, sys, time
from safeharbor_audit.app import build_log
from safeharbor_audit.config import load_config
log = build_log(load_config(json.loads(sys.argv[1])))
started = time.perf_counter()
report = log.verify()
print(json.dumps({"seconds": time.perf_counter() - started, "ok": report.ok, "size": report.size}))
"""


def baseline_verify(tree: Path, db_path: Path) -> dict[str, Any]:
    """The earlier tree's verify on the same database, its packages imported before the installed ones."""
    path = os.pathsep.join(str(tree / p) for p in ("audit-service", "libs/safeharbor-common"))
    done = subprocess.run([sys.executable, "-c", _BASELINE, json.dumps(audit_env(db_path))], cwd=tree,
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--proofs", type=int, default=200)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--profile", action="store_true", help="cProfile an extra verification (not timed)")
    parser.add_argument("--baseline-tree", type=Path, help="an earlier tree whose verify runs beside")
    args = parser.parse_args()
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="safeharbor-bench-verify-")
        db_path = Path(tmp.name) / "audit.db"
    else:
        db_path = args.db.resolve()
    try:
        log(f"building a {args.entries:,}-entry log in {db_path}")
        build_s = build(db_path, args.entries)
        log(f"built in {build_s:.0f} s; database {db_path.stat().st_size / 1e6:.0f} MB")

        from safeharbor_audit import service
        from safeharbor_audit.app import build_log
        from safeharbor_audit.config import load_config

        audit_log = build_log(load_config(audit_env(db_path)))
        size = int(audit_log.head().size)
        workers = os.cpu_count() or 1
        verify_runs, ceiling_runs, one_runs, baseline_runs = [], [], [], []
        for run in range(args.runs):
            started = time.perf_counter()
            report = audit_log.verify(workers=workers)
            elapsed = time.perf_counter() - started
            if not report.ok or report.size != size:
                raise RuntimeError(f"verification failed: {report.as_dict()}")
            verify_runs.append({"seconds": elapsed, "entries_per_s": size / elapsed, "workers": workers})
            started = time.perf_counter()
            audit_log.verify(workers=1)
            one = time.perf_counter() - started
            one_runs.append({"seconds": one, "entries_per_s": size / one})
            if args.baseline_tree:
                base = baseline_verify(args.baseline_tree.resolve(), db_path)
                if not base["ok"]:
                    raise RuntimeError(f"baseline verification failed: {base}")
                baseline_runs.append({"seconds": base["seconds"], "entries_per_s": size / base["seconds"]})
            ceiling_runs.append(ceilings(db_path, min(size, 200_000)))
            log(f"run {run + 1}: verify {size:,} entries, {workers} processes {fmt(size / elapsed, 0)}/s, one "
                f"{fmt(size / one, 0)}/s" + (f", baseline {fmt(baseline_runs[-1]['entries_per_s'], 0)}/s"
                                              if baseline_runs else "") +
                f"; sha256 ceiling {fmt(ceiling_runs[-1]['sha256_entries_per_s'], 0)}/s, "
                f"sha256+tree {fmt(ceiling_runs[-1]['sha256_plus_tree_entries_per_s'], 0)}/s; "
                f"load {os.getloadavg()[0]:.1f}")

        profile_text = None
        if args.profile:
            import cProfile
            import io
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            audit_log.verify()
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
            profile_text = out.getvalue()
            print(profile_text)

        rng = random.Random(7)
        inclusion, consistency = [], []
        service.inclusion_proof(log=audit_log, index=0, size=size)  # warm-up
        for _ in range(args.proofs):
            index = rng.randrange(size)
            started = time.perf_counter()
            proof = service.inclusion_proof(log=audit_log, index=index, size=size)
            inclusion.append((time.perf_counter() - started) * 1000)
            old = rng.randrange(1, size)
            started = time.perf_counter()
            cons = service.consistency_proof(log=audit_log, size1=old, size2=size)
            consistency.append((time.perf_counter() - started) * 1000)
        verify_rate = median([r["entries_per_s"] for r in verify_runs])
        sha_rate = median([c["sha256_entries_per_s"] for c in ceiling_runs])
        tree_rate = median([c["sha256_plus_tree_entries_per_s"] for c in ceiling_runs])
        summary = {
            "entries": size,
            "build_seconds": build_s,
            "build_entries_per_s": (args.entries / build_s) if build_s > 1 else None,
            "db_megabytes": db_path.stat().st_size / 1e6,
            "verify_entries_per_s": verify_rate,
            "verify_seconds": median([r["seconds"] for r in verify_runs]),
            "verify_workers": workers,
            "verify_one_process_entries_per_s": median([r["entries_per_s"] for r in one_runs]),
            "baseline_entries_per_s": median([r["entries_per_s"] for r in baseline_runs]) if baseline_runs else None,
            "load_average_1m_at_end": os.getloadavg()[0],
            "sha256_entries_per_s": sha_rate,
            "sha256_plus_tree_entries_per_s": tree_rate,
            "mean_entry_bytes": ceiling_runs[0]["mean_entry_bytes"],
            "sha256_bulk_mb_per_s": median([c["sha256_bulk_mb_per_s"] for c in ceiling_runs]),
            "verify_over_sha256": verify_rate / sha_rate,
            "verify_over_sha256_plus_tree": verify_rate / tree_rate,
            "one_process_over_sha256_plus_tree": median([r["entries_per_s"] for r in one_runs]) / tree_rate,
            "baseline_over_sha256_plus_tree": (median([r["entries_per_s"] for r in baseline_runs]) / tree_rate
                                               if baseline_runs else None),
            "inclusion_ms": {"p50": percentile(inclusion, 50), "p99": percentile(inclusion, 99),
                             "proof_hashes": len(proof["proof"])},
            "consistency_ms": {"p50": percentile(consistency, 50), "p99": percentile(consistency, 99),
                               "proof_hashes_last": len(cons["proof"])},
        }
        audit_log.engine.dispose()
        print(f"\n{workers} processes / sha256+tree: {summary['verify_over_sha256_plus_tree']:.2f}; one process: "
              f"{summary['one_process_over_sha256_plus_tree']:.2f}; baseline: "
              f"{summary['baseline_over_sha256_plus_tree'] or 0:.2f}")
        print("\n| entries | verify entries/s | sha256 entries/s | sha256+tree entries/s | verify / sha256 | "
              "inclusion p50 / p99 ms | consistency p50 / p99 ms |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {size:,} | {fmt(verify_rate, 0)} | {fmt(sha_rate, 0)} | {fmt(tree_rate, 0)} | "
              f"{summary['verify_over_sha256']:.3f} | {summary['inclusion_ms']['p50']:.2f} / "
              f"{summary['inclusion_ms']['p99']:.2f} | {summary['consistency_ms']['p50']:.2f} / "
              f"{summary['consistency_ms']['p99']:.2f} |")
        write_result("audit_verify" if args.entries == 1_000_000 else f"audit_verify-{args.entries}",
                     {"summary": summary, "verify_runs": verify_runs, "one_process_runs": one_runs,
                      "baseline_runs": baseline_runs, "ceiling_runs": ceiling_runs,
                      "profile": profile_text})
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
