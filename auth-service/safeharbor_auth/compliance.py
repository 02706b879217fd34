"""auth-service's HIPAA §164.312 controls, measured from this process and its database (issue 17).

Served to audit-service at `safeharbor_common.compliance.CONTROLS_PATH`; the thresholds are SafeHarbor's
policy (the rule names no numbers): the defaults pass, a setting loosened past them warns, then fails.
"""
from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import argon2
from flask import Flask
from safeharbor_common import compliance
from safeharbor_common.compliance import Check, Status, status_at_most
from sqlalchemy import func, select

from .config import OWASP_MIN_MEMORY_KIB, OWASP_MIN_TIME_COST
from .context import AuthContext
from .models import BreakGlass, Job, SigningKey, User

# The seed's 10 minutes pass; up to 15 warns; beyond (up to the 30 the settings allow) fails.
IDLE_PASS_S, IDLE_WARN_S = 600, 900
LIFETIME_PASS_S, LIFETIME_WARN_S = 12 * 3600, 24 * 3600
# Roles that read PHI or administer: MFA is not optional for them.
MFA_MUST = frozenset({"clinician", "admin", "auditor"})
LOCKOUT_PASS, LOCKOUT_WARN = 10, 20
REVIEW_DUE = timedelta(hours=24)  # a closed break-glass session should be reviewed within a day
CLOSE_GRACE = timedelta(minutes=2)  # the closing sweep runs every few seconds; longer is a broken time box
JOB_OVERDUE = timedelta(hours=1)


def _worst(*statuses: Status) -> Status:
    return max(statuses, key=compliance.STATUSES.index)


def _ts(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if value else None


def automatic_logoff(auth: AuthContext) -> tuple[Status, Mapping[str, Any]]:
    idle, lifetime = auth.idle_timeout, auth.max_lifetime
    status = _worst(status_at_most(idle, pass_max=IDLE_PASS_S, warn_max=IDLE_WARN_S),
                    status_at_most(lifetime, pass_max=LIFETIME_PASS_S, warn_max=LIFETIME_WARN_S))
    # What this process issues with: a token's exp is min(now + idle, absolute end), refresh slides it.
    return status, {"idle_timeout_s": idle, "absolute_lifetime_s": lifetime,
                    "policy": {"idle_pass_max_s": IDLE_PASS_S, "idle_warn_max_s": IDLE_WARN_S,
                               "lifetime_pass_max_s": LIFETIME_PASS_S}}


def unique_users(auth: AuthContext) -> tuple[Status, Mapping[str, Any]]:
    with auth.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(User)).scalar_one())
        distinct = int(conn.execute(select(func.count(func.distinct(func.lower(User.username))))).scalar_one())
    # Ids are primary keys; names are unique as stored, and this also catches two spellings of one name.
    return ("pass" if total == distinct else "fail"), {"users": total, "distinct_usernames": distinct}


def role_map(auth: AuthContext) -> tuple[Status, Mapping[str, Any]]:
    if auth.provisioner is None:
        return "warn", {"stream": "not configured in this process"}
    verdict = auth.provisioner.check_now()  # reads Stream's roles and grants back now
    if verdict is None:
        return "fail", {"stream": "never read back (Stream unreachable)"}
    checked = datetime.fromtimestamp(verdict.checked_at, UTC)
    return ("pass" if verdict.in_sync else "fail"), {"in_sync": verdict.in_sync,
                                                     "differences": list(verdict.reasons)[:20],
                                                     "checked_at": _ts(checked)}


def mfa(auth: AuthContext) -> tuple[Status, Mapping[str, Any]]:
    required = auth.settings.mfa_required_roles
    missing = sorted(MFA_MUST - required)
    with auth.engine.connect() as conn:
        rows = conn.execute(
            select(User.role, func.count()).where(User.role.in_(sorted(required)), User.status == "active",
                                                  User.mfa_enrolled.is_(False)).group_by(User.role)
        ).all()
    not_enrolled = {str(role): int(count) for role, count in rows}
    # Not enrolled yet is a warning: such a session can only enrol (scope mfa_enrollment), never read PHI.
    status: Status = "fail" if missing else ("warn" if not_enrolled else "pass")
    return status, {"mfa_required_roles": sorted(required), "roles_missing_mfa": missing,
                    "active_users_not_enrolled": not_enrolled}


def lockout(auth: AuthContext) -> tuple[Status, Mapping[str, Any]]:
    s = auth.settings
    status = status_at_most(s.login_user_max_failures, pass_max=LOCKOUT_PASS, warn_max=LOCKOUT_WARN)
    return status, {"user_max_failures": s.login_user_max_failures, "ip_max_failures": s.login_ip_max_failures,
                    "lockout_increment_s": s.login_lockout_increment, "lockout_max_s": s.login_lockout_max,
                    "global_max_failures_per_minute": s.login_global_max_failures_per_minute}


