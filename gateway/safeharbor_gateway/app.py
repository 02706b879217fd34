"""The gateway's application factory and its one catch-all view.

Per request: match the routing table, verify the session token (cached), check revocation (in memory),
roles and scope, rate limits, then forward with the gateway's service token and write one audit event.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, current_app, g, request
from safeharbor_common import service_identity, tokens, web
from safeharbor_common.errors import (
    Forbidden,
    MethodNotAllowed,
    MfaEnrollmentRequired,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SafeHarborError,
    ServiceUnavailable,
    SessionRevoked,
    Unauthenticated,
)
from safeharbor_common.tokens import SCOPE_MFA_ENROLLMENT, SessionClaims

from .config import load_config
from .headers import HSTS, SECURITY_HEADERS, downstream_response_headers, upstream_request_headers
from .proxy import UpstreamPool
from .ratelimit import Limit, RateLimiter
from .revocation import RevocationList
from .routing import Route, RouteTable


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(load_config(test_config.get("ENVIRON") if test_config else None))
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k != "ENVIRON"})

    web.init_app(app, service_name="gateway", readiness_check=_readiness)
    service_identity.init_app(app)
    tokens.init_app(app)
    _init_audit(app)
    signer = app.extensions["service_signer"]
    app.extensions["routes"] = RouteTable()
    app.extensions["upstreams"] = UpstreamPool(
        connect_timeout=app.config["UPSTREAM_CONNECT_TIMEOUT"],
        read_timeout=app.config["UPSTREAM_READ_TIMEOUT"],
    )
    app.extensions["revocations"] = RevocationList(
        feed_url=app.config["AUTH_SERVICE_URL"] + "/internal/v1/revocations",
        signer=signer,
        redis_url=app.config["REDIS_URL"],
        poll_interval=app.config["REVOCATION_POLL_INTERVAL"],
        max_staleness=app.config["REVOCATION_MAX_STALENESS"],
    )
    window = app.config["RATE_LIMIT_WINDOW"]
    app.extensions["rate_limiter"] = RateLimiter(
        per_ip=Limit(app.config["RATE_LIMIT_PER_IP"], window),
        per_user=Limit(app.config["RATE_LIMIT_PER_USER"], window),
        redis_url=app.config["REDIS_URL"],
    )

    app.add_url_rule("/", "proxy_root", _proxy, defaults={"path": ""}, methods=_METHODS)
    app.add_url_rule("/<path:path>", "proxy", _proxy, methods=_METHODS)
    app.after_request(_decorate_response)
    app.teardown_request(_audit_request)
    return app


_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _init_audit(app: Flask) -> None:
    if not app.config.get("AUDIT_ENABLED", True):
        return
    try:
        from safeharbor_common import audit_emitter
    except ImportError:  # the emitter lands with the audit issue; until then requests are not audited
        return
    audit_emitter.init_app(app)


def _readiness() -> None:
    revocations: RevocationList = current_app.extensions["revocations"]
    revocations.ensure_started()
    if not revocations.is_fresh():
        raise ServiceUnavailable("Revocation feed is stale.")


def _proxy(path: str) -> Response:
    started = time.perf_counter()
    g.proxy_started = started
    full_path = "/" + path
    if request.method == "OPTIONS":
        return _preflight()
    table: RouteTable = current_app.extensions["routes"]
    route, known = table.match(request.method, full_path)
    if route is None:
        raise MethodNotAllowed() if known else NotFound()
    g.route = route

    claims = None if route.public else _authorise(route)
    _rate_limit(claims)
    body = _read_body()

    headers = upstream_request_headers(list(request.headers.items()))
    headers.update(current_app.extensions["service_signer"].headers_for(route.service))
    headers[web.CLIENT_IP_HEADER] = request.remote_addr or ""
    headers[web.REQUEST_ID_HEADER] = web.request_id()
    url = current_app.config["UPSTREAMS"][route.service] + full_path
    if request.query_string:
        url += "?" + request.query_string.decode("latin-1")
    upstream = current_app.extensions["upstreams"].send(
        method=request.method, url=url, headers=headers, body=body
    )
    response = Response(
        upstream.body,
        status=upstream.status,
        headers=downstream_response_headers(upstream.headers),
    )
    response.headers[web.REQUEST_ID_HEADER] = web.request_id()
    return response


def _authorise(route: Route) -> SessionClaims:
    token = tokens.bearer_token()
    if token is None:
        raise Unauthenticated()
    revocations: RevocationList = current_app.extensions["revocations"]
    revocations.ensure_started()
    verifier: tokens.TokenVerifier = current_app.extensions["token_verifier"]
    claims = verifier.verify(token)
    g.claims = claims
    if not revocations.is_fresh():
        # Fail closed: without a current revocation list an ended session could slip through.
        raise ServiceUnavailable("Session checks are temporarily unavailable.")
    if revocations.is_revoked(claims.sid):
        raise SessionRevoked()
    if claims.scope not in route.scopes:
        if claims.scope == SCOPE_MFA_ENROLLMENT:
            raise MfaEnrollmentRequired()
        raise Forbidden()
    if route.roles is not None and claims.role not in route.roles:
        raise Forbidden()
    return claims


def _rate_limit(claims: SessionClaims | None) -> None:
    limiter: RateLimiter = current_app.extensions["rate_limiter"]
    wait = limiter.check("ip", request.remote_addr or "unknown", limiter.per_ip)
    if wait is None and claims is not None:
        wait = limiter.check("user", claims.sub, limiter.per_user)
    if wait is not None:
        raise RateLimited(retry_after=wait)


def _read_body() -> bytes | None:
    if request.method in ("GET", "DELETE", "OPTIONS") and not request.content_length:
        return None
    limit = int(current_app.config["MAX_CONTENT_LENGTH"])
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge()
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge()
    return data


def _preflight() -> Response:
    response = Response(status=204)
    origin = request.headers.get("Origin")
    if origin and origin in current_app.config["CORS_ALLOWED_ORIGINS"]:
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Request-ID"
        response.headers["Access-Control-Max-Age"] = "600"
    return response


def _decorate_response(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if current_app.config.get("TLS_CERT_FILE"):
        response.headers["Strict-Transport-Security"] = HSTS
    origin = request.headers.get("Origin")
    if origin and origin in current_app.config["CORS_ALLOWED_ORIGINS"]:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "X-Request-ID, Retry-After"
        response.headers["Vary"] = "Origin"
    g.status = response.status_code
    return response


def _audit_request(exc: BaseException | None) -> None:
    audit = current_app.extensions.get("audit")
    if audit is None or request.path in ("/healthz", "/readyz", "/metrics"):
        return
    route: Route | None = g.get("route")
    claims: SessionClaims | None = g.get("claims")
    status = g.get("status", 500 if exc is not None else 200)
    started = g.get("proxy_started") or g.get("started") or time.perf_counter()
    try:
        audit.emit(
            action=f"gateway.{route.name}" if route else "gateway.unrouted",
            actor=claims.sub if claims else "anonymous",
            role=claims.role if claims else None,
            resource=request.path,
            outcome=str(status),
            request_id=web.request_id(),
            ip=request.remote_addr,
            user_agent=web.user_agent(),
            meta={
                "method": request.method,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                **({"sid": claims.sid} if claims else {}),
            },
        )
    except Exception:
        current_app.logger.exception("audit emit failed")


__all__ = ["SafeHarborError", "create_app"]
