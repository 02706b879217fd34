"""Key directory through the gateway: batch lookup of 100 users with inclusion proofs (p50/p99, and
requests/s under wrk), and registrations per second.

    .venv/bin/python bench/speed/keydir.py [--backend sqlite|postgres] [--runs 3] [--users 100]
        [--lookups 200] [--threads 8]

Registrations: each run, every user registers 3 new devices (version 1, signed by the SDK's key code;
records are built before the clock starts) from `--threads` concurrent clients. Each registration is a
transparency-log append with a signed checkpoint and an audit event.
Lookups: `GET /v1/keys?users=<100 ids>` of another 100 users with one device each (each answer carries
100 records with their inclusion proofs and the checkpoint); latency of sequential requests, then wrk at
8 connections for requests/s.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    BenchStack,
    ForeignCpu,
    fmt,
    key_record,
    log,
    median,
    percentile,
    wait_quiet,
    write_result,
    wrk,
)

DEVICES_PER_RUN = 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()

    with BenchStack(backend=args.backend) as bench:
        api = bench.api()
        admin = api.token("admin")
        log(f"creating and logging in {args.users} users to look up and {args.users} users to register")
        users = api.create_users(admin, "kd", args.users, "patient")
        looked_up = {u["id"]: api.token(u["username"]) for u in users}
        for uid, token in looked_up.items():  # exactly one device each: every run looks up the same thing
            response = api.call("POST", "/v1/keys", token=token, json=key_record(uid, "phone"))
            if response.status_code != 201:
                raise RuntimeError(f"setup registration failed: {response.status_code}")
        registrants = api.create_users(admin, "kr", args.users, "patient")
        tokens = {u["id"]: api.token(u["username"]) for u in registrants}
        reader = looked_up[users[0]["id"]]
        query = "/v1/keys?users=" + ",".join(u["id"] for u in users)
        registrations: list[dict[str, Any]] = []
        lookups: list[dict[str, Any]] = []
        for run in range(args.runs):
            jobs = [(uid, key_record(uid, f"r{run}-d{k}")) for uid in tokens for k in range(DEVICES_PER_RUN)]
            failures: list[str] = []

            def worker(chunk: list[tuple[str, dict[str, Any]]], failures: list[str] = failures) -> None:
                for uid, record in chunk:
                    response = api.call("POST", "/v1/keys", token=tokens[uid], json=record)
                    if response.status_code != 201:
                        failures.append(f"{response.status_code} {response.text[:120]}")

            wait_quiet()
            others = ForeignCpu().start()
            pool = [threading.Thread(target=worker, args=(jobs[i::args.threads],)) for i in range(args.threads)]
            started = time.perf_counter()
            for t in pool:
                t.start()
            for t in pool:
                t.join(timeout=600)
            elapsed = time.perf_counter() - started
            if failures:
                raise RuntimeError(f"registrations failed: {failures[:3]}")
            registrations.append({"count": len(jobs), "seconds": elapsed, "per_s": len(jobs) / elapsed,
                                  "foreign_cores": others.stop()})
            log(f"run {run + 1}: {len(jobs)} registrations in {elapsed:.2f} s = {fmt(len(jobs) / elapsed)}/s")

            bench.wait_outboxes_empty()
            wait_quiet()
            others = ForeignCpu().start()
            timings = []
            for _ in range(args.lookups):
                t0 = time.perf_counter()
                response = api.call("GET", query, token=reader)
                timings.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"lookup answered {response.status_code}")
            body = response.json()
            proofs = sum(len(d["inclusion_proof"]) for r in body["results"].values() for d in r.get("devices", []))
            devices = sum(len(r.get("devices", [])) for r in body["results"].values())
            foreign = others.stop()
            bench.wait_outboxes_empty()
            wait_quiet()
            loaded = wrk(bench.gateway_url + query, connections=8, seconds=args.seconds,
                         headers={"Authorization": f"Bearer {reader}"})
            lookups.append({"p50_ms": percentile(timings, 50), "p99_ms": percentile(timings, 99),
                            "devices_returned": devices, "proof_hashes_returned": proofs,
                            "response_bytes": len(response.content), "foreign_cores": foreign,
                            "wrk_c8": loaded.as_dict()})
            log(f"run {run + 1}: lookup of {args.users} users ({devices} devices, {proofs} proof hashes, "
                f"{len(response.content) // 1024} KiB): p50 {percentile(timings, 50):.1f} ms, "
                f"p99 {percentile(timings, 99):.1f} ms; wrk c=8 {fmt(loaded.rps, 1)} req/s, "
                f"p50 {loaded.p50_ms:.1f} ms, p99 {loaded.p99_ms:.1f} ms")
            bench.wait_outboxes_empty()

    summary = {
        "registrations_per_s": median([r["per_s"] for r in registrations]),
        "lookup_p50_ms": median([r["p50_ms"] for r in lookups]),
        "lookup_p99_ms": median([r["p99_ms"] for r in lookups]),
        "lookup_rps_c8": median([r["wrk_c8"]["rps"] for r in lookups]),
        "lookup_p50_ms_c8": median([r["wrk_c8"]["p50_ms"] for r in lookups]),
        "lookup_p99_ms_c8": median([r["wrk_c8"]["p99_ms"] for r in lookups]),
        "devices_per_lookup": lookups[-1]["devices_returned"],
    }
    print("\n| backend | registrations/s | lookup 100 users p50 / p99 ms (c=1) | lookups/s (c=8) | "
          "p50 / p99 ms (c=8) |")
    print("|---|---|---|---|---|")
    print(f"| {args.backend} | {fmt(summary['registrations_per_s'], 1)} | {summary['lookup_p50_ms']:.1f} / "
          f"{summary['lookup_p99_ms']:.1f} | {fmt(summary['lookup_rps_c8'], 1)} | "
          f"{summary['lookup_p50_ms_c8']:.1f} / {summary['lookup_p99_ms_c8']:.1f} |")
    write_result(f"keydir-{args.backend}", {"args": vars(args), "summary": summary,
                                              "registrations": registrations, "lookups": lookups})
    return 0


if __name__ == "__main__":
    sys.exit(main())
