"""The periodic drift check: one background thread per process, one checking process per deployment.

Every PUSH_DRIFT_INTERVAL seconds each worker tries to take (or renew) the "drift-checker" lease row;
only the holder reads Stream and records drift, so several server workers and replicas do not all
call Stream or emit duplicate events. A dead holder's lease expires and another process takes over.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from flask import Flask

from .errors import StreamFailure
from .models import LEASE_DRIFT
from .service import PushContext, acquire_lease, apply_defaults, check_drift, unapproved_slots

_log = logging.getLogger("safeharbor.push.drift")


class DriftChecker:
    def __init__(self, app: Flask, *, interval: float, lease_seconds: float) -> None:
        self.app = app
        self.interval = interval
        self.lease_seconds = lease_seconds
        self._pid = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checks = 0  # checks this process ran (it held the lease), for tests and metrics
        self.holder = ""
        self.defaults_ready = False
        self.apply_defaults = bool(app.config.get("PUSH_APPLY_DEFAULTS_ON_START"))

    def ensure_started(self) -> None:
        """Starts this process's thread once (after a fork the child starts its own)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._stop = threading.Event()
            # Unique per process and start, so a restarted or forked worker never reuses a lease blindly.
            self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            self._thread = threading.Thread(target=self._run, name="push-drift-checker", daemon=True)
            self._thread.start()
            self._pid = os.getpid()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pid = -1

    def _run(self) -> None:
        # While the defaults are not in Stream yet, retry every few seconds instead of every interval.
        while not self._stop.wait(self.interval if self.defaults_ready else min(self.interval, 5.0)):
            self.ensure_defaults()
            self.run_once()

    def ensure_defaults(self) -> bool:
        """True once every slot has an approved template. Otherwise the process holding the drift-checker
        lease (one per deployment, so workers and replicas starting together do not each apply) applies
        the generic PHI-safe ones; the others wait for the database to say so."""
        if self.defaults_ready or not self.apply_defaults:
            return True
        ctx: PushContext = self.app.extensions["push"]
        try:
            if unapproved_slots(ctx=ctx) and acquire_lease(
                ctx=ctx, name=LEASE_DRIFT, holder=self._holder(), ttl=self.lease_seconds
            ):
                with self.app.app_context():
                    apply_defaults(ctx=ctx)
            self.defaults_ready = not unapproved_slots(ctx=ctx)
        except StreamFailure:
            _log.warning("push defaults: Stream unavailable, will retry")
        except Exception:  # noqa: BLE001 - never fail the start; /readyz says not ready
            _log.exception("push defaults failed")
        return self.defaults_ready

    def _holder(self) -> str:
        if not self.holder:
            self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        return self.holder

    def run_once(self) -> bool:
        """One round: True when this process held the lease and completed a check."""
        ctx: PushContext = self.app.extensions["push"]
        metrics = self.app.extensions.get("push_metrics")
        try:
            if not acquire_lease(ctx=ctx, name=LEASE_DRIFT, holder=self._holder(), ttl=self.lease_seconds):
                return False
            with self.app.app_context():
                report = check_drift(ctx=ctx)
        except StreamFailure as exc:
            _log.warning("drift check: Stream unavailable")
            if metrics is not None:
                metrics.checks.labels(exc.code).inc()  # upstream_error or service_unavailable
            return False
        except Exception:  # noqa: BLE001 - the checker thread must survive any one failure
            _log.exception("drift check failed")
            if metrics is not None:
                metrics.checks.labels("error").inc()
            return False
        self.checks += 1
        if metrics is not None:
            metrics.record(report)
        return True
