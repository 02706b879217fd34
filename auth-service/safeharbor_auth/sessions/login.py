"""Login as an explicit state machine.

    THROTTLE -> PASSWORD -> FACTOR_PRESENT -> SESSION -> SUCCEEDED -> DONE

Each state is one small function that does its step and names the next state, or raises the answer that
ends the attempt (locked out, invalid credentials, MFA required or invalid) after recording it. The order
is the security argument: the attempt is counted before the password is looked at (parallel guesses cannot
all pass a check made first); an unknown user costs a hash like a wrong password (no enumeration by time);
the second factor is consumed in the same transaction that opens the session.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import NoReturn

from safeharbor_common.errors import InvalidCredentials, MfaInvalid, MfaRequired
from sqlalchemy import select

from ..accounts import ACTIVE, normalise_username
from ..context import AuthContext
from ..errors import LoginRateLimited, TooManyFailedLogins
from ..mfa.factors import SecondFactor, verify_second_factor
from ..models import Session, User
from ..throttle import Reservation
from .schemas import LoginResponse
from .service import open_login_session, session_response
from .tokens import IssuedToken


class LoginState(Enum):
    THROTTLE = "throttle"  # count the attempt, or refuse a locked name/address
    PASSWORD = "password"  # the user exists, is active and the password matches
    FACTOR_PRESENT = "factor_present"  # an enrolled user sent a code
    SESSION = "session"  # second factor consumed and session opened, in one transaction
    SUCCEEDED = "succeeded"  # throttle cleared, success audited
    DONE = "done"


@dataclass
class LoginAttempt:
    username: str
    password: str
    otp: str | None
    ip: str | None
    reservation: Reservation | None = None
    user: User | None = None
    factor: SecondFactor = SecondFactor.NONE
    session: Session | None = None
    token: IssuedToken | None = None


Step = Callable[[AuthContext, LoginAttempt], LoginState]


def login(*, ctx: AuthContext, username: str, password: str, otp: str | None, ip: str | None) -> LoginResponse:
    attempt = LoginAttempt(username=normalise_username(username), password=password, otp=otp, ip=ip)
    state = LoginState.THROTTLE
    while state is not LoginState.DONE:
        state = STEPS[state](ctx, attempt)
    assert attempt.user is not None and attempt.session is not None and attempt.token is not None
    return session_response(ctx=ctx, session=attempt.session, user=attempt.user, token=attempt.token)


def _throttle(ctx: AuthContext, attempt: LoginAttempt) -> LoginState:
    try:
        attempt.reservation = ctx.throttler.reserve(username=attempt.username, ip=attempt.ip)
    except (TooManyFailedLogins, LoginRateLimited) as exc:
        ctx.audit.record(action="auth.login.failure", actor="anonymous", outcome="failure",
                         meta={"reason": exc.code, "retry_after": exc.retry_after})
        raise
    return LoginState.PASSWORD


def _password(ctx: AuthContext, attempt: LoginAttempt) -> LoginState:
    with ctx.db() as db:
        user = db.scalar(select(User).where(User.username == attempt.username))
    if user is None:
        ctx.passwords.verify_dummy(attempt.password)  # same cost as a wrong password
        password_ok = False
    else:
        password_ok = ctx.passwords.verify(user.password_hash, attempt.password)
    attempt.user = user
    if user is None or not password_ok or user.status != ACTIVE:
        reason = "unknown_user" if user is None else ("deactivated" if password_ok else "wrong_password")
        _fail(ctx, attempt, reason=reason, error=InvalidCredentials())
    return LoginState.FACTOR_PRESENT


def _factor_present(ctx: AuthContext, attempt: LoginAttempt) -> LoginState:
    user = _known(attempt)
    if user.mfa_enrolled and not attempt.otp:
        ctx.throttler.not_a_guess(_reserved(attempt))  # right password: not a guess, the code comes next
        ctx.audit.record(action="auth.login.failure", actor=user.id, role=user.role, resource=f"user:{user.id}",
                         outcome="failure", meta={"reason": "mfa_required"})
        raise MfaRequired()
    return LoginState.SESSION


def _session(ctx: AuthContext, attempt: LoginAttempt) -> LoginState:
    user = _known(attempt)
    new_hash = ctx.passwords.hash(attempt.password) if ctx.passwords.needs_rehash(user.password_hash) else None
    now = ctx.clock.now()
    refusal: tuple[str, Exception] | None = None
    with ctx.db() as db, db.begin():
        fresh = db.get(User, user.id)
        factor: SecondFactor | None = SecondFactor.NONE
        if fresh is None or fresh.status != ACTIVE:
            refusal = ("deactivated", InvalidCredentials())
        elif fresh.mfa_enrolled:
            factor = verify_second_factor(ctx=ctx, db=db, user=fresh, code=attempt.otp or "", now=now)
            if factor is None:
                refusal = ("mfa_invalid", MfaInvalid())
        if refusal is None and fresh is not None and factor is not None:
            if new_hash is not None:
                fresh.password_hash = new_hash
            attempt.session, attempt.token = open_login_session(ctx=ctx, db=db, user=fresh, now=now)
            attempt.user, attempt.factor = fresh, factor
    if refusal is not None:
        _fail(ctx, attempt, reason=refusal[0], error=refusal[1])
    return LoginState.SUCCEEDED


def _succeeded(ctx: AuthContext, attempt: LoginAttempt) -> LoginState:
    user, session = _known(attempt), attempt.session
    assert session is not None
    ctx.throttler.succeeded(_reserved(attempt))
    ctx.audit.record(action="auth.login.success", actor=user.id, role=user.role, resource=f"user:{user.id}",
                     outcome="success",
                     meta={"session_id": session.id, "scope": session.scope, "mfa": attempt.factor.value})
    if attempt.factor is not SecondFactor.NONE:
        ctx.audit.record(action="auth.mfa.use", actor=user.id, role=user.role, resource=f"user:{user.id}",
                         outcome="success", meta={"method": attempt.factor.value, "session_id": session.id})
    return LoginState.DONE


STEPS: dict[LoginState, Step] = {
    LoginState.THROTTLE: _throttle,
    LoginState.PASSWORD: _password,
    LoginState.FACTOR_PRESENT: _factor_present,
    LoginState.SESSION: _session,
    LoginState.SUCCEEDED: _succeeded,
}


def _fail(ctx: AuthContext, attempt: LoginAttempt, *, reason: str, error: Exception) -> NoReturn:
    """A failed attempt stays counted (and may have set a lock, audited as such); then `error` is raised."""
    lockouts = ctx.throttler.failed(_reserved(attempt))
    user = attempt.user
    actor = user.id if user is not None else "anonymous"
    role = user.role if user is not None else None
    resource = f"user:{user.id}" if user is not None else None
    ctx.audit.record(action="auth.login.failure", actor=actor, role=role, resource=resource, outcome="failure",
                     meta={"reason": reason})
    for lockout in lockouts:
        ctx.audit.record(action="auth.lockout", actor=actor, role=role, resource=resource, outcome="locked",
                         severity="high",
                         meta={"layer": lockout.layer, "retry_after": lockout.retry_after,
                               "failures": lockout.failures})
    raise error


def _known(attempt: LoginAttempt) -> User:
    assert attempt.user is not None, "a state after PASSWORD always has the user"
    return attempt.user


def _reserved(attempt: LoginAttempt) -> Reservation:
    assert attempt.reservation is not None, "a state after THROTTLE always has the reservation"
    return attempt.reservation
