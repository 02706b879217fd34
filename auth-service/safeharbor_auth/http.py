"""What every room's views share: the context, the live session behind the token, JSON answers.

Views are thin: parse the request, take the context and the caller, call one service function, answer with
the schema object it returns (`json_response` serialises it: fields by their JSON names, nulls kept).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, current_app, g, jsonify
from pydantic import BaseModel
from safeharbor_common.roles import Role
from safeharbor_common.tokens import SCOPE_BREAK_GLASS, SCOPE_FULL, SessionClaims, current_session, require_session

from .context import AuthContext
from .models import Session, User

F = TypeVar("F", bound=Callable[..., Any])
# The blueprints the rooms' views are registered on. Two, named as before the rooms existed, because an
# endpoint's name is part of the published OpenAPI document (operationId "auth_auth.login_post").
AUTH_API = Blueprint("auth", "safeharbor_auth")
STREAM_API = Blueprint("stream", "safeharbor_auth")
ADMIN = (Role.ADMIN.value,)
CLINICIAN = (Role.CLINICIAN.value,)
FULL_OR_BREAK_GLASS = (SCOPE_FULL, SCOPE_BREAK_GLASS)


def auth_context() -> AuthContext:
    """The context create_app built for this app."""
    return cast(AuthContext, current_app.extensions["auth"])


def live_session(*, roles: Iterable[str] | None = None, scopes: Iterable[str] = (SCOPE_FULL,)) -> Callable[[F], F]:
    """require_session (signature, claims, role, scope) plus our own table: revoked, expired, deactivated.
    The live session and user are kept for the view (`live()`), so the service gets them as arguments."""
    from .sessions.service import current

    def decorator(view: F) -> F:
        @require_session(roles=roles, scopes=scopes)
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.auth_live = current(ctx=auth_context(), claims=current_session())
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator


def claims() -> SessionClaims:
    return current_session()


def live() -> tuple[Session, User]:
    """The session and user `live_session` found for this request's token."""
    return cast(tuple[Session, User], g.auth_live)


def json_response(body: BaseModel | Mapping[str, Any], status: int = 200) -> Response:
    """`body`: a room's response model, or a free-form JSON document (the JWKS)."""
    response = jsonify(body.model_dump(mode="json", by_alias=True) if isinstance(body, BaseModel) else body)
    response.status_code = status
    return response
