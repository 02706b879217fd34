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
from .service import PushContext, acquire_lease, check_drift

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
        while not self._stop.wait(self.interval):
            self.run_once()

    def run_once(self) -> bool:
        """One round: True when this process held the lease and completed a check."""
        ctx: PushContext = self.app.extensions["push"]
        metrics = self.app.extensions.get("push_metrics")
        try:
            if not self.holder:
                self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            if not acquire_lease(ctx=ctx, name=LEASE_DRIFT, holder=self.holder, ttl=self.lease_seconds):
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
