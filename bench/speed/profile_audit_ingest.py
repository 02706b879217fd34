"""Where audit-service's ingest spends CPU per event: a CPU-time profile of `ingest_events` on PostgreSQL.

    .venv/bin/python bench/speed/profile_audit_ingest.py [--batches 20] [--top 25]

Builds a throw-away PostgreSQL database (audit-service's own migration), then ingests `--batches` batches of
500 events shaped like the gateway's (PHI sealed as an emitter seals it) through `service.ingest_events`, the
function the ingest view calls: validation, then `AuditLog.append` (the work under the sequencer lock:
canonical JSON, hashes, Merkle leaves, COPY). Reports CPU µs per event of validation alone (unprofiled) and
of the whole ingest (profiled, so inflated), and the top functions by CPU time (`cProfile` with
`time.process_time` as its clock: wall time on a loaded machine mostly measures other processes).
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "audit-service"))


def events(count: int, seal: Any) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        event_id = str(uuid.uuid4())
        out.append({"event_id": event_id, "ts": "2026-12-03T06:00:00.123456Z", "source": "gateway",
                    "actor": f"user-{i % 997:04d}", "role": "patient", "action": "gateway.keys.lookup",
                    "resource": "/v1/keys", "outcome": "200", "request_id": uuid.uuid4().hex, "severity": "info",
                    "meta": {"method": "GET", "latency_ms": 1.23, "sid": "s-" + uuid.uuid4().hex[:16]},
                    "phi": seal({"ip": "127.0.0.1", "user_agent": "bench/1.0"}, event_id=event_id)})
    return list(json.loads(json.dumps(out)))  # as parsed from a request body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    import psycopg
    from safeharbor_audit.schemas import AuditEventIn
    from safeharbor_audit.service import ingest_events

    from tests.conftest import PG_ADMIN_URL, build_app, make_env, migrate

    name = "bench_profile_ingest_" + uuid.uuid4().hex[:8]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    app = None
    try:
        env = make_env(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
        migrate(env.environ)
        app = build_app(env)
        log = app.extensions["audit_log"]
        seal = log.cipher.public_key.seal
        batches = [events(500, seal) for _ in range(args.batches)]
        count = 500 * args.batches
        with app.app_context():
            ingest_events(log=log, events=events(500, seal), caller="gateway", max_events=1000)  # warm-up
            cpu = time.process_time()
            for batch in batches:
                for event in batch:
                    AuditEventIn.model_validate(event)
            validation = (time.process_time() - cpu) / count * 1e6
            profile = cProfile.Profile(time.process_time)
            cpu = time.process_time()
            profile.enable()
            for batch in batches:
                ingest_events(log=log, events=batch, caller="gateway", max_events=1000)
            profile.disable()
            ingest = (time.process_time() - cpu) / count * 1e6
        print(f"validation alone: {validation:.1f} µs CPU per event; ingest (profiled): {ingest:.1f} µs CPU per event")
        stats = pstats.Stats(profile)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
    finally:
        if app is not None:
            app.extensions["audit_log"].engine.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
