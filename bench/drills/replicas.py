"""Drill (issue 19): two instances of every service; kill -9 one instance of each, in turn, under load.

    .venv/bin/python bench/drills/replicas.py [--down 8] [--threads 8] [--services audit,keydir,push,auth,gateway]

The stack: PostgreSQL + Redis, two instances of every service (devstack `replicas=2`): the gateway spreads
requests over the service instances itself, the services reach each other and the load reaches the two
gateways through loopback balancers (a Kubernetes Service's stand-in). The load is kill_services.py's
(`--threads` clients: key lookups and registrations, `me`, Stream credentials, push status, audit reads,
channel filter), recording every status and every acknowledged write.
For each service: SIGKILL the main process and workers of its first instance (`<service>@1`: for auth the one
the gateways read the revocation feed from first, for audit the one the gateways' outboxes ship to), keep it
down `--down` seconds (past the gateway's 5 s revocation-staleness limit), start it again.
Pass criteria: while an instance is down the other answers: no 503 beyond the requests in flight at the kill
(at most `--in-flight` per phase; a request that reached the killed instance is not resent, so it may fail),
no other 5xx ever; afterwards every acknowledged key registration is returned by lookups, every answered
request has its audit entry (the outboxes drain), the audit log and the keydir log verify (recomputed from
their leaves, every checkpoint checked), and audit checkpoints were signed at most once per interval.
Exits 1 otherwise. Writes bench/results/drill-replicas.json.
"""
from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, BenchStack, log, write_result
from kill_services import lost_registrations, start_load, unaudited_requests, wait_healthy

ORDER = ("audit", "keydir", "push", "auth", "gateway")
CHECKPOINT_INTERVAL = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--down", type=float, default=8.0, help="seconds a killed instance stays down")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--in-flight", type=int, default=None,
                        help="503s allowed per phase (requests in flight at the kill); default: --threads")
    parser.add_argument("--services", default=",".join(ORDER))
    args = parser.parse_args()
    in_flight = args.threads if args.in_flight is None else args.in_flight
    problems: list[str] = []
    report: dict[str, Any] = {"replicas": 2, "down_s": args.down, "threads": args.threads, "phases": []}
    started_at = time.time()
    with BenchStack(backend="postgres", replicas=2,
                    extra_env={"AUDIT_CHECKPOINT_INTERVAL": str(CHECKPOINT_INTERVAL)}) as bench:
        stack = bench.stack
        api, admin, load, probe_token = start_load(bench, "rep", args.threads)
        for name in args.services.split(","):
            instance = stack.instances(name)[0]
            load.phase = f"kill -9 {instance}"
            began = time.monotonic()
            stack.kill(instance)
            time.sleep(args.down)
            while_down = load.window(began)
            restarted = time.monotonic()
            stack.start_service(instance)
            stack.wait_ready(instance, timeout=90)
            back = time.monotonic() - restarted
            wait_healthy(api, probe_token, admin)
            failures = {k: n for k, n in while_down.items() if k[1] >= 500}
            transport = sum(1 for t, phase, _ in load.transport if phase == load.phase)
            entry = {"phase": load.phase, "down_s": round(restarted - began, 2), "restart_s": round(back, 2),
                     "answers_while_down": sum(while_down.values()),
                     "ok_while_down": sum(n for k, n in while_down.items() if k[1] < 400),
                     "5xx_while_down": {f"{a} {s} {c or ''}".strip(): n for (a, s, c), n in failures.items()},
                     "transport_errors": transport}
            report["phases"].append(entry)
            log(f"{load.phase}: {entry['ok_while_down']} of {entry['answers_while_down']} answers ok while down, "
                f"5xx {entry['5xx_while_down'] or 'none'}, {transport} transport errors; back in {back:.1f} s")
            if sum(failures.values()) + transport > in_flight:
                problems.append(f"{load.phase}: {sum(failures.values())} 5xx and {transport} transport errors "
                                f"while the other instance was up (more than {in_flight} in flight)")
        load.phase = "final"
        time.sleep(3)
        load.stop()
        log(f"load stopped: {len(load.events)} answers, {len(load.registered)} acknowledged registrations")
        if load.bad:
            problems.append(f"{len(load.bad)} unclean 5xx answers: {load.bad[:5]}")

        # Nothing acknowledged is lost.
        if not bench.wait_outboxes_empty(timeout=300):
            problems.append(f"audit outboxes still hold {bench.outbox_pending()} events")
        lost_keys = lost_registrations(api, load, probe_token)
        if lost_keys:
            problems.append(f"{len(lost_keys)} acknowledged key registrations are missing: {lost_keys[:3]}")
        missing = unaudited_requests(bench, load)
        if missing:
            problems.append(f"{len(missing)} of {len(load.request_ids)} answered requests have no audit entry")

        # The logs verify, and never forked: recomputed from their leaves by each service's own verifier.
        verified = {}
        for service, package in (("audit", "safeharbor_audit"), ("keydir", "safeharbor_keydir")):
            run = subprocess.run([sys.executable, "-m", f"{package}.manage", "verify"], cwd=ROOT,
                                 env=stack.env_for(f"{service}@1"), capture_output=True, text=True, timeout=900)
            verified[service] = run.stdout.strip()[-400:]
            if run.returncode != 0:
                problems.append(f"{service} verify failed: {run.stdout[-400:]} {run.stderr[-400:]}")
        times = [float(r[0]) for r in bench.audit_sql(
            "SELECT created_at FROM checkpoints WHERE created_at >= %s ORDER BY created_at", (started_at,))]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        close = sum(1 for gap in gaps if gap < 0.9 * CHECKPOINT_INTERVAL)
        if close:
            problems.append(f"{close} audit checkpoints signed less than an interval after the one before")
        report.update({
            "answers": len(load.events), "statuses": dict(Counter(s for _, _, s, _ in load.events)),
            "acknowledged_registrations": len(load.registered), "lost_registrations": len(lost_keys),
            "answered_requests": len(load.request_ids), "missing_audit_entries": len(missing),
            "audit_log_size": bench.audit_size(), "verify": verified,
            "checkpoints": len(times), "min_checkpoint_gap_s": round(min(gaps), 3) if gaps else None,
            "unclean_5xx": load.bad[:20], "problems": problems,
            "unhandled_errors_in_logs": {i: unhandled_errors_of(stack, i) for s in ORDER for i in stack.instances(s)},
        })
    write_result("drill-replicas", report)
    for problem in problems:
        log(f"PROBLEM: {problem}")
    log("replicas drill " + ("PASSED" if not problems else "FAILED"))
    return 0 if not problems else 1


def unhandled_errors_of(stack: Any, instance: str) -> int:
    """'unhandled error' lines (each one answered 500) and printed tracebacks in one instance's log."""
    lines = Path(stack.log_path(instance)).read_text(errors="replace").splitlines()
    return sum(1 for line in lines if '"unhandled error"' in line or line.startswith("Traceback"))


if __name__ == "__main__":
    sys.exit(main())
