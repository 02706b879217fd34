"""The gateway's hot path as a plain WSGI application: every public request but the gateway's own
health, readiness, metrics and OpenAPI paths (those stay on Flask).

Per request, in this order: the per-IP rate limit (before anything costs more: routing, tokens, bodies),
the session token when one is presented (so that even a refused attempt is audited with its user), the
route, revocation, roles and scope, the per-user limit, the whole body (bounded in size and time), then
the forward with the gateway's service token, the access log and metrics, and one audit event committed
before the answer leaves (for a streamed answer: before its last byte, with how it ended). Flask's request
context costs as much CPU as all of that together (docs/PERFORMANCE.md, gateway profile), so this path
reads the WSGI environ directly; the rules are the same as everywhere (one error format, request ids, no
PHI in logs).
"""
from __future__ import annotations

import http
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from safeharbor_common import web
from safeharbor_common.audit_emitter import AuditEmitter, PreparedEvent
from safeharbor_common.compliance import CONTROLS_PATH
from safeharbor_common.errors import (
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    MfaEnrollmentRequired,
    NotFound,
    RateLimited,
    SafeHarborError,
    ServiceUnavailable,
    SessionRevoked,
    Unauthenticated,
)
from safeharbor_common.revocation import RevocationList
from safeharbor_common.service_identity import ServiceTokenSigner
from safeharbor_common.serving import arrived_on_port
from safeharbor_common.tokens import SCOPE_MFA_ENROLLMENT, SessionClaims, TokenVerifier, bearer_from_header

from . import contract
from .body import read_body
from .clientip import ClientAddress, rate_limit_bucket
from .headers import (
    HSTS,
    SECURITY_HEADERS,
    downstream_response_headers,
    internal_hosts_of,
    upstream_request_headers,
)
from .ratelimit import RateLimiter
from .routing import Route, RouteTable
from .upstream import Instances, UpstreamBroken, UpstreamClient

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# The gateway's own paths; everything else is forwarded or refused here. /metrics only on the internal
# listener: on the public one it is an unknown path like any other.
LOCAL_PATHS = frozenset({"/healthz", "/readyz", contract.DOCUMENT_PATH, contract.REFERENCE_PATH})
METRICS_PATH = "/metrics"
UNAUDITED_PATHS = frozenset({"/healthz", "/readyz", METRICS_PATH})
# "." and ".." segments of the decoded path (and dots still encoded after it, sent double-encoded): a service
# might resolve them past the route checked here.
_DOT_SEGMENT = re.compile(r"(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)
_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in http.HTTPStatus}
_JSON = "application/json"
_log = logging.getLogger("safeharbor.web")


@dataclass(frozen=True)
class ForwardSettings:
    upstreams: dict[str, tuple[str, ...]]  # service -> its instances' base URLs
    max_body: int
    cors_origins: frozenset[str]
    hsts: bool
    body_timeout: float = 10.0
    internal_port: int | None = None


