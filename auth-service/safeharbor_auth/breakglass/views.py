"""Break-glass HTTP views."""
from __future__ import annotations

from flask import Response, request
from safeharbor_common.errors import InvalidRequest
from safeharbor_common.web import api_doc, client_ip, json_body

from ..http import ADMIN, CLINICIAN, STREAM_API, auth_context, claims, json_response, live, live_session
from . import schemas, service

bp = STREAM_API


@bp.post("/v1/auth/break-glass")
@api_doc(summary="Emergency, time-boxed access to one channel (clinician with MFA)", status=201,
         request_model=schemas.BreakGlassOpen, response_model=schemas.BreakGlassOpened)
@live_session(roles=CLINICIAN)
def open_break_glass() -> Response:
    body = json_body(schemas.BreakGlassOpen)
    _, user = live()
    opened = service.open_break_glass(ctx=auth_context(), user=user, channel_cid=body.scope.channel_cid,
                                      reason=body.reason, otp=body.otp, ip=client_ip())
    return json_response(opened, 201)


@bp.get("/v1/break-glass")
@api_doc(summary="Break-glass sessions, open and past (admin)", response_model=schemas.BreakGlassList,
         query={"status": "open or closed"})
@live_session(roles=ADMIN)
def list_break_glass() -> Response:
    status = request.args.get("status")
    if status not in (None, "open", "closed"):
        raise InvalidRequest("Query 'status': must be open or closed.", extra={"field": "status"})
    return json_response(service.list_break_glass(ctx=auth_context(), status=status))


@bp.post("/v1/break-glass/<bg_id>/review")
@api_doc(summary="Record an admin's review of a break-glass session", request_model=schemas.BreakGlassReview,
         response_model=schemas.BreakGlassRead)
@live_session(roles=ADMIN)
def review_break_glass(bg_id: str) -> Response:
    body = json_body(schemas.BreakGlassReview)
    return json_response(service.review_break_glass(ctx=auth_context(), reviewer=claims(), bg_id=bg_id,
                                                    note=body.note))
