"""Storage semantics that matter with several workers: one TOTP code, one job run, one lockout count —
on PostgreSQL (row locks, conditional updates) with concurrent requests from separate app instances."""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

from safeharbor_auth.models import Job
from sqlalchemy.orm import Session as OrmSession

from .conftest import AppFactory, Factory, clock_of, error_code


def _parallel(calls: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_one_totp_code_logs_in_once_under_concurrency(make_app: AppFactory, pg_url: str) -> None:
    workers = [Factory(make_app(DATABASE_URL=pg_url)) for _ in range(4)]
    account = workers[0].user(role="clinician")
    code = account.totp()
    body = {"username": account.username, "password": account.password, "otp": code}
    responses = _parallel([lambda w=w: w.client.post("/v1/auth/login", json=body) for w in workers])
    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] == 1, statuses
    assert all(error_code(r) == "mfa_invalid" for r in responses if r.status_code != 200)


def test_a_job_runs_once_across_runners(make_app: AppFactory, pg_url: str) -> None:
    apps = [make_app(DATABASE_URL=pg_url) for _ in range(3)]
    account = Factory(apps[0]).user(role="patient")
    calls: list[str] = []
    lock = threading.Lock()

    def slow_handler(job: Job, payload: dict[str, Any]) -> None:
        with lock:
            calls.append(job.id)
        time.sleep(0.3)

    for app in apps:
        app.extensions["auth"].jobs.handlers["test.slow"] = slow_handler
    job_id = str(uuid.uuid4())
    now = clock_of(apps[0]).now()
    with OrmSession(apps[0].extensions["auth"].engine) as db, db.begin():
        db.add(Job(id=job_id, user_id=account.id, kind="test.slow", status="pending", attempts=0,
                   next_attempt_at=now, created_at=now, payload="{}"))
    done = _parallel([lambda a=a: a.extensions["auth"].jobs.run_due() for a in apps])
    assert calls == [job_id] and sum(done) == 1


def test_lockout_counts_every_concurrent_failure(make_app: AppFactory, pg_url: str) -> None:
    workers = [Factory(make_app(DATABASE_URL=pg_url, LOGIN_USER_MAX_FAILURES="4", LOGIN_IP_MAX_FAILURES="1000"))
               for _ in range(4)]
    body = {"username": "concurrent-ghost", "password": "Nope-nope-123"}
    _parallel([lambda w=w: w.client.post("/v1/auth/login", json=body) for w in workers])
    locked = workers[0].client.post("/v1/auth/login", json=body)
    assert locked.status_code == 429 and error_code(locked) == "locked_out"
