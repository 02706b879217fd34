"""Drill: mixed traffic from many simulated users for a while: no 5xx, no lost audit event, the audit chain
verifies afterwards.

    .venv/bin/python bench/drills/soak.py [--minutes 10] [--users 200] [--backend postgres|sqlite]
        [--think 1.0,3.0]

Each simulated user is a thread with its own account (half patients, half billing: roles without MFA),
logs in, registers a device key, then until the time is up picks: key lookups of 5-20 other users,
refresh, Stream credentials, channel creation with a user of its role, channel filter, `me`, logout +
login again, or a signed Stream webhook delivery (unique X-Webhook-Id), with a random think time between
actions. Bounded twice: by the clock and by at most `minutes × 60 / think_min` actions per user.
Afterwards: the audit outboxes drain, every request the gateway answered has its audit entry
(`request_id` of the X-Request-ID header, source gateway), every acknowledged webhook its entry, and the
log verifies (`GET /v1/audit/verify` as admin and `manage verify`).
Exits 1 on any 5xx, transport error, lost event or failed verification. One kind of transport error is
resent once and counted apart: a request that went out on a pooled keep-alive connection the server had
just closed for idleness ("Connection aborted", nothing answered), which every HTTP client resends.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ROOT, Api, BenchStack, ForeignCpu, key_record, log, percentile, write_result

WEBHOOK_NAMESPACE = uuid.UUID("6f1c52c4-8a6e-4d57-9d0b-5b8f0e2b3c41")  # audit-service's, for the event id
ACTIONS = (  # (name, weight)
    ("keys.lookup", 30), ("auth.refresh", 10), ("stream.credentials", 12), ("channels.create", 12),
    ("channels.filter", 6), ("auth.me", 10), ("relogin", 5), ("webhook", 10), ("keys.history", 5),
)


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: dict[str, Counter[int]] = defaultdict(Counter)
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.request_ids: set[str] = set()
        self.webhook_ids: list[str] = []
        self.server_errors: list[dict[str, Any]] = []
        self.transport_errors: list[dict[str, Any]] = []
        self.keepalive_retries: list[dict[str, Any]] = []

    def record(self, name: str, response: Any, elapsed_ms: float) -> None:
        with self.lock:
            self.statuses[name][response.status_code] += 1
            self.latency[name].append(elapsed_ms)
            rid = response.headers.get("X-Request-ID")
            if rid:
                self.request_ids.add(rid)
            if response.status_code >= 500:
                self.server_errors.append({"action": name, "status": response.status_code, "request_id": rid,
                                           "body": response.text[:300]})


class SimulatedUser:
    def __init__(self, api: Api, me: dict[str, Any], peers: list[dict[str, Any]], rec: Recorder,
                 secret: str, think: tuple[float, float], deadline: float, max_actions: int, seed: int) -> None:
        self.api, self.me, self.peers, self.rec = api, me, peers, rec
        self.secret, self.think, self.deadline, self.max_actions = secret, think, deadline, max_actions
        self.rng = random.Random(seed)
        self.token = ""

    def call(self, name: str, method: str, path: str, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            try:
                response = self.api.call(method, path, timeout=60, **kwargs)
            except requests.ConnectionError as exc:
                # The keep-alive race: the server closed an idle pooled connection (servers keep idle
                # connections open for seconds: gunicorn keep-alive; users think 1-3 s) just as the request went
                # out on it, and nothing was answered. Browsers and HTTP clients resend on a fresh
                # connection; so does this one, once, and counts it.
                if "Connection aborted" not in str(exc):
                    raise
                with self.rec.lock:
                    self.rec.keepalive_retries.append({"action": name, "error": str(exc)[:160], "at": time.time()})
                response = self.api.call(method, path, timeout=60, **kwargs)
        except Exception as exc:  # a drill records every failure
            with self.rec.lock:
                self.rec.transport_errors.append({"action": name, "error": f"{type(exc).__name__}: {str(exc)[:160]}",
                                                  "at": time.time()})
            return None
        self.rec.record(name, response, (time.perf_counter() - started) * 1000)
        return response

    def login(self) -> None:
        response = self.call("auth.login", "POST", "/v1/auth/login",
                             json={"username": self.me["username"], "password": self.api.password})
        if response is not None and response.status_code == 200:
            self.token = response.json()["access_token"]

    def run(self) -> None:
        time.sleep(self.rng.uniform(0, self.think[1] * 3))  # spread the start
        self.login()
        self.call("keys.register", "POST", "/v1/keys", token=self.token,
                  json=key_record(self.me["id"], "soak-" + uuid.uuid4().hex[:8]))
        names = [a for a, _ in ACTIONS]
        weights = [w for _, w in ACTIONS]
        for _ in range(self.max_actions):
            if time.monotonic() >= self.deadline:
                return
            time.sleep(self.rng.uniform(*self.think))
            if time.monotonic() >= self.deadline:
                return
            if not self.token:
                self.login()
                continue
            getattr(self, "do_" + self.rng.choices(names, weights)[0].replace(".", "_"))()

    def do_keys_lookup(self) -> None:
        ids = [p["id"] for p in self.rng.sample(self.peers, self.rng.randint(5, 20))]
        self.call("keys.lookup", "GET", "/v1/keys?users=" + ",".join(ids), token=self.token)

    def do_keys_history(self) -> None:
        self.call("keys.history", "GET", f"/v1/keys/{self.rng.choice(self.peers)['id']}/history", token=self.token)

    def do_auth_refresh(self) -> None:
        response = self.call("auth.refresh", "POST", "/v1/auth/refresh", token=self.token)
        if response is not None and response.status_code == 200:
            self.token = response.json()["access_token"]

    def do_stream_credentials(self) -> None:
        self.call("stream.credentials", "POST", "/v1/stream-credentials", token=self.token)

    def do_channels_create(self) -> None:
        same_role = [p for p in self.peers if p["role"] == self.me["role"] and p["id"] != self.me["id"]]
        kind = "patient-care" if self.me["role"] == "patient" else "billing"
        self.call("channels.create", "POST", "/v1/channels", token=self.token,
                  json={"type": kind, "members": [self.rng.choice(same_role)["id"]]})

    def do_channels_filter(self) -> None:
        self.call("channels.filter", "GET", "/v1/channels/filter", token=self.token)

    def do_auth_me(self) -> None:
        self.call("auth.me", "GET", "/v1/auth/me", token=self.token)

    def do_relogin(self) -> None:
        self.call("auth.logout", "POST", "/v1/auth/logout", token=self.token)
        self.token = ""
        self.login()

    def do_webhook(self) -> None:
        webhook_id = uuid.uuid4().hex
        body = json.dumps({"type": "message.new", "cid": "patient-care:soak", "channel_type": "patient-care",
                           "channel_id": "soak", "user": {"id": self.me["id"]},
                           "message": {"id": uuid.uuid4().hex, "text": "never stored", "type": "regular"},
                           "created_at": "2026-01-01T00:00:00Z"}).encode()
        signature = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        response = self.call("webhook", "POST", "/v1/webhooks/stream", data=body, headers={
            "Content-Type": "application/json", "X-Signature": signature, "X-Webhook-Id": webhook_id})
        if response is not None and response.status_code < 300:
            with self.rec.lock:
                self.rec.webhook_ids.append(webhook_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--backend", default="postgres", choices=["sqlite", "postgres"])
    parser.add_argument("--think", default="1.0,3.0", help="min,max seconds between a user's actions")
    args = parser.parse_args()
    think = tuple(float(x) for x in args.think.split(","))
    assert len(think) == 2 and 0 < think[0] <= think[1]
    rec = Recorder()
    problems: list[str] = []
    summary: dict[str, Any] = {}
    with BenchStack(backend=args.backend) as bench:
        api = bench.api()
        admin = api.token("admin")
        log(f"creating {args.users} users")
        half = args.users // 2
        users = api.create_users(admin, "soakp", half, "patient") + \
            api.create_users(admin, "soakb", args.users - half, "billing")
        deadline = time.monotonic() + args.minutes * 60
        max_actions = int(args.minutes * 60 / think[0]) + 1
        secret = bench.secrets["STREAM_API_SECRET"]
        sims = [SimulatedUser(api, u, users, rec, secret, think, deadline, max_actions, seed=i)
                for i, u in enumerate(users)]
        threads = [threading.Thread(target=s.run, name=f"user-{i}", daemon=True) for i, s in enumerate(sims)]
        log(f"soak: {args.users} users for {args.minutes} min on {args.backend}, think {think[0]}-{think[1]} s")
        others = ForeignCpu().start()
        started = time.monotonic()
        for t in threads:
            t.start()
        last = time.monotonic()
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline + 120:
            time.sleep(5)
            if time.monotonic() - last >= 60:
                last = time.monotonic()
                total = sum(sum(c.values()) for c in rec.statuses.values())
                log(f"{(last - started) / 60:.1f} min: {total} requests, {len(rec.server_errors)} 5xx, "
                    f"{len(rec.transport_errors)} transport errors, {len(rec.keepalive_retries)} keep-alive races "
                    f"retried, audit outbox backlog {bench.outbox_pending()}")
        for t in threads:
            t.join(timeout=1)
        elapsed = time.monotonic() - started
        foreign = others.stop()
        stuck = sum(t.is_alive() for t in threads)
        if stuck:
            problems.append(f"{stuck} simulated users did not stop in time")
        total = sum(sum(c.values()) for c in rec.statuses.values())
        log(f"traffic done: {total} requests in {elapsed:.0f} s; waiting for the audit outboxes to drain")
        if not bench.wait_outboxes_empty(timeout=600):
            problems.append(f"audit outboxes still hold {bench.outbox_pending()} events after 10 min")
        logged = {r[0] for r in bench.audit_sql("SELECT request_id FROM audit_entries WHERE source = %s",
                                                ("gateway",))}
        missing = rec.request_ids - logged
        webhook_events = {str(uuid.uuid5(WEBHOOK_NAMESPACE, "stream-webhook:" + w)) for w in rec.webhook_ids}
        present = {r[0] for r in bench.audit_sql("SELECT event_id FROM audit_entries WHERE source = %s",
                                                 ("stream",))}
        missing_webhooks = webhook_events - present
        verify_http = api.call("GET", "/v1/audit/verify", token=api.token("admin"), timeout=120)
        verify_cli = subprocess.run([sys.executable, "-m", "safeharbor_audit.manage", "verify"], cwd=ROOT,
                                    env=bench.stack.env_for("audit"), capture_output=True, text=True, timeout=900)
        size = bench.audit_size()
        if rec.server_errors:
            problems.append(f"{len(rec.server_errors)} responses were 5xx")
        if rec.transport_errors:
            problems.append(f"{len(rec.transport_errors)} requests failed in transport")
        if missing:
            problems.append(f"{len(missing)} answered requests have no audit entry")
        if missing_webhooks:
            problems.append(f"{len(missing_webhooks)} acknowledged webhooks have no audit entry")
        verify_body = verify_http.json() if verify_http.headers.get("Content-Type", "").startswith(
            "application/json") else {}
        if verify_http.status_code != 200 or not verify_body.get("ok"):
            problems.append(f"GET /v1/audit/verify: {verify_http.status_code} {verify_http.text[:200]}")
        if verify_cli.returncode != 0:
            problems.append(f"manage verify exited {verify_cli.returncode}: {verify_cli.stdout[-300:]}")
        all_latency = [x for v in rec.latency.values() for x in v]
        summary = {
            "users": args.users, "minutes": args.minutes, "backend": args.backend, "think_s": think,
            "elapsed_s": elapsed, "requests": total, "requests_per_s": total / elapsed,
            "statuses": {k: dict(v) for k, v in rec.statuses.items()},
            "latency_ms": {k: {"p50": percentile(v, 50), "p99": percentile(v, 99), "n": len(v)}
                           for k, v in rec.latency.items()},
            "overall_latency_ms": {"p50": percentile(all_latency, 50), "p99": percentile(all_latency, 99)},
            "server_errors": rec.server_errors[:50], "transport_errors": rec.transport_errors[:50],
            "keepalive_races_retried": len(rec.keepalive_retries), "keepalive_retry_samples": rec.keepalive_retries[:5],
            "gateway_request_ids": len(rec.request_ids), "missing_audit_entries": len(missing),
            "webhooks_acknowledged": len(rec.webhook_ids), "missing_webhook_entries": len(missing_webhooks),
            "audit_log_size": size, "verify": verify_body, "manage_verify": verify_cli.stdout.strip()[-500:],
            "foreign_cores": foreign, "problems": problems,
        }
    write_result(f"drill-soak-{args.backend}-{args.users}u-{args.minutes:g}m", summary)
    print("\n| action | requests | statuses | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for name in sorted(summary["statuses"]):
        lat = summary["latency_ms"][name]
        print(f"| {name} | {lat['n']} | {summary['statuses'][name]} | {lat['p50']:.1f} | {lat['p99']:.1f} |")
    print(f"\n{summary['requests']} requests ({summary['requests_per_s']:.1f}/s), 5xx: {len(rec.server_errors)}, "
          f"transport errors: {len(rec.transport_errors)}, audit entries missing: {len(missing)} of "
          f"{len(rec.request_ids)} requests and {len(missing_webhooks)} of {len(rec.webhook_ids)} webhooks; "
          f"log size {summary['audit_log_size']}, verify ok: {summary['verify'].get('ok')}")
    for problem in problems:
        log(f"PROBLEM: {problem}")
    log("soak drill " + ("PASSED" if not problems else "FAILED"))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