def password_hashing(auth: AuthContext) -> tuple[Status, Mapping[str, Any]]:
    # The parameters of a hash made now by this process's hasher, not the settings it was given.
    params = argon2.extract_parameters(auth.passwords.hash(secrets.token_urlsafe(16)))
    with auth.engine.connect() as conn:
        stored = [str(h) for h in conn.execute(select(User.password_hash).where(User.status == "active")).scalars()]
    weaker = sum(1 for h in stored if auth.passwords.needs_rehash(h))
    strong = (params.type is argon2.Type.ID and params.memory_cost >= OWASP_MIN_MEMORY_KIB
              and params.time_cost >= OWASP_MIN_TIME_COST)
    status: Status = "fail" if not strong else ("warn" if weaker else "pass")
    return status, {"algorithm": "argon2" + params.type.name.lower(), "memory_kib": params.memory_cost,
                    "time_cost": params.time_cost, "parallelism": params.parallelism,
                    "owasp_floor": {"memory_kib": OWASP_MIN_MEMORY_KIB, "time_cost": OWASP_MIN_TIME_COST},
                    "active_users_to_rehash_at_next_login": weaker}


def session_signing(auth: AuthContext) -> tuple[Status, Mapping[str, Any]]:
    now = auth.clock.now()
    with auth.engine.connect() as conn:
        active = conn.execute(
            select(SigningKey.kid, SigningKey.active_from).where(SigningKey.retired_at.is_(None),
                                                                 SigningKey.active_from <= now)
            .order_by(SigningKey.active_from.desc()).limit(1)
        ).first()
    if active is None:
        return "fail", {"active_key": None}
    return "pass", {"alg": "EdDSA", "active_kid": str(active.kid), "active_since": _ts(active.active_from)}


def break_glass(auth: AuthContext) -> tuple[Status, Mapping[str, Any]]:
    now = auth.clock.now()
    with auth.engine.connect() as conn:
        def count(*where: Any) -> int:
            return int(conn.execute(select(func.count()).select_from(BreakGlass).where(*where)).scalar_one())

        open_now = count(BreakGlass.closed_at.is_(None), BreakGlass.expires_at > now)
        unclosed = count(BreakGlass.closed_at.is_(None), BreakGlass.expires_at <= now - CLOSE_GRACE)
        unreviewed = count(BreakGlass.closed_at.is_not(None), BreakGlass.reviewed_at.is_(None))
        overdue = count(BreakGlass.closed_at.is_not(None), BreakGlass.reviewed_at.is_(None),
                        BreakGlass.closed_at < now - REVIEW_DUE)
    status: Status = "fail" if unclosed else ("warn" if overdue else "pass")
    return status, {"ttl_s": auth.settings.break_glass_ttl, "open": open_now, "expired_not_closed": unclosed,
                    "awaiting_review": unreviewed, "reviews_overdue": overdue,
                    "review_due_after_h": int(REVIEW_DUE.total_seconds() // 3600)}


def deprovisioning(auth: AuthContext) -> tuple[Status, Mapping[str, Any]]:
    now = auth.clock.now()
    with auth.engine.connect() as conn:
        pending = conn.execute(select(Job.kind, Job.created_at, Job.last_error).where(Job.status == "pending")).all()
    failing = sum(1 for job in pending if job.last_error)
    overdue = sum(1 for job in pending if job.created_at < now - JOB_OVERDUE)
    oldest = min((job.created_at for job in pending), default=None)
    status: Status = "fail" if overdue else ("warn" if failing else "pass")
    return status, {"pending": len(pending), "failing": failing, "overdue": overdue,
                    "oldest_pending_since": _ts(oldest), "overdue_after_s": int(JOB_OVERDUE.total_seconds())}


_CHECKS = {
    "auth.unique_users": unique_users,
    "auth.role_map": role_map,
    "auth.automatic_logoff": automatic_logoff,
    "auth.mfa": mfa,
    "auth.lockout": lockout,
    "auth.password_hashing": password_hashing,
    "auth.session_signing": session_signing,
    "auth.break_glass": break_glass,
    "auth.deprovisioning": deprovisioning,
}


def checks(auth: AuthContext) -> dict[str, Check]:
    return {control_id: functools.partial(fn, auth) for control_id, fn in _CHECKS.items()}


def init_app(app: Flask, auth: AuthContext) -> None:
    compliance.init_app(app, functools.partial(checks, auth))


__all__ = ["checks", "init_app"]
