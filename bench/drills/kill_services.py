"""Drill: kill -9 each service in turn under load, and PostgreSQL; the stack recovers, nothing acknowledged
is lost, the audit log verifies, and errors while a service is down are clean 503s.

    .venv/bin/python bench/drills/kill_services.py [--backend postgres|sqlite] [--down 6]
        [--postgres terminate|kill|skip] [--threads 8]

Load: `--threads` clients through the gateway (key lookups and registrations, `me`, Stream credentials,
push status and audit reads as admin, channel filter), recording every status, error code and
X-Request-ID, and every acknowledged write (key registrations, users created).
For each of audit, keydir, push, auth, emulator (Stream) and gateway:
1. SIGKILL one server worker (gunicorn): its arbiter starts a new one by itself; the service must answer again
   within 30 s.
2. SIGKILL the whole service (main process and workers), keep it down `--down` seconds (auth: past the
   gateway's 5 s revocation-staleness limit, so the fail-closed 503 shows), then start it again as a
   supervisor (compose `restart: always`, Kubernetes) would; everything must answer again within 30 s
   without touching any other process.
PostgreSQL (postgres backend): `refuse` (default) makes it "down" for the stack only: its databases stop
accepting connections (`ALLOW_CONNECTIONS false`, binding superusers too) and their open connections are
terminated, for `--down` seconds, then accept again; `terminate` only ends every backend connection of the
stack's databases three times (a restart's or failover's effect on open pools); `kill` sends SIGKILL to
the machine's PostgreSQL postmaster and restarts it with pg_ctlcluster: it only does so when no other
client is connected (the cluster is shared), otherwise it falls back to `refuse`.
Pass criteria: while something is down, every error answer is a JSON 503 `service_unavailable` (or a
refused connection while the gateway itself is down); no other 5xx ever; afterwards every acknowledged key
registration is returned by lookups, every created user exists, every answered request has its audit
entry, and the audit log verifies. Exits 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import PG_ADMIN_URL, ROOT, Api, BenchStack, key_record, log, write_result

ORDER = ("audit", "keydir", "push", "auth", "emulator", "gateway")
DEVICES_PER_USER = 18
MAX_DRILL_SECONDS = 1800  # the load stops by itself after this, whatever happens


class Load:
    """Bounded background traffic: stops at stop() or after MAX_DRILL_SECONDS / max_requests."""

    def __init__(self, api: Api, tokens: dict[str, str], users: list[dict[str, Any]], admin: str,
                 threads: int, max_requests: int = 2_000_000) -> None:
        self.api, self.tokens, self.users, self.admin = api, tokens, users, admin
        self.threads = threads
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.events: list[tuple[float, str, int, str | None]] = []  # (t, action, status, error code)
        self.request_ids: set[str] = set()
        self.registered: list[tuple[str, str]] = []  # (user id, device id) acknowledged with 201
        self.bad: list[dict[str, Any]] = []  # 5xx other than a clean 503, non-JSON errors
        self.transport: list[tuple[float, str, str]] = []
        self._stop = threading.Event()
        self._pool: list[threading.Thread] = []
        self.phase = "warm-up"
        self._devices: dict[str, int] = {}

    def start(self) -> None:
        self._pool = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]
        for t in self._pool:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._pool:
            t.join(timeout=90)

    def _record(self, action: str, response: Any) -> None:
        code = None
        if response.status_code >= 400:
            try:
                code = response.json()["error"]["code"]
            except Exception:
                code = "NOT-JSON"
        with self.lock:
            self.events.append((time.monotonic(), action, response.status_code, code))
            rid = response.headers.get("X-Request-ID")
            if rid:
                self.request_ids.add(rid)
            if (response.status_code >= 500 and not (response.status_code == 503 and code == "service_unavailable")) \
                    or code == "NOT-JSON":
                self.bad.append({"phase": self.phase, "action": action, "status": response.status_code,
                                 "code": code, "request_id": rid, "body": response.text[:300]})

    def _reserve_device(self, user_id: str) -> bool:
        """keydir keeps at most 20 devices per user: stay under it (a 409 there is policy, not a fault)."""
        with self.lock:
            used = self._devices.get(user_id, 0)
            if used >= DEVICES_PER_USER:
                return False
            self._devices[user_id] = used + 1
            return True

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        mine = self.users[index % len(self.users)]
        token = self.tokens[mine["id"]]
        ids = [u["id"] for u in self.users]
        deadline = time.monotonic() + MAX_DRILL_SECONDS
        for _ in range(self.max_requests // self.threads):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            choice = rng.random()
            try:
                if choice < 0.30:
                    action, response = "keys.lookup", self.api.call(
                        "GET", "/v1/keys?users=" + ",".join(rng.sample(ids, 5)), token=token, timeout=60)
                elif choice < 0.42 and self._reserve_device(owner := rng.choice(self.users)["id"]):
                    device = "kd-" + uuid.uuid4().hex[:10]
                    action, response = "keys.register", self.api.call(
                        "POST", "/v1/keys", token=self.tokens[owner], json=key_record(owner, device), timeout=60)
                    if response.status_code == 201:
                        with self.lock:
                            self.registered.append((owner, device))
                elif choice < 0.60:  # also where registrations go once every user has its fill of devices
                    action, response = "auth.me", self.api.call("GET", "/v1/auth/me", token=token, timeout=60)
                elif choice < 0.70:
                    action, response = "stream.credentials", self.api.call(
                        "POST", "/v1/stream-credentials", token=token, timeout=60)
                elif choice < 0.80:
                    action, response = "push.status", self.api.call(
                        "GET", "/v1/push/status", token=self.admin, timeout=60)
                elif choice < 0.90:
                    action, response = "audit.entries", self.api.call(
                        "GET", "/v1/audit/entries?limit=5", token=self.admin, timeout=60)
                else:
                    action, response = "channels.filter", self.api.call(
                        "GET", "/v1/channels/filter", token=token, timeout=60)
            except Exception as exc:
                with self.lock:
                    self.transport.append((time.monotonic(), self.phase, type(exc).__name__))
                time.sleep(0.2)
                continue
            self._record(action, response)
            time.sleep(0.05)

    def events_since(self, since: float) -> list[tuple[float, str, int, str | None]]:
        with self.lock:
            return [e for e in self.events if e[0] >= since]

    def window(self, since: float) -> Counter[tuple[str, int, str | None]]:
        with self.lock:
            return Counter((a, s, c) for t, a, s, c in self.events if t >= since)


def server_workers(master_pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master_pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def wait_replaced(master_pid: int, *, killed: int, count: int, timeout: float = 15.0) -> bool:
    """True once the server's main process again has `count` workers, none of them the killed one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = server_workers(master_pid)
        if len(workers) == count and killed not in workers:
            return True
        time.sleep(0.2)
    return False


