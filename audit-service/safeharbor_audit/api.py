"""HTTP views: parse, authorise, call service, shape the answer. Nothing else."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from safeharbor_common import web
from safeharbor_common.roles import Role
from safeharbor_common.service_identity import calling_service, require_service
from safeharbor_common.tokens import current_session, require_session

from . import service
from .errors import WebhooksNotConfigured
from .schemas import (
    ConsistencyProofResponse,
    EntriesResponse,
    InclusionProofResponse,
    IngestRequest,
    IngestResponse,
    VerifyResponse,
    WebhookResponse,
)
from .store import AuditLog

bp = Blueprint("audit", __name__)
READERS = (Role.AUDITOR.value, Role.ADMIN.value)
EMITTERS = ("gateway", "auth", "keydir", "audit", "push")


def _log() -> AuditLog:
    log: AuditLog = current_app.extensions["audit_log"]
    log.ensure_ticker()
    return log


def _record_read(kind: str, **meta: Any) -> None:
    """Every auditor read is itself an entry, recorded before the answer (a failure here answers 503)."""
    session = current_session()
    service.record_read(
        log=_log(),
        action=f"audit.read.{kind}",
        actor=session.user_id,
        role=session.role,
        resource=request.path,
        request_id=web.request_id(),
        ip=web.client_ip(),
        user_agent=web.user_agent(),
        meta={k: v for k, v in meta.items() if v is not None},
    )


def _reveal_phi() -> bool:
    # Minimum necessary: admins may read the trail, only auditors see the PHI-bearing fields.
    return current_session().role == Role.AUDITOR.value


@bp.post("/internal/v1/audit/events")
@require_service(*EMITTERS)
@web.api_doc(
    summary="Ingest a batch of audit events",
    request_model=IngestRequest,
    response_model=IngestResponse,
    auth="service",
)
def ingest() -> Response:
    body = web.json_body(IngestRequest)
    caller = calling_service() or ""
    result = service.ingest_events(
        log=_log(), events=body.events, caller=caller, max_events=current_app.config["AUDIT_INGEST_MAX_EVENTS"]
    )
    return jsonify(result.model_dump())


@bp.get("/internal/v1/audit/phi-key")
@require_service(*EMITTERS)
@web.api_doc(summary="The X25519 key emitters seal PHI fields to (HPKE), signed by this service", auth="service")
def phi_key() -> Response:
    return jsonify(_log().cipher.public_key.signed(current_app.config["SERVICE_PRIVATE_KEY"]))


@bp.get("/v1/audit/checkpoint")
@require_session(roles=READERS)
@web.api_doc(summary="Latest signed checkpoint (C2SP signed note, text/plain)")
def checkpoint() -> Response:
    row = service.latest_checkpoint(log=_log())
    _record_read("checkpoint", size=int(row.size))
    return Response(row.note, mimetype="text/plain", headers={"Cache-Control": "no-store"})


@bp.get("/v1/audit/checkpoint/key")
@require_session(roles=READERS)
@web.api_doc(summary="Verifier key of the checkpoints (C2SP vkey, text/plain)")
def checkpoint_key() -> Response:
    return Response(_log().verifier_key + "\n", mimetype="text/plain")


@bp.get("/v1/audit/entries")
@require_session(roles=READERS)
@web.api_doc(
    summary="Query the audit trail",
    response_model=EntriesResponse,
    query={
        "actor": "",
        "action": "",
        "resource": "",
        "outcome": "",
        "source": "",
        "request_id": "",
        "since": "RFC 3339",
        "until": "RFC 3339 (exclusive)",
        "cursor": "",
        "limit": "1..1000",
    },
)
def entries() -> Response:
    args = request.args
    filters = {k: args.get(k) for k in ("actor", "action", "resource", "outcome", "source", "request_id")}
    page = service.list_entries(
        log=_log(),
        filters=filters,
        since=service.parse_time(args.get("since"), "since"),
        until=service.parse_time(args.get("until"), "until"),
        cursor=args.get("cursor"),
        limit=service.parse_int(args.get("limit"), "limit", default=service.DEFAULT_PAGE, minimum=1),
        reveal_phi=_reveal_phi(),
    )
    _record_read(
        "entries",
        filters={k: v[:128] for k, v in filters.items() if v},
        since=args.get("since", "")[:40] or None,
        until=args.get("until", "")[:40] or None,
        returned=len(page.entries),
    )
    return jsonify(page.model_dump(warnings=False))  # an entry changed in the database is shown as stored


@bp.get("/v1/audit/proof/inclusion")
@require_session(roles=READERS)
@web.api_doc(
    summary="Inclusion proof of an entry (RFC 6962 order)",
    response_model=InclusionProofResponse,
    query={"index": "leaf index = seq", "size": "tree size (default: latest checkpoint)"},
)
def proof_inclusion() -> Response:
    index = service.parse_int(request.args.get("index"), "index")
    size_arg = request.args.get("size")
    size = service.parse_int(size_arg, "size", minimum=1) if size_arg else None
    proof = service.inclusion_proof(log=_log(), index=index, size=size)
    _record_read("proof", index=index, size=proof.size)
    return jsonify(proof.model_dump())


@bp.get("/v1/audit/proof/consistency")
@require_session(roles=READERS)
@web.api_doc(
    summary="Consistency proof between two tree sizes",
    response_model=ConsistencyProofResponse,
    query={"from": "older size", "to": "newer size"},
)
def proof_consistency() -> Response:
    size1 = service.parse_int(request.args.get("from"), "from")
    size2 = service.parse_int(request.args.get("to"), "to")
    proof = service.consistency_proof(log=_log(), size1=size1, size2=size2)
    _record_read("consistency", size1=size1, size2=size2)
    return jsonify(proof.model_dump(by_alias=True))


@bp.get("/v1/audit/verify")
@require_session(roles=READERS)
@web.api_doc(summary="Recompute chain and tree, check signed checkpoints", response_model=VerifyResponse)
def verify() -> Response:
    report = service.verify_log(log=_log())
    _record_read("verify", ok=report.ok, size=report.size, first_bad_seq=report.first_bad_seq)
    return jsonify(report.as_dict())


@bp.get("/v1/audit/export")
@require_session(roles=READERS)
@web.api_doc(
    summary="Export as JSON Lines, CEF or RFC 5424 syslog (streamed)",
    query={"format": "jsonl|cef|syslog", "since": "RFC 3339", "until": "RFC 3339"},
)
def export() -> Response:
    fmt = request.args.get("format", "jsonl")
    lines = service.export_lines(
        log=_log(),
        fmt=fmt,
        since=service.parse_time(request.args.get("since"), "since"),
        until=service.parse_time(request.args.get("until"), "until"),
        reveal_phi=_reveal_phi(),
    )
    _record_read("export", format=fmt, since=request.args.get("since", "")[:40] or None,
                 until=request.args.get("until", "")[:40] or None)
    mimetype = "application/x-ndjson" if fmt == "jsonl" else "text/plain"
    filename = f"audit-export.{'jsonl' if fmt == 'jsonl' else 'log'}"
    return Response(
        stream_with_context(lines),
        mimetype=mimetype,
        headers={"Content-Disposition": f"attachment; filename={filename}", "Cache-Control": "no-store"},
    )


@bp.post("/v1/webhooks/stream")
@web.api_doc(summary="Stream webhook (X-Signature HMAC-SHA256)", response_model=WebhookResponse, auth="signature")
def stream_webhook() -> tuple[Response, int]:
    secret = current_app.config.get("STREAM_API_SECRET")
    if secret is None:
        raise WebhooksNotConfigured()
    result = service.record_stream_webhook(
        log=_log(),
        raw_body=request.get_data(cache=False),
        content_encoding=request.headers.get("Content-Encoding"),
        signature=request.headers.get("X-Signature"),
        webhook_id=request.headers.get("X-Webhook-Id"),
        attempt=request.headers.get("X-Webhook-Attempt"),
        secret=secret.reveal(),
        request_id=web.request_id(),
    )
    return jsonify(result.model_dump()), 200
