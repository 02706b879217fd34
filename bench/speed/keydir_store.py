"""keydir's registrations/s and its 100-user lookup with proofs, in process, this tree beside an earlier one.

    .venv/bin/python bench/speed/keydir_store.py --baseline /tmp/kd-base [--backend postgres,sqlite]
        [--registrations 3000] [--threads 16] [--lookups 200] [--runs 3]

`--baseline` is a checkout of the tree before the change (`git worktree add /tmp/kd-base <commit>`). Each
(tree, backend, run) is a fresh process (its PYTHONPATH puts that tree's keydir-service and
libs/safeharbor-common first) on a fresh PostgreSQL database (`sh_bench_*`, dropped) or SQLite file; runs
alternate between the trees so both see the same load. What is timed:
- registrations: `service.register_key` from `--threads` threads, each registration a version-1 record of its
  own device (records are signed before the clock starts), until all are acknowledged (committed);
- lookup: `service.lookup_users` of 100 users (one device each, so 100 records with inclusion proofs and the
  checkpoint) plus `json.dumps` of the answer, sequentially, on the log those registrations built.
Not timed: HTTP, the gateway, token checks (`bench/speed/keydir.py` measures the whole path).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ROOT, Databases, fmt, log, machine_info, median, percentile, write_result

LOOKUP_USERS = 100


def _records(count: int) -> list[dict[str, Any]]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from safeharbor_protocol import keyrecords
    from safeharbor_protocol.encoding import b64url_encode

    created = keyrecords.format_time(datetime.now(UTC))
    return [
        keyrecords.make_record(
            user_id=f"user{i:05d}", device_id="phone", version=1, created_at=created,
            enc_pub=b64url_encode(X25519PrivateKey.generate().public_key().public_bytes_raw()),
            signing_key=Ed25519PrivateKey.generate(),
        )
        for i in range(count)
    ]


def worker(url: str, records_path: str, threads: int, lookups: int) -> dict[str, Any]:
    """Runs inside the measured tree's process: migrate, register, look up; prints one JSON line."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from safeharbor_common.db import create_db_engine
    from safeharbor_keydir import service
    from safeharbor_keydir.log import TransparencyLog
    from safeharbor_keydir.manage import main as manage_main
    from safeharbor_keydir.schemas import KeyRecordCreate

    os.environ["DATABASE_URL"] = url
    if manage_main(["migrate"]) != 0:
        raise RuntimeError("migration failed")
    keydir_log = TransparencyLog(engine=create_db_engine(url), signing_key=Ed25519PrivateKey.generate(),
                                 origin="bench.example/keydir")
    records = json.loads(Path(records_path).read_text())
    bodies = [(r["user_id"], KeyRecordCreate(**{k: v for k, v in r.items() if k != "user_id"})) for r in records]
    failures: list[str] = []
    now = datetime.now(UTC)

    def register(chunk: list[tuple[str, Any]]) -> None:
        for user_id, body in chunk:
            try:
                service.register_key(log=keydir_log, body=body, caller=user_id, now=now, clock_skew_seconds=3600,
                                     max_devices=10)
            except Exception as exc:  # counted and reported: the run is then invalid
                failures.append(repr(exc)[:200])

    pool = [threading.Thread(target=register, args=(bodies[i::threads],)) for i in range(threads)]
    started, cpu_started = time.perf_counter(), time.process_time()
    for t in pool:
        t.start()
    for t in pool:
        t.join(900)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if failures:
        raise RuntimeError(f"{len(failures)} registrations failed: {failures[:3]}")
    users = [r["user_id"] for r in records[:: max(1, len(records) // LOOKUP_USERS)][:LOOKUP_USERS]]
    timings: list[float] = []
    size = 0
    lookup_cpu_started = time.process_time()
    for _ in range(lookups):
        t0 = time.perf_counter()
        answer = service.lookup_users(log=keydir_log, user_ids=users)
        size = len(json.dumps(answer))
        timings.append((time.perf_counter() - t0) * 1000)
    lookup_cpu = time.process_time() - lookup_cpu_started
    devices = sum(len(r.get("devices", [])) for r in answer["results"].values())
    keydir_log.engine.dispose()
    return {"registrations": len(bodies), "seconds": elapsed, "per_s": len(bodies) / elapsed,
            "cpu_ms_per_registration": cpu * 1000 / len(bodies), "cpu_ms_per_lookup": lookup_cpu * 1000 / lookups,
            "lookup_p50_ms": percentile(timings, 50), "lookup_p99_ms": percentile(timings, 99),
            "lookup_devices": devices, "lookup_bytes": size, "tree_size": answer["tree_size"]}


def _run(tree: Path, backend: str, records_path: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    databases = Databases(backend)
    try:
        url = databases.urls(tmp, [f"keydir_{uuid4_hex()}"]).popitem()[1]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(tree / "keydir-service"), str(tree / "libs" / "safeharbor-common"),
             str(tree / "libs" / "safeharbor-protocol")]
        )
        command = [sys.executable, __file__, "--worker", url, records_path, str(args.threads), str(args.lookups)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"worker failed in {tree}: {done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    finally:
        databases.drop()


def uuid4_hex() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, url, records_path, threads, lookups = sys.argv
        print(json.dumps(worker(url, records_path, int(threads), int(lookups))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, type=Path, help="a checkout of the tree before the change")
    parser.add_argument("--backend", default="postgres,sqlite")
    parser.add_argument("--registrations", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (args.baseline / "keydir-service" / "safeharbor_keydir").is_dir():
        parser.error(f"{args.baseline} is not a checkout of this repository")
    trees = {"baseline": args.baseline.resolve(), "this tree": ROOT}
    backends = [b for b in args.backend.split(",") if b]
    if any(b not in ("postgres", "sqlite") for b in backends):
        parser.error("--backend takes postgres and/or sqlite")
    loads: list[str] = []
    results: dict[str, dict[str, list[dict[str, Any]]]] = {b: {t: [] for t in trees} for b in backends}
    with tempfile.TemporaryDirectory(prefix="kd-bench-") as tmp_name:
        tmp = Path(tmp_name)
        records_path = str(tmp / "records.json")
        Path(records_path).write_text(json.dumps(_records(args.registrations)))
        for backend in backends:
            for run in range(args.runs):
                for name, tree in trees.items():  # alternate, so both see the same load
                    loads.append(Path("/proc/loadavg").read_text().split()[0])
                    result = _run(tree, backend, records_path, args, tmp)
                    results[backend][name].append(result)
                    log(f"{backend} run {run + 1} {name}: {fmt(result['per_s'], 1)} registrations/s "
                        f"({result['cpu_ms_per_registration']:.2f} ms CPU each), lookup "
                        f"p50 {result['lookup_p50_ms']:.1f} ms p99 {result['lookup_p99_ms']:.1f} ms "
                        f"(tree {result['tree_size']}, {result['lookup_devices']} devices)")
    print(f"\nload average (1 min) at each run's start: {', '.join(loads)}")
    print("\n| backend | tree | registrations/s | keydir CPU ms per registration | lookup 100 users p50 / p99 ms |"
          " keydir CPU ms per lookup |")
    print("|---|---|---|---|---|---|")
    summary: dict[str, Any] = {}
    for backend in backends:
        for name in trees:
            runs = results[backend][name]
            summary[f"{backend} {name}"] = row = {
                "registrations_per_s": median([r["per_s"] for r in runs]),
                "lookup_p50_ms": median([r["lookup_p50_ms"] for r in runs]),
                "lookup_p99_ms": median([r["lookup_p99_ms"] for r in runs]),
                "cpu_ms_per_registration": median([r["cpu_ms_per_registration"] for r in runs]),
                "cpu_ms_per_lookup": median([r["cpu_ms_per_lookup"] for r in runs]),
            }
            print(f"| {backend} | {name} | {fmt(row['registrations_per_s'], 1)} | "
                  f"{row['cpu_ms_per_registration']:.2f} | {row['lookup_p50_ms']:.1f} / "
                  f"{row['lookup_p99_ms']:.1f} | {row['cpu_ms_per_lookup']:.1f} |")
        new, old = summary[f"{backend} this tree"], summary[f"{backend} baseline"]
        print(f"| {backend} | this tree / baseline | {new['registrations_per_s'] / old['registrations_per_s']:.2f} x | "
              f"{new['cpu_ms_per_registration'] / old['cpu_ms_per_registration']:.2f} x | "
              f"{new['lookup_p50_ms'] / old['lookup_p50_ms']:.2f} x | "
              f"{new['cpu_ms_per_lookup'] / old['cpu_ms_per_lookup']:.2f} x |")
    write_result("keydir-store", {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
                                  "load_averages": loads, "summary": summary, "runs": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
