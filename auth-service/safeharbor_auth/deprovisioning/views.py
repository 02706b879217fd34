"""Deprovisioning's HTTP views (admin)."""
from __future__ import annotations

from flask import Response
from safeharbor_common.web import api_doc

from ..http import ADMIN, AUTH_API, auth_context, claims, json_response, live_session
from ..users.schemas import UserDetail
from . import schemas, service

bp = AUTH_API


@bp.post("/v1/users/<user_id>/deactivate")
@api_doc(summary="Deactivate a user and deprovision sessions, Stream and keys (admin)",
         response_model=schemas.DeactivateResponse)
@live_session(roles=ADMIN)
def deactivate_user(user_id: str) -> Response:
    return json_response(service.deactivate_user(ctx=auth_context(), actor=claims(), user_id=user_id))


@bp.post("/v1/users/<user_id>/reactivate")
@api_doc(summary="Reactivate a user (new credentials only) (admin)", response_model=UserDetail)
@live_session(roles=ADMIN)
def reactivate_user(user_id: str) -> Response:
    return json_response(service.reactivate_user(ctx=auth_context(), actor=claims(), user_id=user_id))
