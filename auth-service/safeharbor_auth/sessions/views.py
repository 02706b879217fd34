"""Sessions' HTTP views: login, refresh, logout, me, JWKS, a user's sessions (admin), the revocation feed."""
from __future__ import annotations

from flask import Response, request
from safeharbor_common.errors import InvalidRequest
from safeharbor_common.service_identity import calling_service, require_service
from safeharbor_common.tokens import SCOPE_BREAK_GLASS, SCOPE_FULL, SCOPE_MFA_ENROLLMENT
from safeharbor_common.web import api_doc, client_ip, json_body

from ..http import ADMIN, AUTH_API, FULL_OR_BREAK_GLASS, auth_context, claims, json_response, live, live_session
from ..revocations import parse_cursor
from . import schemas, service
from .login import login as log_in

bp = AUTH_API
VERIFIERS = ("gateway", "keydir", "audit", "push")


@bp.post("/v1/auth/login")
@api_doc(summary="Log in with password (and TOTP or recovery code)", request_model=schemas.LoginRequest,
         response_model=schemas.LoginResponse, auth="none")
def login() -> Response:
    body = json_body(schemas.LoginRequest)
    return json_response(log_in(ctx=auth_context(), username=body.username, password=body.password, otp=body.otp,
                                ip=client_ip()))


@bp.post("/v1/auth/refresh")
@api_doc(summary="New access token for a live session (slides the idle timeout)",
         response_model=schemas.LoginResponse)
@live_session(scopes=FULL_OR_BREAK_GLASS)
def refresh() -> Response:
    session, user = live()
    return json_response(service.refresh(ctx=auth_context(), claims=claims(), session=session, user=user))


@bp.post("/v1/auth/logout")
@api_doc(summary="End this session", status=204)
@live_session(scopes=(SCOPE_FULL, SCOPE_BREAK_GLASS, SCOPE_MFA_ENROLLMENT))
def logout() -> Response:
    session, user = live()
    service.logout(ctx=auth_context(), session=session, user=user)
    return Response(status=204)


@bp.get("/v1/auth/me")
@api_doc(summary="The caller and their session", response_model=schemas.MeResponse)
@live_session(scopes=FULL_OR_BREAK_GLASS)
def me() -> Response:
    session, user = live()
    return json_response(service.me(ctx=auth_context(), claims=claims(), session=session, user=user))


@bp.get("/.well-known/jwks.json")
@api_doc(summary="Public keys of session tokens", auth="none")
def jwks() -> Response:
    response = json_response(auth_context().keys.jwks())
    response.headers["Cache-Control"] = "public, max-age=30"
    return response


@bp.get("/v1/users/<user_id>/sessions")
@api_doc(summary="A user's sessions (admin)", response_model=schemas.SessionList)
@live_session(roles=ADMIN)
def list_sessions(user_id: str) -> Response:
    return json_response(service.list_sessions(ctx=auth_context(), user_id=user_id))


@bp.delete("/v1/users/<user_id>/sessions/<session_id>")
@api_doc(summary="End one of a user's sessions (admin)", status=204)
@live_session(roles=ADMIN)
def revoke_session(user_id: str, session_id: str) -> Response:
    service.revoke_user_session(ctx=auth_context(), actor=claims(), user_id=user_id, session_id=session_id)
    return Response(status=204)


@bp.get("/internal/v1/revocations")
@api_doc(summary="Sessions ended and tokens retired before they expire (gateway and every verifying service)",
         response_model=schemas.RevocationFeed,
         query={"since": "cursor from the previous answer; 0 or absent for all still relevant"}, auth="service")
@require_service(*VERIFIERS)
def revocations() -> Response:
    try:
        since = parse_cursor(request.args.get("since"))
    except ValueError as exc:
        raise InvalidRequest("Query 'since': must be a cursor from a previous answer.",
                             extra={"field": "since"}) from exc
    return json_response(service.revocation_feed(ctx=auth_context(), since_ms=since))


@bp.post("/internal/v1/revocations/reuse")
@api_doc(summary="A verifier saw a token retired by refresh after its grace: end that session (reuse)",
         request_model=schemas.ReuseReport, auth="service")
@require_service(*VERIFIERS)
def report_reuse() -> Response:
    body = json_body(schemas.ReuseReport)
    ended = service.report_token_reuse(ctx=auth_context(), sid=body.sid, jti=body.jti,
                                       reporter=calling_service() or "unknown")
    return json_response({"revoked": ended})
