"""Durable retries for work outside our database (Stream, keydir): the deprovisioning job runner.

A job row is claimed with a conditional UPDATE (status pending, due, lease free) so several server
workers and replicas can run the loop without running a job twice at the same moment; a crashed claimer's
lease simply runs out. Failures back off exponentially with jitter up to JOB_BACKOFF_MAX. Jobs are
idempotent (revoke, deactivate, reactivate), so a rare double run after a lease timeout is harmless.
"""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import requests
from safeharbor_common.internal_http import internal_session
from safeharbor_common.service_identity import ServiceTokenSigner
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session as OrmSession

from .context import AuthContext
from .models import Job

LEASE_SECONDS = 60
_log = logging.getLogger("safeharbor.auth.jobs")

# Job kinds (rows in the jobs table; handlers registered by the app factory).
STREAM_DEACTIVATE = "stream.deactivate"
STREAM_REACTIVATE = "stream.reactivate"
STREAM_REVOKE_TOKENS = "stream.revoke_tokens"
STREAM_SYNC_USER = "stream.sync_user"
STREAM_BG_REMOVE = "stream.bg_remove_member"
KEYDIR_REVOKE = "keydir.revoke_all"


class RetryableJobError(Exception):
    """The job did not complete; `code` says why (no PHI) and it will be retried."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code[:200]


Handler = Callable[[Job, dict[str, Any]], None]


def enqueue(
    db: OrmSession, *, user_id: str, kind: str, now: datetime, payload: dict[str, Any] | None = None
) -> Job:
    """Adds a job in the caller's transaction: it exists exactly when what it follows up was committed."""
    job = Job(
        id=str(uuid.uuid4()),
        user_id=user_id,
        kind=kind,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        payload=json.dumps(payload or {}),
    )
    db.add(job)
    return job


def try_user_jobs_now(ctx: AuthContext, user_id: str) -> None:
    """Tries this user's pending jobs now, so a healthy Stream/keydir makes the answer say `done`."""
    if ctx.jobs is not None:
        ctx.jobs.run_due(user_id=user_id, budget_seconds=ctx.settings.stream_timeout * 2)


class JobRunner:
    def __init__(
        self,
        *,
        ctx: AuthContext,
        poll_interval: float,
        backoff_max: float,
        periodic: list[Callable[[], object]] | None = None,
    ) -> None:
        self._ctx = ctx
        self._engine = ctx.engine
        self._poll_interval = poll_interval
        self._backoff_max = backoff_max
        self.handlers: dict[str, Handler] = {}
        self.periodic: list[Callable[[], object]] = list(periodic or [])
        self._owner = str(uuid.uuid4())
        self._pid = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()

    # -- one pass -----------------------------------------------------------------------------------

    def _claim(self, job_id: str, now: datetime) -> bool:
        with OrmSession(self._engine) as db, db.begin():
            result = db.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.status == "pending",
                    Job.next_attempt_at <= now,
                    or_(Job.lease_until.is_(None), Job.lease_until < now),
                )
                .values(lease_until=now + timedelta(seconds=LEASE_SECONDS), lease_owner=self._owner)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def run_due(self, *, user_id: str | None = None, budget_seconds: float = 30.0, limit: int = 20) -> int:
        """Runs due jobs (optionally one user's) until done or the time budget is spent. Returns count done."""
        started = time.monotonic()
        now = self._ctx.clock.now()
        query = select(Job.id).where(
            Job.status == "pending",
            Job.next_attempt_at <= now,
            or_(Job.lease_until.is_(None), Job.lease_until < now),
        )
        if user_id is not None:
            query = query.where(Job.user_id == user_id)
        with OrmSession(self._engine) as db:
            ids = list(db.scalars(query.order_by(Job.created_at).limit(limit)).all())
        done = 0
        for job_id in ids:
            if time.monotonic() - started > budget_seconds:
                break
            if not self._claim(job_id, self._ctx.clock.now()):
                continue
            done += self._run_one(job_id)
        return done

    def _run_one(self, job_id: str) -> int:
        with OrmSession(self._engine, expire_on_commit=False) as db:
            job = db.get(Job, job_id)
        if job is None:
            return 0
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                raise RetryableJobError("no_handler")  # e.g. Stream not configured on this process
            handler(job, json.loads(job.payload or "{}"))
        except RetryableJobError as exc:
            self._failed(job, exc.code)
            return 0
        except Exception as exc:  # noqa: BLE001 - any failure is retried; the type name is logged, not text
            self._failed(job, f"error:{type(exc).__name__}")
            return 0
        self._succeeded(job)
        return 1

    def _failed(self, job: Job, code: str) -> None:
        attempts = job.attempts + 1
        delay = min(self._backoff_max, 0.5 * 2 ** min(attempts, 16)) * (0.5 + random.random() / 2)
        with OrmSession(self._engine) as db, db.begin():
            db.execute(
                update(Job)
                .where(Job.id == job.id, Job.lease_owner == self._owner)
                .values(
                    attempts=attempts,
                    last_error=code,
                    next_attempt_at=self._ctx.clock.now() + timedelta(seconds=delay),
                    lease_until=None,
                    lease_owner=None,
                )
            )
        _log.warning("job failed; will retry", extra={"fields": {"job_id": job.id, "kind": job.kind, "error": code}})

    def _succeeded(self, job: Job) -> None:
        now = self._ctx.clock.now()
        with OrmSession(self._engine) as db, db.begin():
            result = db.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == "pending")
                .values(status="done", done_at=now, attempts=job.attempts + 1, lease_until=None, last_error=None)
                .execution_options(synchronize_session=False)
            )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            self._ctx.audit.record(
                action=f"user.deprovision.{job.kind}",
                actor="svc:auth",
                resource=f"user:{job.user_id}",
                outcome="success",
                severity="high" if job.kind != STREAM_SYNC_USER else "info",
                meta={"user_id": job.user_id, "job_id": job.id, "attempts": job.attempts + 1},
            )

    # -- the background loop ------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Starts this process's loop once (after the server's fork: never in its main process)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            threading.Thread(target=self._loop, name="auth-jobs", daemon=True).start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
                for task in self.periodic:
                    task()
            except Exception as exc:  # noqa: BLE001 - the loop must survive a database hiccup
                _log.warning("job loop error", extra={"fields": {"error": type(exc).__name__}})
            self._wake.wait(self._poll_interval * (0.8 + random.random() * 0.4))
            self._wake.clear()


# -- keydir ---------------------------------------------------------------------------------------------


def keydir_revoke_all(*, ctx: AuthContext, signer: ServiceTokenSigner) -> Handler:
    """`POST /internal/v1/keys/{user_id}/revoke-all` on keydir; 2xx is done, anything else is retried."""
    http = internal_session()

    def handle(job: Job, payload: dict[str, Any]) -> None:
        url = f"{ctx.settings.keydir_service_url}/internal/v1/keys/{job.user_id}/revoke-all"
        headers = signer.headers_for("keydir")
        try:
            response = http.post(
                url,
                json={"reason": str(payload.get("reason", "user_deactivated"))},
                headers=headers,
                timeout=(1.0, ctx.settings.stream_timeout),
            )
        except requests.RequestException as exc:
            raise RetryableJobError(f"keydir_unreachable:{type(exc).__name__}") from exc
        if not 200 <= response.status_code < 300:
            raise RetryableJobError(f"keydir_http_{response.status_code}")

    return handle
