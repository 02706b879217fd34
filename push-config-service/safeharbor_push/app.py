"""Application factory (served by `python -m safeharbor_common.serving safeharbor_push.app:create_app`)."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app
from prometheus_client import Counter, Gauge
from safeharbor_common import audit_recorder, service_identity, tokens, web
from safeharbor_common.db import create_db_engine
from safeharbor_common.errors import NotReady
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from . import compliance
from .api import bp
from .config import load_config
from .drift import DriftChecker
from .models import Lease
from .schemas import StatusResponse
from .service import PushContext, unapproved_slots
from .stream import StreamPushSettings

_log = logging.getLogger("safeharbor.push")


class PushMetrics:
    def __init__(self, registry: Any) -> None:
        self.checks = Counter(
            "push_drift_checks_total", "Drift checks by outcome.", ["outcome"], registry=registry
        )
        self.in_sync = Gauge(
            "push_template_in_sync",
            "1 when Stream holds the approved template (0 when not, or none is approved).",
            ["provider", "kind"],
            registry=registry,
        )
        self.phi_safe = Gauge(
            "push_stream_template_phi_safe",
            "1 when the template Stream holds now passes the PHI linter.",
            ["provider", "kind"],
            registry=registry,
        )

    def record(self, report: StatusResponse) -> None:
        self.checks.labels("ok").inc()
        for provider, entry in report.providers.items():
            for kind, slot in entry.kinds.items():
                self.in_sync.labels(provider, kind).set(1 if slot.in_sync else 0)
                self.phi_safe.labels(provider, kind).set(1 if slot.stream_phi_safe else 0)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """`test_config`: `ENVIRON` (a dict read instead of os.environ) and/or config keys to override.

    Tests may pass `STREAM_CLIENT` (anything with apply/read) instead of the real Stream SDK client."""
    app = Flask(__name__)
    app.config.update(load_config(test_config.get("ENVIRON") if test_config else None))
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k != "ENVIRON"})

    web.init_app(app, service_name="push", readiness_check=_readiness)
    service_identity.init_app(app)
    tokens.init_app(app)
    _init_audit(app)
    audit_recorder.init_app(app)  # fails closed: a change that cannot be audited is refused (503)

    engine = create_db_engine(app.config["DATABASE_URL"])
    stream = app.config.get("STREAM_CLIENT") or StreamPushSettings(
        api_key=app.config["STREAM_API_KEY"],
        api_secret=app.config["STREAM_API_SECRET"].reveal(),
        base_url=app.config["STREAM_CHAT_URL"],
        timeout=app.config["STREAM_TIMEOUT"],
    )
    app.extensions["push"] = PushContext(
        app=app, engine=engine, sessions=sessionmaker(engine, expire_on_commit=False), stream=stream
    )
    app.extensions["push_metrics"] = PushMetrics(app.extensions["metrics"].registry)
    checker = DriftChecker(
        app, interval=app.config["PUSH_DRIFT_INTERVAL"], lease_seconds=app.config["PUSH_DRIFT_LEASE_SECONDS"]
    )
    app.extensions["push_drift"] = checker
    checker.ensure_defaults()  # at every start; the checker thread retries while Stream is down
    if app.config["PUSH_DRIFT_CHECK_ENABLED"]:
        # Gunicorn builds the app in each worker (no preload), so this starts one thread per worker;
        # the pid guard restarts it in a child if the app was built before a fork.
        checker.ensure_started()
        app.before_request(checker.ensure_started)
    app.register_blueprint(bp)
    compliance.init_app(app)
    return app


def _init_audit(app: Flask) -> None:
    try:
        from safeharbor_common import audit_emitter
    except ImportError:  # pragma: no cover - the emitter ships with safeharbor-common now
        _log.warning("audit emitter unavailable: domain events are only logged")
        return
    audit_emitter.init_app(app)


def _readiness() -> None:
    ctx: PushContext = current_app.extensions["push"]
    with ctx.sessions() as session:
        session.execute(select(Lease.name).limit(1)).all()
    checker: DriftChecker = current_app.extensions["push_drift"]
    if checker.apply_defaults and not checker.defaults_ready:  # the database only: no Stream call here
        missing = unapproved_slots(ctx=ctx)
        if missing:
            raise NotReady(reasons=[f"no approved PHI-safe push template in Stream for {p}/{k}" for p, k in missing])
        checker.defaults_ready = True
