"""HTTP views (thin): validate, call service.py, shape the answer. Every route is admin-only."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from safeharbor_common.errors import InvalidRequest
from safeharbor_common.tokens import current_session, require_session
from safeharbor_common.web import api_doc, client_ip, json_body, request_id, user_agent

from . import service
from .lint import PROVIDER_KINDS
from .models import TemplateVersion
from .schemas import (
    LintRequest,
    LintResponse,
    RollbackRequest,
    StatusResponse,
    TemplateApplied,
    TemplateCreate,
    TemplateList,
)
from .service import Actor, PushContext

bp = Blueprint("push", __name__)
ADMIN = ("admin",)


def _ctx() -> PushContext:
    ctx: PushContext = current_app.extensions["push"]
    return ctx


def _actor() -> Actor:
    session = current_session()
    return Actor(
        user_id=session.sub, role=session.role, request_id=request_id(), ip=client_ip(), user_agent=user_agent()
    )


def _applied(row: TemplateVersion) -> Response:
    body = TemplateApplied.model_validate(
        {
            "version": row.version,
            "applied": True,
            "provider": row.provider,
            "kind": row.kind,
            "template_sha256": row.template_sha256,
            "author": row.author,
            "created_at": service.rfc3339(row.created_at),
            "applied_at": service.rfc3339(row.applied_at),
            "rolled_back_from": row.rolled_back_from,
        }
    )
    response = jsonify(body.model_dump())
    response.status_code = 201
    return response


@bp.post("/v1/push/lint")
@api_doc(summary="Lint a push template without saving it", request_model=LintRequest, response_model=LintResponse)
@require_session(roles=ADMIN)
def lint_template() -> Response:
    body = json_body(LintRequest)
    result = service.lint(provider=body.provider, kind=body.kind, template=body.template)
    return jsonify({"ok": result.ok, "findings": [f.as_dict() for f in result.findings]})


@bp.get("/v1/push/templates")
@api_doc(
    summary="Template versions (newest first), the approved version per provider and kind, and the defaults",
    response_model=TemplateList,
    query={"provider": "apn or firebase", "kind": "notification, data or apn", "limit": "1..500 (100)"},
)
@require_session(roles=ADMIN)
def list_templates() -> Response:
    provider = request.args.get("provider") or None
    kind = request.args.get("kind") or None
    if provider is not None and provider not in PROVIDER_KINDS:
        raise InvalidRequest("Field 'provider': must be apn or firebase.", extra={"field": "provider"})
    if kind is not None and kind not in {k for kinds in PROVIDER_KINDS.values() for k in kinds}:
        raise InvalidRequest("Field 'kind': must be notification, data or apn.", extra={"field": "kind"})
    try:
        limit = int(request.args.get("limit", "100"))
    except ValueError as exc:
        raise InvalidRequest("Field 'limit': must be an integer.", extra={"field": "limit"}) from exc
    if not 1 <= limit <= 500:
        raise InvalidRequest("Field 'limit': must be between 1 and 500.", extra={"field": "limit"})
    templates = service.list_templates(ctx=_ctx(), provider=provider, kind=kind, limit=limit)
    return jsonify(templates.model_dump())


@bp.put("/v1/push/templates")
@api_doc(
    summary="Lint, store a new version, apply it to Stream and confirm by reading it back",
    request_model=TemplateCreate,
    response_model=TemplateApplied,
    status=201,
)
@require_session(roles=ADMIN)
def put_template() -> Response:
    body = json_body(TemplateCreate)
    row = service.apply_template(
        ctx=_ctx(), provider=body.provider, kind=body.kind, template=body.template, actor=_actor()
    )
    return _applied(row)


@bp.post("/v1/push/templates/rollback")
@api_doc(
    summary="Re-apply a previously approved version as a new version",
    request_model=RollbackRequest,
    response_model=TemplateApplied,
    status=201,
)
@require_session(roles=ADMIN)
def rollback_template() -> Response:
    body = json_body(RollbackRequest)
    row = service.rollback(ctx=_ctx(), provider=body.provider, kind=body.kind, version=body.version, actor=_actor())
    return _applied(row)


@bp.get("/v1/push/status")
@api_doc(
    summary="Per provider: the approved version, what Stream has now, whether they match, drift",
    response_model=StatusResponse,
)
@require_session(roles=ADMIN)
def push_status() -> Response:
    report = service.check_drift(ctx=_ctx())
    metrics = current_app.extensions.get("push_metrics")
    if metrics is not None:
        metrics.record(report)
    return jsonify(report.model_dump())
