"""Login: requests/s through the gateway at the configured argon2id cost, and whether login load starves
other routes.

    .venv/bin/python bench/speed/login.py [--backend sqlite|postgres] [--runs 3] [--seconds 8]
        [--concurrency 1,4,8] [--probe-seconds 15]

Logins: wrk POSTs `/v1/auth/login` for one user without MFA (each success is an argon2id verification, a
new session, a signed token and audit events). The argon2id cost is auth-service's default
(`ARGON2_MEMORY_KIB` 19456, `ARGON2_TIME_COST` 2, `ARGON2_PARALLELISM` 1: OWASP's minimum), unless set in
the environment.
Starvation: a probe sends 20 requests/s to `GET /v1/auth/me` (same service as login) and to
`GET /v1/keys?users=..` (another service), first alone, then while wrk keeps 8 logins in flight; p50/p99
and errors of the probe in both phases.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    BenchStack,
    ForeignCpu,
    fmt,
    log,
    median,
    percentile,
    wait_quiet,
    write_result,
    wrk,
)

ARGON2 = {name: os.environ.get(name, default) for name, default in
          (("ARGON2_MEMORY_KIB", "19456"), ("ARGON2_TIME_COST", "2"), ("ARGON2_PARALLELISM", "1"))}


def probe(api: Any, token: str, seconds: float, rate: float = 20.0) -> dict[str, Any]:
    """Bounded: `seconds` long, at most seconds × rate requests per route."""
    paths = {"auth.me": "/v1/auth/me", "keys.lookup": "/v1/keys?users=" + "x"}
    out: dict[str, Any] = {}

    def run(name: str, path: str) -> None:
        timings, errors = [], 0
        end = time.monotonic() + seconds
        for _ in range(int(seconds * rate)):
            if time.monotonic() >= end:
                break
            t0 = time.perf_counter()
            try:
                status = api.call("GET", path, token=token, timeout=30).status_code
            except Exception:
                status = 0
            timings.append((time.perf_counter() - t0) * 1000)
            errors += status != 200
            time.sleep(max(0.0, 1 / rate - (time.perf_counter() - t0)))
        out[name] = {"requests": len(timings), "errors": errors, "p50_ms": percentile(timings, 50),
                     "p99_ms": percentile(timings, 99), "max_ms": max(timings) if timings else None}

    threads = [threading.Thread(target=run, args=item) for item in paths.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--probe-seconds", type=int, default=15)
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    with BenchStack(backend=args.backend, extra_env=ARGON2) as bench, \
            tempfile.TemporaryDirectory(prefix="safeharbor-bench-login-") as tmp:
        api = bench.api()
        script = Path(tmp) / "login.lua"
        body = json.dumps({"username": "pat", "password": bench.password})
        script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = [[{body}]]\n")
        token = api.token("sam")  # the probe's user (billing, no MFA)
        api.token("pat")
        runs: dict[int, list[dict[str, Any]]] = {c: [] for c in concurrencies}
        starvation: list[dict[str, Any]] = []
        url = bench.gateway_url + "/v1/auth/login"
        for run in range(args.runs):
            for c in concurrencies:
                wait_quiet()
                others = ForeignCpu().start()
                result = wrk(url, connections=c, seconds=args.seconds, script=script)
                runs[c].append({**result.as_dict(), "foreign_cores": others.stop()})
                log(f"run {run + 1} c={c}: {fmt(result.rps, 1)} logins/s, p50 {result.p50_ms:.0f} ms, "
                    f"p99 {result.p99_ms:.0f} ms, non-2xx {result.non_2xx}")
                bench.wait_outboxes_empty()
            wait_quiet()
            alone = probe(api, token, args.probe_seconds)
            box: dict[str, Any] = {}
            loader = threading.Thread(target=lambda box=box: box.update(
                load=wrk(url, connections=8, seconds=args.probe_seconds + 4, script=script)))
            loader.start()
            time.sleep(2)
            loaded = probe(api, token, args.probe_seconds)
            loader.join(timeout=args.probe_seconds + 120)
            starvation.append({"alone": alone, "under_login_load": loaded, "login_load": box["load"].as_dict()})
            log(f"run {run + 1} probe alone: " + ", ".join(
                f"{k} p50 {v['p50_ms']:.1f} / p99 {v['p99_ms']:.1f} ms" for k, v in alone.items()))
            log(f"run {run + 1} probe under {fmt(box['load'].rps, 1)} logins/s: " + ", ".join(
                f"{k} p50 {v['p50_ms']:.1f} / p99 {v['p99_ms']:.1f} ms, errors {v['errors']}"
                for k, v in loaded.items()))
            bench.wait_outboxes_empty()

    summary: dict[str, Any] = {"argon2": ARGON2, "logins": {}, "probe": {}}
    print(f"\nargon2id {ARGON2}\n\n| concurrency | logins/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for c in concurrencies:
        lm = {k: median([r[k] for r in runs[c]]) for k in ("rps", "p50_ms", "p99_ms")}
        summary["logins"][c] = lm
        print(f"| {c} | {fmt(lm['rps'], 1)} | {lm['p50_ms']:.0f} | {lm['p99_ms']:.0f} |")
    print("\n| probe route | alone p50 / p99 ms | under login load p50 / p99 ms | errors under load |")
    print("|---|---|---|---|")
    for name in ("auth.me", "keys.lookup"):
        m: dict[str, dict[str, float]] = {
            phase: {k: median([s[phase][name][k] for s in starvation]) for k in ("p50_ms", "p99_ms")}
            for phase in ("alone", "under_login_load")}
        errors = sum(s["under_login_load"][name]["errors"] for s in starvation)
        summary["probe"][name] = {**m, "errors_under_load": errors}
        print(f"| {name} | {m['alone']['p50_ms']:.1f} / {m['alone']['p99_ms']:.1f} | "
              f"{m['under_login_load']['p50_ms']:.1f} / {m['under_login_load']['p99_ms']:.1f} | {errors} |")
    summary["login_load_during_probe_rps"] = median([s["login_load"]["rps"] for s in starvation])
    write_result(f"login-{args.backend}", {"summary": summary, "runs": runs, "starvation": starvation})
    return 0


if __name__ == "__main__":
    sys.exit(main())
