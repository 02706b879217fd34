"""HTTP views of auth-service: thin wrappers over `service` (and `streaming` for Stream and channels)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, g, jsonify, request
from safeharbor_common.errors import Forbidden, InvalidRequest
from safeharbor_common.roles import Role
from safeharbor_common.service_identity import calling_service, require_service
from safeharbor_common.tokens import (
    SCOPE_BREAK_GLASS,
    SCOPE_FULL,
    SCOPE_MFA_ENROLLMENT,
    SessionClaims,
    current_session,
    require_session,
)
from safeharbor_common.web import api_doc, client_ip, json_body

from . import schemas, service
from .context import services
from .revocations import parse_cursor

bp = Blueprint("auth", __name__)

F = TypeVar("F", bound=Callable[..., Any])
ADMIN = (Role.ADMIN.value,)
FULL_OR_BREAK_GLASS = (SCOPE_FULL, SCOPE_BREAK_GLASS)


def live_session(*, roles: Iterable[str] | None = None, scopes: Iterable[str] = (SCOPE_FULL,)) -> Callable[[F], F]:
    """require_session (signature, claims, role, scope) plus our own table: revoked, expired, deactivated."""

    def decorator(view: F) -> F:
        @require_session(roles=roles, scopes=scopes)
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.auth_current = service.current(current_session())
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator


def claims() -> SessionClaims:
    return current_session()


def _json(body: Any, status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


# -- sessions -------------------------------------------------------------------------------------------


@bp.post("/v1/auth/login")
@api_doc(summary="Log in with password (and TOTP or recovery code)", request_model=schemas.LoginRequest,
         response_model=schemas.LoginResponse, auth="none")
def login() -> Response:
    body = json_body(schemas.LoginRequest)
    return _json(service.login(username=body.username, password=body.password, otp=body.otp, ip=client_ip()))


@bp.post("/v1/auth/refresh")
@api_doc(summary="New access token for a live session (slides the idle timeout)",
         response_model=schemas.LoginResponse)
@live_session(scopes=FULL_OR_BREAK_GLASS)
def refresh() -> Response:
    return _json(service.refresh(claims=claims()))


@bp.post("/v1/auth/logout")
@api_doc(summary="End this session", status=204)
@live_session(scopes=(SCOPE_FULL, SCOPE_BREAK_GLASS, SCOPE_MFA_ENROLLMENT))
def logout() -> Response:
    service.logout(claims=claims())
    return Response(status=204)


@bp.get("/v1/auth/me")
@api_doc(summary="The caller and their session", response_model=schemas.MeResponse)
@live_session(scopes=FULL_OR_BREAK_GLASS)
def me() -> Response:
    return _json(service.me(claims=claims()))


@bp.post("/v1/auth/mfa/totp/enroll")
@api_doc(summary="Start TOTP enrolment", response_model=schemas.TotpEnrollResponse)
@live_session(scopes=(SCOPE_FULL, SCOPE_MFA_ENROLLMENT))
def totp_enroll() -> Response:
    return _json(service.totp_enroll(claims=claims()))


@bp.post("/v1/auth/mfa/totp/confirm")
@api_doc(summary="Confirm TOTP enrolment with a code; returns recovery codes once",
         request_model=schemas.TotpConfirmRequest, response_model=schemas.TotpConfirmResponse)
@live_session(scopes=(SCOPE_FULL, SCOPE_MFA_ENROLLMENT))
def totp_confirm() -> Response:
    body = json_body(schemas.TotpConfirmRequest)
    return _json(service.totp_confirm(claims=claims(), code=body.code))


@bp.get("/.well-known/jwks.json")
@api_doc(summary="Public keys of session tokens", auth="none")
def jwks() -> Response:
    response = _json(services().keys.jwks())
    response.headers["Cache-Control"] = "public, max-age=30"
    return response


# -- users ----------------------------------------------------------------------------------------------


@bp.post("/v1/users")
@api_doc(summary="Create a user (admin)", request_model=schemas.UserCreate, response_model=schemas.UserRead,
         status=201)
@live_session(roles=ADMIN)
def create_user() -> Response:
    body = json_body(schemas.UserCreate)
    created = service.create_user(
        actor=claims(), username=body.username, name=body.name, role=body.role, password=body.password
    )
    return _json(created, 201)


@bp.get("/v1/users")
@api_doc(summary="List users (admin)", response_model=schemas.UserList,
         query={"role": "only this role", "status": "active or deactivated"})
@live_session(roles=ADMIN)
def list_users() -> Response:
    role = request.args.get("role")
    status = request.args.get("status")
    if role is not None and role not in {r.value for r in Role}:
        raise InvalidRequest("Query 'role': unknown role.", extra={"field": "role"})
    if status is not None and status not in ("active", "deactivated"):
        raise InvalidRequest("Query 'status': must be active or deactivated.", extra={"field": "status"})
    return _json({"users": service.list_users(role=role, status=status)})


@bp.get("/v1/users/<user_id>")
@api_doc(summary="A user (admin, or the user themselves)", response_model=schemas.UserDetail)
@live_session(scopes=FULL_OR_BREAK_GLASS)
def get_user(user_id: str) -> Response:
    caller = claims()
    is_admin = caller.role == Role.ADMIN.value and caller.scope == SCOPE_FULL
    if not is_admin and caller.sub != user_id:
        raise Forbidden()
    return _json(service.get_user(user_id=user_id, include_deprovisioning=is_admin))


@bp.patch("/v1/users/<user_id>")
@api_doc(summary="Change a user's name or role (admin)", request_model=schemas.UserUpdate,
         response_model=schemas.UserDetail)
@live_session(roles=ADMIN)
def update_user(user_id: str) -> Response:
    body = json_body(schemas.UserUpdate)
    return _json(service.update_user(actor=claims(), user_id=user_id, name=body.name, role=body.role))


@bp.post("/v1/users/<user_id>/deactivate")
@api_doc(summary="Deactivate a user and deprovision sessions, Stream and keys (admin)",
         response_model=schemas.DeactivateResponse)
@live_session(roles=ADMIN)
def deactivate_user(user_id: str) -> Response:
    return _json(service.deactivate_user(actor=claims(), user_id=user_id))


@bp.post("/v1/users/<user_id>/reactivate")
@api_doc(summary="Reactivate a user (new credentials only) (admin)", response_model=schemas.UserDetail)
@live_session(roles=ADMIN)
def reactivate_user(user_id: str) -> Response:
    return _json(service.reactivate_user(actor=claims(), user_id=user_id))


@bp.get("/v1/users/<user_id>/sessions")
@api_doc(summary="A user's sessions (admin)", response_model=schemas.SessionList)
@live_session(roles=ADMIN)
def list_sessions(user_id: str) -> Response:
    return _json({"sessions": service.list_sessions(user_id=user_id)})


@bp.delete("/v1/users/<user_id>/sessions/<session_id>")
@api_doc(summary="End one of a user's sessions (admin)", status=204)
@live_session(roles=ADMIN)
def revoke_session(user_id: str, session_id: str) -> Response:
    service.revoke_user_session(actor=claims(), user_id=user_id, session_id=session_id)
    return Response(status=204)


# -- internal -------------------------------------------------------------------------------------------


@bp.get("/internal/v1/revocations")
@api_doc(summary="Sessions ended and tokens retired before they expire (gateway and every verifying service)",
         response_model=schemas.RevocationFeed,
         query={"since": "cursor from the previous answer; 0 or absent for all still relevant"}, auth="service")
@require_service("gateway", "keydir", "audit", "push")
def revocations() -> Response:
    try:
        since = parse_cursor(request.args.get("since"))
    except ValueError as exc:
        raise InvalidRequest("Query 'since': must be a cursor from a previous answer.",
                             extra={"field": "since"}) from exc
    return _json(service.revocation_feed(since_ms=since))


@bp.post("/internal/v1/revocations/reuse")
@api_doc(summary="A verifier saw a token retired by refresh after its grace: end that session (reuse)",
         request_model=schemas.ReuseReport, auth="service")
@require_service("gateway", "keydir", "audit", "push")
def report_reuse() -> Response:
    body = json_body(schemas.ReuseReport)
    ended = service.report_token_reuse(sid=body.sid, jti=body.jti, reporter=calling_service() or "unknown")
    return _json({"revoked": ended})
