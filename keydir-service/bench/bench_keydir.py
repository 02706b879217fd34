"""Rough figures for keydir: registrations per second (sequenced appends with a signed checkpoint each) and
the latency of a 100-user batch lookup with inclusion proofs. In-process (Flask test client, no HTTP), on
SQLite and, when reachable, PostgreSQL.

    .venv/bin/python keydir-service/bench/bench_keydir.py [--users 300] [--threads 4] [--backend sqlite|postgres|both]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import PG_ADMIN_URL, DeviceKeys, body_of, build_app, make_env, migrate


def run(url: str, tmp: Path, users: int, threads: int) -> dict[str, float]:
    migrate(url)
    env = make_env(url, tmp)
    app = build_app(env)
    devices = [DeviceKeys(f"user{i}", "phone") for i in range(users)]
    bodies = [(d.user_id, body_of(d.first()), env.auth(d.user_id)) for d in devices]
    failures: list[int] = []

    def worker(chunk: list[tuple[str, dict[str, object], dict[str, str]]]) -> None:
        client = app.test_client()
        for _user, body, headers in chunk:
            status = client.post("/v1/keys", json=body, headers=headers).status_code
            if status != 201:
                failures.append(status)

    chunks = [bodies[i::threads] for i in range(threads)]
    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    assert not failures, failures[:5]

    client = app.test_client()
    headers = env.auth("reader")
    query = "/v1/keys?users=" + ",".join(f"user{i}" for i in range(100))
    client.get(query, headers=headers)  # warm-up
    timings = []
    for _ in range(20):
        t0 = time.perf_counter()
        response = client.get(query, headers=headers)
        timings.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200
    app.extensions["audit"].close()
    app.extensions["keydir_log"].engine.dispose()
    return {
        "registrations_per_s": users / elapsed,
        "lookup100_median_ms": statistics.median(timings),
        "lookup100_p95_ms": sorted(timings)[int(len(timings) * 0.95) - 1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.backend in ("sqlite", "both"):
            print("sqlite  ", run(f"sqlite:///{tmp}/bench.db", tmp, args.users, args.threads))
        if args.backend in ("postgres", "both"):
            name = "keydir_bench_" + uuid.uuid4().hex[:8]
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            try:
                print("postgres", run(f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", tmp, args.users, args.threads))
            finally:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
