"""HTTP views of the compliance report (issue 17): thin, like api.py."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from safeharbor_common import web
from safeharbor_common.errors import NotFound
from safeharbor_common.tokens import current_session, require_session

from . import compliance
from .api import READERS, _record_read
from .compliance import ComplianceReporter

bp = Blueprint("compliance", __name__)


def _reporter() -> ComplianceReporter:
    reporter: ComplianceReporter = current_app.extensions["compliance"]
    return reporter


@bp.get("/v1/compliance/report")
@require_session(roles=READERS)
@web.api_doc(summary="HIPAA §164.312 report, measured now in every service, signed (Ed25519), its hash audited")
def report() -> Response:
    session = current_session()
    document = _reporter().produce(trigger="request", actor=session.user_id, role=session.role,
                                   request_id=web.request_id())
    return jsonify(document.model_dump() if document is not None else None)


@bp.get("/v1/compliance/report/latest")
@require_session(roles=READERS)
@web.api_doc(summary="The latest kept report (`?trigger=schedule`: the latest daily one)",
             query={"trigger": "request|schedule"})
def latest() -> Response:
    trigger = request.args.get("trigger") or None
    document = _reporter().latest(trigger=trigger)
    if document is None:
        raise NotFound("No report has been kept yet.")
    _record_read("compliance", report_id=document.report["report_id"], trigger=trigger)
    return jsonify(document.model_dump())


@bp.get("/v1/compliance/report/key")
@require_session(roles=READERS)
@web.api_doc(summary="Verifier key of the reports (C2SP vkey, text/plain)")
def key() -> Response:
    return Response(_reporter().signer.verifier_key + "\n", mimetype="text/plain")


def init_app(app: Flask, environ: Mapping[str, str] | None) -> None:
    settings: dict[str, Any] = compliance.load_config(environ)
    for name, value in settings.items():
        app.config.setdefault(name, value)  # a test_config override wins
    reporter = compliance.build_reporter(
        log=app.extensions["audit_log"], config=app.config, identity=app.extensions["service_signer"])
    app.extensions["compliance"] = reporter
    app.before_request(reporter.ensure_scheduler)  # in each server worker, after the fork
    app.register_blueprint(bp)
