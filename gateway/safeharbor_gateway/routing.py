"""The one routing table: which service serves a public path, and who may call it.

Internal paths (`/internal/...`) are never routed (trust rule 5). Rules are checked in order; the first
whose method and pattern match decides. A pattern matches the whole path (`fullmatch`: `$` alone would
also match before a trailing newline).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from safeharbor_common.tokens import SCOPE_BREAK_GLASS, SCOPE_FULL, SCOPE_MFA_ENROLLMENT

ANY_AUTHENTICATED: frozenset[str] | None = None
ADMIN = frozenset({"admin"})
AUDIT_READERS = frozenset({"auditor", "admin"})
CLINICIAN = frozenset({"clinician"})


@dataclass(frozen=True)
class Route:
    name: str  # audit action of the request, e.g. "auth.login"
    service: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    public: bool = False
    roles: frozenset[str] | None = ANY_AUTHENTICATED
    scopes: frozenset[str] = frozenset({SCOPE_FULL})


def _r(
    name: str,
    service: str,
    methods: str,
    pattern: str,
    *,
    public: bool = False,
    roles: frozenset[str] | None = ANY_AUTHENTICATED,
    scopes: tuple[str, ...] = (SCOPE_FULL,),
) -> Route:
    return Route(
        name=name,
        service=service,
        methods=frozenset(methods.split()),
        pattern=re.compile(pattern),
        public=public,
        roles=roles,
        scopes=frozenset(scopes),
    )


_ID = r"[A-Za-z0-9._:@~-]{1,200}"
_ENROLMENT = (SCOPE_FULL, SCOPE_MFA_ENROLLMENT)
_EMERGENCY = (SCOPE_FULL, SCOPE_BREAK_GLASS)

ROUTES: tuple[Route, ...] = (
    # auth-service: sessions
    _r("auth.jwks", "auth", "GET", r"/\.well-known/jwks\.json", public=True),
    _r("auth.login", "auth", "POST", r"/v1/auth/login", public=True),
    _r("auth.refresh", "auth", "POST", r"/v1/auth/refresh", scopes=_EMERGENCY),
    _r("auth.logout", "auth", "POST", r"/v1/auth/logout", scopes=(*_EMERGENCY, SCOPE_MFA_ENROLLMENT)),
    _r("auth.me", "auth", "GET", r"/v1/auth/me", scopes=_EMERGENCY),
    _r("auth.mfa.enroll", "auth", "POST", r"/v1/auth/mfa/totp/enroll", scopes=_ENROLMENT),
    _r("auth.mfa.confirm", "auth", "POST", r"/v1/auth/mfa/totp/confirm", scopes=_ENROLMENT),
    _r("auth.break_glass.open", "auth", "POST", r"/v1/auth/break-glass", roles=CLINICIAN),
    _r("auth.break_glass.list", "auth", "GET", r"/v1/break-glass", roles=ADMIN),
    _r("auth.break_glass.review", "auth", "POST", rf"/v1/break-glass/{_ID}/review", roles=ADMIN),
    # auth-service: users (reading oneself is checked by the service)
    _r("users.read", "auth", "GET", rf"/v1/users/{_ID}", scopes=_EMERGENCY),
    _r("users.admin", "auth", "GET POST PATCH DELETE", r"/v1/users(/.*)?", roles=ADMIN),
    # auth-service: Stream and channels
    _r("stream.credentials", "auth", "POST", r"/v1/stream-credentials", scopes=_EMERGENCY),
    _r("channels.filter", "auth", "GET", r"/v1/channels/filter", scopes=_EMERGENCY),
    _r("channels.create", "auth", "POST", r"/v1/channels"),
    # keydir-service
    _r("keys.checkpoint", "keydir", "GET", r"/v1/keys/checkpoint(/key)?", public=True),
    _r("keys.proof", "keydir", "GET", r"/v1/keys/proof/consistency", public=True),
    # The key backup and a user's full key audit need a full session (keydir's own rule), not break-glass.
    _r("keys.lookup", "keydir", "GET", rf"/v1/keys/backup|/v1/keys/{_ID}/audit"),
    _r("keys.lookup", "keydir", "GET", r"/v1/keys(/.*)?", scopes=_EMERGENCY),
    _r("keys.write", "keydir", "POST PUT DELETE", r"/v1/keys(/.*)?"),
    # audit-service
    _r("webhooks.stream", "audit", "POST", r"/v1/webhooks/stream", public=True),
    _r("audit.read", "audit", "GET", r"/v1/audit(/.*)?", roles=AUDIT_READERS),
    _r("compliance.report", "audit", "GET", r"/v1/compliance/report(/key|/latest)?", roles=AUDIT_READERS),
    # push-config-service
    _r("push.admin", "push", "GET POST PUT", r"/v1/push(/.*)?", roles=ADMIN),
)


class RouteTable:
    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self._routes = routes
        self._paths = tuple({r.pattern.pattern: r.pattern for r in routes}.values())

    def match(self, method: str, path: str) -> tuple[Route | None, bool]:
        """(route, path_known): path_known tells 405 from 404 when no method matches."""
        path_known = False
        for route in self._routes:
            if route.pattern.fullmatch(path):
                path_known = True
                if method in route.methods:
                    return route, True
        return None, path_known