def wait_healthy(api: Api, token: str, admin: str, timeout: float = 30.0) -> float:
    """Seconds until one request per service answers 2xx through the gateway."""
    started = time.monotonic()
    probes = [("GET", "/v1/auth/me", token), ("GET", "/v1/keys?users=x", token), ("GET", "/v1/push/status", admin),
              ("GET", "/v1/audit/entries?limit=1", admin), ("POST", "/v1/stream-credentials", token)]
    while time.monotonic() - started < timeout:
        try:
            if all(api.call(m, p, token=t, timeout=5).status_code < 300 for m, p, t in probes):
                return time.monotonic() - started
        except Exception:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"stack not healthy {timeout} s after recovery")


def pg_other_clients(prefix: str) -> int:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid() AND (datname IS NULL OR datname NOT LIKE %s)", (prefix + "%",)).fetchone()
    return int(row[0]) if row else 0


def pg_terminate(prefix: str) -> int:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname LIKE %s "
                            "AND pid <> pg_backend_pid()", (prefix + "%",)).fetchall()
    return len(rows)


def pg_refuse(databases: list[str], seconds: float) -> str:
    """PostgreSQL 'down' for the stack only: its databases refuse every connection (superusers too) and
    the open ones are terminated, for `seconds`; then they accept again. Safe on a shared cluster."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for db in databases:
            conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        terminated = 0
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY(%s) "
                                    "AND pid <> pg_backend_pid()", (databases,)).fetchall()
                terminated += len(rows)
                time.sleep(0.2)
        finally:
            for db in databases:
                conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
    return f"refused connections for {seconds:.0f} s, terminated {terminated} backends"


def pg_kill_and_restart() -> float:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    pid_file = Path(f"/var/lib/postgresql/{version}/main/postmaster.pid")
    postmaster = int(pid_file.read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    killed = time.monotonic()
    time.sleep(2)
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True,
                   capture_output=True, timeout=120)
    for _ in range(120):
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True).returncode == 0:
            return time.monotonic() - killed
        time.sleep(0.5)
    raise RuntimeError("PostgreSQL did not come back")


def unhandled_errors(stack: Any) -> dict[str, dict[str, int]]:
    """Per service: exception types of the 'unhandled error' log lines (each one answered 500)."""
    import json

    found: dict[str, dict[str, int]] = {}
    for name in ("gateway", "auth", "keydir", "audit", "push"):
        counts: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            for line in stack.log_path(name).read_text(errors="replace").splitlines():
                if '"unhandled error"' in line:
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        counts[f"{record.get('exc_type')} at {(record.get('frames') or ['?'])[-1]}"] += 1
                elif line.startswith("Traceback"):
                    counts["Traceback printed"] += 1
        found[name] = dict(counts)
    return found


def start_load(bench: BenchStack, prefix: str, threads: int) -> tuple[Api, str, Load, str]:
    """16 patients, their tokens and `threads` clients of load running 5 s already: (api, admin token, load,
    one patient's token for probes)."""
    api = bench.api()
    admin = api.token("admin")
    users = api.create_users(admin, prefix, 16, "patient")
    tokens = {u["id"]: api.token(u["username"]) for u in users}
    load = Load(api, tokens, users, admin, threads)
    load.start()
    time.sleep(5)
    return api, admin, load, tokens[users[0]["id"]]


def lost_registrations(api: Api, load: Load, token: str) -> list[tuple[str, str]]:
    """Key registrations acknowledged with 201 that lookups no longer return."""
    by_user: dict[str, set[str]] = {}
    for uid, device in load.registered:
        by_user.setdefault(uid, set()).add(device)
    lost: list[tuple[str, str]] = []
    for uid, devices in by_user.items():
        body = api.call("GET", f"/v1/keys?users={uid}", token=token).json()
        have = {d["record"]["device_id"] for d in body["results"][uid].get("devices", [])}
        lost += [(uid, d) for d in devices - have]
    return lost


def unaudited_requests(bench: BenchStack, load: Load) -> set[str]:
    """Request ids the load got an answer for that have no gateway entry in the audit log."""
    logged = {r[0] for r in bench.audit_sql("SELECT request_id FROM audit_entries WHERE source = %s",
                                            ("gateway",))}
    return load.request_ids - logged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="postgres", choices=["sqlite", "postgres"])
    parser.add_argument("--down", type=float, default=6.0, help="seconds a killed service stays down")
    parser.add_argument("--postgres", default="refuse", choices=["refuse", "terminate", "kill", "skip"])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--services", default=",".join(ORDER))
    args = parser.parse_args()
    problems: list[str] = []
    report: dict[str, Any] = {"backend": args.backend, "phases": []}
    with BenchStack(backend=args.backend) as bench:
        stack = bench.stack
        api, admin, load, probe_token = start_load(bench, "kill", args.threads)
        users = load.users

        def phase(name: str, action: Any, *, down: float = 0.0, restart: Any = None) -> None:
            load.phase = name
            started = time.monotonic()
            detail = action()
            if down:
                time.sleep(down)
            while_down = load.window(started)
            restarted = time.monotonic()
            if restart is not None:
                restart()
            recovered = wait_healthy(api, probe_token, admin)
            after = time.monotonic()
            time.sleep(3)
            settled = load.window(after)
            # A clean 503 tail right after the first all-healthy probe is recovery still spreading (the other
            # gateway worker's revocation feed, pools reconnecting); anything else is a failure.
            bad_after = {k: v for k, v in settled.items() if k[1] >= 500 and not (k[1] == 503 and k[2] ==
                                                                                  "service_unavailable")}
            tail = [t for t, _a, st, _c in load.events_since(after) if st == 503]
            entry = {
                "phase": name, "detail": detail, "down_s": round(restarted - started, 2),
                "restart_s": round(after - restarted - recovered, 2),
                "healthy_after_restart_s": round(recovered, 2),
                "answers_while_down": {f"{a} {s} {c or ''}".strip(): n for (a, s, c), n in while_down.items()},
                "errors_after_recovery": {f"{a} {s} {c or ''}".strip(): n for (a, s, c), n in bad_after.items()},
                "clean_503_tail": {"count": len(tail), "last_s_after_healthy": round(max(tail) - after, 2)
                                   if tail else 0.0},
            }
            report["phases"].append(entry)
            clean = sum(n for (a, s, c), n in while_down.items() if s == 503)
            ok = sum(n for (a, s, c), n in while_down.items() if s < 400)
            log(f"{name}: {ok} ok and {clean} clean 503 answers while down; healthy again "
                f"{entry['healthy_after_restart_s']} s after restart; then {len(tail)} clean 503s for "
                f"{entry['clean_503_tail']['last_s_after_healthy']} s; errors after recovery: {bad_after or 'none'}")
            if bad_after:
                problems.append(f"{name}: 5xx after recovery: {bad_after}")

        for name in args.services.split(","):
            if name == "emulator":
                def kill_emulator() -> str:
                    process = stack.processes.pop("emulator")
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(10)
                    return "killed"

                phase("kill -9 emulator (Stream)", kill_emulator, down=args.down, restart=stack.start_emulator)
                continue
            master = stack.processes[name]
            workers = server_workers(master.pid)

            def kill_worker(pid: int = workers[0]) -> str:
                os.kill(pid, signal.SIGKILL)
                return f"worker {pid}"

            phase(f"kill -9 one {name} worker", kill_worker, down=3.0)  # gunicorn's arbiter starts a new one
            replaced = wait_replaced(master.pid, killed=workers[0], count=len(workers))
            log(f"{name}: {'a new worker replaced' if replaced else 'NO new worker replaced'} worker {workers[0]}")
            if not replaced:
                problems.append(f"{name}: killed worker {workers[0]} was not replaced ({len(workers)} expected)")
            down = max(args.down, 7.0) if name == "auth" else args.down
            phase(f"kill -9 {name} (main process + workers)", lambda n=name: (stack.kill(n, signal.SIGKILL), "all")[1],
                  down=down, restart=lambda n=name: (stack.start_service(n), stack.wait_ready(n, timeout=60)))

        if args.backend == "postgres" and args.postgres != "skip":
            prefix = bench.databases.prefix
            mode = args.postgres
            if mode == "kill":
                others = pg_other_clients(prefix)
                if others:
                    log(f"{others} other clients are connected to the shared PostgreSQL: not killing it; "
                        "refusing the stack's connections instead")
                    mode = "refuse"
            if mode == "kill":
                phase("kill -9 PostgreSQL postmaster", lambda: f"back after {pg_kill_and_restart():.1f} s")
            elif mode == "refuse":
                phase("PostgreSQL refuses the stack's connections", lambda: pg_refuse(
                    list(bench.databases.created), args.down))
            else:
                def terminate() -> str:
                    counts = []
                    for _ in range(3):
                        counts.append(pg_terminate(prefix))
                        time.sleep(1)
                    return f"terminated {counts} backend connections"

                phase("pg_terminate_backend of every stack connection (x3)", terminate)
            report["postgres_mode"] = mode

        load.phase = "final"
        time.sleep(3)
        load.stop()
        log(f"load stopped: {len(load.events)} answers, {len(load.registered)} acknowledged registrations")
        gateway_down = [p for p in report["phases"] if p["phase"] == "kill -9 gateway (main process + workers)"]
        transport_outside = [t for t in load.transport if t[1] not in {
            "kill -9 gateway (main process + workers)", "kill -9 one gateway worker"}]
        if transport_outside:
            problems.append(f"{len(transport_outside)} transport errors while the gateway was up: "
                            f"{Counter((p, e) for _, p, e in transport_outside)}")
        if load.bad:
            problems.append(f"{len(load.bad)} unclean 5xx answers: {load.bad[:5]}")

        # Nothing acknowledged is lost.
        if not bench.wait_outboxes_empty(timeout=300):
            problems.append(f"audit outboxes still hold {bench.outbox_pending()} events")
        lost_keys = lost_registrations(api, load, probe_token)
        if lost_keys:
            problems.append(f"{len(lost_keys)} acknowledged key registrations are missing: {lost_keys[:3]}")
        for user in users:
            if api.call("GET", f"/v1/users/{user['id']}", token=admin).status_code != 200:
                problems.append(f"user {user['id']} is missing")
        missing = unaudited_requests(bench, load)
        if missing:
            problems.append(f"{len(missing)} of {len(load.request_ids)} answered requests have no audit entry")
        verify = subprocess.run([sys.executable, "-m", "safeharbor_audit.manage", "verify"], cwd=ROOT,
                                env=stack.env_for("audit"), capture_output=True, text=True, timeout=900)
        if verify.returncode != 0:
            problems.append(f"audit verify failed: {verify.stdout[-400:]}")
        report.update({
            "answers": len(load.events), "statuses": dict(Counter(s for _, _, s, _ in load.events)),
            "acknowledged_registrations": len(load.registered), "lost_registrations": len(lost_keys),
            "answered_requests": len(load.request_ids), "missing_audit_entries": len(missing),
            "audit_log_size": bench.audit_size(), "verify": verify.stdout.strip()[-600:],
            "transport_errors": {f"{p}: {e}": n for (p, e), n in Counter((p, e) for _, p, e in load.transport).items()},
            "unclean_5xx": load.bad[:20], "gateway_phase": gateway_down, "problems": problems,
        })
        report["unhandled_errors_in_logs"] = unhandled_errors(stack)
    write_result(f"drill-kill_services-{args.backend}" + (f"-{report.get('postgres_mode')}"
                                                          if args.backend == "postgres" else ""), report)
    for problem in problems:
        log(f"PROBLEM: {problem}")
    log("kill_services drill " + ("PASSED" if not problems else "FAILED"))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
