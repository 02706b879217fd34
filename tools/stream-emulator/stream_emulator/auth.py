"""Request authentication the way Stream does it.

- `api_key` query parameter must equal the configured key (code 2).
- `Authorization` holds an HS256 JWT signed with the API secret (no "Bearer" prefix on Stream; we tolerate
  one). `stream-auth-type: jwt` is what the SDK sends; we don't require it.
- Server token: claims contain `server: true`. User token: claims contain `user_id`.
- User tokens: signature, `exp` when present, `iat` must not be before the user's or the app's
  `revoke_tokens_issued_before` (a token without `iat` counts as revoked once a revocation is set: fail
  closed), and the user must exist and be neither deactivated nor deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from flask import request

from .clock import parse_time
from .config import EmulatorConfig
from .errors import (
    ACCESS_KEY,
    AUTH,
    TOKEN_BEFORE_ISSUED_AT,
    TOKEN_EXPIRED,
    TOKEN_NOT_VALID_YET,
    TOKEN_SIGNATURE,
    StreamError,
)

# Clock-skew allowance for exp/iat checks, in seconds.
LEEWAY_S = 5


@dataclass(frozen=True)
class Caller:
    server: bool
    user_id: str | None = None

    @property
    def kind(self) -> str:
        return "server-side" if self.server else "client"


def _decode(token: str, secret: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],  # pinned: no alg confusion, no "none"
            options={"require": [], "verify_exp": True, "verify_iat": True, "verify_aud": False},
            leeway=LEEWAY_S,
        )
    except jwt.ExpiredSignatureError:
        raise StreamError(TOKEN_EXPIRED, "JWTAuth error: token is expired") from None
    except jwt.ImmatureSignatureError as exc:
        if "iat" in str(exc):
            raise StreamError(TOKEN_BEFORE_ISSUED_AT, "JWTAuth error: token used before issue at (iat)") from None
        raise StreamError(TOKEN_NOT_VALID_YET, "JWTAuth error: token is not valid yet") from None
    except jwt.InvalidSignatureError:
        raise StreamError(TOKEN_SIGNATURE, "JWTAuth error: signature is not valid") from None
    except jwt.InvalidTokenError:
        raise StreamError(AUTH, "JWTAuth error: token is malformed") from None
    if not isinstance(claims, dict):
        raise StreamError(AUTH, "JWTAuth error: token is malformed")
    return claims


def _revoked(iat: Any, before: Any) -> bool:
    try:
        cutoff = parse_time(before)
    except ValueError:
        return False
    if cutoff is None:
        return False
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        return True  # no usable iat: fail closed once a revocation exists
    return datetime.fromtimestamp(float(iat), UTC) < cutoff


def authenticate(config: EmulatorConfig, state: dict[str, Any]) -> Caller:
    api_key = request.args.get("api_key")
    if not api_key:
        raise StreamError(ACCESS_KEY, "api_key not found")
    if api_key != config.api_key:
        raise StreamError(ACCESS_KEY, "api_key not valid")
    header = request.headers.get("Authorization", "").strip()
    if header.lower().startswith("bearer "):
        header = header[7:].strip()
    if not header:
        raise StreamError(AUTH, "JWTAuth error: missing Authorization header")
    claims = _decode(header, config.api_secret)
    if claims.get("server") is True:
        return Caller(server=True)
    user_id = claims.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise StreamError(AUTH, "JWTAuth error: token has neither server nor user_id claim")
    user = state["users"].get(user_id)
    if user is None or user.get("deleted_at"):
        raise StreamError(AUTH, f"JWTAuth error: user '{user_id}' does not exist")
    if user.get("deactivated_at"):
        raise StreamError(AUTH, f"JWTAuth error: user '{user_id}' is deactivated")
    iat = claims.get("iat")
    if _revoked(iat, user.get("revoke_tokens_issued_before")) or _revoked(
        iat, state["app"].get("revoke_tokens_issued_before")
    ):
        raise StreamError(AUTH, "JWTAuth error: token has been revoked")
    return Caller(server=False, user_id=user_id)
