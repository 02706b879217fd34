"""Application factory (served by `python -m safeharbor_common.serving safeharbor_keydir.app:create_app`)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app
from safeharbor_common import audit_emitter, audit_recorder, service_identity, tokens, web
from safeharbor_common.db import create_db_engine

from . import compliance
from .api import bp
from .config import load_config
from .errors import AuditUnavailable
from .log import TransparencyLog


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """`test_config`: `ENVIRON` (a dict read instead of os.environ) and/or config keys to override."""
    app = Flask(__name__)
    app.config.update(load_config(test_config.get("ENVIRON") if test_config else None))
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k != "ENVIRON"})

    web.init_app(app, service_name="keydir", readiness_check=_readiness)
    service_identity.init_app(app)
    tokens.init_app(app)
    audit_emitter.init_app(app)
    # Events after a change already in the transparency log are logged when they fail; required ones raise.
    audit_recorder.init_app(app, fail_closed=False, unavailable=AuditUnavailable)
    app.extensions["keydir_log"] = build_log(app.config)
    app.register_blueprint(bp)
    compliance.init_app(app)
    return app


def build_log(config: Mapping[str, Any]) -> TransparencyLog:
    return TransparencyLog(
        engine=create_db_engine(config["DATABASE_URL"]),
        signing_key=config["KEYDIR_SIGNING_KEY"],
        origin=config["KEYDIR_LOG_ORIGIN"],
    )


def _readiness() -> None:
    log: TransparencyLog = current_app.extensions["keydir_log"]
    log.head_size()
