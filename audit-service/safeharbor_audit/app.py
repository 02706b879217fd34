"""Application factory (served by `python -m safeharbor_common.serving safeharbor_audit.app:create_app`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app
from safeharbor_common import service_identity, tokens, web
from safeharbor_common.db import create_db_engine, enable_sqlite_immediate
from sqlalchemy import select

from . import compliance_api
from .api import bp
from .config import load_config
from .models import log_head
from .phi import PhiCipher
from .store import AuditLog


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """`test_config`: `ENVIRON` (a dict read instead of os.environ) and/or config keys to override."""
    app = Flask(__name__)
    app.config.update(load_config(test_config.get("ENVIRON") if test_config else None))
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k != "ENVIRON"})

    web.init_app(app, service_name="audit", readiness_check=_readiness)
    service_identity.init_app(app)
    tokens.init_app(app)
    app.extensions["audit_log"] = build_log(app.config)
    app.register_blueprint(bp)
    compliance_api.init_app(app, test_config.get("ENVIRON") if test_config else None)
    return app


def build_log(config: Mapping[str, Any]) -> AuditLog:
    engine = enable_sqlite_immediate(create_db_engine(config["DATABASE_URL"]))
    return AuditLog(
        engine=engine,
        cipher=PhiCipher(
            key_id=config["AUDIT_DATA_KEY_ID"],
            key=config["AUDIT_DATA_KEY"],
            previous=config.get("AUDIT_DATA_KEYS_PREVIOUS") or {},
        ),
        signing_key=config["AUDIT_SIGNING_KEY"],
        origin=config["AUDIT_LOG_ORIGIN"],
        checkpoint_interval=float(config["AUDIT_CHECKPOINT_INTERVAL"]),
        verify_workers=int(config.get("AUDIT_VERIFY_WORKERS", 1)),
    )


def _readiness() -> None:
    log: AuditLog = current_app.extensions["audit_log"]
    with log.engine.connect() as conn:
        conn.execute(select(log_head.c.size).where(log_head.c.id == 1)).one()
    log.ensure_ticker()
