"""The gateway's hot path as a plain WSGI application: every public request but the gateway's own
health, readiness, metrics and OpenAPI paths (those stay on Flask).

Per request: match the routing table, verify the session token (cached), check revocation (in memory),
roles and scope, rate limits, then forward with the gateway's service token, write the access log and
metrics, and commit one audit event before the answer leaves. Flask's request context, proxies and hooks
cost as much CPU as all of that together (docs/PERFORMANCE.md, gateway profile), so this path reads the
WSGI environ directly; the rules are the same as everywhere (one error format, request ids, no PHI in
logs).
"""
from __future__ import annotations

import http
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from safeharbor_common import web
from safeharbor_common.audit_emitter import AuditEmitter
from safeharbor_common.encoding import parse_decimal
from safeharbor_common.errors import (
    Forbidden,
    InvalidRequest,
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
from safeharbor_common.service_identity import ServiceTokenSigner
from safeharbor_common.tokens import SCOPE_MFA_ENROLLMENT, SessionClaims, TokenVerifier, bearer_from_header

from .headers import HSTS, SECURITY_HEADERS, downstream_response_headers, upstream_request_headers
from .proxy import UpstreamPool
from .ratelimit import RateLimiter
from .revocation import RevocationList
from .routing import Route, RouteTable

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# The gateway's own paths; everything else is forwarded or refused here.
LOCAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
UNAUDITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# "." and ".." segments of the decoded path (and dots still encoded after it, sent double-encoded): a service
# might resolve them past the route checked here.
_DOT_SEGMENT = re.compile(r"(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)
_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in http.HTTPStatus}
_JSON = "application/json"
_log = logging.getLogger("safeharbor.web")


@dataclass(frozen=True)
class ForwardSettings:
    upstreams: dict[str, str]
    max_body: int
    cors_origins: frozenset[str]
    hsts: bool


class Forwarder:
    """WSGI middleware: the gateway's own paths go to `local_app` (Flask), the rest is forwarded."""

    def __init__(
        self,
        *,
        local_app: WsgiApp,
        settings: ForwardSettings,
        routes: RouteTable,
        verifier: TokenVerifier,
        revocations: RevocationList,
        limiter: RateLimiter,
        signer: ServiceTokenSigner,
        upstreams: UpstreamPool,
        audit: AuditEmitter | None,
        metrics: Any,
    ) -> None:
        self.local_app = local_app
        self.settings = settings
        self.routes = routes
        self.verifier = verifier
        self.revocations = revocations
        self.limiter = limiter
        self.signer = signer
        self.upstreams = upstreams
        self.audit = audit
        self.metrics = metrics
        self._security_headers = list(SECURITY_HEADERS.items()) + ([("Strict-Transport-Security", HSTS)]
                                                                   if settings.hsts else [])

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in LOCAL_PATHS:
            return self._local(environ, start_response, path)
        return self.forward(environ, start_response, path)

    def _local(self, environ: dict[str, Any], start_response: StartResponse, path: str) -> Iterable[bytes]:
        started = time.perf_counter()
        seen: dict[str, str] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"] = status
            seen["request_id"] = next((v for k, v in headers if k == web.REQUEST_ID_HEADER), "")
            self._decorate(headers, environ.get("HTTP_ORIGIN"))
            return start_response(status, headers, exc_info)

        body = self.local_app(environ, capture)
        if path in UNAUDITED_PATHS or self.audit is None:
            return body
        status = int(seen.get("status", "500").split(" ", 1)[0])
        self._audit(environ, environ.get("REQUEST_METHOD", "GET"), path, "local", None, status,
                    seen.get("request_id", ""), round((time.perf_counter() - started) * 1000, 2))
        return body

    # -- one request --------------------------------------------------------------------------------

    def forward(self, environ: dict[str, Any], start_response: StartResponse, path: str) -> Iterable[bytes]:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        request_id = web.request_id_from(environ.get("HTTP_X_REQUEST_ID", ""))
        origin = environ.get("HTTP_ORIGIN")
        route: Route | None = None
        claims: SessionClaims | None = None
        try:
            if self.audit is not None:
                self.audit.ensure_started()  # events left by an earlier run ship from the first request
            if method == "OPTIONS":
                status, headers, body = self._preflight(origin)
            else:
                route, known = self.routes.match(method, path)
                if route is None:
                    raise MethodNotAllowed() if known else NotFound()
                if _DOT_SEGMENT.search(path):
                    raise InvalidRequest("The path must not contain '.' or '..' segments.")
                target = _upstream_path(path)
                if not route.public:
                    claims = self._authorise(route, environ.get("HTTP_AUTHORIZATION", ""))
                self._rate_limit(environ, claims)
                status, headers, body = self._send(environ, method, target, route, request_id)
        except SafeHarborError as exc:
            status, headers, body = self._error(exc, request_id)
        except Exception as exc:  # noqa: BLE001 - one JSON shape for every failure, never a stack trace
            status, payload, extra = web.unexpected_error(exc, request_id)
            status, headers, body = _json_answer(status, payload, list(extra.items()))
        headers.append((web.REQUEST_ID_HEADER, request_id))
        self._decorate(headers, origin)
        self._record(environ, method, path, route, claims, status, request_id, started)
        start_response(_STATUS_LINES.get(status) or f"{status} Unknown", headers)
        return body

    def _authorise(self, route: Route, authorization: str) -> SessionClaims:
        token = bearer_from_header(authorization)
        if token is None:
            raise Unauthenticated()
        self.revocations.ensure_started()
        claims = self.verifier.verify(token)
        if not self.revocations.is_fresh():
            # Fail closed: without a current revocation list an ended session could slip through.
            raise ServiceUnavailable("Session checks are temporarily unavailable.")
        if self.revocations.is_revoked(claims.sid):
            raise SessionRevoked()
        if claims.scope not in route.scopes:
            if claims.scope == SCOPE_MFA_ENROLLMENT:
                raise MfaEnrollmentRequired()
            raise Forbidden()
        if route.roles is not None and claims.role not in route.roles:
            raise Forbidden()
        return claims

    def _rate_limit(self, environ: dict[str, Any], claims: SessionClaims | None) -> None:
        limiter = self.limiter
        hits = [("ip", environ.get("REMOTE_ADDR") or "unknown", limiter.per_ip)]
        if claims is not None:
            hits.append(("user", claims.sub, limiter.per_user))
        wait = limiter.check_all(hits)
        if wait is not None:
            raise RateLimited(retry_after=wait)

    def _send(self, environ: dict[str, Any], method: str, target: str, route: Route,
              request_id: str) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        body = self._read_body(environ, method)
        headers = upstream_request_headers(_incoming_headers(environ))
        headers.update(self.signer.headers_for(route.service))
        headers[web.CLIENT_IP_HEADER] = environ.get("REMOTE_ADDR") or ""
        headers[web.REQUEST_ID_HEADER] = request_id
        url = self.settings.upstreams[route.service] + target
        query = environ.get("QUERY_STRING")
        if query:
            url += "?" + query
        answer = self.upstreams.send(method=method, url=url, headers=headers, body=body)
        out = downstream_response_headers(answer.headers)
        if isinstance(answer.body, bytes):
            out.append(("Content-Length", str(len(answer.body))))
            return answer.status, out, [answer.body]
        return answer.status, out, answer.body  # a generator: the WSGI server's close() ends the upstream read

    def _read_body(self, environ: dict[str, Any], method: str) -> bytes | None:
        length_text = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not length_text and not chunked:
            return None if method in ("GET", "HEAD", "DELETE") else b""
        limit = self.settings.max_body
        read_size = limit + 1  # chunked: one byte past the limit tells an oversized body
        if length_text:
            length = parse_decimal(length_text, max_digits=18)
            if length is None:
                raise InvalidRequest("Content-Length must be a number.")
            if length > limit:
                raise PayloadTooLarge()
            read_size = length
        data: bytes = environ["wsgi.input"].read(read_size)
        if len(data) > limit:
            raise PayloadTooLarge()
        return data

    def _preflight(self, origin: str | None) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        headers: list[tuple[str, str]] = []
        if origin and origin in self.settings.cors_origins:
            headers += [
                ("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE"),
                ("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-ID"),
                ("Access-Control-Max-Age", "600"),
            ]
        return 204, headers, []

    # -- answers ------------------------------------------------------------------------------------

    @staticmethod
    def _error(exc: SafeHarborError, request_id: str) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        return _json_answer(exc.status, exc.body(request_id), list(exc.headers.items()))

    def _decorate(self, headers: list[tuple[str, str]], origin: str | None) -> None:
        present = {name.lower() for name, _ in headers}
        headers.extend(pair for pair in self._security_headers if pair[0].lower() not in present)
        if origin and origin in self.settings.cors_origins:
            headers += [
                ("Access-Control-Allow-Origin", origin),
                ("Access-Control-Expose-Headers", "X-Request-ID, Retry-After"),
                ("Vary", "Origin"),
            ]

    # -- records ------------------------------------------------------------------------------------

    def _record(self, environ: dict[str, Any], method: str, path: str, route: Route | None,
                claims: SessionClaims | None, status: int, request_id: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        label = route.name if route is not None else "unrouted"
        self.metrics.requests.labels("gateway", method, label, str(status)).inc()
        self.metrics.latency.labels("gateway", method, label).observe(elapsed)
        ms = round(elapsed * 1000, 2)
        _log.info("request", extra={"fields": {"request_id": request_id, "method": method, "route": label,
                                               "status": status, "ms": ms}})
        if self.audit is not None:
            self._audit(environ, method, path, label, claims, status, request_id, ms)

    def _audit(self, environ: dict[str, Any], method: str, path: str, label: str, claims: SessionClaims | None,
               status: int, request_id: str, ms: float) -> None:
        assert self.audit is not None
        user_agent = environ.get("HTTP_USER_AGENT")
        try:
            # Committed before the answer leaves: an acknowledged request always has its event.
            self.audit.emit(
                action=f"gateway.{label}",
                actor=claims.sub if claims else "anonymous",
                role=claims.role if claims else None,
                resource=path,
                outcome=str(status),
                request_id=request_id or None,
                ip=environ.get("REMOTE_ADDR"),
                user_agent=user_agent[:512] if user_agent else None,
                meta={"method": method, "latency_ms": ms, **({"sid": claims.sid} if claims else {})},
            )
        except Exception:  # noqa: BLE001 - an audit failure is logged loudly, the answer still goes out
            _log.exception("audit emit failed", extra={"fields": {"request_id": request_id}})


def _json_answer(status: int, payload: dict[str, Any],
                 headers: list[tuple[str, str]]) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
    data = json.dumps(payload, separators=(",", ":")).encode()
    headers += [("Content-Type", _JSON), ("Content-Length", str(len(data)))]
    return status, headers, [data]


def _incoming_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    headers = [(key[5:].replace("_", "-").title(), value) for key, value in environ.items()
               if key.startswith("HTTP_")]
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", environ["CONTENT_TYPE"]))
    return headers


def _upstream_path(path: str) -> str:
    """The path to forward: the one the routes were checked against, percent-encoded again.

    Never the raw request line: granian (what the gateway runs under) hands over only the decoded
    PATH_INFO, and forwarding exactly what was checked means a service cannot route an encoded slash or
    dot differently from the gateway (`/v1/keys/a%2Fb` is checked, and forwarded, as `/v1/keys/a/b`).
    """
    try:
        raw = path.encode("latin-1")  # PEP 3333: PATH_INFO holds the decoded bytes as latin-1 characters
    except UnicodeEncodeError as exc:
        raise InvalidRequest("The path is not a valid request path.") from exc
    return quote(raw, safe="/:@!$&'()*+,;=~")