@dataclass
class _Attempt:
    """What is known of one request as it goes through the checks (for the access log and audit)."""

    method: str
    path: str
    client_ip: str
    request_id: str
    started: float
    route: Route | None = None
    claims: SessionClaims | None = None
    refusals: int = 0  # rate-limit refusals this window, this one included
    error: str | None = None  # the error code of a refusal or failure (for the access log)
    audit_ready: PreparedEvent | None = None  # the audit event's id, time and sealed PHI, made while forwarding


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
        upstreams: UpstreamClient,
        audit: AuditEmitter | None,
        metrics: Any,
        client_address: ClientAddress,
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
        self.client_address = client_address
        self._instances = {name: Instances(urls) for name, urls in settings.upstreams.items()}
        self._internal_hosts = internal_hosts_of(url for urls in settings.upstreams.values() for url in urls)
        self._security_headers = list(SECURITY_HEADERS.items()) + ([("Strict-Transport-Security", HSTS)]
                                                                   if settings.hsts else [])

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in LOCAL_PATHS or (path in (METRICS_PATH, CONTROLS_PATH)
                                   and arrived_on_port(environ, self.settings.internal_port)):
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
        attempt = _Attempt(environ.get("REQUEST_METHOD", "GET"), path, self._client_ip(environ),
                           seen.get("request_id", ""), started)
        status = int(seen.get("status", "500").split(" ", 1)[0])
        self._audit(environ, attempt, "local", status)
        return body

    # -- one request --------------------------------------------------------------------------------

    def forward(self, environ: dict[str, Any], start_response: StartResponse, path: str) -> Iterable[bytes]:
        attempt = _Attempt(
            method=environ.get("REQUEST_METHOD", "GET"),
            path=path,
            client_ip=self._client_ip(environ),
            request_id=web.request_id_from(environ.get("HTTP_X_REQUEST_ID", "")),
            started=time.perf_counter(),
        )
        origin = environ.get("HTTP_ORIGIN")
        streamed = False
        try:
            if self.audit is not None:
                self.audit.ensure_started()  # events left by an earlier run ship from the first request
            status, headers, body = self._handle(environ, attempt, origin)
            streamed = not isinstance(body, list)
        except SafeHarborError as exc:
            attempt.error = exc.code
            status, headers, body = self._error(exc, attempt.request_id)
        except Exception as exc:  # noqa: BLE001 - one JSON shape for every failure, never a stack trace
            attempt.error = "internal_error"
            status, payload, extra = web.unexpected_error(exc, attempt.request_id)
            status, headers, body = _json_answer(status, payload, list(extra.items()))
        headers.append((web.REQUEST_ID_HEADER, attempt.request_id))
        self._decorate(headers, origin)
        label = attempt.route.name if attempt.route is not None else "unrouted"
        if streamed:
            body = self._relay(environ, attempt, label, status, body)
        else:
            if self._audits(status, attempt):
                self._audit(environ, attempt, label, status)
            # The access log and metrics once the answer is out: they are not the client's wait.
            body = _ThenRecord(body, lambda: self._observe(attempt, label, status))
        start_response(_STATUS_LINES.get(status) or f"{status} Unknown", headers)
        return body

    def _handle(self, environ: dict[str, Any], attempt: _Attempt,
                origin: str | None) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        token = bearer_from_header(environ.get("HTTP_AUTHORIZATION", ""))
        # A token verified before names its user without any work: both limits are counted in one round trip
        # to the counter store. Otherwise the per-IP limit comes first, before the token costs anything.
        seen = self.verifier.already_verified(token) if token is not None else None
        hits = [("ip", rate_limit_bucket(attempt.client_ip), self.limiter.per_ip)]
        if seen is not None:
            hits.append(("user", seen.sub, self.limiter.per_user))
        verdict = self.limiter.count(hits)
        if verdict.wait is not None:
            attempt.refusals = verdict.refusals
            if self._audits(429, attempt):
                # only for the entries written: keep refusals cheap
                attempt.claims = seen if seen is not None else self._identify(token)
            raise RateLimited(retry_after=verdict.wait)
        verified = seen if seen is not None else self._verify(token)  # a known token is not looked up twice
        if isinstance(verified, SessionClaims):
            attempt.claims = verified
        if attempt.method == "OPTIONS":
            return self._preflight(origin)
        route, known = self.routes.match(attempt.method, attempt.path)
        if route is None:
            raise MethodNotAllowed() if known else NotFound()
        attempt.route = route
        if _DOT_SEGMENT.search(attempt.path):
            raise InvalidRequest("The path must not contain '.' or '..' segments.")
        target = _upstream_path(attempt.path)
        if not route.public:
            if isinstance(verified, SafeHarborError):
                raise verified
            if verified is None:
                raise Unauthenticated()
            self._authorise(route, verified)
        if attempt.claims is not None and seen is None:
            verdict = self.limiter.count([("user", attempt.claims.sub, self.limiter.per_user)])
            if verdict.wait is not None:
                attempt.refusals = verdict.refusals
                raise RateLimited(retry_after=verdict.wait)
        return self._send(environ, attempt, target, route)

    def _verify(self, token: str | None) -> SessionClaims | SafeHarborError | None:
        if token is None:
            return None
        try:
            return self.verifier.verify(token)
        except SafeHarborError as exc:
            return exc

    def _identify(self, token: str | None) -> SessionClaims | None:
        verified = self._verify(token)
        return verified if isinstance(verified, SessionClaims) else None

    def _authorise(self, route: Route, claims: SessionClaims) -> None:
        self.revocations.ensure_started()
        if not self.revocations.is_fresh():
            # Fail closed: without a current revocation list an ended session could slip through.
            raise ServiceUnavailable("Session checks are temporarily unavailable.")
        if self.revocations.refuses(sid=claims.sid, jti=claims.jti):  # an ended session or a retired token
            raise SessionRevoked()
        if claims.scope not in route.scopes:
            if claims.scope == SCOPE_MFA_ENROLLMENT:
                raise MfaEnrollmentRequired()
            raise Forbidden()
        if route.roles is not None and claims.role not in route.roles:
            raise Forbidden()

    def _client_ip(self, environ: dict[str, Any]) -> str:
        return self.client_address.resolve(environ.get("REMOTE_ADDR") or "unknown",
                                           environ.get("HTTP_X_FORWARDED_FOR"))

    def _send(self, environ: dict[str, Any], attempt: _Attempt, target: str,
              route: Route) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        body = read_body(environ, method=attempt.method, limit=self.settings.max_body,
                         timeout=self.settings.body_timeout)
        headers = upstream_request_headers(_incoming_headers(environ))
        headers.update(self.signer.headers_for(route.service))
        headers[web.CLIENT_IP_HEADER] = attempt.client_ip
        headers[web.REQUEST_ID_HEADER] = attempt.request_id
        query = environ.get("QUERY_STRING")
        if query:
            target += "?" + query
        answer = self.upstreams.send_to_any(method=attempt.method, instances=self._instances[route.service],
                                            target=target, headers=headers, body=body,
                                            while_waiting=lambda: self._prepare_audit(environ, attempt))
        out = downstream_response_headers(answer.headers, self._internal_hosts)
        if isinstance(answer.body, bytes):
            out.append(("Content-Length", str(len(answer.body))))
            return answer.status, out, [answer.body]
        return answer.status, out, answer.body  # a generator: the WSGI server's close() ends the upstream read

    def _relay(self, environ: dict[str, Any], attempt: _Attempt, label: str, status: int,
               chunks: Iterable[bytes]) -> Iterator[bytes]:
        """A streamed answer, audited when it ends with how it ended: the event is committed before the
        last byte leaves; if the service breaks off, the client's answer is aborted (the server closes the
        connection without completing it), never made to look whole."""
        ended = "client_closed"
        try:
            yield from chunks
            ended = "complete"
        except UpstreamBroken:
            ended = "upstream_broken"
            _log.warning("upstream broke off a streamed answer",
                         extra={"fields": {"request_id": attempt.request_id, "route": label}})
            raise
        finally:
            outcome = 502 if ended == "upstream_broken" else status
            if self.audit is not None:
                self._audit(environ, attempt, label, outcome, stream=ended)
            self._observe(attempt, label, status)

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

    def _observe(self, attempt: _Attempt, label: str, status: int) -> None:
        """Access log and metrics (labels from fixed sets)."""
        elapsed = time.perf_counter() - attempt.started
        method = web.method_label(attempt.method)
        self.metrics.requests.labels("gateway", method, label, str(status)).inc()
        self.metrics.latency.labels("gateway", method, label).observe(elapsed)
        fields: dict[str, Any] = {"request_id": attempt.request_id, "method": method, "route": label,
                                  "status": status, "ms": round(elapsed * 1000, 2)}
        if attempt.error is not None:
            fields["error"] = attempt.error
        _log.info("request", extra={"fields": fields})

    def _audits(self, status: int, attempt: _Attempt) -> bool:
        """Every request is audited, but refusals by the rate limiter only sparsely: the 1st, 2nd, 4th,
        8th, ... of a window, each with the count so far (a flood cannot become an audit-log flood)."""
        if self.audit is None:
            return False
        if status != 429 or attempt.refusals <= 0:
            return True
        return attempt.refusals & (attempt.refusals - 1) == 0

    def _prepare_audit(self, environ: dict[str, Any], attempt: _Attempt) -> None:
        """While the service works: the event's id, time and sealed PHI (the sealing is most of an event's
        cost), so that after the answer only its outcome is added and committed."""
        if self.audit is None:
            return
        try:
            attempt.audit_ready = self.audit.prepare(ip=attempt.client_ip, user_agent=_user_agent(environ))
        except Exception:  # noqa: BLE001 - emit() seals it itself then; the request goes on
            _log.exception("audit prepare failed", extra={"fields": {"request_id": attempt.request_id}})

    def _audit(self, environ: dict[str, Any], attempt: _Attempt, label: str, status: int,
               stream: str | None = None) -> None:
        assert self.audit is not None
        claims = attempt.claims
        ready = attempt.audit_ready
        meta: dict[str, Any] = {"method": web.method_label(attempt.method),
                                "latency_ms": round((time.perf_counter() - attempt.started) * 1000, 2)}
        if claims is not None:
            meta["sid"] = claims.sid
        if attempt.refusals:
            meta["refusals_in_window"] = attempt.refusals
        if stream is not None:
            meta["stream"] = stream
        try:
            # Committed before the answer leaves: an acknowledged request always has its event. In the
            # event loop itself: handing the short SQLite commit to gevent's native threads cost more on a busy
            # machine (a thread to schedule, twice) than the commit holds up the other connections
            # (bench/drills/slow_clients.py: p99 310 ms that way, 57 ms inline, under 1,000 stalled clients).
            self.audit.emit(
                action=f"gateway.{label}",
                actor=claims.sub if claims else "anonymous",
                role=claims.role if claims else None,
                resource=attempt.path,
                outcome=str(status),
                request_id=attempt.request_id or None,
                ip=attempt.client_ip if ready is None else None,
                user_agent=_user_agent(environ) if ready is None else None,
                meta=meta,
                prepared=ready,
            )
        except Exception:  # noqa: BLE001 - an audit failure is logged loudly, the answer still goes out
            _log.exception("audit emit failed", extra={"fields": {"request_id": attempt.request_id}})


class _ThenRecord:
    """A whole answer's body whose `close()` (called by the WSGI server once the answer is sent) records it."""

    __slots__ = ("_body", "_record")

    def __init__(self, body: Iterable[bytes], record: Callable[[], None]) -> None:
        self._body = body
        self._record = record

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._record()


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

    Never the raw request line: forwarding exactly what was checked means a service cannot route an
    encoded slash or dot differently from the gateway (`/v1/keys/a%2Fb` is checked, and forwarded, as
    `/v1/keys/a/b`).
    """
    try:
        raw = path.encode("latin-1")  # PEP 3333: PATH_INFO holds the decoded bytes as latin-1 characters
    except UnicodeEncodeError as exc:
        raise InvalidRequest("The path is not a valid request path.") from exc
    return quote(raw, safe="/:@!$&'()*+,;=~")


def _user_agent(environ: dict[str, Any]) -> str | None:
    user_agent = environ.get("HTTP_USER_AGENT")
    return user_agent[:512] if user_agent else None
