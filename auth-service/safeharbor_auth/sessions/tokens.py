"""Session tokens and the times they carry: signing an access token, a new session row, Stream's `iat` and
revocation cutoff (Stream compares whole seconds)."""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from safeharbor_common.tokens import SCOPE_BREAK_GLASS

from ..context import AuthContext
from ..models import RetiredToken, Session, User

# Stream user tokens carry an `iat` this far in the past: Stream refuses a token "used before issue at" with
# no allowance for clock skew (the official Python SDK backdates the same way).
STREAM_IAT_BACKDATE = 5


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime
    jti: str
    iat: int


def issue_token(
    *, ctx: AuthContext, session: Session, user: User, now: datetime, again: RetiredToken | None = None
) -> IssuedToken:
    """Signs an access token: exp = min(now + idle timeout, the session's absolute end).

    `again`: sign once more the token that replaced this retired one (same jti, iat and exp), for a refresh
    retried within the grace.
    """
    iat = int(now.timestamp())
    # Rounded up to the second, so the idle window is never shorter than configured.
    exp = min(math.ceil(now.timestamp() + ctx.idle_timeout), math.ceil(session.absolute_expires_at.timestamp()))
    jti = uuid.uuid4().hex
    if again is not None:
        jti, iat, exp = again.successor_jti, again.successor_iat, again.successor_exp
    claims: dict[str, Any] = {
        "iss": ctx.settings.jwt_issuer,
        "aud": ctx.settings.jwt_audience,
        "sub": user.id,
        "iat": iat,
        "exp": exp,
        "jti": jti,
        "sid": session.id,
        "role": user.role,
        "scope": session.scope,
        # When the password was last proven; refresh keeps it, so "fresh login" checks (key backup
        # retrieval) cannot be satisfied by sliding an old session.
        "auth_time": int(session.created_at.timestamp()),
    }
    if session.scope == SCOPE_BREAK_GLASS and session.break_glass_id:
        claims["bg"] = session.break_glass_id
        claims["bg_cid"] = session.break_glass_cid or ""
    expires_at = datetime.fromtimestamp(exp, UTC)
    session.token_expires_at = max(session.token_expires_at, expires_at)
    return IssuedToken(token=ctx.keys.sign(claims), expires_at=expires_at, jti=jti, iat=iat)


def whole_second_after(now: datetime, seconds: int) -> datetime:
    """`now + seconds` rounded up to a whole second (token times are whole seconds)."""
    return datetime.fromtimestamp(math.ceil((now + timedelta(seconds=seconds)).timestamp()), UTC)


def new_session(
    *,
    user: User,
    scope: str,
    now: datetime,
    absolute: datetime,
    break_glass_id: str | None = None,
    break_glass_cid: str | None = None,
) -> Session:
    return Session(
        id=str(uuid.uuid4()),
        user_id=user.id,
        scope=scope,
        created_at=now,
        last_seen=now,
        absolute_expires_at=absolute,
        token_expires_at=now,
        break_glass_id=break_glass_id,
        break_glass_cid=break_glass_cid,
    )


def stream_iat(now: datetime, *, tokens_from: int | None) -> int:
    """`iat` of a Stream token issued at `now`: backdated, but never before the user's last cutoff."""
    return max(math.floor(now.timestamp()) - STREAM_IAT_BACKDATE, tokens_from or 0)


def stream_cutoff(now: datetime) -> int:
    """The Stream revocation time (`revoke_user_token`'s "before") for an end of session at `now`.

    Stream compares it with a token's whole-second `iat`. Every token issued up to `now` has
    iat <= floor(now) - backdate < cutoff, so it is revoked; a token issued afterwards gets iat = cutoff at
    least (stream_iat), still in the past, so it works at once: nobody waits for the clock to tick. A user's
    next cutoff is also past the previous one (_end_stream_access), which tokens issued since may carry.
    """
    return math.floor(now.timestamp()) - STREAM_IAT_BACKDATE + 1
