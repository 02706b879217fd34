"""Users' HTTP views."""
from __future__ import annotations

from flask import Response, request
from safeharbor_common.errors import Forbidden, InvalidRequest
from safeharbor_common.roles import Role
from safeharbor_common.tokens import SCOPE_FULL
from safeharbor_common.web import api_doc, json_body

from ..http import ADMIN, AUTH_API, FULL_OR_BREAK_GLASS, auth_context, claims, json_response, live_session
from . import schemas, service

bp = AUTH_API


@bp.post("/v1/users")
@api_doc(summary="Create a user (admin)", request_model=schemas.UserCreate, response_model=schemas.UserRead,
         status=201)
@live_session(roles=ADMIN)
def create_user() -> Response:
    body = json_body(schemas.UserCreate)
    created = service.create_user(ctx=auth_context(), actor=claims(), username=body.username, name=body.name,
                                  role=body.role, password=body.password)
    return json_response(created, 201)


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
    return json_response(service.list_users(ctx=auth_context(), role=role, status=status))


@bp.get("/v1/users/<user_id>")
@api_doc(summary="A user (admin, or the user themselves)", response_model=schemas.UserDetail)
@live_session(scopes=FULL_OR_BREAK_GLASS)
def get_user(user_id: str) -> Response:
    caller = claims()
    is_admin = caller.role == Role.ADMIN.value and caller.scope == SCOPE_FULL
    if not is_admin and caller.sub != user_id:
        raise Forbidden()
    return json_response(service.get_user(ctx=auth_context(), user_id=user_id, include_deprovisioning=is_admin))


@bp.patch("/v1/users/<user_id>")
@api_doc(summary="Change a user's name or role (admin)", request_model=schemas.UserUpdate,
         response_model=schemas.UserDetail)
@live_session(roles=ADMIN)
def update_user(user_id: str) -> Response:
    body = json_body(schemas.UserUpdate)
    return json_response(service.update_user(ctx=auth_context(), actor=claims(), user_id=user_id, name=body.name,
                                             role=body.role))
